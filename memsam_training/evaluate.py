"""Validation through the one inference path (``Segmenter(config, model=model)``), per class and condition.

Each DDP rank scores its shard of the validation set; the confusion matrices are summed over ranks,
so every rank returns the same report.  Scored at the label resolution (the engine returns labels at
the RGB resolution), ignore pixels (255) excluded.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from memsam_core.config import MemSamConfig
from memsam_core.data.synthetic import CONDITIONS
from memsam_core.engine import Segmenter
from memsam_core.metrics import ConfusionMatrix
from memsam_core.model import MemorySAM
from memsam_training.data import collate_raw

LOG = logging.getLogger(__name__)


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


@torch.no_grad()
def evaluate(model: MemorySAM, dataset: Dataset, cfg: MemSamConfig, device: torch.device) -> dict[str, Any]:
    """mIoU overall, per class and per condition (``{"miou", "miou_present", "per_class", "per_condition"}``).

    ``miou`` is the reference protocol (NaN → 0, mean over all classes); ``miou_present`` averages only
    classes seen in target or prediction.  The model is left in eval mode; the caller switches back.
    """
    rank, world = _distributed()
    segmenter = Segmenter(eval_config(cfg, device), model=model)
    num_classes = cfg.model.num_classes
    conditions = list(CONDITIONS)  # same five names in DELIVER and the synthetic generator
    matrices = [ConfusionMatrix(num_classes) for _ in range(len(conditions) + 1)]  # last = unknown condition
    shard = Subset(dataset, list(range(rank, len(dataset), world)))  # type: ignore[arg-type]
    loader = DataLoader(
        shard,
        batch_size=cfg.train.batch_size,
        collate_fn=collate_raw,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator(),  # leaves the global RNG (dropout) untouched
    )
    for samples in loader:
        results = segmenter.segment_batch([s["frames"] for s in samples])
        for sample, result in zip(samples, results):
            condition = sample["meta"].get("condition")
            slot = conditions.index(condition) if condition in conditions else len(conditions)
            matrices[slot].update(result.labels, sample["labels"])
    hist = torch.stack([m.hist for m in matrices])
    if world > 1:
        dist.all_reduce(hist)
    for matrix, counts in zip(matrices, hist):
        matrix.hist.copy_(counts)
    total = ConfusionMatrix(num_classes)
    for matrix in matrices:
        total.merge(matrix)
    names = list(cfg.classes.names)
    report = total.to_dict(names)
    report["per_condition"] = {
        condition: {k: v for k, v in matrix.to_dict(names).items()}
        for condition, matrix in zip([*conditions, "other"], matrices)
        if int(matrix.hist.sum()) > 0
    }
    report["samples"] = len(dataset)  # type: ignore[arg-type]
    return report


def summary_line(report: dict[str, Any]) -> str:
    """``mIoU 41.2 (present 55.0) | sun 50.1 night 30.2 ...`` in percent, for logs."""
    parts = [f"mIoU {100 * (report['miou'] or 0):.2f} (present {100 * (report['miou_present'] or 0):.2f})"]
    conditions = " ".join(f"{c} {100 * (r['miou'] or 0):.2f}" for c, r in report["per_condition"].items())
    return " | ".join([*parts, conditions]) if conditions else parts[0]
