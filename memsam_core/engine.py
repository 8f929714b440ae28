"""The one inference path: raw modality arrays in, class ids + confidence out.

The ROS node, bag replay evaluation and training-time evaluation all call :class:`Segmenter`, so a
checkpoint scores the same everywhere. It owns device and precision choice, optional
``torch.compile`` warm-up, LoRA merging for inference, and batching of several synchronised sets.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from memsam_core.classes import default_palette
from memsam_core.config import MemSamConfig, load_config
from memsam_core.modalities import frames_to_tensor
from memsam_core.model import MemorySAM, build_memorysam, load_memsam
from memsam_core.model.lora import merge_lora

LOG = logging.getLogger(__name__)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Segmentation:
    """One set's result, at the reference modality's resolution."""

    labels: np.ndarray  # uint8 HxW class ids
    confidence: np.ndarray  # float32 HxW, softmax probability of the chosen class
    modalities: tuple[str, ...]  # frames actually used, in order
    missing: tuple[str, ...]  # configured modalities that were absent
    inference_ms: float = 0.0
    extras: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"inference.device is {name!r} but no CUDA device is available (use auto or cpu)")
    return device


class Segmenter:
    """Config (+ checkpoint) → ``segment(frames) -> (labels uint8 HxW, confidence float32 HxW)``."""

    def __init__(self, config: MemSamConfig, model: MemorySAM | None = None, source: str = "config") -> None:
        self.config = config
        inf = config.inference
        self.device = resolve_device(inf.device)
        self.dtype = _DTYPES[inf.precision]
        if inf.threads:
            torch.set_num_threads(inf.threads)
        if model is None:
            if inf.checkpoint:
                model, _ = load_memsam(inf.checkpoint, config.model, source)
            else:
                LOG.warning("inference.checkpoint is empty: running an untrained model (outputs are meaningless)")
                model = build_memorysam(config.model)
            merge_lora(model)  # inference-only copy: fold LoRA deltas into qkv
        self.model = model
        self.model.eval().to(self.device)
        self.class_names = list(config.classes.names)
        self.palette = (
            np.asarray(config.classes.palette, dtype=np.uint8)
            if config.classes.palette
            else default_palette(config.model.num_classes)
        )
        self._net = self.model
        # CUDA graphs (reduce-overhead / max-autotune) reuse output buffers: copy logits out before the next call
        self._copy_outputs = inf.compile and inf.compile_mode != "default"
        if inf.compile:
            self._net = torch.compile(self.model, mode=None if inf.compile_mode == "default" else inf.compile_mode)
            self.warm_up()

    @classmethod
    def from_files(cls, config_path: str | Path | None, checkpoint: str | None = None, **overrides) -> Segmenter:
        """Load a YAML config; ``checkpoint`` overrides ``inference.checkpoint``."""
        if checkpoint:
            overrides["inference.checkpoint"] = checkpoint
        return cls(load_config(config_path, overrides), source=str(config_path or "<defaults>"))

    # ------------------------------------------------------------------ public API
    def segment(self, frames: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence for one synchronised set (missing modalities are simply absent)."""
        result = self.segment_batch([frames])[0]
        return result.labels, result.confidence

    def segment_batch(self, sets: Sequence[Mapping[str, np.ndarray]]) -> list[Segmentation]:
        """Several sets; those with the same modalities present go through the network as one batch."""
        groups: dict[tuple[str, ...], list[int]] = {}
        tensors: list[torch.Tensor] = []
        present_per_set: list[tuple[str, ...]] = []
        for index, frames in enumerate(sets):
            stacked, present = frames_to_tensor(
                frames, self.config.model.modalities, self.config.model.image_size, self.config.input
            )
            tensors.append(stacked)
            present_per_set.append(tuple(present))
            groups.setdefault(tuple(present), []).append(index)
        results: list[Segmentation | None] = [None] * len(sets)
        for present, indices in groups.items():
            start = time.perf_counter()
            batch = self._upload(torch.stack([tensors[i] for i in indices]))
            logits = self.logits(batch)
            for row, index in enumerate(indices):
                out_hw = _output_size(sets[index], present)
                labels, confidence = self._postprocess(logits[row : row + 1], out_hw)
                results[index] = Segmentation(labels, confidence, present, self._missing(present))
            elapsed = (time.perf_counter() - start) * 1000.0 / len(indices)
            for index in indices:
                results[index].inference_ms = elapsed
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """``[B, M, 3, S, S]`` → float32 ``[B, C, S, S]`` class logits, in the configured precision."""
        with self._autocast():
            out = self._net(batch, skip_last_memory=self.config.inference.skip_last_memory)["logits"]
        return out.clone() if self._copy_outputs and out.dtype == torch.float32 else out.float()

    def warm_up(self, modalities: Sequence[str] | None = None) -> None:
        """Run once on zeros so compile/cudnn autotuning happens before the first real message."""
        count = len(modalities or self.config.model.modalities)
        size = self.config.model.image_size
        self.logits(torch.zeros(1, count, 3, size, size, device=self.device))

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        from memsam_core.classes import colorize

        return colorize(labels, self.palette)

    # ------------------------------------------------------------------ helpers
    def _missing(self, present: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in self.config.model.modalities if m not in present)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _upload(self, batch: torch.Tensor) -> torch.Tensor:
        """CPU batch → device; on CUDA via pinned memory so the copy is asynchronous (torch caches pinned blocks)."""
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    @torch.inference_mode()
    def _postprocess(self, logits: torch.Tensor, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if tuple(logits.shape[-2:]) != out_hw:
            logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
        # max softmax probability = 1 / sum(exp(logit - max)): same value as softmax().max() without the
        # C x H x W probability tensor (one exp pass, no division pass)
        top, labels = logits[0].max(dim=0)
        confidence = (logits[0] - top).exp_().sum(dim=0).reciprocal_()
        return labels.to(torch.uint8).cpu().numpy(), confidence.float().cpu().numpy()


def _output_size(frames: Mapping[str, np.ndarray], present: tuple[str, ...]) -> tuple[int, int]:
    """Outputs are at the reference (first present, normally RGB) modality's resolution."""
    reference = frames["rgb"] if "rgb" in present else frames[present[0]]
    return int(reference.shape[0]), int(reference.shape[1])
