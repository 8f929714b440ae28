"""Segmentation loss of the MemorySAM recipe (memorysam.md §5.1): OHEM cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from memsam_core.classes import IGNORE_INDEX


class OhemCrossEntropy(nn.Module):
    """Mean CE over the hard pixels: those whose loss exceeds ``-ln(thresh)`` (probability of the true
    class below ``thresh``), but at least the ``min_kept_ratio`` fraction of valid pixels with the
    largest losses — so the loss never collapses to a handful of pixels once most are easy."""

    def __init__(self, thresh: float = 0.7, min_kept_ratio: float = 1 / 16, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"thresh must be in (0, 1], got {thresh}")
        self.loss_thresh = -math.log(thresh)
        self.min_kept_ratio = min_kept_ratio
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits [B, C, H, W]`` (any float dtype; computed in float32), ``labels [B, H, W]`` int."""
        losses = F.cross_entropy(logits.float(), labels.long(), ignore_index=self.ignore_index, reduction="none")
        valid = losses[labels != self.ignore_index]
        if valid.numel() == 0:
            return logits.sum() * 0.0  # all-ignore batch: zero loss, graph kept for DDP
        n_min = max(int(self.min_kept_ratio * valid.numel()), 1)
        hard = valid[valid > self.loss_thresh]
        if hard.numel() < n_min:
            hard = torch.topk(valid, n_min, sorted=False).values
        return hard.mean()
