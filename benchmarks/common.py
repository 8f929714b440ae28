"""Shared benchmark helpers: timing with device sync, peak memory, and a one-line machine description."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


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


# CPU features that decide whether bf16 is fast on this CPU (oneDNN uses them for bf16 GEMMs)
_BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16")


def machine_description() -> str:
    """CPU model, the bf16-relevant ISA flags, threads, torch and GPU: enough to compare two tables."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            lines = info.read().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        flags = {flag for line in lines if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
        if names:
            cpu = names[0]
    except OSError:
        pass
    isa = "/".join(flag for flag in _BF16_FLAGS if flag in flags) or "no avx512/bf16"
    text = f"{cpu} ({isa}), {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return text
