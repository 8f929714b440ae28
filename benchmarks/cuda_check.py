"""Correctness of the engine's CUDA-only paths, for a machine with a GPU (CI has none; see docs/speed.md).

Checks what the CPU suite cannot reach: fp32 engine = naive path on the GPU, bf16 autocast argmax agreement, the
pinned host buffer + non-blocking upload (results of one set never change when the next is uploaded), and
``torch.compile`` with CUDA graphs (``reduce-overhead``: outputs copied out of the graph's buffers). Prints one
``PASS``/``FAIL`` line per check and exits 1 on any failure.

    python benchmarks/cuda_check.py                      # on a GPU machine
    python benchmarks/cuda_check.py --device cpu --size 128 --no-compile   # dry run of the script itself
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_config

from memsam_core.data.synthetic import SceneConfig, generate_scene
from memsam_core.engine import Segmenter
from memsam_core.model import build_memorysam
from memsam_core.model.lora import merge_lora


def _raw_set(seed: int, size: int) -> dict[str, np.ndarray]:
    """A synthetic scene's modality arrays, as the node hands them to the engine (4:3, network width)."""
    return dict(generate_scene(seed, SceneConfig(height=size * 3 // 4, width=size)).frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile / CUDA graph check")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 comparison must be fp32
    torch.backends.cudnn.allow_tf32 = False
    failures: list[str] = []

    def check(name: str, run: Callable[[], str | None]) -> None:
        start = time.perf_counter()
        try:
            problem = run()
        except Exception as err:  # report and go on: one broken path must not hide the others
            problem = f"{type(err).__name__}: {err}"
        status = "PASS" if problem is None else f"FAIL ({problem})"
        print(f"{status}  {name}  [{time.perf_counter() - start:.1f} s]", flush=True)
        if problem is not None:
            failures.append(name)

    naive = build_memorysam(benchmark_config(args.size, device="cpu").model, seed=0).eval().to(args.device)
    merged = copy.deepcopy(naive)
    merge_lora(merged)
    fp32 = Segmenter(benchmark_config(args.size, device=args.device), model=merged)
    frames = torch.randn(1, 4, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(args.device)
    reference = fp32.logits(frames)

    def engine_equals_naive() -> str | None:
        with torch.inference_mode():
            diff = (naive.forward_reference(frames) - reference).abs().max().item()
        return None if diff < 1e-3 else f"max |diff| {diff:.2e}"

    def bf16_tracks_fp32() -> str | None:
        bf16 = Segmenter(benchmark_config(args.size, device=args.device, precision="bf16"), model=merged)
        approx = bf16.logits(frames)
        agreement = (approx.argmax(1) == reference.argmax(1)).float().mean().item()
        return None if agreement > 0.9 else f"argmax agreement {agreement:.3f}"

    def pinned_upload_keeps_results() -> str | None:
        first, second = _raw_set(1, args.size), _raw_set(2, args.size)
        labels_1, confidence_1 = fp32.segment(first)
        kept = labels_1.copy(), confidence_1.copy()
        fp32.segment(second)  # reuses the pinned buffer while nothing of the first set may change
        if not (np.array_equal(labels_1, kept[0]) and np.array_equal(confidence_1, kept[1])):
            return "a set's results changed when the next set was uploaded"
        again = fp32.segment(first)
        if not np.array_equal(again[0], kept[0]):
            return "same input, different labels after the buffer was reused"
        buffers = list(fp32._host_inputs.values())
        return None if buffers and all(b.is_pinned() for b in buffers) else "host input buffer is not pinned"

    def cuda_graphs_copy_outputs() -> str | None:
        config = benchmark_config(args.size, device=args.device, compile=True, compile_mode="reduce-overhead")
        graphed = Segmenter(config, model=merged)
        other = torch.randn_like(frames)
        out_a = graphed.logits(frames)
        out_b = graphed.logits(other)  # a graph replay reuses its output buffer: out_a must survive it
        diff_a = (out_a - reference).abs().max().item()
        diff_b = (out_b - fp32.logits(other)).abs().max().item()
        return None if max(diff_a, diff_b) < 1e-2 else f"max |diff| vs eager {diff_a:.2e} / {diff_b:.2e}"

    print(f"# {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}, torch {torch.__version__}")
    check("fp32 engine = naive SAM 2 loop (4 modalities)", engine_equals_naive)
    check("bf16 autocast argmax agrees with fp32", bf16_tracks_fp32)
    if args.device.startswith("cuda"):
        check("pinned host buffer + non-blocking upload keep earlier results", pinned_upload_keeps_results)
    if not args.no_compile:
        check("torch.compile reduce-overhead (CUDA graphs) = eager, outputs survive replay", cuda_graphs_copy_outputs)
    print(f"# {len(failures)} failed" + (f": {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
