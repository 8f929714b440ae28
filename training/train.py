"""Train MemorySAM: ``python -m memsam_training.train --config config/train_synthetic.yaml [--resume] [--set k=v ...]``.

Multi-GPU: ``torchrun --nproc_per_node=N -m memsam_training.train --config ...`` (DDP; NCCL on CUDA, gloo on CPU).

Clips (``data.clip_length`` T > 1): a sample is T consecutive instants; the losses cover every instant (OHEM and
SPMM over the T·B label maps at once), the memory of past instants (``model.temporal_memory`` K ≤ T - 1) is carried
through the clip with its gradients (:class:`memsam_core.model.clip.ClipForward`), and modality dropout takes a
sensor out for a run of consecutive instants (:func:`memsam_training.data.clip_dropout`). T = 1 trains exactly as
before (same samples, losses and random draws).

Recipe (memorysam.md §5): OHEM cross-entropy + SPMM prototype loss, AdamW (no decay on 1-D params),
per-iteration linear warmup + poly LR, optional bf16/fp16 autocast, gradient clipping.  Checkpoints
(``last.pt`` every epoch and every ``train.checkpoint_every_iters``; ``best.pt`` on a new best val mIoU)
are written atomically and hold the model + full config that ``Segmenter``/the node load, plus the
optimizer, scheduler, scaler, SPMM memory, per-rank RNG states and the position in the epoch, so a
resumed run continues on exactly the batches and random draws the interrupted one would have used.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from memsam_core.config import ConfigError, MemSamConfig, load_config, parse_overrides
from memsam_core.data.deliver import DatasetError
from memsam_core.engine import resolve_device
from memsam_core.model import CheckpointError, build_memorysam, save_checkpoint
from memsam_core.model.build import check_spec, checkpoint_spec, read_memsam_checkpoint
from memsam_core.model.clip import ClipForward
from memsam_core.spmm import SemanticPrototypeMemory
from memsam_training.data import ShardedBatchSampler, TrainTensors, clip_dropout, collate_train, raw_dataset
from memsam_training.evaluate import evaluate, evaluate_subsets, subsets_table, summary_line
from memsam_training.losses import OhemCrossEntropy
from memsam_training.optim import build_optimizer, build_scheduler

LOG = logging.getLogger("memsam.train")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Progress:
    """Where training stands; ``iteration`` counts batches finished in the current ``epoch``."""

    epoch: int = 0
    iteration: int = 0
    step: int = 0
    best_miou: float = -1.0


# ---------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states in a form ``torch.load(weights_only=True)`` reads."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            **np_state,
            "state": {**np_state["state"], "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64))},
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {**np_state["state"], "key": np_state["state"]["key"].numpy().astype(np.uint32)}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dropout_subset(modalities: list[str], p: float, seed: int, rank: int, step: int) -> list[int]:
    """Frame indices a training step keeps: each non-RGB modality is left out with probability ``p`` (RGB,
    or the first modality without RGB, always stays), so missing sensors are learnt.

    Drawn from ``(seed, rank, step)``, not the global RNG, so a resumed run drops the same modalities.
    The whole batch shares the subset (a batch tensor has one frame count).
    """
    if p <= 0 or len(modalities) == 1:
        return list(range(len(modalities)))
    always = "rgb" if "rgb" in modalities else modalities[0]
    draws = np.random.default_rng([seed, rank, step]).random(len(modalities))
    return [i for i, m in enumerate(modalities) if m == always or draws[i] >= p]


def check_clips(cfg: MemSamConfig) -> None:
    """Memory of K past instants is learnt on clips of at least K + 1 instants."""
    k, length = cfg.model.temporal_memory, cfg.data.clip_length
    if k and length < k + 1:
        raise ConfigError(
            f"model.temporal_memory {k} needs training clips of at least {k + 1} instants "
            f"(data.clip_length is {length})"
        )


# ------------------------------------------------------------------------------------- distributed
def init_distributed() -> tuple[int, int, int]:
    """Rank, world size and local rank from torchrun's environment (1 process without it).

    Any torchrun launch (``MASTER_ADDR`` set), ``--nproc_per_node=1`` included, joins a process group (NCCL on
    CUDA, gloo on CPU) and trains under DDP, so a one-GPU torchrun run exercises the same path as eight.
    """
    if "MASTER_ADDR" not in os.environ or "RANK" not in os.environ:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    """Builds everything from one :class:`MemSamConfig`; :meth:`fit` runs the epochs."""

    def __init__(self, cfg: MemSamConfig, resume: str | Path | None = None) -> None:
        self.cfg = cfg
        tcfg = cfg.train
        self.rank, self.world, local_rank = init_distributed()
        self.is_main = self.rank == 0
        device = resolve_device(cfg.inference.device)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank if dist.is_initialized() else (device.index or 0))
            torch.cuda.set_device(device)
        self.device = device
        if tcfg.threads:
            torch.set_num_threads(tcfg.threads)
        if tcfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        seed_everything(tcfg.seed + self.rank)  # dropout differs per rank; weights are built identically
        self.output_dir = Path(tcfg.output_dir)

        check_clips(cfg)
        self.model = build_memorysam(cfg.model, sam2_checkpoint=tcfg.init_checkpoint or None, seed=tcfg.seed)
        self.model.to(device).train()
        self.clip_length = cfg.data.clip_length
        self.spmm = (
            SemanticPrototypeMemory(
                cfg.model.num_classes, self._feature_dim(), tcfg.spmm_momentum, tcfg.spmm_scale, tcfg.spmm_weight
            ).to(device)
            if tcfg.spmm
            else None
        )
        self.ohem = OhemCrossEntropy(tcfg.ohem_thresh, tcfg.ohem_min_kept_ratio)

        self.train_set = TrainTensors(raw_dataset(cfg, train=True), cfg)
        self.val_set = raw_dataset(cfg, train=False)
        self.sampler = ShardedBatchSampler(len(self.train_set), tcfg.batch_size, self.rank, self.world, tcfg.seed)
        self.iters_per_epoch = self.sampler.iterations_per_epoch
        self.optimizer = build_optimizer(self.model, tcfg)
        self.scheduler = build_scheduler(self.optimizer, tcfg, self.iters_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=tcfg.amp == "fp16")
        self.progress = Progress()
        if resume:
            self.load(resume)
        self.net: torch.nn.Module = self.model
        if self.clip_length > 1:  # the whole clip in one forward (one DDP reduction per step)
            self.net = ClipForward(self.model, cfg.model.temporal_memory)
        if dist.is_initialized():
            # find_unused_parameters: mask_downsample / no_mem_pos_enc (and memory modules with 1 modality)
            # are trainable but never reached by a prompt-free forward.
            self.net = DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
            )
        self.writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.output_dir / "config.yaml")
            self.writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.progress.step or None)

    def _feature_dim(self) -> int:
        return int(self.model.sam.sam_mask_decoder.conv_s0.out_channels)

    # ------------------------------------------------------------------------------------ training
    def fit(self) -> dict[str, Any] | None:
        """Train the remaining epochs; returns the last evaluation report (None if none ran)."""
        tcfg = self.cfg.train
        report = None
        if self.is_main:
            LOG.info(
                "training %d epochs x %d iterations (batch %d x %d ranks%s) on %s; output %s",
                tcfg.epochs,
                self.iters_per_epoch,
                tcfg.batch_size,
                self.world,
                f", DDP over {dist.get_backend()}" if dist.is_initialized() else "",
                self.device,
                self.output_dir,
            )
        while self.progress.epoch < tcfg.epochs:
            epoch = self.progress.epoch
            self.train_one_epoch(epoch, start_iteration=self.progress.iteration)
            self.progress.epoch, self.progress.iteration = epoch + 1, 0
            if (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs:
                report = self.run_evaluation()
            self.save("last.pt")
        if tcfg.eval_subsets:
            self.run_subset_evaluation()
        if self.writer is not None:
            self.writer.close()
        return report

    def _autocast(self):
        amp = self.cfg.train.amp
        if amp == "off":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AMP_DTYPES[amp])

    def train_one_epoch(self, epoch: int, start_iteration: int = 0) -> None:
        tcfg = self.cfg.train
        self.model.train()
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, start_iteration)
        loader = DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            collate_fn=collate_train,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(tcfg.seed + epoch),  # keeps the global RNG untouched
        )
        bar = tqdm(
            loader,
            total=self.iters_per_epoch,
            initial=start_iteration,
            disable=not self.is_main,
            desc=f"epoch {epoch + 1}/{tcfg.epochs}",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        for batch in bar:
            losses = self.train_step(batch)
            self.progress.iteration += 1
            self.progress.step += 1
            step = self.progress.step
            if self.is_main:
                bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{losses['lr']:.2e}")
                if step % tcfg.log_every == 0 or step == 1:
                    for name, value in losses.items():
                        self.writer.add_scalar(f"train/{name}", value, step)
            if tcfg.checkpoint_every_iters and step % tcfg.checkpoint_every_iters == 0:
                if self.progress.iteration < self.iters_per_epoch:  # the end-of-epoch save follows anyway
                    self.save("last.pt")

    def kept_modalities(self) -> list[int]:
        """Frame indices this step trains on (:func:`dropout_subset` at this rank and step)."""
        tcfg, step = self.cfg.train, self.progress.step
        return dropout_subset(self.cfg.model.modalities, tcfg.modality_dropout, tcfg.seed, self.rank, step)

    def kept_modalities_per_instant(self) -> list[list[int]]:
        """Frame indices of each instant of this step's clips (:func:`clip_dropout`, drawn from seed, rank, step)."""
        tcfg = self.cfg.train
        rng = np.random.default_rng([tcfg.seed, self.rank, self.progress.step])
        return clip_dropout(self.cfg.model.modalities, self.clip_length, tcfg.modality_dropout,
                            tcfg.dropout_min_instants, rng)  # fmt: skip

    def _forward(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor, float]:
        """Network outputs, the labels they are scored against and the mean frame count (single frames or clips)."""
        features = self.spmm is not None
        if self.clip_length == 1:
            keep = self.kept_modalities()
            frames = batch["frames"][:, keep].to(self.device, non_blocking=True)
            labels = batch["labels"].to(self.device, non_blocking=True)
            with self._autocast():
                return self.net(frames, skip_last_memory=True, return_features=features), labels, float(len(keep))
        keeps = self.kept_modalities_per_instant()
        clips = batch["frames"].to(self.device, non_blocking=True)  # [B, T, M, 3, S, S]
        labels = batch["labels"].to(self.device, non_blocking=True).transpose(0, 1).flatten(0, 1)  # instant-major
        with self._autocast():
            out = self.net([clips[:, t, keep] for t, keep in enumerate(keeps)], return_features=features)
        return out, labels, float(np.mean([len(keep) for keep in keeps]))

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        tcfg = self.cfg.train
        out, labels, frame_count = self._forward(batch)
        ce = self.ohem(out["logits"], labels)
        loss = ce
        spmm_loss = torch.zeros((), device=self.device)
        if self.spmm is not None:
            spmm_loss = self.spmm(out["features"].float(), labels)
            loss = ce + spmm_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at step {self.progress.step + 1}: ce {ce.item()}, "
                f"spmm {spmm_loss.item()} (lower train.lr or spmm_scale, or enable grad_clip)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = math.nan
        if tcfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip))
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {
            "loss": float(ce.item() + spmm_loss.item() / self.world),
            "ce": float(ce.item()),
            "spmm": float(spmm_loss.item() / self.world),
            "lr": lr,
            "grad_norm": grad_norm,
            "frames": frame_count,
        }

    # ---------------------------------------------------------------------------------- evaluation
    def run_evaluation(self) -> dict[str, Any]:
        start = time.perf_counter()
        report = evaluate(self.model, self.val_set, self.cfg, self.device)
        self.model.train()
        report.update(epoch=self.progress.epoch, step=self.progress.step, seconds=time.perf_counter() - start)
        miou = float(report["miou"] or 0.0)
        improved = miou > self.progress.best_miou
        if improved:
            self.progress.best_miou = miou
        if self.is_main:
            LOG.info("epoch %d eval: %s", self.progress.epoch, summary_line(report))
            eval_dir = self.output_dir / "eval"
            eval_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(report, indent=2)
            (eval_dir / f"epoch_{self.progress.epoch:04d}.json").write_text(text)
            (self.output_dir / "eval_latest.json").write_text(text)
            self.writer.add_scalar("val/miou", miou, self.progress.step)
            self.writer.add_scalar("val/miou_present", float(report["miou_present"] or 0.0), self.progress.step)
            for condition, sub in report["per_condition"].items():
                self.writer.add_scalar(f"val/miou_{condition}", float(sub["miou"] or 0.0), self.progress.step)
            for name, sub in report["per_class"].items():
                if sub["iou"] is not None:
                    self.writer.add_scalar(f"val_class/{name}", sub["iou"], self.progress.step)
            if improved:
                save_checkpoint(
                    self.output_dir / "best.pt",
                    self.model,
                    self.cfg.to_dict(),
                    epoch=self.progress.epoch,
                    step=self.progress.step,
                    miou=miou,
                    metrics=_json_safe(report),
                )
                (self.output_dir / "best_metrics.json").write_text(text)
        return report

    def run_subset_evaluation(self) -> dict[str, Any]:
        """Every modality subset that contains RGB, per condition and failure case: ``eval/subsets.json``."""
        reports = evaluate_subsets(self.model, self.val_set, self.cfg, self.device)
        self.model.train()
        if self.is_main:
            LOG.info("modality subsets (mIoU %%):\n%s", subsets_table(reports))
            eval_dir = self.output_dir / "eval"
            eval_dir.mkdir(parents=True, exist_ok=True)
            (eval_dir / "subsets.json").write_text(json.dumps(reports, indent=2))
            for name, sub in reports.items():
                self.writer.add_scalar(f"val_subset/{name}", float(sub["miou"] or 0.0), self.progress.step)
        return reports

    # ---------------------------------------------------------------------------------- checkpoints
    def save(self, name: str) -> None:
        """Atomic ``last.pt``; collective under DDP (every rank contributes its RNG state)."""
        states = [rng_state()]
        if self.world > 1:
            states = [None] * self.world
            dist.all_gather_object(states, rng_state())
        if not self.is_main:
            return
        save_checkpoint(
            self.output_dir / name,
            self.model,
            self.cfg.to_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            spmm=self.spmm.state_dict() if self.spmm is not None else None,
            rng=states,
            world_size=self.world,
            epoch=self.progress.epoch,
            iteration=self.progress.iteration,
            step=self.progress.step,
            best_miou=self.progress.best_miou,
            iters_per_epoch=self.iters_per_epoch,
        )

    def load(self, path: str | Path) -> None:
        """Restore everything :meth:`save` wrote (model strictly; the current config must fit it)."""
        data = read_memsam_checkpoint(path)
        check_spec(checkpoint_spec(data, path), self.cfg, path, "resume")
        for key in ("optimizer", "scheduler", "rng", "epoch", "iteration", "step"):
            if key not in data:
                raise ConfigError(f"{path}: not a training checkpoint (no {key!r}); use it as inference.checkpoint")
        self.model.load_state_dict(data["model"], strict=True)
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        if data.get("scaler"):
            self.scaler.load_state_dict(data["scaler"])
        if self.spmm is not None and data.get("spmm") is not None:
            self.spmm.load_state_dict(data["spmm"])
        if data.get("iters_per_epoch", self.iters_per_epoch) != self.iters_per_epoch:
            LOG.warning(
                "%s: iterations per epoch changed (%s -> %s); the data order will differ",
                path,
                data.get("iters_per_epoch"),
                self.iters_per_epoch,
            )
        states = data["rng"]
        if len(states) == self.world:
            set_rng_state(states[self.rank])
        else:
            LOG.warning("%s: saved with %d ranks, resuming with %d; RNG reseeded", path, len(states), self.world)
            seed_everything(self.cfg.train.seed + 7919 * data["step"] + self.rank)
        self.progress = Progress(data["epoch"], data["iteration"], data["step"], float(data.get("best_miou", -1.0)))
        if self.is_main:
            LOG.info(
                "resumed from %s at epoch %d, iteration %d (step %d)",
                path,
                self.progress.epoch,
                self.progress.iteration,
                self.progress.step,
            )


def _json_safe(report: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(report))


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsam-train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="training YAML (MemSamConfig schema), e.g. config/train_synthetic.yaml")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from train.output_dir/last.pt (or the given checkpoint)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.epochs=5 (repeatable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, parse_overrides(args.overrides))
    except ConfigError as err:
        print(f"memsam-train: {err}", file=sys.stderr)
        return 2
    resume = args.resume
    if resume == "auto":
        resume = Path(cfg.train.output_dir) / "last.pt"
        if not resume.is_file():
            print(f"memsam-train: --resume: no checkpoint at {resume}", file=sys.stderr)
            return 2
    try:
        trainer = Trainer(cfg, resume=resume)
        trainer.fit()
    except (ConfigError, CheckpointError, DatasetError) as err:
        LOG.error("%s", err)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
