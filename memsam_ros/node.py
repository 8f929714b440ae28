"""The memsam segmentation node: synchronised RGB/depth/LiDAR/event images in, class masks out.

A lifecycle node (``rclpy.lifecycle``): *configure* loads the model and creates the publishers,
*activate* subscribes, *deactivate* unsubscribes (the model stays loaded), *cleanup* unloads it.
``ros.autostart`` (default true) runs configure and activate at start-up; ``~/enable``
(``std_srvs/SetBool``) pauses and resumes an active node by unsubscribing and subscribing again.

Threads: the image callbacks (one executor thread) read only the header of the serialized message and
hand it to the synchroniser; synchronised sets go to a keep-newest worker thread that decodes just the
messages in the set, runs the one inference path (:class:`memsam_core.engine.Segmenter`) and publishes.
``~/color`` and ``~/confidence`` are computed only while someone subscribes to them. Bad input
(undecodable images, odd stamps, all-invalid depth, silent topics) is logged with a per-topic throttled
warning, counted in ``/diagnostics`` and otherwise skipped, so valid sets keep flowing.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool

from memsam_core.classes import IGNORE_INDEX
from memsam_core.config import ConfigError
from memsam_core.engine import Segmenter
from memsam_core.modalities import check_ros_sensors
from memsam_core.model import CheckpointError
from memsam_ros.cdr import CdrError
from memsam_ros.codec import ImageDecodeError, array_to_cdr, check_modality
from memsam_ros.diagnostics import PipelineHealth, diagnostic_array
from memsam_ros.fastdds import PROFILE_VARIABLE, use_large_data_profile
from memsam_ros.frames import Received, decode_set, received_from_cdr, received_from_raw
from memsam_ros.heap import keep_large_buffers
from memsam_ros.info import BUILD_MSGS_HINT, info_message_type, make_info
from memsam_ros.inputs import MESSAGE_TYPES, TF_STATIC_TOPIC, TF_TOPIC, InputConverter, message_class
from memsam_ros.params import (
    RUNTIME_PARAMETERS,
    declare_config_parameters,
    effective_config,
    parameter_source,
    unknown_overrides,
)
from memsam_ros.qos import input_qos, output_qos, tf_qos, tf_static_qos
from memsam_ros.stamps import ns_to_s, to_time
from memsam_ros.sync import BACKJUMP_RESET_S, ModalitySynchronizer, SyncedSet
from memsam_ros.throttle import WarningThrottle
from memsam_ros.topics import camera_info_topic, modality_topics
from memsam_ros.worker import LatestWorker, SetCounts

NODE_NAME = "memsam_segment"
FORWARD_JUMP_TOLERANCE_S = 1.0  # stamp advancing this much more than wall time = jump forward
MAX_NONFINITE_DEPTH_FRACTION = 0.5  # warn above this share of NaN/Inf depth pixels (REP 118 allows some)
GIL_SWITCH_INTERVAL_CPU_S = 0.0005
WORKER_HANDOFF_TIMEOUT_S = 0.005  # an idle worker takes a set within ~0.1 ms; never longer than this
_DIGITS = re.compile(r"\d+(\.\d+)?")
_QOS_OVERRIDES = "qos_overrides."


class StartupError(RuntimeError):
    """The node cannot start; the message is one line naming the file and/or field."""


def switch_interval_s(setting_ms: float, device_type: str) -> float | None:
    """The GIL switch interval to set, or None to leave Python's default (5 ms).

    CPU inference runs thousands of short torch ops per set and must re-take the GIL after each; with the
    default 5 ms the callback thread starves it (measured on 2 cores under a 30 Hz flood: 0.2 sets/s,
    1.5 sets/s with 0.5 ms). On CUDA the inference thread waits for the GPU with the GIL released and
    makes few Python calls per set (one graph replay), so the short interval only adds forced switches.
    """
    if setting_ms > 0:
        return setting_ms / 1000.0
    return GIL_SWITCH_INTERVAL_CPU_S if device_type == "cpu" else None


class _ForwardToRosLogger(logging.Handler):
    """Route memsam_core's Python logging (e.g. "untrained model") to the node's rclpy logger."""

    def __init__(self, node: LifecycleNode) -> None:
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


class SegmentNode(LifecycleNode):
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
        tune_interpreter: bool = False,
    ) -> None:
        super().__init__(node_name, context=context, namespace=namespace, parameter_overrides=parameter_overrides)
        self._log_handler = _ForwardToRosLogger(self)
        for name in ("memsam_core", "memsam_ros"):
            logging.getLogger(name).addHandler(self._log_handler)
        self._worker: LatestWorker[SyncedSet] | None = None
        self._starting = False
        self._tune_interpreter = tune_interpreter
        self._warning_sink = warning_sink
        try:
            self._declare(argv)
        except BaseException:
            self.destroy_node()
            raise

    # ------------------------------------------------------------------ construction (unconfigured)
    def _declare(self, argv: Sequence[str] | None) -> None:
        """Parameters, topics and the services that exist in every lifecycle state."""
        self._source = parameter_source(argv)
        declared = declare_config_parameters(self, self._source)
        config_file = self.get_parameter("config_file").value
        self.config = effective_config(declared, f"{config_file} + {self._source}" if config_file else self._source)
        for name in unknown_overrides(self):
            self.get_logger().warning(f"unknown parameter {name!r} ignored (typo? see docs/node.md)")
        cfg = self.config
        self.modalities = list(cfg.model.modalities)
        self.reference = cfg.sync.reference
        self._throttle = WarningThrottle(cfg.ros.warn_throttle_s)
        self._overlay_alpha = cfg.ros.overlay_alpha
        self._last_stamp: dict[str, tuple[float, float]] = {}  # modality -> (stamp, arrival)
        self._warned_once: set[tuple[str, ...]] = set()
        self.topics = modality_topics(cfg, self.resolve_topic_name)
        # next to the (remapped) RGB topic, as image_transport pairs them, unless named explicitly
        info_name = cfg.ros.camera_info_topic or camera_info_topic(self.topics[self.reference])
        self.camera_info_topic = self.resolve_topic_name(info_name)
        self.health = PipelineHealth(self.topics, self.reference, cfg.ros.silent_after_s, time.monotonic())
        self.health.hardware_id = socket.gethostname()
        self.sync = ModalitySynchronizer.from_config(cfg)
        self.inputs = InputConverter(cfg)
        self.segmenter: Segmenter | None = None
        self.configure_error = ""
        self._camera_info: CameraInfo | None = None
        self._camera_info_lock = threading.Lock()
        self._inputs: list[Any] = []  # subscriptions while segmenting
        self._poll_timer: Any = None
        self._active = False
        self._enabled = True
        self._info_type = info_message_type()
        if self._info_type is None:
            self.get_logger().error(
                f"memsam_msgs is not importable: build it with `{BUILD_MSGS_HINT}` (and source scripts/env.sh "
                "outside .venv); publishing ~/info as std_msgs/String JSON meanwhile"
            )
        self._input_group = MutuallyExclusiveCallbackGroup()  # callbacks only read headers and synchronise
        self.srv_enable = self.create_service(SetBool, "~/enable", self._on_enable, callback_group=self._input_group)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            cfg.ros.diagnostics_period_s, self._on_diagnostics, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """configure + activate (``ros.autostart``); raises :class:`StartupError` when configuring fails."""
        self._starting = True  # the caller reports a failure: no second copy in the log
        try:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.configure_error or "configure failed (see the log)")
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(self.configure_error or "activate failed (see the log)")
        finally:
            self._starting = False

    @property
    def lifecycle_state(self) -> str:
        return self._state_machine.current_state[1]

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model, create the publishers and the inference thread."""
        cfg = self.config
        try:
            self.segmenter = Segmenter(cfg, source=self._source)
        except CheckpointError as err:
            return self._configure_failed(f"inference.checkpoint: {err}")
        except RuntimeError as err:  # e.g. inference.device cuda without a GPU
            return self._configure_failed(f"{self._source}: {err}")
        except Exception as err:  # rclpy would turn it into ERROR without a word
            return self._configure_failed(f"cannot load the model: {type(err).__name__}: {err}")
        try:  # the checkpoint's input contract must be what ROS sensors deliver (metric depth/LiDAR)
            check_ros_sensors(self.segmenter.config, cfg.inference.checkpoint or self._source)
        except ConfigError as err:
            self.segmenter = None
            return self._configure_failed(str(err))
        self.configure_error = ""
        device = self.segmenter.device
        self.health.hardware_id = f"{socket.gethostname()} {device}" + (
            f" ({_cuda_name(device)})" if device.type == "cuda" else ""
        )
        if self._tune_interpreter and (interval := switch_interval_s(cfg.ros.gil_switch_interval_ms, device.type)):
            sys.setswitchinterval(interval)
        weights = cfg.inference.checkpoint or "untrained"
        self._model_name = f"MemorySAM {cfg.model.sam2_config} {cfg.model.image_size}px ({weights})"
        try:
            self._create_publishers()
        except Exception as err:  # e.g. a qos_overrides value rclpy cannot parse
            self._teardown()
            return self._configure_failed(f"cannot create the publishers: {type(err).__name__}: {err}")
        self._worker = LatestWorker(self._process, name="memsam-inference", on_error=self._on_inference_error)
        self._worker.start()
        self.get_logger().info(f"configured: {self._model_name} on {device}")
        return super().on_configure(state)

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self.configure_error = reason
        if not self._starting:
            self.get_logger().error(f"lifecycle transition failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe (unless disabled through ``~/enable``) and let the publishers publish."""
        result = super().on_activate(state)  # the lifecycle publishers
        self.pub_class_names.publish(String(data=json.dumps(self.segmenter.class_names)))
        self._active = True
        if self._enabled:
            try:
                self._subscribe()
            except Exception as err:  # e.g. a qos_overrides value rclpy cannot parse
                self._active = False
                self._unsubscribe()
                super().on_deactivate(state)
                return self._configure_failed(f"cannot subscribe: {err}")
        self._warn_unknown_qos_overrides()
        self.get_logger().info(
            f"active: segmenting {', '.join(f'{m}={t}' for m, t in self.topics.items())} "
            f"({self.config.ros.reliability} QoS)" + ("" if self._enabled else "; disabled until ~/enable true")
        )
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; the model stays loaded for a quick activate."""
        self._active = False
        self._unsubscribe()
        if self._worker is not None:
            self._worker.wait_idle(10.0)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload the model and remove the publishers."""
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._unsubscribe()
        self._teardown()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._unsubscribe()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    def _teardown(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=10.0)
            self._worker = None
        for name in ("pub_labels", "pub_color", "pub_confidence", "pub_info", "pub_camera_info", "pub_class_names"):
            publisher = getattr(self, name, None)
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
                setattr(self, name, None)
        if self.segmenter is not None:
            device = self.segmenter.device
            self.segmenter = None
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """``~/enable``: false unsubscribes (nothing is received, decoded or segmented), true subscribes."""
        self._enabled = bool(request.data)
        if self._active:
            try:
                (self._subscribe if self._enabled else self._unsubscribe)()
            except Exception as err:  # a service callback must answer, not raise into the executor
                self._unsubscribe()
                response.success, response.message = False, f"cannot subscribe: {err}"
                self.get_logger().error(f"~/enable: {response.message}")
                return response
        state = self.lifecycle_state
        response.success = True
        response.message = ("enabled" if self._enabled else "disabled") + (
            "" if self._active else f" (node {state}: takes effect when active)"
        )
        self.get_logger().info(f"~/enable: {response.message}")
        return response

    @property
    def segmenting(self) -> bool:
        return self._active and self._enabled

    # ------------------------------------------------------------------ entities
    def _create_publishers(self) -> None:
        depth = self.config.ros.qos_depth

        def publisher(msg_type: type, topic: str) -> Any:
            options = QoSOverridingOptions.with_default_policies()
            return self.create_lifecycle_publisher(msg_type, topic, output_qos(depth), qos_overriding_options=options)

        self.pub_labels = publisher(Image, "~/labels")
        self.pub_color = publisher(Image, "~/color")
        self.pub_confidence = publisher(Image, "~/confidence")
        self.pub_info = publisher(self._info_type or String, "~/info")
        self.pub_camera_info = publisher(CameraInfo, "~/camera_info")
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            history=HistoryPolicy.KEEP_LAST,
        )
        self.pub_class_names = self.create_lifecycle_publisher(String, "~/class_names", latched)

    def _input_qos(self) -> QoSProfile:
        return input_qos(self.config.ros)

    def _subscribe(self) -> None:
        if self._inputs:
            return
        override = QoSOverridingOptions.with_default_policies
        self.sync.clear()
        self.health.restart(time.monotonic())
        self._last_stamp.clear()
        # a fresh profile each: rclpy applies qos_overrides.<topic>.* to the profile object in place
        inputs: list[tuple[type, str, Callable[[Any], None], bool, Callable[[], QoSProfile]]] = []
        for m in self.modalities:
            kind = self.inputs.types[m]
            if kind == "image":
                inputs.append((Image, self.topics[m], lambda raw, m=m: self._on_image(m, raw), True, self._input_qos))
            else:
                inputs.append((self._message_class(m), self.topics[m], self._raw_callback(m), True, self._input_qos))
        inputs.append((CameraInfo, self.camera_info_topic, self._on_camera_info, False, self._input_qos))
        if self.inputs.needs_geometry:  # LiDAR -> camera transform
            inputs.append((self._message_class("tf"), TF_STATIC_TOPIC, self.inputs.on_tf, False, tf_static_qos))
            inputs.append((self._message_class("tf"), TF_TOPIC, self.inputs.on_tf, False, tf_qos))
        for msg_type, topic, callback, raw, qos in inputs:  # raw: only the header is read here (see _on_image)
            try:
                self._inputs.append(
                    self.create_subscription(
                        msg_type,
                        topic,
                        callback,
                        qos(),
                        callback_group=self._input_group,
                        qos_overriding_options=override(),
                        raw=raw,
                    )
                )
            except Exception as err:
                raise StartupError(f"{topic}: {err} (qos_overrides.{topic}.subscription.*?)") from None
        poll_period = max(0.005, min(0.02, self.config.sync.max_wait_s / 4))
        self._poll_timer = self.create_timer(poll_period, self._on_poll, callback_group=self._input_group)

    def _unsubscribe(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._poll_timer is not None:
            self.destroy_timer(self._poll_timer)
            self._poll_timer = None
        self.sync.clear()

    def _warn_unknown_qos_overrides(self) -> None:
        """``qos_overrides./topic...`` given for a topic the node does not have (a typo does nothing)."""
        overrides = getattr(self, "_parameter_overrides", None) or {}
        for name in overrides:
            if name.startswith(_QOS_OVERRIDES) and not self.has_parameter(name):
                self._warn_once(("qos", name), f"parameter {name!r} matches none of the node's topics; ignored")

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

    def _warn_once(self, key: tuple[str, ...], text: str) -> None:
        if key not in self._warned_once:
            self._warned_once.add(key)
            self._emit_warning(text)

    def _emit_warning(self, text: str) -> None:
        self.get_logger().warning(text)
        if self._warning_sink is not None:
            self._warning_sink(text)

    # ------------------------------------------------------------------ input path (executor thread)
    def _on_image(self, modality: str, raw: bytes) -> None:
        """Header and layout only (no pixel is touched): a bad message never takes a good one's place."""
        now = time.monotonic()
        try:
            received = received_from_cdr(modality, raw, now)
        except CdrError as err:
            self.health.message(modality, now)
            self.warn(modality, "decode", f"cannot read the message: {err}", decode_error=True)
            return
        try:
            check_modality(received.image, modality)
        except ImageDecodeError as err:
            self.health.message(modality, now, received.frame_id)
            self.warn(modality, "decode", f"cannot decode image: {err}", decode_error=True)
            return
        self._accept(modality, received, now)

    def _message_class(self, modality: str) -> type:
        kind = "tf" if modality == "tf" else self.inputs.types[modality]
        try:
            return message_class("tf2_msgs/msg/TFMessage" if kind == "tf" else MESSAGE_TYPES[kind])
        except ImportError as err:
            raise StartupError(
                f"ros.{modality}_type {kind!r} needs {err.name}, which is not importable: build the interfaces "
                f"(`{BUILD_MSGS_HINT}` off-ROS, colcon build on a ROS install)"
            ) from None

    def _raw_callback(self, modality: str) -> Callable[[bytes], None]:
        """The subscription callback of a non-Image input: the header now, the rest when a set uses it (event
        streams: into the event window now, since every packet may be in some set's window)."""
        msg_type = self._message_class(modality)
        if self.inputs.is_stream(modality):
            return lambda raw: self._on_events(modality, raw, msg_type)
        convert = self.inputs.decoder(modality)

        def decode(raw: bytes, reference_ns: int | None) -> np.ndarray:
            return convert(deserialize_message(raw, msg_type), reference_ns)

        def on_message(raw: bytes) -> None:
            now = time.monotonic()
            try:
                received = received_from_raw(modality, raw, now, decode)
            except CdrError as err:
                self.health.message(modality, now)
                self.warn(modality, "decode", f"cannot read the message: {err}", decode_error=True)
                return
            self._accept(modality, received, now)

        return on_message

    def _on_events(self, modality: str, raw: bytes, msg_type: type) -> None:
        now = time.monotonic()
        try:
            received, count = self.inputs.receive(modality, deserialize_message(raw, msg_type), now)
        except Exception as err:  # a malformed packet is a warning, never a crash
            self.health.message(modality, now)
            self.warn(modality, "decode", f"cannot decode the event message: {err}", decode_error=True)
            return
        if count == 0:
            self.warn(modality, "empty", "event message without events (nothing added to the window)")
        self._accept(modality, received, now)

    def _accept(self, modality: str, received: Received, now: float) -> None:
        """A readable input message: health, stamp checks, synchroniser."""
        self.health.message(modality, now, received.frame_id)
        stamp = ns_to_s(received.stamp_ns)
        self._check_stamp(modality, stamp, now)
        resets = self.sync.resets
        sets = self.sync.add(modality, stamp, received, now)
        if self.sync.resets != resets:
            self.health.sync_reset(now)
        self._submit(sets)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._camera_info_lock:
            self._camera_info = msg
        if self.inputs.needs_geometry and (problem := self.inputs.on_camera_info(msg)):
            self.warn("lidar", "camera_info", f"{problem} ({self.camera_info_topic}): LiDAR cannot be projected")

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
            if self._worker is not None:  # the hand-off wait starts the set now, not at the next GIL switch
                self._worker.submit(synced, handoff_timeout_s=WORKER_HANDOFF_TIMEOUT_S)

    # ------------------------------------------------------------------ inference (worker thread)
    def _process(self, synced: SyncedSet) -> None:
        segmenter = self.segmenter
        if not self.segmenting or segmenter is None:
            return  # deactivated or disabled meanwhile: nothing is published
        items: dict[str, Received] = synced.items
        frames, errors = decode_set(items, items[self.reference].stamp_ns)
        for modality, reason in errors.items():
            self.warn(modality, "decode", reason, decode_error=True)
        for modality in frames:
            self.health.decoded(modality)
        if self.reference not in frames:
            return  # no set without its reference image (warned above)
        reference = items[self.reference]
        header = Header(stamp=to_time(reference.stamp_ns), frame_id=reference.frame_id)
        want_confidence = self.pub_confidence.get_subscription_count() > 0
        result = segmenter.segment_batch([frames], confidence=want_confidence)[0]
        # labels first: they are what downstream planners wait for; the rest only for those who listen
        stamp, frame_id = reference.stamp_ns, reference.frame_id
        self.pub_labels.publish(array_to_cdr(result.labels, "mono8", stamp, frame_id))
        latency_ms = (time.monotonic() - reference.arrival) * 1000.0
        self._publish_camera_info(header, result.labels.shape)
        skews = [synced.stamps[m] - synced.stamp_s for m in result.modalities]
        self._publish_info(header, result.modalities, result.missing, skews, result.inference_ms, latency_ms)
        if want_confidence:
            self.pub_confidence.publish(array_to_cdr(result.confidence, "32FC1", stamp, frame_id))
        if self.pub_color.get_subscription_count() > 0:
            color = self._overlay(result.labels, frames.get("rgb"))
            self.pub_color.publish(array_to_cdr(color, "rgb8", stamp, frame_id))
        self.health.output(time.monotonic(), latency_ms, result.inference_ms)
        # input checks only warn: after the outputs, off the latency path
        for modality in ("depth", "lidar"):
            if modality in frames:
                self._check_depth(modality, frames[modality])
        self._check_resolutions(frames)
        self._check_frames(items)

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

    def _check_frames(self, items: dict[str, Received]) -> None:
        """``ros.extrinsics: registered``: every modality must be an image in the reference camera's frame."""
        if self.config.ros.extrinsics != "registered":
            return
        expected = items[self.reference].frame_id
        for m, received in items.items():
            if received.frame_id != expected and self.inputs.types[m] != "pointcloud":  # projected by the node
                self._warn_once(
                    ("frame", m, received.frame_id, expected),
                    f"{self.topics[m]} [{m}]: frame_id {received.frame_id!r} differs from {self.reference} "
                    f"{expected!r}, but ros.extrinsics is 'registered' (the model takes every modality as an image "
                    f"in the {self.reference} camera: register depth to it, project LiDAR into it). If the images "
                    "are aligned under another name, set ros.extrinsics: unchecked",
                )

    def _publish_camera_info(self, header: Header, shape: tuple[int, ...]) -> None:
        """``~/camera_info``: the reference camera's calibration with the labels' header and size."""
        with self._camera_info_lock:
            source = self._camera_info
        if source is None:
            self._warn_once(("camera_info",), f"no CameraInfo on {self.camera_info_topic} yet: ~/camera_info waits")
            return
        height, width = int(shape[0]), int(shape[1])
        info = CameraInfo(
            header=header,
            height=height,
            width=width,
            distortion_model=source.distortion_model,
            d=source.d,
            k=source.k,
            r=source.r,
            p=source.p,
            binning_x=source.binning_x,
            binning_y=source.binning_y,
            roi=source.roi,
        )
        if (source.height, source.width) != (height, width) and source.height and source.width:
            sx, sy = width / source.width, height / source.height
            info.k = _scaled(source.k, sx, sy, 3)
            info.p = _scaled(source.p, sx, sy, 4)
            self._warn_once(
                ("camera_info_size", str(source.width), str(source.height)),
                f"{self.camera_info_topic}: CameraInfo is {source.width}x{source.height} but the images are "
                f"{width}x{height}; ~/camera_info scales the intrinsics",
            )
        if self.config.ros.extrinsics == "registered" and source.header.frame_id != header.frame_id:
            self._warn_once(
                ("camera_info_frame", source.header.frame_id, header.frame_id),
                f"{self.camera_info_topic}: frame_id {source.header.frame_id!r} differs from the {self.reference} "
                f"image's {header.frame_id!r}; ~/camera_info carries the image's",
            )
        self.pub_camera_info.publish(info)

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
        if not self.context.ok():
            return  # shutting down (Ctrl-C): the publishers went away under the running set
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
        if self.segmenting:
            self._report_silence(now)
            statuses = self.health.statuses(now, self.counts(), self.sync.stats, self.get_name())
        else:
            state = self.lifecycle_state if not self._active else "active, disabled through ~/enable"
            statuses = [self.health.idle_status(self.get_name(), state)]
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
                self.sync.set_timing(**{key: value})  # sync.slop_s / sync.max_wait_s
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ shutdown
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the worker has nothing waiting or running (tests, orderly shutdown)."""
        return self._worker.wait_idle(timeout) if self._worker is not None else True

    def destroy_node(self) -> None:
        self._active = False
        if self._worker is not None:
            self._worker.stop(timeout=10.0)
            self._worker = None
        for name in ("memsam_core", "memsam_ros"):
            logging.getLogger(name).removeHandler(self._log_handler)
        super().destroy_node()


def _cuda_name(device: Any) -> str:
    import torch

    return torch.cuda.get_device_name(device)


def _scaled(matrix: Sequence[float], sx: float, sy: float, columns: int) -> list[float]:
    """Intrinsics (row-major K 3x3 or P 3x4) for an image resized by ``sx``, ``sy``."""
    out = [float(v) for v in matrix]
    for column in range(columns):
        out[column] *= sx
        out[columns + column] *= sy
    return out


STARTUP_ERRORS = (ConfigError, CheckpointError, StartupError)


def _print_error(message: str) -> None:
    for line in str(message).strip().splitlines() or ["(no message)"]:
        print(f"[memsam-node] error: {line}", file=sys.stderr, flush=True)


def main(args: list[str] | None = None) -> int:
    """``memsam-node --ros-args --params-file config/segment.yaml``; returns 2 on a start-up error."""
    argv = list(sys.argv if args is None else args)
    profile = use_large_data_profile()  # before rclpy.init: Fast DDS reads it when the participant is made
    heap = keep_large_buffers()  # before the first message: every image buffer is reused, never faulted in again
    try:
        rclpy.init(args=argv)
    except RuntimeError as err:  # rcl could not parse the command line / params file
        _print_error(str(err).split(", at ")[0])
        return 2
    node: SegmentNode | None = None
    try:
        node = SegmentNode(argv=argv, tune_interpreter=True)
        node.get_logger().info(f"Fast DDS profile: {profile or 'Fast DDS defaults'} ({PROFILE_VARIABLE}); {heap}")
        executor = SingleThreadedExecutor()  # callbacks only read headers and synchronise: one thread is enough
        executor.add_node(node)
        if node.config.ros.autostart:
            node.start()
        else:
            name = node.get_fully_qualified_name()
            node.get_logger().info(
                f"unconfigured (ros.autostart false): `ros2 lifecycle set {name} configure`, then `activate`"
            )
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
        # Ctrl-C under `ros2 launch` reaches the node twice (the terminal's process group, then launch): the
        # second one must not interrupt the clean shutdown
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
