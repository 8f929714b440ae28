"""Training throughput: the real ``Trainer.train_step`` (OHEM + SPMM, AdamW, AMP, grad clipping) on synthetic scenes.

A few distinct augmented batches are built through the real data pipeline (``TrainTensors``) first and kept on the
device, so the figure is the GPU's training speed, not the synthetic renderer's (which is ≈1 s per 1024² scene per
CPU core; DELIVER's PNG decoding is a different cost). The data pipeline's own rate is printed beside it. Under
``torchrun`` the Trainer joins a process group (NCCL on CUDA) and trains under DDP.

    python benchmarks/bench_training.py --size 1024 --amp bf16 --iters 100               # one GPU
    torchrun --nproc_per_node=1 benchmarks/bench_training.py --size 1024 --amp bf16      # DDP + NCCL
    python benchmarks/bench_training.py --device cpu --size 128 --iters 4 --batch 1      # dry run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, peak_rss_mib, sync

from memsam_core.config import load_config
from memsam_training.data import collate_train
from memsam_training.train import Trainer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--sam2-config", default="sam2.1_hiera_t")
    parser.add_argument("--size", type=int, default=1024, help="crop = network input size (px)")
    parser.add_argument("--modalities", default="rgb,depth,lidar,event")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="bf16")
    parser.add_argument("--batch", type=int, default=4, help="per process (the paper: 4 per GPU)")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (cuDNN/cuBLAS set-up)")
    parser.add_argument("--pool", type=int, default=4, help="distinct augmented batches, cycled")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="data workers for the pool")
    parser.add_argument("--no-spmm", action="store_true")
    parser.add_argument("--json", help="append the result as one JSON line to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modalities = args.modalities.split(",")
    total_iters = args.warmup + args.iters
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            None,
            {
                "model.sam2_config": args.sam2_config,
                "model.image_size": args.size,
                "model.modalities": modalities,
                "data.synthetic_height": args.size,
                "data.synthetic_width": args.size,
                # pool * batch * ranks samples: one epoch = the pool; warm-up over the first epoch, poly after
                "data.synthetic_train_size": args.pool * args.batch * int(os.environ.get("WORLD_SIZE", "1")),
                "data.synthetic_val_size": 1,
                "train.crop_size": args.size,
                "train.batch_size": args.batch,
                "train.amp": args.amp,
                "train.spmm": not args.no_spmm,
                "train.epochs": math.ceil(total_iters / args.pool),
                "train.output_dir": tmp,
                "inference.device": args.device,
            },
        )
        trainer = Trainer(cfg)
        device = trainer.device
        trainer.sampler.set_epoch(0)
        start = time.perf_counter()
        loader = DataLoader(
            trainer.train_set, batch_sampler=trainer.sampler, collate_fn=collate_train, num_workers=args.workers
        )
        pool = [{k: v.to(device) for k, v in b.items() if k != "meta"} for b in loader]
        data_s = time.perf_counter() - start
        scenes_per_s = len(pool) * args.batch / data_s
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        losses, times = [], []
        for step in range(total_iters):
            sync(device)
            t0 = time.perf_counter()
            losses.append(trainer.train_step(pool[step % len(pool)])["loss"])  # .item() inside: synchronises
            sync(device)
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else peak_rss_mib() / 1024
        if trainer.writer is not None:
            trainer.writer.close()
    world, backend = trainer.world, dist.get_backend() if dist.is_initialized() else "none"
    if dist.is_initialized():
        dist.destroy_process_group()
    if trainer.rank != 0:
        return 0
    window = max(1, min(10, len(losses) // 4))
    first, last = statistics.mean(losses[:window]), statistics.mean(losses[-window:])
    iter_s = statistics.median(times)
    result = {
        "machine": machine_description(),
        "sam2_config": args.sam2_config,
        "size": args.size,
        "modalities": len(modalities),
        "amp": args.amp + ("+GradScaler" if args.amp == "fp16" else ""),
        "spmm": not args.no_spmm,
        "batch_per_process": args.batch,
        "processes": world,
        "ddp_backend": backend,
        "iters": args.iters,
        "iter_per_s": 1.0 / iter_s,
        "sets_per_s": args.batch * world / iter_s,
        "images_per_s": args.batch * world * len(modalities) / iter_s,
        "peak_gib": peak,
        "loss_first": first,
        "loss_last": last,
        "loss_falls": last < first,
        "grad_scale": float(trainer.scaler.get_scale()) if trainer.scaler.is_enabled() else None,
        "data_scenes_per_s": scenes_per_s,
        "data_workers": args.workers,
    }
    print(f"# {result['machine']}")
    print("| model | amp | procs (DDP) | batch | it/s | sets/s | images/s | peak GiB | loss first→last | falls |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.sam2_config} {args.size}² ×{len(modalities)} | {result['amp']} | {world} "
        f"({result['ddp_backend']}) | {args.batch} | {result['iter_per_s']:.2f} | {result['sets_per_s']:.2f} "
        f"| {result['images_per_s']:.1f} | {peak:.1f} | {first:.3f}→{last:.3f} | {'yes' if last < first else 'NO'} |"
    )
    print(f"# data pipeline: {scenes_per_s:.1f} synthetic scenes/s with {args.workers} workers (not in the timing)")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as out:
            out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
