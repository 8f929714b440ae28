"""Checkpoints for tests that score or compare outputs: random SAM 2 weights with non-zero LoRA/decoder weights, so
the outputs depend on every input (and a wrong load or merge would change them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from memsam_core.config import load_config
from memsam_core.model import build_memorysam, save_checkpoint


def perturbed_checkpoint(path: Path, overrides: dict[str, Any] | None = None) -> Path:
    config = load_config(None, {"model.image_size": 128, **(overrides or {})})
    model = build_memorysam(config.model, seed=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    save_checkpoint(path, model, config)
    return path
