"""Evaluation report folder: ``report.json`` (everything), ``report.md`` (tables), pictures.

Layout of ``DIR``::

    report.json            overall / per-condition / per-missing-modality mIoU, per-class IoU, confusion matrix,
                           per-frame scores, sync and timing details
    report.md              the same as Markdown tables, with the pictures embedded
    per_class_iou.png      horizontal bar chart of per-class IoU (classes absent from GT and prediction: n/a)
    confusion_matrix.png   row-normalised confusion matrix over the classes that occur
    overlays/*.png         RGB | prediction | ground truth: first frames of every condition and missing-modality case

IoU of a class that appears neither in the ground truth nor in the predictions is undefined (``null``)
and left out of ``miou`` (memsam_core.metrics ``miou()``: the honest number for small per-condition
subsets); ``miou_all_classes`` counts such classes as 0 over all classes, the published DELIVER protocol.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memsam_ros.tools.scoring import ALL_PRESENT, EvaluationRun, FrameRecord, Overlay, compare_runs, confusion_counts

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
IOU_CHART = "per_class_iou.png"
CONFUSION_IMAGE = "confusion_matrix.png"
OVERLAY_DIR = "overlays"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on robots/CI
    import matplotlib.pyplot as plt

    return plt


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def scores(board_confusion: Any, class_names: Sequence[str], frames: int) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU (``None`` = class absent from GT and prediction)."""
    iou = np.asarray(board_confusion.iou(), dtype=np.float64)
    return {
        "frames": frames,
        "miou": _nan_to_none(float(board_confusion.miou())) if frames else None,
        "pixel_accuracy": _nan_to_none(float(board_confusion.pixel_accuracy())) if frames else None,
        "miou_all_classes": float(board_confusion.miou(nan_to_zero=True)) if frames else None,
        "per_class_iou": {name: _nan_to_none(float(v)) for name, v in zip(class_names, iou)},
    }


def _grouped(run: EvaluationRun, attribute: str) -> dict[str, dict[str, Any]]:
    board = run.scoreboard
    groups = board.groups(attribute)
    return {
        key: scores(board.confusion(frames), board.class_names, len(frames)) for key, frames in sorted(groups.items())
    }


def summarize(run: EvaluationRun) -> dict[str, Any]:
    """Everything the report says, as a JSON-serialisable dict."""
    board = run.scoreboard
    model = run.config.model
    return {
        "mode": run.mode,
        "bag": run.bag,
        "checkpoint": run.checkpoint or None,
        "model": {"sam2_config": model.sam2_config, "image_size": model.image_size, "modalities": model.modalities},
        "class_names": board.class_names,
        "wall_s": round(run.wall_s, 3),
        "frames": {
            "evaluated": len(board.frames),
            "ground_truth": board.ground_truth_frames,
            "predictions": board.predictions,
            "ground_truth_without_prediction": board.ground_truth_without_prediction,
            "predictions_without_ground_truth": board.unmatched_predictions,
            "not_scored_invalid": board.invalid_frames,
        },
        "overall": scores(board.confusion(), board.class_names, len(board.frames)),
        "per_condition": _grouped(run, "condition"),
        "per_missing_modalities": _grouped(run, "missing"),
        "confusion_matrix": confusion_counts(board.confusion()).tolist(),
        "details": run.details,
        "per_frame": [_frame_dict(f) for f in board.frames],
    }


def _frame_dict(frame: FrameRecord) -> dict[str, Any]:
    return {
        "stamp_ns": frame.stamp_ns,
        "condition": frame.condition,
        "failures": frame.failures,
        "missing": frame.missing,
        "miou": _nan_to_none(frame.miou),
        "pixel_accuracy": _nan_to_none(frame.pixel_accuracy),
        "inference_ms": frame.inference_ms,
    }


def write_report(folder: str | Path, run: EvaluationRun) -> dict[str, Any]:
    """Write the report folder; returns the summary dict (also in ``report.json``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    board = run.scoreboard
    files = {"json": REPORT_JSON, "markdown": REPORT_MD}
    if board.frames:
        plot_class_iou(folder / IOU_CHART, summary["overall"]["per_class_iou"], f"per-class IoU ({run.mode})")
        plot_confusion(folder / CONFUSION_IMAGE, np.asarray(summary["confusion_matrix"]), board.class_names)
        files |= {"per_class_iou": IOU_CHART, "confusion_matrix": CONFUSION_IMAGE}
    files["overlays"] = [str(p.relative_to(folder)) for p in write_overlays(folder / OVERLAY_DIR, board.overlays)]
    summary["files"] = files
    (folder / REPORT_JSON).write_text(json.dumps(summary, indent=2, allow_nan=False))
    (folder / REPORT_MD).write_text(markdown(summary))
    return summary


def write_comparison(folder: str | Path, offline: EvaluationRun, live: EvaluationRun) -> dict[str, Any]:
    """``comparison.json``: offline vs live on the common stamps."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comparison = compare_runs(offline, live)
    (folder / "comparison.json").write_text(json.dumps(comparison, indent=2, allow_nan=False))
    return comparison


# ---------------------------------------------------------------------- pictures
def plot_class_iou(path: Path, per_class: dict[str, float | None], title: str) -> None:
    plt = _pyplot()
    names = list(per_class)
    values = [v if v is not None else 0.0 for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    colors = ["tab:blue" if v is not None else "lightgrey" for v in per_class.values()]
    ax.barh(names, values, color=colors)
    for y, v in enumerate(per_class.values()):
        ax.text((v or 0.0) + 0.01, y, "n/a" if v is None else f"{v:.2f}", va="center", fontsize=7)
    ax.set_xlim(0, 1.1)
    ax.invert_yaxis()
    ax.set_xlabel("IoU")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(path: Path, counts: np.ndarray, class_names: Sequence[str]) -> None:
    """Row-normalised (recall) confusion matrix over classes present in ground truth or prediction."""
    plt = _pyplot()
    present = np.flatnonzero(counts.sum(axis=0) + counts.sum(axis=1))
    sub = counts[np.ix_(present, present)].astype(np.float64)
    rows = sub.sum(axis=1, keepdims=True)
    normalised = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    names = [class_names[i] for i in present]
    size = 0.4 * len(names) + 2.5
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (rows normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_overlays(folder: Path, overlays: Sequence[Overlay]) -> list[Path]:
    """One PNG per overlay: RGB | prediction colour | ground-truth colour."""
    if not overlays:
        return []
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, overlay in enumerate(overlays):
        panels = [("RGB", overlay.rgb), ("prediction", overlay.prediction), ("ground truth", overlay.ground_truth)]
        panels = [(title, image) for title, image in panels if image is not None]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8))
        for ax, (title, image) in zip(np.atleast_1d(axes), panels):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        missing = "all modalities" if overlay.missing == ALL_PRESENT else f"without {overlay.missing}"
        fig.suptitle(f"{overlay.condition}, {missing} (stamp {overlay.stamp_ns})", fontsize=9)
        fig.tight_layout()
        path = folder / f"{index:02d}_{overlay.condition}_{overlay.missing.replace('+', '-')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------- markdown
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}"


def _group_table(title: str, groups: dict[str, dict[str, Any]], label: str) -> list[str]:
    lines = [f"## {title}", "", f"| {label} | frames | mIoU % | pixel acc. % |", "|---|---:|---:|---:|"]
    for key, group in groups.items():
        lines.append(f"| {key} | {group['frames']} | {_pct(group['miou'])} | {_pct(group['pixel_accuracy'])} |")
    return [*lines, ""]


def markdown(summary: dict[str, Any]) -> str:
    overall = summary["overall"]
    frames = summary["frames"]
    model = summary["model"]
    lines = [
        f"# memsam evaluation ({summary['mode']})",
        "",
        f"- bag: `{summary['bag']}`",
        f"- checkpoint: `{summary['checkpoint'] or 'none (untrained)'}`",
        f"- model: {model['sam2_config']} at {model['image_size']} px, modalities {', '.join(model['modalities'])}",
        f"- frames evaluated: {frames['evaluated']} of {frames['ground_truth']} with ground truth "
        f"({frames['ground_truth_without_prediction']} without a prediction)",
        "",
        f"**mIoU {_pct(overall['miou'])} %** (classes present in ground truth or prediction), "
        f"pixel accuracy {_pct(overall['pixel_accuracy'])} %, mIoU over all classes with absent = 0: "
        f"{_pct(overall['miou_all_classes'])} %",
        "",
        *_group_table("Per condition", summary["per_condition"], "condition"),
        *_group_table("Per missing-modality case", summary["per_missing_modalities"], "missing"),
        "## Per-class IoU",
        "",
        "| class | IoU % |",
        "|---|---:|",
        *[f"| {name} | {_pct(value)} |" for name, value in overall["per_class_iou"].items()],
        "",
    ]
    files = summary.get("files", {})
    if "per_class_iou" in files:
        lines += [
            f"![per-class IoU]({files['per_class_iou']})",
            "",
            f"![confusion matrix]({files['confusion_matrix']})",
            "",
        ]
    if files.get("overlays"):
        lines += ["## Examples (RGB | prediction | ground truth)", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in files["overlays"]]
        lines.append("")
    return "\n".join(lines)
