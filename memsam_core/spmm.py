"""SPMM: the Semantic Prototype Memory Module of MemorySAM (memorysam.md §4), training only.

Per class c, the batch prototype is the masked average of the modality-mean stride-4 feature
(``MemorySAM(..., return_features=True)["features"]``, ``[B, 32, S/4, S/4]``) over the pixels whose
nearest-downsampled label is c.  A global prototype memory follows the batch prototypes by EMA,
``memory <- m * memory + (1 - m) * stopgrad(batch)``, updated before the loss (as the reference), and
the prototypical adaptation loss is ``scale * weight * MSE(batch, updated memory)``, with gradient
only through the batch prototypes.

Fixes with respect to the reference code:

* the class mean is divided by the pixel count once (the reference divides twice);
* ``memory`` is a registered buffer, so it is saved in checkpoints and restored on resume;
* under DDP, class sums and counts are all-reduced before the prototypes are formed, so every rank
  computes the same prototypes and keeps an identical memory (the reference keeps one per rank);
* classes with no pixel in the (global) batch are neither updated nor part of the loss (the reference
  decays them towards zero and averages their zero error into the loss);
* an ``initialised`` flag per class: a class's first batch prototype *sets* its memory instead of being
  blended with the zero initialisation (the reference starts from zeros, which biases early memory
  towards the origin); the loss for that class is then zero on that step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from memsam_core.classes import IGNORE_INDEX


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class SemanticPrototypeMemory(nn.Module):
    """Class prototype memory + prototypical adaptation loss; call it as ``loss = spmm(features, labels)``."""

    def __init__(
        self,
        num_classes: int,
        feature_dim: int = 32,
        momentum: float = 0.8,
        scale: float = 1.0,
        weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_classes, self.feature_dim = num_classes, feature_dim
        self.momentum, self.scale, self.weight, self.ignore_index = momentum, scale, weight, ignore_index
        self.register_buffer("memory", torch.zeros(num_classes, feature_dim))
        self.register_buffer("initialised", torch.zeros(num_classes, dtype=torch.bool))

    def class_sums(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class feature sums ``[C, D]`` (differentiable) and pixel counts ``[C]`` for this process's batch.

        ``labels [B, H, W]`` are nearest-downsampled to the feature grid; ignore / out-of-range ids drop out.
        """
        _, dim, height, width = features.shape
        if dim != self.feature_dim:
            raise ValueError(f"SPMM expects {self.feature_dim}-channel features, got {dim}")
        small = F.interpolate(labels[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()
        flat_labels = small.reshape(-1)
        flat_feats = features.float().permute(0, 2, 3, 1).reshape(-1, dim)
        valid = (flat_labels >= 0) & (flat_labels < self.num_classes) & (flat_labels != self.ignore_index)
        ids, feats = flat_labels[valid], flat_feats[valid]
        sums = torch.zeros(self.num_classes, dim, device=features.device, dtype=torch.float32).index_add(0, ids, feats)
        counts = torch.bincount(ids, minlength=self.num_classes).to(torch.float32)
        return sums, counts

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Update the memory (training mode only) and return the weighted prototypical loss (a scalar)."""
        sums, counts = self.class_sums(features, labels)
        world = _world_size()
        if world > 1:
            # Every rank forms the same global prototypes; gradient flows only through its own pixels.
            global_sums, global_counts = sums.detach().clone(), counts.clone()
            dist.all_reduce(global_sums)
            dist.all_reduce(global_counts)
            sums = sums + (global_sums - sums.detach())
            counts = global_counts
        present = counts > 0
        prototypes = sums[present] / counts[present, None]
        if self.training:
            self._update(present, prototypes.detach())
        if not bool(present.any()):
            return features.sum() * 0.0  # keeps the graph connected (DDP) while adding nothing
        mse = F.mse_loss(prototypes, self.memory[present].to(prototypes.dtype))
        # DDP averages gradients over ranks; each rank only backpropagates its share of the global loss.
        return mse * (self.scale * self.weight * world)

    @torch.no_grad()
    def _update(self, present: torch.Tensor, prototypes: torch.Tensor) -> None:
        old = self.memory[present]
        first = ~self.initialised[present]
        blended = self.momentum * old + (1.0 - self.momentum) * prototypes.to(old.dtype)
        self.memory[present] = torch.where(first[:, None], prototypes.to(old.dtype), blended)
        self.initialised[present] = True

    def extra_repr(self) -> str:
        return (
            f"classes={self.num_classes}, dim={self.feature_dim}, momentum={self.momentum}, "
            f"scale={self.scale}, weight={self.weight}"
        )
