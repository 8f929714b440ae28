"""Position encodings computed once per feature size and handed out as broadcast views.

SAM 2's ``PositionEmbeddingSine`` keeps a cache, but returns ``cache[None].repeat(B, 1, 1, 1)`` of a permuted
tensor on every call, and the FPN neck then casts it with ``.to(dtype)``. At 1024² the stride-4 level alone is a
``[B, 256, 256, 256]`` strided copy per frame (≈40 ms on a 2-core CPU at 512², more at 1024²) — for an output
the MemorySAM forward never reads (only the lowest-resolution level's encoding reaches memory attention). The
values do not depend on the image, so one contiguous tensor per (size, dtype, device), expanded over the batch,
gives identical results without the copies. The module has no parameters or buffers: checkpoints are unchanged.
"""

from __future__ import annotations

import torch
from sam2.modeling.position_encoding import PositionEmbeddingSine
from torch import nn


class CachedPositionEncoding(nn.Module):
    """Drop-in for a ``PositionEmbeddingSine``: same values, in the input's dtype, as a view over the batch."""

    def __init__(self, sine: PositionEmbeddingSine) -> None:
        super().__init__()
        self.sine = sine
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # torch.compile / export trace SAM 2's own code; the compiler folds it
            return self.sine(x).to(x.dtype)
        height, width = x.shape[-2:]
        key = (height, width, x.dtype, x.device)
        encoding = self._cache.get(key)
        if encoding is None:
            # a normal (not inference-mode) tensor, so a training forward may use it after an inference call
            with torch.inference_mode(False), torch.no_grad():
                probe = torch.empty(1, 1, height, width, device=x.device)
                encoding = self.sine(probe).to(x.dtype).contiguous()
            self._cache[key] = encoding
        return encoding.expand(x.shape[0], -1, -1, -1)


def cache_position_encodings(module: nn.Module) -> int:
    """Wrap every ``PositionEmbeddingSine`` below ``module`` (FPN neck, memory encoder); idempotent."""
    wrapped = 0
    for parent in list(module.modules()):
        if isinstance(parent, CachedPositionEncoding):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, PositionEmbeddingSine):
                setattr(parent, name, CachedPositionEncoding(child))
                wrapped += 1
    return wrapped
