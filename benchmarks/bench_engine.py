"""Naive MemorySAM loop vs the engine, per modality count and image size.

naive  = ``MemorySAM.forward_reference`` on the training model (LoRA unmerged, fp32): one ``forward_image``
         per modality, SAM 2 ``_track_step`` per frame, every frame's memory encoded, full-res logits averaged.
engine = ``Segmenter.logits`` (LoRA merged, batched encoder, no last-frame memory, low-res averaging, the
         chosen precision / torch.compile mode).

    python benchmarks/bench_engine.py                          # CPU, 512 px, 1..4 modalities, 2 repeats
    python benchmarks/bench_engine.py --device cuda --sizes 512 1024 --repeats 20 --precision bf16 --compile
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_config, machine_description, peak_rss_mib, time_call

from memsam_core.config import MemSamConfig
from memsam_core.engine import Segmenter, resolve_device
from memsam_core.model import build_memorysam
from memsam_core.model.lora import merge_lora


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512], help="network input sizes (px)")
    parser.add_argument("--modalities", type=int, nargs="+", default=[1, 2, 3, 4], help="frame counts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="engine precision")
    parser.add_argument("--compile", action="store_true", help="torch.compile the engine (slow first call)")
    parser.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    parser.add_argument("--sam2-config", default="sam2.1_hiera_t")
    parser.add_argument("--num-classes", type=int, default=25)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--cuda-graphs", choices=["on", "off"], default="on", help="inference.cuda_graphs (CUDA)")
    parser.add_argument("--skip-naive", action="store_true", help="engine only (e.g. a long GPU sweep)")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace, size: int, device: str) -> MemSamConfig:
    return benchmark_config(
        size,
        args.num_classes,
        args.sam2_config,
        device=device,
        precision=args.precision,
        compile=args.compile,
        compile_mode=args.compile_mode,
        threads=args.threads,
        cuda_graphs=args.cuda_graphs == "on",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    graphs = device.type == "cuda" and args.cuda_graphs == "on" and not args.compile
    print(
        f"# {machine_description()}; device {device}; engine {args.precision}"
        f"{', compile ' + args.compile_mode if args.compile else ''}{', CUDA graphs' if graphs else ''}; "
        f"{args.sam2_config}, {args.num_classes} classes"
    )
    print("| size | M | naive ms/set | engine ms/set | engine sets/s | speed-up | max |diff| | peak mem MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        naive_model = build_memorysam(_config(args, size, "cpu").model, seed=0).eval().to(device)  # LoRA unmerged
        merged = copy.deepcopy(naive_model)
        merge_lora(merged)
        segmenter = Segmenter(_config(args, size, str(device)), model=merged)
        for count in args.modalities:
            frames = torch.randn(1, count, 3, size, size, generator=torch.Generator().manual_seed(count)).to(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            engine = time_call(lambda s=segmenter, f=frames: s.logits(f), args.repeats, args.warmup, device)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mib()
            naive_ms, ratio, diff = "-", "-", "-"
            if not args.skip_naive:
                with torch.inference_mode():
                    naive = time_call(
                        lambda n=naive_model, f=frames: n.forward_reference(f), args.repeats, args.warmup, device
                    )
                    diff = f"{(naive_model.forward_reference(frames) - segmenter.logits(frames)).abs().max():.1e}"
                naive_ms, ratio = f"{naive.median_ms:.1f}", f"{naive.median_ms / engine.median_ms:.2f}x"
            print(
                f"| {size} | {count} | {naive_ms} | {engine.median_ms:.1f} | {engine.per_second:.2f} | {ratio} "
                f"| {diff} | {peak:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
