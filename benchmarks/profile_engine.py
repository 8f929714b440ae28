"""Where one set's time goes on the GPU: kernel time vs launch gaps, kernel count, the top kernels (torch.profiler).

Profiles ``--sets`` engine calls after a warm-up and reads the Chrome trace: the union of CUDA kernel intervals is
the GPU's busy time; the rest of the span from the first kernel to the last is idle (the host launching, Python,
synchronisation). A set whose busy time is far below its wall time is launch-bound (CUDA graphs help); one whose
busy time is close to its wall time is kernel-bound (fusion, precision, fewer FLOPs help).

    python benchmarks/profile_engine.py --precision bf16 --size 1024 --modalities 4 --trace trace.json.gz
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_config, machine_description, sync

from memsam_core.engine import Segmenter, resolve_device
from memsam_core.model import build_memorysam
from memsam_core.model.lora import merge_lora


def busy_time_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def summarise_trace(trace: dict, sets: int) -> dict:
    """Busy/idle split, launches and the top kernels of a Chrome trace exported by torch.profiler."""
    events = trace.get("traceEvents", [])
    kernels = [e for e in events if e.get("cat") == "kernel" and "dur" in e]
    launches = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver") and "Launch" in e.get("name", "")]
    if not kernels:
        return {"error": "no CUDA kernels in the trace"}
    intervals = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels]
    span = max(end for _, end in intervals) - min(start for start, _ in intervals)
    busy = busy_time_us(intervals)
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        per_name[e["name"]][0] += float(e["dur"])
        per_name[e["name"]][1] += 1
    top = sorted(per_name.items(), key=lambda item: -item[1][0])[:15]
    return {
        "span_ms_per_set": span / 1000 / sets,
        "kernel_busy_ms_per_set": busy / 1000 / sets,
        "idle_ms_per_set": (span - busy) / 1000 / sets,
        "kernels_per_set": len(kernels) / sets,
        "launch_calls_per_set": len(launches) / sets,
        "top_kernels": [
            {"name": name[:110], "ms_per_set": total / 1000 / sets, "calls_per_set": count / sets}
            for name, (total, count) in top
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--modalities", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    parser.add_argument("--sam2-config", default="sam2.1_hiera_t")
    parser.add_argument("--compile-mode", default="", help="profile a compiled engine (default / reduce-overhead / …)")
    parser.add_argument("--cuda-graphs", choices=["on", "off"], default="off", help="inference.cuda_graphs")
    parser.add_argument("--sets", type=int, default=5)
    parser.add_argument("--trace", help="write the (gzipped) Chrome trace here")
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    config = benchmark_config(
        args.size,
        sam2_config=args.sam2_config,
        device=str(device),
        precision=args.precision,
        compile=bool(args.compile_mode),
        compile_mode=args.compile_mode or "default",
        cuda_graphs=args.cuda_graphs == "on",
    )
    model = build_memorysam(copy.deepcopy(config.model), seed=0)
    merge_lora(model)
    segmenter = Segmenter(config, model=model)
    frames = torch.randn(1, args.modalities, 3, args.size, args.size).to(device)
    for _ in range(3):
        segmenter.logits(frames)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.sets):
        segmenter.logits(frames)
    sync(device)
    wall_ms = (time.perf_counter() - start) * 1000 / args.sets
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.sets):
            segmenter.logits(frames)
        sync(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        raw = path.read_bytes()
    if args.trace:
        Path(args.trace).write_bytes(gzip.compress(raw))
    summary = {
        "machine": machine_description(),
        "what": f"{args.sam2_config} {args.size}² x{args.modalities} {args.precision}"
        + (f" compile {args.compile_mode}" if args.compile_mode else "")
        + (" CUDA graphs" if args.cuda_graphs == "on" else " eager"),
        "wall_ms_per_set_unprofiled": wall_ms,
        **summarise_trace(json.loads(raw), args.sets),
    }
    print(f"# {summary['machine']}")
    print(f"# {summary['what']}: wall {wall_ms:.2f} ms/set (unprofiled)")
    if "error" in summary:
        print(f"# {summary['error']}")
    else:
        print(
            f"# GPU span {summary['span_ms_per_set']:.2f} ms/set = kernels busy {summary['kernel_busy_ms_per_set']:.2f}"
            f" + idle {summary['idle_ms_per_set']:.2f}; {summary['kernels_per_set']:.0f} kernels and "
            f"{summary['launch_calls_per_set']:.0f} launch calls per set"
        )
        print("| kernel | ms/set | calls/set |")
        print("|---|---|---|")
        for row in summary["top_kernels"]:
            print(f"| {row['name']} | {row['ms_per_set']:.3f} | {row['calls_per_set']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
