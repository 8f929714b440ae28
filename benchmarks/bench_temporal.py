"""Does memory across time help?  Train MemorySAM with K = 0 and K ≥ 1 past instants on the same clips and compare.

Both variants train on the same synthetic clips (``data.clip_length`` T consecutive instants of one world with ego
and object motion; modality dropout ``--p`` takes a sensor out for runs of ≥ 2 consecutive instants), with the
same seed, schedule and iteration count; only ``model.temporal_memory`` differs. Each is scored through the
engine's stream path (``Segmenter.segment_instant``, memory reset between clips) on held-out clips of
``--eval-length`` instants under fog and night, with the same sensor-dropout schedule for both (each non-RGB sensor
missing with probability ``--eval-p`` per clip, for a run of ``--eval-min-run`` or more instants):

* mIoU % on every instant, and on the instants with a sensor missing;
* mVC8 % (VSPW's video consistency over windows of 8 instants) and flicker = 1 - mVC8;
* the time per set (engine, one 4-modality set after another, ``--timing-sets`` each, medians), as a ratio to
  K = 0, at the training size and at 512 px (random weights: time does not depend on them), in this one process.

    python benchmarks/bench_temporal.py --threads 1                       # 45 min on 2 shared CPU cores
    python benchmarks/bench_temporal.py --epochs 1 --train-size 2 --val-size 2 --eval-length 9 --timing-sets 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_training_budget_args, machine_description, synthetic_training

from memsam_core.config import load_config
from memsam_core.data.synthetic import SceneConfig, SyntheticDataset
from memsam_core.engine import Segmenter
from memsam_core.model import build_memorysam
from memsam_training.data import VAL_SEED_OFFSET
from memsam_training.evaluate import EvalDropout, eval_config, evaluate
from memsam_training.train import Trainer

MODALITIES = ["rgb", "depth", "lidar", "event"]
EVAL_CONDITIONS = ["fog", "night"]
TIMING_SIZE = 512


def train_variant(k: int, args: argparse.Namespace, out_root: Path) -> tuple[Trainer, float]:
    overrides = {
        **synthetic_training(args, MODALITIES, out_root / f"k{k}"),
        "model.temporal_memory": k,
        "data.clip_length": args.clip_length,
        "train.modality_dropout": args.p,
        "train.dropout_min_instants": 2,
        "train.spmm_scale": 10.0,
    }
    trainer = Trainer(load_config(None, overrides))
    start = time.perf_counter()
    for epoch in range(args.epochs):  # no per-epoch evaluation: the scoring below is the benchmark's
        trainer.train_one_epoch(epoch)
        trainer.progress.epoch, trainer.progress.iteration = epoch + 1, 0
    return trainer, time.perf_counter() - start


def held_out(args: argparse.Namespace) -> SyntheticDataset:
    """Fog and night clips never trained on (the validation seeds), ``--eval-length`` instants each."""
    return SyntheticDataset(
        args.val_size,
        SceneConfig(height=args.image_size, width=args.image_size),
        seed_offset=VAL_SEED_OFFSET,
        modalities=MODALITIES,
        conditions=EVAL_CONDITIONS,
        clip_length=args.eval_length,
    )


def score(trainer: Trainer, dataset: SyntheticDataset, args: argparse.Namespace) -> dict:
    dropout = EvalDropout(args.eval_p, args.eval_min_run, seed=args.seed)
    start = time.perf_counter()
    report = evaluate(trainer.model, dataset, trainer.cfg, trainer.device, dropout=dropout)
    return {
        "miou": report["miou"],
        "miou_missing": report["miou_missing"],
        "miou_complete": report["miou_complete"],
        "mvc8": report["mvc8"],
        "vc_windows": report["vc_windows"],
        "instants": report["instants"],
        "instants_missing": report["instants_missing"],
        **{c: report["per_condition"].get(c, {}).get("miou") for c in EVAL_CONDITIONS},
        "eval_s": time.perf_counter() - start,
    }


def time_per_set(segmenter: Segmenter, sets: list[dict], repeats: int) -> float:
    """Median ms per set of ``segment_instant`` over a stream (memory filling up as in the node), warm-up excluded."""
    segmenter.reset("new_stream")
    for frames in sets[:2]:
        segmenter.segment_instant(frames, confidence=False)
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        segmenter.segment_instant(sets[i % len(sets)], confidence=False)
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def timing_rows(trainers: dict[int, Trainer], dataset: SyntheticDataset, args: argparse.Namespace) -> dict:
    """ms per set for every K at the training size (trained weights) and at 512 px (random weights), interleaved
    so that a change in machine load hits both."""
    clip = dataset[0]["instants"]
    small = [{m: s["frames"][m] for m in MODALITIES} for s in clip]
    big_scene = SceneConfig(height=TIMING_SIZE, width=TIMING_SIZE, condition="night")
    big = [dict(SyntheticDataset(1, big_scene, clip_length=3, modalities=MODALITIES)[0]["instants"][i]["frames"])
           for i in range(3)]  # fmt: skip
    engines = {}
    for k, trainer in trainers.items():
        engines[(k, args.image_size)] = Segmenter(eval_config(trainer.cfg, trainer.device), model=trainer.model)
        big_cfg = load_config(None, {"model.image_size": TIMING_SIZE, "model.temporal_memory": k,
                                     "inference.device": "cpu"})  # fmt: skip
        engines[(k, TIMING_SIZE)] = Segmenter(big_cfg, model=build_memorysam(big_cfg.model, seed=args.seed))
    times: dict[tuple[int, int], list[float]] = {key: [] for key in engines}
    for _ in range(args.timing_rounds):
        for (k, size), engine in engines.items():
            sets = small if size == args.image_size else big
            repeats = args.timing_sets if size == args.image_size else max(3, args.timing_sets // 4)
            times[(k, size)].append(time_per_set(engine, sets, repeats))
    return {f"k{k}_{size}px_ms": statistics.median(v) for (k, size), v in times.items()}


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict], timing: dict, image_size: int) -> str:
    base = rows[0]
    lines = [
        "| K | mIoU all | mIoU, a sensor missing | mIoU, none missing | fog | night | mVC8 | flicker (1 − mVC8) | "
        f"time per set {image_size} px | time per set {TIMING_SIZE} px |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        k = row["k"]
        small, big = timing[f"k{k}_{image_size}px_ms"], timing[f"k{k}_{TIMING_SIZE}px_ms"]
        small0, big0 = timing[f"k0_{image_size}px_ms"], timing[f"k0_{TIMING_SIZE}px_ms"]
        flicker = None if row["mvc8"] is None else 1 - row["mvc8"]
        lines.append(
            f"| {k} | {pct(row['miou'])} | {pct(row['miou_missing'])} | {pct(row['miou_complete'])} | "
            f"{pct(row['fog'])} | {pct(row['night'])} | {pct(row['mvc8'])} | {pct(flicker)} | "
            f"{small:.0f} ms ({small / small0:.2f}×) | {big:.0f} ms ({big / big0:.2f}×) |"
        )
    for row in rows[1:]:
        missing = 100 * (row["miou_missing"] - base["miou_missing"])
        flicker0, flicker = 1 - base["mvc8"], 1 - row["mvc8"]
        change = (flicker - flicker0) / flicker0 if flicker0 else float("nan")
        ratio = timing[f"k{row['k']}_{image_size}px_ms"] / timing[f"k0_{image_size}px_ms"]
        lines.append(
            f"\nK = {row['k']} vs K = 0: mIoU with a sensor missing {missing:+.1f} points (goal +2), flicker "
            f"{100 * change:+.0f} % (goal −30 %), time per set {ratio:.2f}× (goal ≤ 1.3×)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=2, help="past instants of the temporal variant")
    parser.add_argument("--clip-length", type=int, default=3, help="training clip length T (>= k + 1)")
    parser.add_argument("--p", type=float, default=0.5, help="training modality dropout per sensor and clip")
    parser.add_argument("--eval-length", type=int, default=12, help="instants per held-out clip (> 8 for mVC8)")
    parser.add_argument("--eval-p", type=float, default=0.5, help="held-out clips: dropout per sensor and clip")
    parser.add_argument("--eval-min-run", type=int, default=3, help="held-out clips: shortest dropout, instants")
    parser.add_argument("--timing-sets", type=int, default=12, help="sets timed per K and round at the training size")
    parser.add_argument("--timing-rounds", type=int, default=3)
    add_training_budget_args(parser, 3, 96, 12, "held-out clips, fog and night alternating")
    parser.add_argument("--table-from", default="", help="print the table of an earlier run's results.json")
    args = parser.parse_args()
    if args.table_from:
        results = json.loads(Path(args.table_from).read_text())
        table = markdown(results["rows"], results["timing"], results["args"]["image_size"])
        print(f"{results['machine']}\n{results['budget']}\n\n{table}")
        return
    logging.basicConfig(level=logging.WARNING)
    out_root = Path(args.out or tempfile.mkdtemp(prefix="memsam_temporal_"))
    out_root.mkdir(parents=True, exist_ok=True)
    dataset = held_out(args)
    trainers, rows = {}, []
    for k in (0, args.k):
        trainer, train_s = train_variant(k, args, out_root)
        row = {"k": k, "iterations": trainer.progress.step, "train_s": train_s, **score(trainer, dataset, args)}
        print(json.dumps(row), flush=True)
        trainers[k] = trainer
        rows.append(row)
    timing = timing_rows(trainers, dataset, args)
    print(json.dumps(timing), flush=True)
    budget = (
        f"{rows[0]['iterations']} iterations each ({args.epochs} epochs x {args.train_size} clips of "
        f"{args.clip_length} instants, batch {args.batch_size}), {args.image_size} px, hiera tiny, lr {args.lr:g}, "
        f"seed {args.seed}, modality dropout {args.p:g} per sensor and clip (runs of >= 2 instants); held-out "
        f"{args.val_size} clips x {args.eval_length} instants (fog, night), each non-RGB sensor missing with "
        f"p {args.eval_p:g} per clip for >= {args.eval_min_run} instants ({rows[0]['instants_missing']} of "
        f"{rows[0]['instants']} instants with a sensor missing); train s {rows[0]['train_s']:.0f} / "
        f"{rows[1]['train_s']:.0f}"
    )
    table = markdown(rows, timing, args.image_size)
    print(f"\n{machine_description()}\n{budget}\n\n{table}")
    results = {"args": vars(args), "machine": machine_description(), "budget": budget, "rows": rows, "timing": timing}
    (out_root / "results.json").write_text(json.dumps(results, indent=2))
    (out_root / "table.md").write_text(f"{budget}\n\n{table}\n")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
