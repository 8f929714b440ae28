"""Validation through the one inference path (``Segmenter(config, model=model)``), per class, condition,
DELIVER failure case and modality subset.

Each DDP rank scores its shard of the validation set; the confusion matrices are summed over ranks,
so every rank returns the same report.  Scored at the label resolution (the engine returns labels at
the RGB resolution), ignore pixels (255) excluded.

Clips (a dataset with ``clip_length > 1``): each clip is one stream through the engine
(:meth:`~memsam_core.engine.Segmenter.segment_instant`, memory reset between clips), every instant scored; the
report adds mVC8 (VSPW's video consistency, :class:`~memsam_core.metrics.VideoConsistency`) over clips longer
than 8 instants, and mIoU on the instants with a sensor missing and on those with none (``miou_missing``,
``miou_complete``). ``dropout`` takes sensors out for runs of instants, the same schedule for every model scored
(:func:`memsam_training.data.clip_dropout` seeded by the clip's index).

``python -m memsam_training.evaluate --config C --checkpoint best.pt --subsets`` scores a checkpoint on
the configured validation set with every modality subset that contains RGB (a missing sensor is a
missing frame) and prints the table per condition and per failure case.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from memsam_core.config import ConfigError, MemSamConfig, load_config, parse_overrides
from memsam_core.data.deliver import DELIVER_CASES, NORMAL_CASE
from memsam_core.data.synthetic import CONDITIONS
from memsam_core.engine import Segmenter, resolve_device
from memsam_core.metrics import ConfusionMatrix, VideoConsistency
from memsam_core.model import MemorySAM
from memsam_training.data import clip_dropout, collate_raw

LOG = logging.getLogger(__name__)
CASES: tuple[str, ...] = (NORMAL_CASE, *DELIVER_CASES)
"""DELIVER's failure cases (MB, OE, UE, LJ, EL) plus ``normal``; synthetic scenes use the same names."""
OTHER = "other"
VC_WINDOW = 8  # mVC8


@dataclass(frozen=True)
class EvalDropout:
    """Sensors taken out of evaluation clips: probability per sensor and clip, shortest run, schedule seed."""

    p: float
    min_instants: int = 2
    seed: int = 0

    def keep(self, modalities: Sequence[str], index: int, length: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, index])
        return clip_dropout(modalities, length, self.p, self.min_instants, rng)


def eval_config(cfg: MemSamConfig, device: torch.device) -> MemSamConfig:
    """The config the engine gets during training: the training device, no compile, matching precision."""
    out = cfg.model_copy(deep=True)
    out.inference.device = str(device)
    out.inference.compile = False
    out.inference.precision = "bf16" if cfg.train.amp == "bf16" else "fp32"
    out.inference.threads = 0  # threads were set by the trainer
    return out


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def modality_subsets(modalities: Sequence[str], keep: str = "rgb") -> list[tuple[str, ...]]:
    """Every subset of ``modalities`` that contains ``keep``, in frame order, largest first."""
    others = [m for m in modalities if m != keep]
    subsets = [
        tuple(m for m in modalities if m == keep or m in chosen)
        for size in range(len(others), -1, -1)
        for chosen in itertools.combinations(others, size)
    ]
    return subsets if keep in modalities else [tuple(modalities)]


def subset_name(subset: Sequence[str]) -> str:
    return "+".join(subset)


@torch.no_grad()
def evaluate(
    model: MemorySAM,
    dataset: Dataset,
    cfg: MemSamConfig,
    device: torch.device,
    modalities: Sequence[str] | None = None,
    dropout: EvalDropout | None = None,
) -> dict[str, Any]:
    """mIoU overall, per class, per condition and per failure case (``{"miou", "miou_present", "per_class",
    "per_condition", "per_case"}``), with only ``modalities`` given to the model (default: all configured).

    ``miou`` is the reference protocol (NaN → 0, mean over all classes); ``miou_present`` averages only
    classes seen in target or prediction.  The model is left in eval mode; the caller switches back.
    """
    rank, world = _distributed()
    segmenter = Segmenter(eval_config(cfg, device), model=model)
    num_classes = cfg.model.num_classes
    conditions, cases = [*CONDITIONS, OTHER], [*CASES, OTHER]  # same names in DELIVER and the synthetic scenes
    grid = [[ConfusionMatrix(num_classes) for _ in cases] for _ in conditions]
    shard = Subset(dataset, list(range(rank, len(dataset), world)))  # type: ignore[arg-type]
    loader = DataLoader(
        shard,
        batch_size=cfg.train.batch_size,
        collate_fn=collate_raw,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator(),  # leaves the global RNG (dropout) untouched
    )
    keep = None if modalities is None else set(modalities)

    def cell(meta: dict[str, Any]) -> ConfusionMatrix:
        row = conditions.index(meta.get("condition")) if meta.get("condition") in conditions else -1
        col = cases.index(meta.get("case")) if meta.get("case") in cases else -1
        return grid[row][col]

    clips = _ClipScores(num_classes) if getattr(dataset, "clip_length", 1) > 1 else None
    for samples in loader:
        if clips is not None:
            for clip in samples:
                clips.score(segmenter, clip, cfg.model.modalities, keep, dropout, cell)
            continue
        sets = [{m: a for m, a in s["frames"].items() if keep is None or m in keep} for s in samples]
        for sample, result in zip(samples, segmenter.segment_batch(sets)):
            cell(sample["meta"]).update(result.labels, sample["labels"])
    hist = torch.stack([m.hist for row in grid for m in row])
    if world > 1:
        dist.all_reduce(hist)
    for matrix, counts in zip((m for row in grid for m in row), hist):
        matrix.hist.copy_(counts)
    names = list(cfg.classes.names)

    def merged(matrices) -> ConfusionMatrix:
        total = ConfusionMatrix(num_classes)
        for matrix in matrices:
            total.merge(matrix)
        return total

    report = merged(m for row in grid for m in row).to_dict(names)
    by_condition = {c: merged(grid[i]) for i, c in enumerate(conditions)}
    by_case = {c: merged(row[j] for row in grid) for j, c in enumerate(cases)}
    report["per_condition"] = {c: m.to_dict(names) for c, m in by_condition.items() if int(m.hist.sum()) > 0}
    report["per_case"] = {c: m.to_dict(names) for c, m in by_case.items() if int(m.hist.sum()) > 0}
    report["modalities"] = list(modalities or cfg.model.modalities)
    report["samples"] = len(dataset)  # type: ignore[arg-type]
    if clips is not None:
        report.update(clips.report(names, world))
    return report


class _ClipScores:
    """What clip evaluation adds: mVC8, and mIoU split by whether a sensor was missing at the instant."""

    def __init__(self, num_classes: int) -> None:
        self.consistency = VideoConsistency(VC_WINDOW)
        self.missing, self.complete = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
        self.instants, self.instants_missing = 0, 0

    def score(
        self,
        segmenter: Segmenter,
        clip: dict[str, Any],
        modalities: Sequence[str],
        keep: set[str] | None,
        dropout: EvalDropout | None,
        cell: Any,
    ) -> None:
        """One clip as one stream (memory reset first), every instant scored where its condition/case says."""
        instants = clip["instants"]
        given = [m for m in modalities if keep is None or m in keep]
        schedule = dropout.keep(given, clip["meta"]["index"], len(instants)) if dropout else None
        segmenter.reset("new_stream")
        labels, predictions = [], []
        for t, sample in enumerate(instants):
            kept = given if schedule is None else [given[i] for i in schedule[t]]
            frames = {m: sample["frames"][m] for m in kept}
            result = segmenter.segment_instant(frames, sample["meta"].get("stamp_s"), confidence=False)
            cell(sample["meta"]).update(result.labels, sample["labels"])
            lacking = len(kept) < len(modalities)
            (self.missing if lacking else self.complete).update(result.labels, sample["labels"])
            self.instants_missing += int(lacking)
            labels.append(sample["labels"])
            predictions.append(result.labels)
            self.instants += 1
        self.consistency.add_clip(labels, predictions)

    def report(self, names: list[str], world: int) -> dict[str, Any]:
        hist = torch.stack([self.missing.hist, self.complete.hist])
        counts = [*self.consistency.state, self.instants, self.instants_missing]
        consistency = torch.tensor(counts, dtype=torch.float64)
        if world > 1:
            dist.all_reduce(hist)
            dist.all_reduce(consistency)
        self.missing.hist.copy_(hist[0])
        self.complete.hist.copy_(hist[1])
        total, windows, instants, instants_missing = consistency.tolist()
        merged = VideoConsistency(VC_WINDOW)
        merged.merge(total, int(windows))
        return {
            "mvc8": None if not merged.windows else round(merged.value, 6),
            "vc_windows": int(windows),
            "instants": int(instants),
            "miou_missing": self.missing.to_dict(names)["miou"] if self.missing.hist.sum() else None,
            "miou_complete": self.complete.to_dict(names)["miou"] if self.complete.hist.sum() else None,
            "instants_missing": int(instants_missing),
        }


def evaluate_subsets(
    model: MemorySAM, dataset: Dataset, cfg: MemSamConfig, device: torch.device
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate` for every modality subset that contains RGB (``{"rgb+depth": report, ...}``)."""
    return {
        subset_name(subset): evaluate(model, dataset, cfg, device, subset)
        for subset in modality_subsets(cfg.model.modalities)
    }


def summary_line(report: dict[str, Any]) -> str:
    """``mIoU 41.2 (present 55.0) | sun 50.1 night 30.2 ...`` in percent, for logs."""
    parts = [f"mIoU {100 * (report['miou'] or 0):.2f} (present {100 * (report['miou_present'] or 0):.2f})"]
    conditions = " ".join(f"{c} {100 * (r['miou'] or 0):.2f}" for c, r in report["per_condition"].items())
    return " | ".join([*parts, conditions]) if conditions else parts[0]


def subsets_table(reports: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per modality subset, mIoU % overall, per condition and per failure case present."""
    conditions = [c for c in [*CONDITIONS, OTHER] if any(c in r["per_condition"] for r in reports.values())]
    cases = [c for c in [*CASES, OTHER] if any(c in r["per_case"] for r in reports.values())]

    def pct(report: dict[str, Any] | None) -> str:
        return "–" if report is None else f"{100 * (report['miou'] or 0):.1f}"

    columns = [*conditions, *cases]
    lines = ["| modalities | all | " + " | ".join(columns) + " |", "|---" * (2 + len(columns)) + "|"]
    for name, report in reports.items():
        cells = [pct(report["per_condition"].get(c)) for c in conditions]
        cells += [pct(report["per_case"].get(c)) for c in cases]
        lines.append(f"| {name} | {pct(report)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m memsam_training.evaluate --config C --checkpoint best.pt [--subsets] [--out report.json]``."""
    from memsam_core.model.build import CheckpointError, load_for_config
    from memsam_training.data import raw_dataset

    parser = argparse.ArgumentParser(prog="memsam-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training YAML (its data.* names the validation set)")
    parser.add_argument("--checkpoint", required=True, help="memsam checkpoint (its spec defines the model)")
    parser.add_argument("--subsets", action="store_true", help="every modality subset that contains RGB")
    parser.add_argument("--out", help="write the reports as JSON here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, parse_overrides(args.overrides))
        model, config, _ = load_for_config(args.checkpoint, config, args.config or "<defaults>")
    except (ConfigError, CheckpointError) as err:
        print(f"memsam-evaluate: {err}", file=sys.stderr)
        return 2
    device = resolve_device(config.inference.device)
    model.to(device)
    dataset = raw_dataset(config, train=False)
    subsets = modality_subsets(config.model.modalities) if args.subsets else [tuple(config.model.modalities)]
    reports = {subset_name(s): evaluate(model, dataset, config, device, s) for s in subsets}
    print(subsets_table(reports))
    if args.out:
        Path(args.out).write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
