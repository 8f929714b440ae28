"""CUDA paths of the engine and the trainer: ``pytest -m cuda`` on a machine with a GPU (CI has none: skipped).

Inference: fp32 engine = naive SAM 2 loop on the GPU (batched encoder), bf16 autocast with flash attention, the
pinned host buffer + non-blocking upload, CUDA graphs (``inference.cuda_graphs``) = eager with outputs that survive
the next replay. Training: bf16 and fp16 + GradScaler steps learn, a resume from ``last.pt`` reaches the weights of an
uninterrupted run, and a one-process ``torchrun`` trains under DDP over NCCL.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before any CUDA work

from memsam_core.config import load_config
from memsam_core.data.synthetic import SceneConfig, generate_scene
from memsam_core.engine import Segmenter
from memsam_core.model import build_memorysam
from memsam_core.model.build import read_memsam_checkpoint
from memsam_core.model.lora import merge_lora
from memsam_training.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); run `pytest -m cuda` on a GPU machine",
    ),
]
SIZE = 512


def _config(size: int = SIZE, **inference):
    return load_config(
        None,
        {
            "model.image_size": size,
            "model.gate_logits_by_object_score": True,  # what the naive loop (SAM 2's _track_step) does
            "classes.names": [f"c{i}" for i in range(25)],
            **{f"inference.{key}": value for key, value in {"device": "cuda", **inference}.items()},
        },
    )


@pytest.fixture(scope="module")
def models():
    """The naive (training, LoRA unmerged) model and its merged inference copy, on the GPU, tf32 off."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    naive = build_memorysam(_config().model, seed=0).eval().cuda()
    merged = copy.deepcopy(naive)
    merge_lora(merged)
    return naive, merged


def _frames(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)).cuda()


def _raw_set(seed: int) -> dict[str, np.ndarray]:
    return dict(generate_scene(seed, SceneConfig(height=SIZE * 3 // 4, width=SIZE)).frames)


# ------------------------------------------------------------------------------------------ inference
def test_fp32_engine_equals_naive_loop_on_cuda(models) -> None:
    naive, merged = models
    engine = Segmenter(_config(), model=merged)
    frames = _frames()
    with torch.inference_mode():
        reference = naive.forward_reference(frames)
    logits = engine.logits(frames)
    assert logits.is_cuda and logits.dtype == torch.float32
    assert (logits - reference).abs().max().item() < 1e-3
    assert logits.std().item() > 1e-3  # not a constant output


def test_bf16_autocast_uses_flash_attention_and_tracks_fp32(models) -> None:
    _, merged = models
    frames = _frames(1)
    reference = Segmenter(_config(), model=merged).logits(frames)
    bf16 = Segmenter(_config(precision="bf16", cuda_graphs=False), model=merged)  # eager: kernels visible
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        approx = bf16.logits(frames)
        torch.cuda.synchronize()
    kernels = {event.key.lower() for event in prof.key_averages()}
    assert any("flash" in name or "fmha" in name for name in kernels), sorted(kernels)[:40]
    agreement = (approx.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement > 0.9, agreement


def test_pinned_upload_keeps_earlier_results(models) -> None:
    _, merged = models
    engine = Segmenter(_config(), model=merged)
    first, second = _raw_set(1), _raw_set(2)
    labels, confidence = engine.segment(first)
    kept = labels.copy(), confidence.copy()
    engine.segment(second)  # refills the pinned buffer while the first set's results must stay as they were
    np.testing.assert_array_equal(labels, kept[0])
    np.testing.assert_array_equal(confidence, kept[1])
    np.testing.assert_array_equal(engine.segment(first)[0], kept[0])
    assert engine._host_inputs and all(buffer.is_pinned() for buffer in engine._host_inputs.values())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_equal_eager_and_outputs_survive_the_next_replay(models, precision: str) -> None:
    _, merged = models
    eager = Segmenter(_config(precision=precision, cuda_graphs=False), model=merged)
    graphed = Segmenter(_config(precision=precision), model=merged)  # captures the 4-modality graph at start
    assert graphed._graphs is not None and graphed._graphs.captured_shapes == [(1, 4, 3, SIZE, SIZE)]
    frames, other = _frames(2), _frames(3)
    out_a = graphed.logits(frames)
    out_b = graphed.logits(other)  # a replay rewrites the graph's output buffer: out_a must not change
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    torch.testing.assert_close(out_a, eager.logits(frames), rtol=0, atol=tolerance)
    torch.testing.assert_close(out_b, eager.logits(other), rtol=0, atol=tolerance)
    two = graphed.logits(frames[:, :2])  # another modality count: a second graph
    assert len(graphed._graphs.captured_shapes) == 2
    torch.testing.assert_close(two, eager.logits(frames[:, :2]), rtol=0, atol=tolerance)


# ------------------------------------------------------------------------------------------- training
def _train_config(tmp_path: Path, **overrides):
    return load_config(
        None,
        {
            "model.image_size": 256,
            "data.synthetic_height": 256,
            "data.synthetic_width": 256,
            "data.synthetic_train_size": 8,
            "data.synthetic_val_size": 2,
            "train.crop_size": 256,
            "train.batch_size": 2,
            "train.epochs": 2,
            "train.eval_every": 2,
            "train.output_dir": str(tmp_path),
            "inference.device": "cuda",
            **overrides,
        },
    )


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_learn(tmp_path: Path, amp: str) -> None:
    trainer = Trainer(_train_config(tmp_path, **{"train.amp": amp, "train.epochs": 20, "train.warmup_epochs": 0.25}))
    trainer.sampler.set_epoch(0)
    batch = trainer.train_set[0], trainer.train_set[1]
    batch = {key: torch.stack([item[key] for item in batch]).cuda() for key in ("frames", "labels")}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    losses = [trainer.train_step(batch)["loss"] for _ in range(15)]
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    # every parameter with a gradient is updated (mask_downsample, no_mem_pos_enc and the single-mask token's
    # hypernetwork are trainable in SAM 2 but unused by the prompt-free multimask forward: no or zero gradient)
    reached = {
        n: p
        for n, p in trainer.model.named_parameters()
        if p.requires_grad and p.grad is not None and torch.count_nonzero(p.grad) > 0
    }
    assert len(reached) > 0.9 * len(before)
    assert [n for n, p in reached.items() if torch.equal(p, before[n])] == []
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    if amp == "fp16":
        assert 0 < trainer.scaler.get_scale() < float("inf")
    trainer.writer.close()


class _Crash(RuntimeError):
    pass


class _CrashingTrainer(Trainer):
    """Dies at the start of step ``crash_at + 1``, after the last mid-epoch save: a killed run, in-process."""

    crash_at = 3

    def train_step(self, batch):
        if self.progress.step == self.crash_at:
            raise _Crash
        return super().train_step(batch)


def test_resume_on_cuda_reaches_the_uninterrupted_weights(tmp_path: Path) -> None:
    overrides = {"train.deterministic": True, "train.amp": "bf16", "train.checkpoint_every_iters": 2}

    def final_weights(run: str, crash: bool = False) -> dict[str, torch.Tensor]:
        cfg = _train_config(tmp_path / run, **overrides)
        if crash:
            trainer = _CrashingTrainer(cfg)
            with pytest.raises(_Crash):
                trainer.fit()
            trainer.writer.close()
            assert read_memsam_checkpoint(tmp_path / run / "last.pt")["step"] == 2  # mid-epoch save
            trainer = Trainer(cfg, resume=tmp_path / run / "last.pt")
        else:
            trainer = Trainer(cfg)
        trainer.fit()
        return read_memsam_checkpoint(tmp_path / run / "last.pt")["model"]

    full, again, resumed = final_weights("full"), final_weights("again"), final_weights("resumed", crash=True)
    noise = max((full[k].float() - again[k].float()).abs().max().item() for k in full)
    diff = max((full[k].float() - resumed[k].float()).abs().max().item() for k in full)
    print(f"RESULT resume on CUDA: max |resumed - uninterrupted| {diff:.3g}; run-to-run {noise:.3g}")
    if noise == 0.0:
        assert diff == 0.0, f"deterministic kernels, yet the resumed weights differ by {diff}"
    else:
        assert diff <= 10 * noise, f"resume differs by {diff}, more than run-to-run noise {noise}"


def test_torchrun_one_process_trains_under_ddp_over_nccl(tmp_path: Path) -> None:
    sets = [
        "model.image_size=256",
        "data.synthetic_height=256",
        "data.synthetic_width=256",
        "data.synthetic_train_size=4",
        "data.synthetic_val_size=2",
        "train.crop_size=256",
        "train.batch_size=2",
        "train.epochs=1",
        "train.amp=bf16",
        f"train.output_dir={tmp_path}",
        "inference.device=cuda",
    ]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "-m", "memsam_training.train"]
    result = subprocess.run(
        command + [arg for item in sets for arg in ("--set", item)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DDP over nccl" in result.stderr, result.stderr[-3000:]
    assert read_memsam_checkpoint(tmp_path / "last.pt")["world_size"] == 1
