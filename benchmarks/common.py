"""Shared benchmark helpers: the benchmark config, timing with device sync, peak memory, a machine description."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memsam_core.config import MemSamConfig
from memsam_core.engine import cpu_has_native_bf16


def benchmark_config(
    image_size: int, num_classes: int = 25, sam2_config: str = "sam2.1_hiera_t", **inference
) -> MemSamConfig:
    """The config every benchmark runs: ``num_classes`` placeholder class names, the given ``inference`` settings.

    Logits are gated by SAM 2's object score as in the naive reference loop, so both paths compute the same
    function even where the (random-weight) object score says "no object" on a frame.
    """
    return MemSamConfig(
        model={
            "sam2_config": sam2_config,
            "image_size": image_size,
            "num_classes": num_classes,
            "gate_logits_by_object_score": True,
        },
        classes={"names": [f"c{i}" for i in range(num_classes)]},
        inference=inference,
    )


@dataclass
class Timing:
    """Wall-clock milliseconds of the timed repeats (warm-up excluded)."""

    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def per_second(self) -> float:
        return 1000.0 / self.median_ms


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so the clock measures it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str | torch.device = "cpu") -> Timing:
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append((time.perf_counter() - start) * 1000.0)
    return Timing(samples)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_description() -> str:
    """CPU model, its SIMD level and whether bf16 is native on it, threads, torch and GPU: enough to compare tables."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    isa = f"{torch.backends.cpu.get_cpu_capability()}, bf16 {'native' if cpu_has_native_bf16() else 'emulated'}"
    text = f"{cpu} ({isa}), {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return text


def add_training_budget_args(parser: Any, epochs: int, train_size: int, val_size: int, val_help: str) -> None:
    """The command-line budget :func:`synthetic_training` reads (defaults per benchmark)."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--train-size", type=int, default=train_size)
    parser.add_argument("--val-size", type=int, default=val_size, help=val_help)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="", help="folder for runs and results.json (default: a temp dir)")


def synthetic_training(args: Any, modalities: list[str], output_dir: Path) -> dict[str, Any]:
    """The training overrides every synthetic-scene benchmark shares: its image size, set sizes, budget (epochs,
    batch, lr), threads, seed and device, from ``args``; the caller adds what its variants change."""
    return {
        "model.image_size": args.image_size,
        "model.modalities": modalities,
        "data.synthetic_height": args.image_size,
        "data.synthetic_width": args.image_size,
        "data.synthetic_train_size": args.train_size,
        "data.synthetic_val_size": args.val_size,
        "train.crop_size": args.image_size,
        "train.epochs": args.epochs,
        "train.eval_every": args.epochs,
        "train.batch_size": args.batch_size,
        "train.lr": args.lr,
        "train.warmup_epochs": 0.5,
        "train.threads": args.threads,
        "train.seed": args.seed,
        "train.output_dir": str(output_dir),
        "inference.device": args.device,
    }
