"""The one inference path: raw modality arrays in, class ids + confidence out.

The ROS node, bag replay evaluation and training-time evaluation all call :class:`Segmenter`, so a
checkpoint scores the same everywhere. A checkpoint defines its model, input contract and classes;
:func:`load_segmenter` builds the Segmenter from it and the run-time settings. It owns device and
precision choice, optional ``torch.compile`` warm-up, LoRA merging for inference, and batching of
several synchronised sets.

With ``model.temporal_memory: K ≥ 1`` it also owns the memory of the last K instants
(:class:`memsam_core.temporal.TemporalMemory`): :meth:`Segmenter.segment_instant` segments one set of a stream in
order, attending to it and adding to it; :meth:`Segmenter.reset` forgets it. ``segment_batch`` stays memoryless
(independent sets, each as the first after a reset). K = 0 runs exactly the modality-only path of before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from memsam_core.classes import default_palette
from memsam_core.config import ConfigError, MemSamConfig, load_config
from memsam_core.cuda_graphs import GraphedForward
from memsam_core.modalities import frames_to_tensor, present_modalities
from memsam_core.model import MemorySAM, build_memorysam
from memsam_core.model.build import load_for_config
from memsam_core.model.lora import merge_lora
from memsam_core.model.memorysam import InstantMemory
from memsam_core.model.position import cache_position_encodings
from memsam_core.temporal import TemporalMemory

LOG = logging.getLogger(__name__)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_MAX_INPUT_BUFFERS = 8  # (batch, modality count) shapes kept; 1..4 modalities at batch 1 in the node


@dataclass
class Segmentation:
    """One set's result, at the reference modality's resolution."""

    labels: np.ndarray  # uint8 HxW class ids
    confidence: np.ndarray | None  # float32 HxW, softmax probability of the chosen class (None: not asked for)
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


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 GEMMs natively (measured ≈6× fp32 on a 2-core Zen 4 VM). Without
    them bf16 is emulated (≈30× slower than fp32 on an AVX2-only VM) and fp16 is slow on every x86 CPU."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def slow_precision_warning(device: torch.device, precision: str) -> str | None:
    """Why ``precision`` will be slow on ``device``, or ``None``: a CPU user should hear it at start-up."""
    if device.type != "cpu" or precision == "fp32":
        return None
    if precision == "fp16":
        return "inference.precision fp16 on the CPU is emulated and far slower than fp32; use fp32 (or bf16)"
    if not cpu_has_native_bf16():
        return "inference.precision bf16 on a CPU without AVX512-BF16/AMX is emulated and slower than fp32; use fp32"
    return None


class Segmenter:
    """Config (+ checkpoint) → ``segment(frames) -> (labels uint8 HxW, confidence float32 HxW)``."""

    def __init__(self, config: MemSamConfig, model: MemorySAM | None = None, source: str = "config") -> None:
        inf = config.inference
        self.device = resolve_device(inf.device)
        self.dtype = _DTYPES[inf.precision]
        if warning := slow_precision_warning(self.device, inf.precision):
            LOG.warning(warning)
        if inf.threads:
            torch.set_num_threads(inf.threads)
        if model is None:
            if inf.checkpoint:  # the checkpoint describes its model; config adds the run-time settings
                model, config, _ = load_for_config(inf.checkpoint, config, source)
            else:
                LOG.warning("inference.checkpoint is empty: running an untrained model (outputs are meaningless)")
                model = build_memorysam(config.model)
            merge_lora(model)  # inference-only copy: fold LoRA deltas into qkv
        self.config = config  # the effective config: the checkpoint's model, input contract and classes
        cache_position_encodings(model)  # same values, no per-call copies (also on a training model passed in)
        self.model = model
        self.model.eval().to(self.device)
        self.class_names = list(config.classes.names)
        self.palette = (
            np.asarray(config.classes.palette, dtype=np.uint8)
            if config.classes.palette
            else default_palette(config.model.num_classes)
        )
        self._net = self.model
        self._host_inputs: dict[tuple[int, ...], torch.Tensor] = {}
        self._scratch_buffers: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        instants = config.model.temporal_memory
        self.temporal = TemporalMemory(instants, inf.temporal_max_gap_s) if instants else None
        compile_net = inf.compile and not instants
        use_graphs = inf.cuda_graphs and self.device.type == "cuda" and not inf.compile and not instants
        if instants and (inf.compile or (inf.cuda_graphs and self.device.type == "cuda")):
            LOG.info(
                "model.temporal_memory %d: inference runs eager (no CUDA graphs, no torch.compile: the memory of past "
                "instants changes the network's inputs from set to set)",
                instants,
            )
        self._graphs = GraphedForward(self._forward) if use_graphs else None
        # CUDA graphs (ours, reduce-overhead, max-autotune) reuse output buffers: copy logits out before the next call
        self._copy_outputs = self._graphs is not None or (compile_net and inf.compile_mode != "default")
        if compile_net:
            self._net = torch.compile(self.model, mode=None if inf.compile_mode == "default" else inf.compile_mode)
        if compile_net or self._graphs is not None:
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

    def segment_batch(self, sets: Sequence[Mapping[str, np.ndarray]], confidence: bool = True) -> list[Segmentation]:
        """Several sets; those with the same modalities present go through the network as one batch.

        ``inference_ms`` per set is the engine's whole time for it: preprocessing, network, postprocessing.
        Calls are serialised (the host input buffer is reused between calls). ``confidence=False`` skips the
        confidence map (about 40 % of the postprocessing at 1024² on a CPU) when nobody needs it.
        """
        modalities, size = self.config.model.modalities, self.config.model.image_size
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, frames in enumerate(sets):
            groups.setdefault(tuple(present_modalities(frames, modalities)), []).append(index)
        results: list[Segmentation | None] = [None] * len(sets)
        with self._lock:
            for present, indices in groups.items():
                start = time.perf_counter()
                batch = self._input_buffer(len(indices), len(present))
                for row, index in enumerate(indices):
                    frames_to_tensor(sets[index], modalities, size, self.config.input, out=batch[row])
                logits = self.logits(self._upload(batch), past=[] if self.temporal is not None else None)
                for row, index in enumerate(indices):
                    out_hw = _output_size(sets[index], present)
                    labels, probability = self._postprocess(logits[row : row + 1], out_hw, confidence)
                    results[index] = Segmentation(labels, probability, present, self._missing(present))
                elapsed = (time.perf_counter() - start) * 1000.0 / len(indices)
                for index in indices:
                    results[index].inference_ms = elapsed
        return results  # type: ignore[return-value]

    def segment_instant(
        self, frames: Mapping[str, np.ndarray], stamp_s: float | None = None, epoch: int = 0, confidence: bool = True
    ) -> Segmentation:
        """One set of a stream, in stamp order: with ``model.temporal_memory ≥ 1`` it attends to the memories of the
        sets segmented before it and leaves its own; the stream rules (:mod:`memsam_core.temporal`: ``epoch`` =
        the caller's synchroniser resets, ``stamp_s`` going back or jumping ahead) may reset the memory first.

        ``extras``: ``memory_instants`` (past instants this set attended to), ``memory_reset`` (the reason the
        memory was reset before it, or ""), ``memory_resets`` (resets so far). K = 0: :meth:`segment_batch`.
        """
        if self.temporal is None:
            result = self.segment_batch([frames], confidence)[0]
            result.extras.update(memory_instants=0, memory_reset="", memory_resets=0)
            return result
        modalities, size = self.config.model.modalities, self.config.model.image_size
        with self._lock:
            start = time.perf_counter()
            reason = self.temporal.admit(stamp_s, epoch)
            present = tuple(present_modalities(frames, modalities))
            batch = self._input_buffer(1, len(present))
            frames_to_tensor(frames, modalities, size, self.config.input, out=batch[0])
            past = self.temporal.past()
            logits, memory = self._temporal_logits(self._upload(batch), past)
            self.temporal.push(memory)
            labels, probability = self._postprocess(logits, _output_size(frames, present), confidence)
            extras = {"memory_instants": len(past), "memory_reset": reason or "", "memory_resets": self.memory_resets}
            result = Segmentation(labels, probability, present, self._missing(present), extras=extras)
            result.inference_ms = (time.perf_counter() - start) * 1000.0
        return result

    def reset(self, reason: str = "deactivate") -> None:
        """Forget the memory of past instants (the caller stopped listening: ``deactivate``); no-op for K = 0."""
        if self.temporal is not None:
            with self._lock:
                self.temporal.reset(reason)

    @property
    def memory_resets(self) -> int:
        """Resets of the memory of past instants so far (every reason; 0 for K = 0)."""
        return self.temporal.total_resets if self.temporal is not None else 0

    @property
    def memory_resets_by_reason(self) -> dict[str, int]:
        """:attr:`memory_resets` per reason (:data:`memsam_core.temporal.RESET_REASONS`); empty for K = 0."""
        return dict(self.temporal.resets) if self.temporal is not None else {}

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor, past: list[InstantMemory] | None = None) -> torch.Tensor:
        """``[B, M, 3, S, S]`` → float32 ``[B, C, S, S]`` class logits, in the configured precision.

        ``past``: a temporal model's memories of the last instants (``[]``: none yet); ``None``: the modality-only
        path (what a K = 0 model runs)."""
        if past is not None:
            return self._temporal_logits(batch, past)[0]
        out = self._forward(batch) if self._graphs is None else self._graphs(batch)
        return out.clone() if self._copy_outputs and out.dtype == torch.float32 else out.float()

    @torch.inference_mode()
    def _temporal_logits(self, batch: torch.Tensor, past: list[InstantMemory]) -> tuple[torch.Tensor, InstantMemory]:
        """Eager temporal forward: logits and the memory this instant leaves."""
        with self._autocast():
            out = self._net(batch, skip_last_memory=self.config.inference.skip_last_memory, past=past)
        return out["logits"].float(), out["memory"]

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self._net(batch, skip_last_memory=self.config.inference.skip_last_memory)["logits"]

    def warm_up(self, modalities: Sequence[str] | None = None) -> None:
        """Run once on zeros so compilation, CUDA-graph capture and cuDNN autotuning happen before the first
        real message (for the configured modality count; other counts are prepared on first use)."""
        count = len(modalities or self.config.model.modalities)
        size = self.config.model.image_size
        self.logits(torch.zeros(1, count, 3, size, size, device=self.device), [] if self.temporal is not None else None)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        from memsam_core.classes import colorize

        return colorize(labels, self.palette)

    # ------------------------------------------------------------------ helpers
    def _missing(self, present: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in self.config.model.modalities if m not in present)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        # a CUDA graph must not keep autocast's cast cache alive between captures
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, cache_enabled=self._graphs is None)

    def _input_buffer(self, batch: int, frames: int) -> torch.Tensor:
        """The host ``[B, M, 3, S, S]`` input tensor for this shape, reused across calls: no fresh 48 MiB
        allocation (page faults) per 4-modality set at 1024², and on CUDA pinned memory for asynchronous
        upload. One per shape, so a sensor dropping in and out does not re-pin memory every set."""
        size = self.config.model.image_size
        shape = (batch, frames, 3, size, size)
        buffer = self._host_inputs.get(shape)
        if buffer is None:
            if len(self._host_inputs) >= _MAX_INPUT_BUFFERS:
                self._host_inputs.clear()
            buffer = torch.empty(shape, dtype=torch.float32, pin_memory=self.device.type == "cuda")
            self._host_inputs[shape] = buffer
        return buffer

    def _upload(self, batch: torch.Tensor) -> torch.Tensor:
        """Host batch → device. Non-blocking from pinned memory on CUDA; safe to refill the buffer afterwards
        because postprocessing copies results back to the host, which waits for the stream."""
        return batch.to(self.device, non_blocking=batch.is_pinned())

    @torch.inference_mode()
    def _postprocess(
        self, logits: torch.Tensor, out_hw: tuple[int, int], confidence: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``[1, C, h, w]`` logits → labels and confidence at ``out_hw``, in reused scratch tensors.

        At 1024² with 25 classes the upsampled logits are 100 MiB: allocating them per set costs as much as
        the arithmetic (page faults), so the buffers live as long as the output size stays the same.
        """
        full = self._scratch("logits", (1, logits.size(1), *out_hw), logits)  # rewritten in place below
        if tuple(logits.shape[-2:]) != out_hw:
            # F.interpolate(mode="bilinear", align_corners=False) with an output buffer
            torch.ops.aten.upsample_bilinear2d.out(logits, list(out_hw), False, None, None, out=full)
        else:
            full.copy_(logits)
        full = full[0]
        top = self._scratch("top", out_hw, logits)
        labels = self._scratch("labels", out_hw, logits, torch.int64)
        torch.max(full, 0, out=(top, labels))
        if not confidence:
            return labels.to(torch.uint8).cpu().numpy(), None
        # max softmax probability = 1 / sum(exp(logit - max)): softmax().max() without a probability tensor
        probability = torch.sum(full.sub_(top).exp_(), 0, out=self._scratch("confidence", out_hw, logits))
        probability.reciprocal_()
        return labels.to(torch.uint8).cpu().numpy(), probability.to("cpu", copy=True).numpy()

    def _scratch(
        self, name: str, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        dtype = dtype or like.dtype
        buffer = self._scratch_buffers.get(name)
        if buffer is None or (tuple(buffer.shape), buffer.dtype, buffer.device) != (tuple(shape), dtype, like.device):
            buffer = self._scratch_buffers[name] = torch.empty(shape, dtype=dtype, device=like.device)
        return buffer


def load_segmenter(
    checkpoint: str | Path, config: MemSamConfig | None = None, *, source: str = "config", **inference: Any
) -> tuple[Segmenter, MemSamConfig]:
    """The node's entry point: a checkpoint and the run-time settings → a ready Segmenter + the effective config.

    The checkpoint supplies the model (SAM 2 config, image size, modalities in frame order, LoRA, gate),
    the input contract and the class names/palette; ``config`` (default: the schema's defaults) supplies
    everything else (sync, ROS, ...), and ``inference`` keyword arguments override ``inference.*``
    (``device="cuda"``, ``precision="bf16"``, ``threads=2`` ...). A model, input or class field that
    ``config`` sets to something the checkpoint contradicts is a one-line ConfigError naming both values.
    """
    base = (config or MemSamConfig()).model_copy(deep=True)
    for key, value in {"checkpoint": str(checkpoint), **inference}.items():
        try:
            setattr(base.inference, key, value)  # validated on assignment
        except (ValidationError, ValueError) as err:
            reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            raise ConfigError(f"{source}: inference.{key}: {reason} (got {value!r})") from None
    segmenter = Segmenter(base, source=source)
    return segmenter, segmenter.config


def _output_size(frames: Mapping[str, np.ndarray], present: tuple[str, ...]) -> tuple[int, int]:
    """Outputs are at the reference (first present, normally RGB) modality's resolution."""
    reference = frames["rgb"] if "rgb" in present else frames[present[0]]
    return int(reference.shape[0]), int(reference.shape[1])
