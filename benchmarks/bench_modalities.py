"""Does fusion help when RGB fails?  Train small MemorySAM variants on synthetic scenes and compare.

Variants: RGB only vs RGB + depth + LiDAR + events, each with SPMM on and off; every variant gets the
same data, seed, schedule and iteration count, and is evaluated (through the inference engine) on
held-out scenes under sun, fog and night.  Prints a Markdown table (mIoU, reference NaN→0 protocol
over the 25 DELIVER classes, in %) and writes JSON.

    python benchmarks/bench_modalities.py                       # ~15 min on 2 CPU cores
    python benchmarks/bench_modalities.py --epochs 1 --train-size 8 --val-size 6   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_training_budget_args, machine_description, synthetic_training

from memsam_core.config import load_config
from memsam_training.data import raw_dataset
from memsam_training.train import Trainer

VARIANTS = {
    "rgb": (["rgb"], False),
    "rgb+spmm": (["rgb"], True),
    "all4": (["rgb", "depth", "lidar", "event"], False),
    "all4+spmm": (["rgb", "depth", "lidar", "event"], True),
}
EVAL_CONDITIONS = ["sun", "fog", "night"]


def run_variant(name: str, args: argparse.Namespace, out_root: Path) -> dict:
    modalities, spmm = VARIANTS[name]
    overrides = {
        **synthetic_training(args, modalities, out_root / name),
        "train.spmm": spmm,
        "train.spmm_scale": args.spmm_scale,
    }
    cfg = load_config(None, overrides)
    trainer = Trainer(cfg)
    # Evaluate only on the benchmark conditions (training still sees all five).
    val_cfg = load_config(None, {**overrides, "data.conditions": EVAL_CONDITIONS})
    trainer.val_set = raw_dataset(val_cfg, train=False)
    start = time.perf_counter()
    report = trainer.fit()
    seconds = time.perf_counter() - start
    assert report is not None
    row = {
        "variant": name,
        "modalities": "+".join(modalities),
        "spmm": spmm,
        "miou": report["miou"],
        "miou_present": report["miou_present"],
        **{c: report["per_condition"].get(c, {}).get("miou") for c in EVAL_CONDITIONS},
        "train_s": seconds,
        "iterations": trainer.progress.step,
    }
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}"

    lines = [
        "| variant | modalities | SPMM | mIoU all | sun | fog | night | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['modalities']} | {'on' if r['spmm'] else 'off'} | {pct(r['miou'])} | "
            f"{pct(r['sun'])} | {pct(r['fog'])} | {pct(r['night'])} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_training_budget_args(parser, 3, 48, 15, "held-out scenes, cycling sun/fog/night")
    parser.add_argument("--spmm-scale", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out_root = Path(args.out or tempfile.mkdtemp(prefix="memsam_bench_"))
    rows = [run_variant(name, args, out_root) for name in args.variants]
    machine = machine_description()
    table = markdown(rows)
    print(
        f"\n{machine}; {args.epochs} epochs x {args.train_size} scenes, {args.image_size} px, "
        f"val {args.val_size} scenes\n\n{table}"
    )
    (out_root / "results.json").write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
