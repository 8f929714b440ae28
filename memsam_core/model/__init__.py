"""MemorySAM model: SAM 2 + LoRA + semantic decoder over a modality frame sequence."""

from memsam_core.model.build import (
    CheckpointError,
    build_memorysam,
    load_memsam,
    load_sam2_checkpoint,
    save_checkpoint,
)
from memsam_core.model.memorysam import MemorySAM

__all__ = ["CheckpointError", "MemorySAM", "build_memorysam", "load_memsam", "load_sam2_checkpoint", "save_checkpoint"]
