"""Is a missing sensor learnt?  Train MemorySAM with and without modality dropout and score every sensor subset.

Two variants on synthetic scenes with RGB + depth + LiDAR + events: ``train.modality_dropout`` 0 and
``--p`` (each non-RGB modality left out of a training step with that probability; RGB always kept).
Both get the same data, seed, schedule and iteration count. Each is evaluated through the inference
engine on held-out scenes with every modality subset that contains RGB (a missing sensor is a missing
frame). Prints a Markdown table (mIoU, reference NaN→0 protocol over the 25 DELIVER classes, in %) and
writes JSON with the per-condition numbers.

    python benchmarks/bench_dropout.py --threads 1            # ~25 min on 2 CPU cores
    python benchmarks/bench_dropout.py --epochs 1 --train-size 4 --val-size 5   # smoke run
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
from memsam_training.evaluate import evaluate_subsets
from memsam_training.train import Trainer

MODALITIES = ["rgb", "depth", "lidar", "event"]


def run_variant(name: str, dropout: float, args: argparse.Namespace, out_root: Path) -> dict:
    overrides = {
        **synthetic_training(args, MODALITIES, out_root / name),
        "train.spmm_scale": 10.0,
        "train.modality_dropout": dropout,
    }
    trainer = Trainer(load_config(None, overrides))
    start = time.perf_counter()
    trainer.fit()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    reports = evaluate_subsets(trainer.model, trainer.val_set, trainer.cfg, trainer.device)
    row = {
        "variant": name,
        "modality_dropout": dropout,
        "iterations": trainer.progress.step,
        "train_s": train_s,
        "eval_s": time.perf_counter() - start,
        "subsets": {
            subset: {"miou": r["miou"], **{c: v["miou"] for c, v in r["per_condition"].items()}}
            for subset, r in reports.items()
        },
    }
    print(json.dumps(row), flush=True)
    return row


def markdown(base: dict, dropout: dict) -> str:
    """One row per modality subset: mIoU of both models and each one's loss against its own all-sensor score."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    full = "+".join(MODALITIES)
    base_full, drop_full = base["subsets"][full]["miou"], dropout["subsets"][full]["miou"]
    p = f"p={dropout['modality_dropout']:g}"
    lines = [
        f"| modalities given | missing | no dropout | dropout {p} | loss vs all sensors: no dropout | dropout {p} |",
        "|---|---|---|---|---|---|",
    ]
    pairs = []
    for subset, b in base["subsets"].items():
        b_miou, d_miou = b["miou"], dropout["subsets"][subset]["miou"]
        missing = "+".join(m for m in MODALITIES if m not in subset.split("+")) or "–"
        if missing != "–":
            pairs.append((b_miou, d_miou))
        lines.append(
            f"| {subset} | {missing} | {pct(b_miou)} | {pct(d_miou)} | "
            f"{100 * (b_miou - base_full):+.1f} | {100 * (d_miou - drop_full):+.1f} |"
        )
    mean_b, mean_d = (sum(x) / len(pairs) for x in zip(*pairs))
    lines.append(
        f"| mean of the {len(pairs)} subsets with a sensor missing | | {pct(mean_b)} | {pct(mean_d)} | "
        f"{100 * (mean_b - base_full):+.1f} | {100 * (mean_d - drop_full):+.1f} |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--p", type=float, default=0.5, help="modality dropout probability of the second variant")
    add_training_budget_args(parser, 4, 64, 20, "held-out scenes, cycling the five conditions")
    parser.add_argument("--table-from", default="", help="print the table of an earlier run's results.json")
    args = parser.parse_args()
    if args.table_from:
        results = json.loads(Path(args.table_from).read_text())
        print(f"{results['machine']}\n{results['budget']}\n\n{markdown(*results['rows'])}")
        return
    logging.basicConfig(level=logging.WARNING)
    out_root = Path(args.out or tempfile.mkdtemp(prefix="memsam_dropout_"))
    out_root.mkdir(parents=True, exist_ok=True)
    base = run_variant("no_dropout", 0.0, args, out_root)
    dropout = run_variant(f"dropout_{args.p:g}", args.p, args, out_root)
    table = markdown(base, dropout)
    budget = (
        f"{base['iterations']} iterations each ({args.epochs} epochs x {args.train_size} scenes, batch "
        f"{args.batch_size}), {args.image_size} px, hiera tiny, lr {args.lr:g}, seed {args.seed}; "
        f"val {args.val_size} held-out scenes over the five conditions; train s {base['train_s']:.0f} / "
        f"{dropout['train_s']:.0f}"
    )
    print(f"\n{machine_description()}\n{budget}\n\n{table}")
    results = {"args": vars(args), "machine": machine_description(), "budget": budget, "rows": [base, dropout]}
    (out_root / "results.json").write_text(json.dumps(results, indent=2))
    (out_root / "table.md").write_text(f"{budget}\n\n{table}\n")


if __name__ == "__main__":
    main()
