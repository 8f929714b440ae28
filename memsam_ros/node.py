"""The memsam segmentation node: synchronised RGB/depth/LiDAR/event images in, class masks out.

Threads: subscription callbacks only decode and hand messages to the synchroniser (never block);
synchronised sets go to a keep-newest worker thread that runs the one inference path
(:class:`memsam_core.engine.Segmenter`) and publishes. Bad input (undecodable images, odd stamps,
all-invalid depth, silent topics) is logged with a per-topic throttled warning, counted in
``/diagnostics`` and otherwise skipped, so valid sets keep flowing.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from memsam_core.classes import IGNORE_INDEX
from memsam_core.config import ConfigError
from memsam_core.engine import Segmenter
from memsam_core.model import CheckpointError
from memsam_ros.codec import ImageDecodeError, array_to_image, decode_modality
from memsam_ros.diagnostics import PipelineHealth, diagnostic_array
from memsam_ros.info import BUILD_MSGS_HINT, info_message_type, make_info
from memsam_ros.params import RUNTIME_PARAMETERS, declare_config_parameters, parameter_source, unknown_overrides
from memsam_ros.stamps import stamp_s
from memsam_ros.sync import BACKJUMP_RESET_S, ModalitySynchronizer, SyncedSet
from memsam_ros.throttle import WarningThrottle
from memsam_ros.topics import modality_topics
from memsam_ros.worker import LatestWorker, SetCounts

NODE_NAME = "memsam_segment"
FORWARD_JUMP_TOLERANCE_S = 1.0  # stamp advancing this much more than wall time = jump forward
MAX_NONFINITE_DEPTH_FRACTION = 0.5  # warn above this share of NaN/Inf depth pixels (REP 118 allows some)
_DIGITS = re.compile(r"\d+(\.\d+)?")


class StartupError(RuntimeError):
    """The node cannot start; the message is one line naming the file and/or field."""


@dataclass(slots=True)
class _Frame:
    """A decoded image plus what the outputs need from its message."""

    array: np.ndarray
    header: Any
    arrival: float  # time.monotonic() at the callback


class _ForwardToRosLogger(logging.Handler):
    """Route memsam_core's Python logging (e.g. "untrained model") to the node's rclpy logger."""

    def __init__(self, node: Node) -> None:
        super().__init__(logging.INFO)
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        else:
            self._logger.info(text)


class SegmentNode(Node):
    """See the module docstring; parameters are the config schema's leaves (memsam_ros.params)."""

    def __init__(
        self,
        node_name: str = NODE_NAME,
        *,
        context: Any = None,
        namespace: str | None = None,
        parameter_overrides: list[Parameter] | None = None,
        argv: Sequence[str] | None = None,
        warning_sink: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(node_name, context=context, namespace=namespace, parameter_overrides=parameter_overrides)
        self._log_handler = _ForwardToRosLogger(self)
        for name in ("memsam_core", "memsam_ros"):
            logging.getLogger(name).addHandler(self._log_handler)
        self._worker: LatestWorker[SyncedSet] | None = None
        try:
            self._setup(argv, warning_sink)
        except BaseException:
            self.destroy_node()
            raise

    # ------------------------------------------------------------------ start-up
    def _setup(self, argv: Sequence[str] | None, warning_sink: Callable[[str], None] | None) -> None:
        source = parameter_source(argv)
        self.config = declare_config_parameters(self, source)
        for name in unknown_overrides(self):
            self.get_logger().warning(f"unknown parameter {name!r} ignored (typo? see docs/node.md)")
        try:
            self.segmenter = Segmenter(self.config, source=source)
        except CheckpointError as err:
            raise StartupError(f"inference.checkpoint: {err}") from None
        except RuntimeError as err:  # e.g. inference.device cuda without a GPU
            raise StartupError(f"{source}: {err}") from None
        cfg = self.config
        self.modalities = list(cfg.model.modalities)
        self.reference = cfg.sync.reference
        self._warning_sink = warning_sink
        self._throttle = WarningThrottle(cfg.ros.warn_throttle_s)
        self._overlay_alpha = cfg.ros.overlay_alpha
        self._last_stamp: dict[str, tuple[float, float]] = {}  # modality -> (stamp, arrival)
        self.topics = modality_topics(cfg, self.resolve_topic_name)
        self.health = PipelineHealth(self.topics, self.reference, cfg.ros.silent_after_s, time.monotonic())
        self.sync = ModalitySynchronizer.from_config(cfg)
        self._info_type = info_message_type()
        if self._info_type is None:
            self.get_logger().error(
                f"memsam_msgs is not importable: build it with `{BUILD_MSGS_HINT}` (and source scripts/env.sh "
                "outside .venv); publishing ~/info as std_msgs/String JSON meanwhile"
            )
        self._model_name = self._describe_model()
        self._create_publishers()
        self._create_inputs()
        self._worker = LatestWorker(self._process, name="memsam-inference", on_error=self._on_inference_error)
        self._worker.start()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info(
            f"segmenting {', '.join(f'{m}={t}' for m, t in self.topics.items())} with {self._model_name} "
            f"on {self.segmenter.device} ({cfg.ros.reliability} QoS)"
        )

    def _describe_model(self) -> str:
        cfg = self.config
        weights = cfg.inference.checkpoint or "untrained"
        return f"MemorySAM {cfg.model.sam2_config} {cfg.model.image_size}px ({weights})"

    def _create_publishers(self) -> None:
        out_qos = QoSProfile(depth=self.config.ros.qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_labels = self.create_publisher(Image, "~/labels", out_qos)
        self.pub_color = self.create_publisher(Image, "~/color", out_qos)
        self.pub_confidence = self.create_publisher(Image, "~/confidence", out_qos)
        self.pub_info = self.create_publisher(self._info_type or String, "~/info", out_qos)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            history=HistoryPolicy.KEEP_LAST,
        )
        self.pub_class_names = self.create_publisher(String, "~/class_names", latched)
        self.pub_class_names.publish(String(data=json.dumps(self.segmenter.class_names)))
        from diagnostic_msgs.msg import DiagnosticArray

        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _create_inputs(self) -> None:
        ros = self.config.ros
        reliability = ReliabilityPolicy.RELIABLE if ros.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        in_qos = QoSProfile(
            depth=ros.qos_depth,
            reliability=reliability,
            history=HistoryPolicy.KEEP_LAST,
            durability=DurabilityPolicy.VOLATILE,
        )
        inputs = MutuallyExclusiveCallbackGroup()  # decode + sync serially; inference is on the worker
        self._subscriptions_by_modality = {
            m: self.create_subscription(
                Image, self.topics[m], lambda msg, m=m: self._on_image(m, msg), in_qos, callback_group=inputs
            )
            for m in self.modalities
        }
        poll_period = max(0.01, min(0.05, self.config.sync.max_wait_s / 4))
        self._poll_timer = self.create_timer(poll_period, self._on_poll, callback_group=inputs)
        self._diag_timer = self.create_timer(
            ros.diagnostics_period_s, self._on_diagnostics, callback_group=MutuallyExclusiveCallbackGroup()
        )

    # ------------------------------------------------------------------ warnings
    def warn(self, modality: str, kind: str, reason: str, *, decode_error: bool = False) -> None:
        """Record a fault on ``modality``'s topic and log it, throttled per (topic, kind)."""
        self.health.fault(modality, reason, time.monotonic(), decode_error)
        topic = self.topics.get(modality, modality)
        # throttled per topic and kind of reason; numbers are masked so "step 100 < ..." repeats count as one
        key = (modality, kind, _DIGITS.sub("#", reason))
        text = self._throttle.format(key, f"{topic} [{modality}]: {reason}")
        if text is not None:
            self._emit_warning(text)

    def _emit_warning(self, text: str) -> None:
        self.get_logger().warning(text)
        if self._warning_sink is not None:
            self._warning_sink(text)

    # ------------------------------------------------------------------ input path
    def _on_image(self, modality: str, msg: Image) -> None:
        now = time.monotonic()
        self.health.message(modality, now)
        try:
            array = decode_modality(msg, modality)
        except ImageDecodeError as err:
            self.warn(modality, "decode", f"cannot decode image: {err}", decode_error=True)
            return
        except Exception as err:  # whatever a malformed message does, the node keeps running
            self.warn(modality, "decode", f"cannot decode image: {type(err).__name__}: {err}", decode_error=True)
            return
        self.health.decoded(modality)
        if modality in ("depth", "lidar"):
            self._check_depth(modality, array)
        stamp = stamp_s(msg.header)
        self._check_stamp(modality, stamp, now)
        resets = self.sync.stats.resets
        sets = self.sync.add(modality, stamp, _Frame(array, msg.header, now), now)
        if self.sync.stats.resets != resets:
            self.health.sync_reset(now)
        self._submit(sets)

    def _check_depth(self, modality: str, metres: np.ndarray) -> None:
        """Invalid depth is legal (REP 118) and used as "no data"; warn only when it is (nearly) all invalid."""
        finite = np.isfinite(metres)
        if not np.any(finite & (metres > 0)):
            what = "LiDAR return" if modality == "lidar" else "depth pixel"
            self.warn(modality, "invalid", f"no valid {what} (all NaN/Inf/<=0); used as missing data")
            return
        nonfinite = 1.0 - np.count_nonzero(finite) / finite.size  # count_nonzero: 3x faster than mean()
        if modality == "depth" and nonfinite > MAX_NONFINITE_DEPTH_FRACTION:
            self.warn(modality, "nonfinite", f"{nonfinite:.0%} of depth pixels are NaN/Inf")

    def _check_stamp(self, modality: str, stamp: float, now: float) -> None:
        previous = self._last_stamp.get(modality)
        self._last_stamp[modality] = (stamp, now)
        if previous is None:
            return
        last_stamp, last_arrival = previous
        if stamp < last_stamp - BACKJUMP_RESET_S:
            action = "synchroniser reset" if modality == self.reference else "older messages discarded"
            self.warn(modality, "backjump", f"stamp jumped back by {last_stamp - stamp:.3f} s (bag loop?): {action}")
        elif stamp <= last_stamp:
            self.warn(
                modality,
                "order",
                f"stamp out of order ({last_stamp - stamp:.3f} s before the previous one); a set older than one "
                "already published is dropped",
            )
        elif stamp - last_stamp > (now - last_arrival) + FORWARD_JUMP_TOLERANCE_S:
            self.warn(modality, "forwardjump", f"stamp jumped forward by {stamp - last_stamp:.3f} s")

    def _on_poll(self) -> None:
        self._submit(self.sync.poll(time.monotonic()))

    def _submit(self, sets: list[SyncedSet]) -> None:
        for synced in sets:
            if self._worker is not None:
                self._worker.submit(synced)

    # ------------------------------------------------------------------ inference (worker thread)
    def _process(self, synced: SyncedSet) -> None:
        reference: _Frame = synced.items[self.reference]
        frames = {m: frame.array for m, frame in synced.items.items()}
        self._check_resolutions(frames)
        result = self.segmenter.segment_batch([frames])[0]
        header = reference.header
        # labels first: they are what downstream planners wait for; the overlay is for people
        self.pub_labels.publish(array_to_image(result.labels, "mono8", header))
        self.pub_confidence.publish(array_to_image(result.confidence, "32FC1", header))
        self.pub_color.publish(array_to_image(self._overlay(result.labels, frames.get("rgb")), "rgb8", header))
        latency_ms = (time.monotonic() - reference.arrival) * 1000.0
        skews = [synced.stamps[m] - synced.stamp_s for m in result.modalities]
        self._publish_info(header, result.modalities, result.missing, skews, result.inference_ms, latency_ms)
        self.health.output(time.monotonic(), latency_ms, result.inference_ms)

    def _check_resolutions(self, frames: dict[str, np.ndarray]) -> None:
        ref_hw = frames[self.reference].shape[:2]
        for m, array in frames.items():
            if array.shape[:2] != ref_hw:
                self.warn(
                    m,
                    "resolution",
                    f"resolution {array.shape[1]}x{array.shape[0]} differs from {self.reference} "
                    f"{ref_hw[1]}x{ref_hw[0]}; resampled to the network input",
                )

    def _overlay(self, labels: np.ndarray, rgb: np.ndarray | None) -> np.ndarray:
        """Palette colour blended over the RGB image by ``ros.overlay_alpha``; unlabeled pixels show the image."""
        colors = self.segmenter.colorize(labels)
        if rgb is None or rgb.shape[:2] != labels.shape:
            return colors
        alpha = self._overlay_alpha
        out = cv2.addWeighted(colors, alpha, np.ascontiguousarray(rgb), 1.0 - alpha, 0.0)  # uint8, rounded
        unlabeled = labels == IGNORE_INDEX
        if unlabeled.any():
            np.copyto(out, rgb, where=unlabeled[..., None])
        return out

    def _publish_info(self, header, used, missing, skews, inference_ms: float, latency_ms: float) -> None:
        dropped = self._worker.dropped if self._worker is not None else 0
        fields = {
            "class_names": list(self.segmenter.class_names),
            "modalities_used": list(used),
            "modalities_missing": list(missing),
            "stamp_skew_s": [float(s) for s in skews],
            "inference_ms": float(inference_ms),
            "total_latency_ms": float(latency_ms),
            "sets_dropped": int(dropped),
            "model_name": self._model_name,
        }
        self.pub_info.publish(make_info(self._info_type, header, fields))

    def _on_inference_error(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.health.failure(reason, time.monotonic())
        text = self._throttle.format(("*", "inference"), f"inference failed, set skipped: {reason}")
        if text is not None:
            self._emit_warning(text)

    # ------------------------------------------------------------------ diagnostics
    def counts(self) -> SetCounts:
        """Synchronised-set accounting (received = processed + dropped + failed + pending)."""
        return self._worker.counts() if self._worker is not None else SetCounts(0, 0, 0, 0, 0)

    def _on_diagnostics(self) -> None:
        now = time.monotonic()
        self._report_silence(now)
        statuses = self.health.statuses(now, self.counts(), self.sync.stats, self.get_name())
        self.pub_diagnostics.publish(diagnostic_array(statuses, self.get_clock().now().to_msg()))

    def _report_silence(self, now: float) -> None:
        """Warn (throttled) about topics silent for more than ros.silent_after_s; log when they come back."""
        silent = self.health.silence(now)
        all_silent = len(silent) == len(self.modalities)
        if all_silent:
            text = self._throttle.format(("*", "silent"), f"no input on any topic for {min(silent.values()):.1f} s")
            if text is not None:
                self._emit_warning(text)
        for m in self.modalities:
            if m not in silent:
                if self.health.mark_silent(m, False):
                    self.get_logger().info(f"{self.topics[m]} [{m}]: receiving again")
                continue
            self.health.mark_silent(m, True)
            if not all_silent:
                effect = "nothing to segment" if m == self.reference else f"sets are published without {m}"
                text = self._throttle.format(
                    (m, "silent"), f"{self.topics[m]} [{m}]: silent for {silent[m]:.1f} s; {effect}"
                )
                if text is not None:
                    self._emit_warning(text)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Apply the few parameters that can change at run time (others are read-only)."""
        for param in params:
            if param.name not in RUNTIME_PARAMETERS:
                continue
            section, key = param.name.split(".", 1)
            value = float(param.value)
            try:
                setattr(getattr(self.config, section), key, value)  # pydantic validates the new value
            except Exception as err:
                return SetParametersResult(successful=False, reason=f"{param.name}: {err}")
            if param.name == "ros.overlay_alpha":
                self._overlay_alpha = value
            elif param.name == "ros.warn_throttle_s":
                self._throttle.period_s = value
            elif param.name == "ros.silent_after_s":
                self.health.silent_after_s = value
            else:
                setattr(self.sync, key, value)  # slop_s / max_wait_s, read under the sync's lock
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ shutdown
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker has nothing waiting or running (tests, orderly shutdown)."""
        return self._worker.wait_idle(timeout) if self._worker is not None else True

    def destroy_node(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=10.0)
        for name in ("memsam_core", "memsam_ros"):
            logging.getLogger(name).removeHandler(self._log_handler)
        super().destroy_node()


STARTUP_ERRORS = (ConfigError, CheckpointError, StartupError)
GIL_SWITCH_INTERVAL_S = 0.0005


def configure_process_for_inference(context: Any = None) -> SingleThreadedExecutor:
    """The executor to spin :class:`SegmentNode` with, after tuning the interpreter for it.

    The inference thread runs thousands of short torch ops per set and must re-take the GIL after each;
    with Python's default 5 ms switch interval, callback threads holding it starve inference (measured on
    2 cores under a 30 Hz flood: 0.2 sets/s with 3 executor threads and 5 ms, 1.5 sets/s with one thread
    and 0.5 ms). Callbacks only decode and synchronise, so one executor thread is enough.
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return SingleThreadedExecutor(context=context)


def _print_error(message: str) -> None:
    for line in str(message).strip().splitlines() or ["(no message)"]:
        print(f"[memsam-node] error: {line}", file=sys.stderr, flush=True)


def main(args: list[str] | None = None) -> int:
    """``memsam-node --ros-args --params-file config/segment.yaml``; returns 2 on a start-up error."""
    argv = list(sys.argv if args is None else args)
    try:
        rclpy.init(args=argv)
    except RuntimeError as err:  # rcl could not parse the command line / params file
        _print_error(str(err).split(", at ")[0])
        return 2
    node: SegmentNode | None = None
    try:
        node = SegmentNode(argv=argv)
        executor = configure_process_for_inference()
        executor.add_node(node)
        executor.spin()
    except STARTUP_ERRORS as err:
        _print_error(str(err))
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as err:
        if node is not None:
            raise
        traceback.print_exc()
        _print_error(f"cannot start: {type(err).__name__}: {err}")
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
