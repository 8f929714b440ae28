"""LoRA on the Q and V slices of Hiera's fused ``qkv`` projection.

PEFT wraps whole ``nn.Linear`` layers; MemorySAM adapts only Q and V of a fused qkv, so this is a small
module of our own. Unlike the reference, the deltas cover *all* Q/V output channels, also in the
blocks where Hiera widens the channels (dim → 2·dim).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRAQKV(nn.Module):
    """``qkv(x) + [B_q A_q x, 0, B_v A_v x] * alpha / rank``; A kaiming-uniform, B zero (starts as identity)."""

    def __init__(self, qkv: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.qkv = qkv
        self.rank = rank
        self.scale = alpha / rank
        self.dim_out = qkv.out_features // 3
        self.q_a = nn.Linear(qkv.in_features, rank, bias=False)
        self.q_b = nn.Linear(rank, self.dim_out, bias=False)
        self.v_a = nn.Linear(qkv.in_features, rank, bias=False)
        self.v_b = nn.Linear(rank, self.dim_out, bias=False)
        for a in (self.q_a, self.v_a):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        for b in (self.q_b, self.v_b):
            nn.init.zeros_(b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        d = self.dim_out
        dq = self.q_b(self.q_a(x)) * self.scale
        dv = self.v_b(self.v_a(x)) * self.scale
        return torch.cat([out[..., :d] + dq, out[..., d : 2 * d], out[..., 2 * d :] + dv], dim=-1)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear with the deltas folded in: same output, no LoRA cost at inference."""
        linear = nn.Linear(self.qkv.in_features, self.qkv.out_features, bias=self.qkv.bias is not None)
        linear = linear.to(device=self.qkv.weight.device, dtype=self.qkv.weight.dtype)
        weight = self.qkv.weight.clone()
        d = self.dim_out
        weight[:d] += (self.q_b.weight @ self.q_a.weight) * self.scale
        weight[2 * d :] += (self.v_b.weight @ self.v_a.weight) * self.scale
        linear.weight.copy_(weight)
        if self.qkv.bias is not None:
            linear.bias.copy_(self.qkv.bias)
        return linear


def add_lora_to_hiera(trunk: nn.Module, rank: int, alpha: float) -> int:
    """Wrap every Hiera block's ``attn.qkv``; returns how many were wrapped."""
    count = 0
    for block in trunk.blocks:
        if not isinstance(block.attn.qkv, LoRAQKV):
            block.attn.qkv = LoRAQKV(block.attn.qkv, rank, alpha)
            count += 1
    return count


def merge_lora(module: nn.Module) -> int:
    """Replace every :class:`LoRAQKV` below ``module`` by its merged Linear (inference only)."""
    merged = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRAQKV):
                setattr(parent, name, child.merged())
                merged += 1
    return merged
