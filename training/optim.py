"""AdamW without weight decay on 1-D parameters, and the warmup + poly LR schedule (memorysam.md §5.2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memsam_core.config import TrainConfig


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm scales and embeddings that are vectors in disguise (``[1, 1, 256]``) get no decay."""
    return param.ndim <= 1 or param.numel() == max(param.shape) or name.endswith(".bias")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the parameters that require grad *now* (frozen ones are left out)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if is_no_decay(name, param) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)


@dataclass
class WarmupPoly:
    """LR factor at iteration ``it``: linear ``ratio → 1`` over ``warmup_iters``, then ``(1 - progress)^power``."""

    total_iters: int
    warmup_iters: int
    warmup_ratio: float = 0.1
    power: float = 0.9

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * it / self.warmup_iters
        span = max(self.total_iters - self.warmup_iters, 1)
        progress = min((it - self.warmup_iters) / span, 1.0)
        return (1.0 - progress) ** self.power


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration; the state (``last_epoch`` = iterations done) is checkpointed."""
    total = cfg.epochs * iters_per_epoch
    warmup = min(round(cfg.warmup_epochs * iters_per_epoch), max(total - 1, 0))
    factor = WarmupPoly(total, warmup, cfg.warmup_ratio, cfg.poly_power)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
