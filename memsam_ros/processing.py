"""One synchronised set on the inference thread: decode what it uses, segment, publish, then check the inputs.

The labels go out first (planners wait for them); the overlay and confidence only for subscribers; input checks
that only warn (all-invalid depth, resolutions, frame ids) run after the outputs, off the latency path.

Memory across time (``model.temporal_memory`` ≥ 1): every set reaches the engine through
:meth:`~memsam_core.engine.Segmenter.segment_instant` with its RGB stamp and the synchroniser's reset count when it
was formed (:class:`QueuedSet`), so the memory of past instants is reset on a synchroniser reset, stamps going back
and a gap, exactly where a bag replay resets it. A set the keep-newest worker drops never gets here, so it never
enters the memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from std_msgs.msg import Header

from memsam_core.engine import Segmenter
from memsam_ros.diagnostics import PipelineHealth
from memsam_ros.faults import FaultReporter
from memsam_ros.inputs.received import Received, decode_set
from memsam_ros.inputs.stamps import ns_to_s, to_time
from memsam_ros.outputs import Outputs
from memsam_ros.sync import SyncedSet

MAX_NONFINITE_DEPTH_FRACTION = 0.5  # warn above this share of NaN/Inf depth pixels (REP 118 allows some)


@dataclass(frozen=True)
class QueuedSet:
    """A synchronised set on its way to the worker, with the synchroniser's reset count when it was formed."""

    synced: SyncedSet
    sync_epoch: int = 0


class SetProcessor:
    """Callable on the keep-newest worker: ``processor(queued)``."""

    def __init__(
        self,
        segmenter: Segmenter,
        outputs: Outputs,
        health: PipelineHealth,
        faults: FaultReporter,
        input_types: dict[str, str],
        reference: str,
        extrinsics: str,
        info_type: type | None,
        model_name: str,
        running: Callable[[], bool],
        dropped: Callable[[], int],
    ) -> None:
        self.segmenter, self.outputs, self.health, self.faults = segmenter, outputs, health, faults
        self.input_types, self.reference, self.extrinsics = input_types, reference, extrinsics
        self.info_type, self.model_name = info_type, model_name
        self._running, self._dropped = running, dropped

    def __call__(self, queued: QueuedSet) -> None:
        if not self._running():
            return  # deactivated or disabled meanwhile: nothing is published
        synced = queued.synced
        items: dict[str, Received] = synced.items
        frames, errors = decode_set(items, items[self.reference].stamp_ns)
        for modality, reason in errors.items():
            self.faults.warn(modality, "decode", reason, decode_error=True)
        for modality in frames:
            self.health.decoded(modality)
        if self.reference not in frames:
            return  # no set without its reference image (warned above)
        reference = items[self.reference]
        stamp, frame_id = reference.stamp_ns, reference.frame_id
        header = Header(stamp=to_time(stamp), frame_id=frame_id)
        outputs = self.outputs
        want_confidence = outputs.wants_confidence
        result = self.segmenter.segment_instant(frames, ns_to_s(stamp), queued.sync_epoch, want_confidence)
        outputs.publish_labels(result.labels, stamp, frame_id)
        latency_ms = (time.monotonic() - reference.arrival) * 1000.0
        outputs.publish_camera_info(header, result.labels.shape)
        outputs.publish_info(self.info_type, header, self._info_fields(synced, result, latency_ms))
        if want_confidence:
            outputs.publish_confidence(result.confidence, stamp, frame_id)
        if outputs.wants_color:
            colors = self.segmenter.colorize(result.labels)
            outputs.publish_color(result.labels, colors, frames.get("rgb"), stamp, frame_id)
        self.health.output(time.monotonic(), latency_ms, result.inference_ms)
        if result.extras.get("memory_reset"):
            self.health.set_memory_resets(self.segmenter.memory_resets_by_reason)
        for modality in ("depth", "lidar"):
            if modality in frames:
                self.check_depth(modality, frames[modality])
        self.check_resolutions(frames)
        self.check_frames(items)

    def _info_fields(self, synced: SyncedSet, result: Any, latency_ms: float) -> dict[str, Any]:
        return {
            "class_names": list(self.segmenter.class_names),
            "modalities_used": list(result.modalities),
            "modalities_missing": list(result.missing),
            "stamp_skew_s": [float(synced.stamps[m] - synced.stamp_s) for m in result.modalities],
            "inference_ms": float(result.inference_ms),
            "total_latency_ms": float(latency_ms),
            "sets_dropped": int(self._dropped()),
            "model_name": self.model_name,
            "memory_instants": int(result.extras.get("memory_instants", 0)),
            "memory_resets": int(result.extras.get("memory_resets", 0)),
        }

    # ------------------------------------------------------------------ input checks (warnings only)
    def check_depth(self, modality: str, metres: np.ndarray) -> None:
        """Invalid depth is legal (REP 118) and used as "no data"; warn only when it is (nearly) all invalid."""
        finite = np.isfinite(metres)
        if not np.any(finite & (metres > 0)):
            what = "LiDAR return" if modality == "lidar" else "depth pixel"
            self.faults.warn(modality, "invalid", f"no valid {what} (all NaN/Inf/<=0); used as missing data")
            return
        nonfinite = 1.0 - np.count_nonzero(finite) / finite.size  # count_nonzero: 3x faster than mean()
        if modality == "depth" and nonfinite > MAX_NONFINITE_DEPTH_FRACTION:
            self.faults.warn(modality, "nonfinite", f"{nonfinite:.0%} of depth pixels are NaN/Inf")

    def check_resolutions(self, frames: dict[str, np.ndarray]) -> None:
        ref_hw = frames[self.reference].shape[:2]
        for m, array in frames.items():
            if array.shape[:2] != ref_hw:
                self.faults.warn(
                    m,
                    "resolution",
                    f"resolution {array.shape[1]}x{array.shape[0]} differs from {self.reference} "
                    f"{ref_hw[1]}x{ref_hw[0]}; resampled to the network input",
                )

    def check_frames(self, items: dict[str, Received]) -> None:
        """``ros.extrinsics: registered``: every modality must be an image in the reference camera's frame."""
        if self.extrinsics != "registered":
            return
        expected = items[self.reference].frame_id
        topics = self.faults.topics
        for m, received in items.items():
            if received.frame_id != expected and self.input_types[m] != "pointcloud":  # projected by the node
                self.faults.once(
                    ("frame", m, received.frame_id, expected),
                    f"{topics[m]} [{m}]: frame_id {received.frame_id!r} differs from {self.reference} "
                    f"{expected!r}, but ros.extrinsics is 'registered' (the model takes every modality as an image "
                    f"in the {self.reference} camera: register depth to it, project LiDAR into it). If the images "
                    "are aligned under another name, set ros.extrinsics: unchecked",
                )
