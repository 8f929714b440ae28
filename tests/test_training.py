"""Training: losses, optimiser/schedule, data order, bad files, atomic checkpoints, learning, kill + resume.

Runtime on 2 CPU cores: ~2.5 min, dominated by test_training_learns_on_synthetic_scenes (~85 s) and
test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run (~50 s).
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from memsam_core.config import load_config
from memsam_core.data.deliver import DatasetError, companion_path
from memsam_core.data.deliver_fixture import write_deliver_fixture
from memsam_core.engine import Segmenter
from memsam_core.metrics import ConfusionMatrix
from memsam_core.model import build_memorysam
from memsam_core.model.build import read_memsam_checkpoint
from memsam_training.data import ShardedBatchSampler, TrainTensors, collate_train, raw_dataset
from memsam_training.evaluate import evaluate
from memsam_training.losses import OhemCrossEntropy
from memsam_training.optim import WarmupPoly, build_optimizer, is_no_decay
from memsam_training.train import Trainer, main

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TINY = {  # CPU-sized: 128 px, two modalities, hiera tiny, one thread (stable timing on a busy machine)
    "model.image_size": 128,
    "model.modalities": ["rgb", "depth"],
    "data.synthetic_height": 128,
    "data.synthetic_width": 128,
    "train.crop_size": 128,
    "train.threads": 1,
    "inference.device": "cpu",
}


def _cfg(tmp_path: Path, **overrides):
    return load_config(None, {**TINY, "train.output_dir": str(tmp_path / "run"), **overrides})


# ---------------------------------------------------------------------------------------------- OHEM
def test_ohem_keeps_hard_pixels_or_the_top_n_min() -> None:
    ohem = OhemCrossEntropy(thresh=0.7, min_kept_ratio=0.25)
    logits = torch.zeros(1, 2, 2, 4)
    logits[0, 0] = torch.tensor([[9.0, 9, 9, 9], [9, 9, 9, 9]])  # class 0 confident everywhere
    labels = torch.zeros(1, 2, 4, dtype=torch.long)
    labels[0, 0, 0] = 1  # one hard pixel
    labels[0, 1, 3] = 255  # ignored
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    assert float(ohem(logits, labels)) == pytest.approx(float(per_pixel[0, 0, 0]))  # only the hard one
    ohem_min = OhemCrossEntropy(thresh=0.7, min_kept_ratio=0.5)  # 7 valid → n_min 3: hard + 2 easiest-hard
    top3 = per_pixel[labels != 255].topk(3).values.mean()
    assert float(ohem_min(logits, labels)) == pytest.approx(float(top3))
    empty = ohem(logits.requires_grad_(True), torch.full_like(labels, 255))
    empty.backward()
    assert float(empty.detach()) == 0.0


# ---------------------------------------------------------------------------------- optimiser, LR
def test_adamw_groups_exclude_frozen_and_decay_only_matrices() -> None:
    model = build_memorysam(load_config(None, TINY).model)
    optimizer = build_optimizer(model, load_config(None, TINY).train)
    decay, no_decay = optimizer.param_groups
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 and p.numel() > max(p.shape) for p in decay["params"])
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = [names[id(p)] for p in no_decay["params"]]
    assert any(n.endswith(".bias") for n in no_decay_names) and "sam.no_mem_embed" in no_decay_names
    assert is_no_decay("x.weight", torch.zeros(8)) and not is_no_decay("x.weight", torch.zeros(8, 8))


def test_warmup_poly_schedule() -> None:
    factor = WarmupPoly(total_iters=100, warmup_iters=10, warmup_ratio=0.1, power=0.9)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5**0.9)
    assert 0.0 <= factor(99) < 0.05 and factor(200) == 0.0
    values = [factor(i) for i in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(values))


# ------------------------------------------------------------------------------------ data order
def test_sharded_sampler_is_seeded_disjoint_and_resumable() -> None:
    ranks = [ShardedBatchSampler(23, batch_size=2, rank=r, world_size=2, seed=5) for r in range(2)]
    assert ranks[0].iterations_per_epoch == 5
    for sampler in ranks:
        sampler.set_epoch(3)
    batches = [list(s) for s in ranks]
    flat = [i for b in batches for batch in b for i in batch]
    assert len(flat) == len(set(flat)) == 20  # disjoint shards, whole global batches only
    again = ShardedBatchSampler(23, batch_size=2, rank=0, world_size=2, seed=5)
    again.set_epoch(3)
    assert list(again) == batches[0]  # reproducible
    again.set_epoch(3, start_iteration=2)
    assert list(again) == batches[0][2:] and len(again) == 3  # resume skips done iterations
    again.set_epoch(4)
    assert list(again) != batches[0]  # new order each epoch


def test_train_tensors_from_synthetic_scenes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"data.synthetic_train_size": 2, "model.modalities": ["rgb", "depth", "lidar", "event"]})
    data = TrainTensors(raw_dataset(cfg, train=True), cfg)
    sample = data[1]
    assert sample["frames"].shape == (4, 3, 128, 128) and sample["frames"].dtype == torch.float32
    assert sample["labels"].shape == (128, 128) and sample["labels"].dtype == torch.int64
    values = set(sample["labels"].unique().tolist())
    assert values - {255} and all(v < 25 or v == 255 for v in values)
    data.set_epoch(1)
    assert not torch.equal(data[1]["frames"], sample["frames"])  # new augmentation draw per epoch


# ------------------------------------------------------------------------- corrupt files (issue 6)
@pytest.fixture
def deliver_with_corrupt_png(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "DELIVER"
    rgb_paths = write_deliver_fixture(root, splits=("train", "val"), conditions=("sun", "night"), size=64)
    train_rgb = sorted(p for p in rgb_paths if "/train/" in str(p))
    bad = companion_path(root, train_rgb[1], "depth")
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # valid signature, broken body
    return root, bad


def test_corrupt_png_is_reported_with_its_path_or_skipped(tmp_path, deliver_with_corrupt_png, caplog) -> None:
    root, bad = deliver_with_corrupt_png
    deliver = {"data.dataset": "deliver", "data.root": str(root), "data.conditions": ["sun", "night"]}
    strict = TrainTensors(raw_dataset(_cfg(tmp_path, **deliver), train=True), _cfg(tmp_path, **deliver))
    with pytest.raises(DatasetError) as err:
        for index in range(len(strict)):
            strict[index]
    assert str(bad) in str(err.value)
    skip_cfg = _cfg(tmp_path, **deliver, **{"data.on_error": "skip"})
    lenient = TrainTensors(raw_dataset(skip_cfg, train=True), skip_cfg)
    with caplog.at_level("WARNING"):
        samples = [lenient[i] for i in range(len(lenient))]
    assert len(samples) == len(lenient) and all(s["frames"].shape[0] == 2 for s in samples)
    assert str(bad) in caplog.text


def test_cli_fails_cleanly_on_a_corrupt_file(tmp_path, deliver_with_corrupt_png, caplog) -> None:
    root, bad = deliver_with_corrupt_png
    args = [f"--set={k}={v}" for k, v in TINY.items() if k != "model.modalities"]
    args += [
        "--set=model.modalities=[rgb,depth]",
        "--set=data.dataset=deliver",
        f"--set=data.root={root}",
        "--set=data.conditions=[sun,night]",
        "--set=train.batch_size=4",
        f"--set=train.output_dir={tmp_path}/r",
    ]
    with caplog.at_level("ERROR"):
        assert main(args) == 2
    assert str(bad) in caplog.text


# ------------------------------------------------------------------------ atomic writes (issue 6)
_SAVE_LOOP = """
import sys, torch
from memsam_core.model import save_checkpoint
path = sys.argv[1]
layer = torch.nn.Linear(4, 4)
for i in range(1, 1000):
    with torch.no_grad():
        layer.weight.fill_(i)
    save_checkpoint(path, layer, {"i": i}, blob=torch.full((40_000_000,), i % 251, dtype=torch.uint8))
    print(i, flush=True)
"""


def test_sigkill_during_checkpoint_write_leaves_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    torn, torn_writes = tmp_path / ".last.pt.tmp", 0
    for _ in range(4):
        proc = subprocess.Popen([PYTHON, "-c", _SAVE_LOOP, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout is not None
        while int(proc.stdout.readline() or -1) < 2:  # at least two complete writes
            assert proc.poll() is None, "save loop died"
        deadline = time.monotonic() + 30
        while not torn.exists() and time.monotonic() < deadline:  # land the kill inside a later write
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        torn_writes += torn.exists()
        torn.unlink(missing_ok=True)
        data = read_memsam_checkpoint(path)  # never a truncated archive
        i = data["config"]["i"]
        assert i >= 2 and bool((data["model"]["weight"] == i).all())
        assert bool((data["blob"] == i % 251).all()) and data["blob"].numel() == 40_000_000
    assert torn_writes >= 1, "no kill landed inside a write; the test proved nothing"


# ------------------------------------------------------------------------------- proof it learns
@pytest.mark.slow
def test_training_learns_on_synthetic_scenes(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        **{
            "data.synthetic_train_size": 24,
            "data.synthetic_val_size": 10,
            "train.epochs": 4,
            "train.eval_every": 4,
            "train.lr": 2e-3,
            "train.warmup_epochs": 0.5,
            "train.spmm_scale": 10.0,
        },
    )
    trainer = Trainer(cfg)
    before = evaluate(trainer.model, trainer.val_set, cfg, trainer.device)
    trainer.model.train()
    after = trainer.fit()
    assert after is not None
    print(f"mIoU before {before['miou']:.4f} after {after['miou']:.4f}")
    assert after["miou"] >= 2 * before["miou"] and after["miou"] > 0.05  # measured: ~0.02 → ~0.07
    assert set(after["per_condition"]) == {"sun", "cloud", "rain", "fog", "night"}
    assert (Path(cfg.train.output_dir) / "eval_latest.json").is_file()
    # best.pt is exactly what the node loads: Segmenter(inference.checkpoint=best.pt) scores the same.
    best = Path(cfg.train.output_dir) / "best.pt"
    engine = Segmenter(load_config(None, {**TINY, "inference.checkpoint": str(best)}))
    matrix = ConfusionMatrix(25)
    for sample in trainer.val_set:
        labels, _ = engine.segment(sample["frames"])
        matrix.update(labels, sample["labels"])
    print(f"trainer evaluation {after['miou']:.6f}, node's Segmenter on best.pt {matrix.miou(nan_to_zero=True):.6f}")
    assert matrix.miou(nan_to_zero=True) == pytest.approx(after["miou"], abs=1e-4)


# -------------------------------------------------------------------------- kill -9 and resume
def _train_cmd(out: Path, *extra: str) -> list[str]:
    sets = {
        **TINY,
        "data.synthetic_train_size": 6,
        "data.synthetic_val_size": 1,
        "train.batch_size": 1,
        "train.epochs": 1,
        "train.checkpoint_every_iters": 1,
        "train.deterministic": True,
        "train.spmm_scale": 10.0,
        "train.output_dir": str(out),
    }
    args = [f"--set={k}={v}" if not isinstance(v, list) else f"--set={k}=[{','.join(v)}]" for k, v in sets.items()]
    return [PYTHON, "-m", "memsam_training.train", *args, *extra]


def _final_state(path: Path) -> dict:
    data = read_memsam_checkpoint(path)
    assert (data["epoch"], data["iteration"], data["step"]) == (1, 0, 6)
    return data


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cmd(tmp_path / "full"), check=True, cwd=ROOT, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training never wrote last.pt"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted = read_memsam_checkpoint(killed / "last.pt")
    assert interrupted["epoch"] == 0 and 0 < interrupted["iteration"] < 6, "kill must land mid-epoch"
    subprocess.run(_train_cmd(killed, "--resume"), check=True, cwd=ROOT, env=env, capture_output=True)
    full, resumed = _final_state(tmp_path / "full" / "last.pt"), _final_state(killed / "last.pt")
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    torch.testing.assert_close(full["spmm"], resumed["spmm"], rtol=0, atol=0)
    for a, b in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert full["scheduler"]["last_epoch"] == resumed["scheduler"]["last_epoch"] == 6
    assert not math.isnan(np.float64(full["best_miou"]))


# ----------------------------------------------------------------------------- missing sensors learnt
def test_modality_dropout_keeps_rgb_is_seeded_and_covers_every_subset() -> None:
    from memsam_training.evaluate import modality_subsets
    from memsam_training.train import dropout_subset

    modalities = ["rgb", "depth", "lidar", "event"]
    draws = [dropout_subset(modalities, 0.5, seed=3, rank=0, step=step) for step in range(400)]
    assert all(d[0] == 0 for d in draws)  # RGB always stays
    seen = {tuple(modalities[i] for i in d) for d in draws}
    assert seen == set(modality_subsets(modalities)) and len(seen) == 8  # every subset containing RGB
    rate = np.mean([len(d) - 1 for d in draws]) / 3
    assert 0.4 < rate < 0.6  # each other sensor kept with probability 1 - p
    assert draws == [dropout_subset(modalities, 0.5, 3, 0, step) for step in range(400)]  # resume-safe
    assert draws != [dropout_subset(modalities, 0.5, 3, 1, step) for step in range(400)]  # ranks differ
    assert dropout_subset(modalities, 0.0, 3, 0, 7) == [0, 1, 2, 3]
    assert dropout_subset(["depth", "lidar"], 0.99, 3, 0, 7) == [0]  # without RGB the first modality stays


def test_training_step_with_dropout_and_subset_evaluation(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"model.modalities": ["rgb", "depth", "lidar"], "data.synthetic_train_size": 2,
                            "data.synthetic_val_size": 2, "train.modality_dropout": 0.6})  # fmt: skip
    trainer = Trainer(cfg)
    batch = next(iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=2, collate_fn=collate_train)))
    frames = set()
    for step in range(6):
        trainer.progress.step = step
        losses = trainer.train_step(batch)
        assert math.isfinite(losses["loss"])
        frames.add(losses["frames"])
    assert min(frames) < 3  # some steps train with sensors missing
    reports = trainer.run_subset_evaluation()
    assert list(reports) == ["rgb+depth+lidar", "rgb+depth", "rgb+lidar", "rgb"]
    for name, report in reports.items():
        assert report["modalities"] == name.split("+") and set(report["per_case"]) == {"normal"}
    assert (Path(cfg.train.output_dir) / "eval" / "subsets.json").is_file()


def test_evaluation_reports_every_deliver_failure_case(tmp_path: Path) -> None:
    from memsam_core.data.deliver import DELIVER_CASES

    root = tmp_path / "DELIVER"
    write_deliver_fixture(root, splits=("val",), conditions=("sun", "night"), cases=("normal", *DELIVER_CASES),
                          frames_per_sequence=1, size=64)  # fmt: skip
    cfg = _cfg(tmp_path, **{"data.dataset": "deliver", "data.root": str(root), "data.conditions": ["sun", "night"],
                            "model.modalities": ["rgb", "depth", "lidar", "event"]})  # fmt: skip
    model = build_memorysam(cfg.model)
    report = evaluate(model, raw_dataset(cfg, train=False), cfg, torch.device("cpu"), ["rgb", "lidar"])
    assert set(report["per_case"]) == {"normal", "motionblur", "overexposure", "underexposure", "lidarjitter",
                                       "eventlowres"}  # fmt: skip
    assert set(report["per_condition"]) == {"sun", "night"} and report["modalities"] == ["rgb", "lidar"]
    assert sum(r["pixels"] for r in report["per_case"].values()) == report["pixels"] > 0
