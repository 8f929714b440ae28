"""A clip of consecutive instants through MemorySAM in one ``forward``, carrying the memory of past instants.

Training on clips needs the whole clip in one module call: DistributedDataParallel prepares its gradient
reduction once per ``forward``, so T calls of the model before one ``backward`` would reduce a parameter used in
every instant T times. The memory is carried *with* its gradients (as SAM 2 trains on 8-frame clips): the loss
of instant t reaches the memory encoder, mask decoder and image features of the instants before it, so the model
learns what to store for later, not only how to read it. Memory grows with the clip length; gradients are not
truncated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from memsam_core.model.memorysam import InstantMemory, MemorySAM


class ClipForward(nn.Module):
    """``forward(instants)`` with ``instants[t]: [B, M_t, 3, S, S]`` → per-instant outputs concatenated
    instant-major (``logits [T·B, C, S, S]``, ``features [T·B, ...]``)."""

    def __init__(self, model: MemorySAM, temporal_memory: int) -> None:
        super().__init__()
        if temporal_memory > model.max_temporal_memory:
            raise ValueError(f"temporal_memory {temporal_memory} > {model.max_temporal_memory} SAM 2 temporal slots")
        self.model = model
        self.temporal_memory = temporal_memory

    def forward(self, instants: Sequence[torch.Tensor], return_features: bool = False) -> dict[str, torch.Tensor]:
        past: list[InstantMemory] | None = [] if self.temporal_memory else None
        outputs = []
        for frames in instants:
            out = self.model(frames, skip_last_memory=True, return_features=return_features, past=past)
            if past is not None:
                past = [out["memory"], *past][: self.temporal_memory]
            outputs.append(out)
        result = {"logits": torch.cat([o["logits"] for o in outputs])}
        if return_features:
            result["features"] = torch.cat([o["features"] for o in outputs])
        return result
