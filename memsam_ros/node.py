"""The memsam segmentation node: synchronised RGB/depth/LiDAR/event images in, class masks out.

A lifecycle node (``rclpy.lifecycle``): *configure* loads the model and creates the publishers,
*activate* subscribes, *deactivate* unsubscribes (the model stays loaded), *cleanup* unloads it.
``ros.autostart`` (default true) runs configure and activate at start-up; ``~/enable``
(``std_srvs/SetBool``) pauses and resumes an active node by unsubscribing and subscribing again.

This module is the lifecycle shell; the work is done by its parts, one job each:

* :mod:`memsam_ros.input_path` (executor thread): subscriptions whose callbacks read only headers, stamp
  checks, the synchroniser (:mod:`memsam_ros.sync`); decoders live in :mod:`memsam_ros.inputs`;
* :mod:`memsam_ros.processing` (a keep-newest worker thread, :mod:`memsam_ros.worker`): decodes just the
  messages of a set, runs the one inference path (:class:`memsam_core.engine.Segmenter`), publishes;
* :mod:`memsam_ros.outputs`: the publishers; :mod:`memsam_ros.diagnostics` and :mod:`memsam_ros.faults`: health
  and throttled warnings, so bad input is reported and skipped and valid sets keep flowing.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import SetBool

from memsam_core.config import ConfigError
from memsam_core.engine import Segmenter
from memsam_core.modalities import check_ros_sensors
from memsam_core.model import CheckpointError
from memsam_ros.diagnostics import PipelineHealth, diagnostic_array
from memsam_ros.fastdds import PROFILE_VARIABLE, use_large_data_profile
from memsam_ros.faults import FaultReporter, StartupError
from memsam_ros.heap import keep_large_buffers
from memsam_ros.info import BUILD_MSGS_HINT, info_message_type
from memsam_ros.input_path import QOS_OVERRIDES, STEADY, InputPath
from memsam_ros.inputs.converter import InputConverter
from memsam_ros.outputs import Outputs
from memsam_ros.params import (
    RUNTIME_PARAMETERS,
    declare_config_parameters,
    effective_config,
    parameter_source,
    unknown_overrides,
)
from memsam_ros.processing import QueuedSet, SetProcessor
from memsam_ros.sync import ModalitySynchronizer, SyncedSet
from memsam_ros.throttle import WarningThrottle
from memsam_ros.topics import camera_info_topic, modality_topics
from memsam_ros.worker import LatestWorker, SetCounts

NODE_NAME = "memsam_segment"
GIL_SWITCH_INTERVAL_CPU_S = 0.0005
WORKER_HANDOFF_TIMEOUT_S = 0.005  # an idle worker takes a set within ~0.1 ms; never longer than this
__all__ = ["NODE_NAME", "SegmentNode", "StartupError", "main"]


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
    """The lifecycle shell around the input path, the inference worker and the outputs (module docstring)."""

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
        self._worker: LatestWorker[QueuedSet] | None = None
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
        self.topics = modality_topics(cfg, self.resolve_topic_name)
        # next to the (remapped) RGB topic, as image_transport pairs them, unless named explicitly
        info_name = cfg.ros.camera_info_topic or camera_info_topic(self.topics[self.reference])
        self.camera_info_topic = self.resolve_topic_name(info_name)
        self.health = PipelineHealth(self.topics, self.reference, cfg.ros.silent_after_s, time.monotonic())
        self.health.hardware_id = socket.gethostname()
        self.faults = FaultReporter(
            self.get_logger(), self.health, self.topics, WarningThrottle(cfg.ros.warn_throttle_s), self._warning_sink
        )
        self.sync = ModalitySynchronizer.from_config(cfg)
        self.inputs = InputConverter(cfg)
        self._input_group = MutuallyExclusiveCallbackGroup()  # callbacks only read headers and synchronise
        self.input_path = InputPath(
            self, cfg, self.topics, self.camera_info_topic, self.inputs, self.sync, self.health, self.faults,
            self._submit, self._input_group,
        )  # fmt: skip
        self.outputs = Outputs(
            self, self.faults, lambda: self.input_path.camera_info, self.camera_info_topic, self.reference,
            cfg.ros.extrinsics,
        )  # fmt: skip
        self.outputs.overlay_alpha = cfg.ros.overlay_alpha
        self.segmenter: Segmenter | None = None
        self.configure_error = ""
        self._active = False
        self._enabled = True
        self._info_type = info_message_type()
        if self._info_type is None:
            self.get_logger().error(
                f"memsam_msgs is not importable: build it with `{BUILD_MSGS_HINT}` (and source scripts/env.sh "
                "outside .venv); publishing ~/info as std_msgs/String JSON meanwhile"
            )
        self.srv_enable = self.create_service(SetBool, "~/enable", self._on_enable, callback_group=self._input_group)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(  # rates and silence are wall-clock things; the stamps follow the clock
            cfg.ros.diagnostics_period_s, self._on_diagnostics, MutuallyExclusiveCallbackGroup(), clock=STEADY
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
        model_name = f"MemorySAM {cfg.model.sam2_config} {cfg.model.image_size}px ({weights})"
        try:
            self.outputs.create(cfg.ros.qos_depth, self._info_type)
        except Exception as err:  # e.g. a qos_overrides value rclpy cannot parse
            self._teardown()
            return self._configure_failed(f"cannot create the publishers: {type(err).__name__}: {err}")
        process = SetProcessor(
            self.segmenter, self.outputs, self.health, self.faults, self.inputs.types, self.reference,
            cfg.ros.extrinsics, self._info_type, model_name, lambda: self.segmenting, self._dropped,
        )  # fmt: skip
        self._worker = LatestWorker(process, name="memsam-inference", on_error=self._on_inference_error)
        self._worker.start()
        self.get_logger().info(f"configured: {model_name} on {device}")
        return super().on_configure(state)

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self.configure_error = reason
        if not self._starting:
            self.get_logger().error(f"lifecycle transition failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe (unless disabled through ``~/enable``) and let the publishers publish."""
        result = super().on_activate(state)  # the lifecycle publishers
        self.outputs.class_names.publish(String(data=json.dumps(self.segmenter.class_names)))
        self._active = True
        if self._enabled:
            try:
                self.input_path.subscribe()
            except Exception as err:  # e.g. a qos_overrides value rclpy cannot parse
                self._active = False
                self.input_path.unsubscribe()
                super().on_deactivate(state)
                return self._configure_failed(f"cannot subscribe: {err}")
        self._warn_unknown_qos_overrides()
        self.get_logger().info(
            f"active: segmenting {', '.join(f'{m}={t} ({self.inputs.types[m]})' for m, t in self.topics.items())} "
            f"({self.config.ros.reliability} QoS)" + ("" if self._enabled else "; disabled until ~/enable true")
        )
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; the model stays loaded for a quick activate (its memory of past instants is forgotten)."""
        self._active = False
        self.input_path.unsubscribe()
        if self._worker is not None:
            self._worker.wait_idle(10.0)
        self._forget_past_instants()
        return super().on_deactivate(state)

    def _forget_past_instants(self) -> None:
        """The stream of sets stopped (deactivate, ``~/enable`` false): what comes next is not its continuation."""
        if self.segmenter is not None:
            self.segmenter.reset("deactivate")
            self.health.set_memory_resets(self.segmenter.memory_resets_by_reason)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload the model and remove the publishers."""
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.input_path.unsubscribe()
        self._teardown()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.input_path.unsubscribe()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    def _teardown(self) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=10.0)
            self._worker = None
        self.outputs.destroy()
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
                (self.input_path.subscribe if self._enabled else self.input_path.unsubscribe)()
            except Exception as err:  # a service callback must answer, not raise into the executor
                self.input_path.unsubscribe()
                response.success, response.message = False, f"cannot subscribe: {err}"
                self.get_logger().error(f"~/enable: {response.message}")
                return response
            if not self._enabled:
                self._forget_past_instants()
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

    def _warn_unknown_qos_overrides(self) -> None:
        """``qos_overrides./topic...`` given for a topic the node does not have (a typo does nothing)."""
        overrides = getattr(self, "_parameter_overrides", None) or {}
        for name in overrides:
            if name.startswith(QOS_OVERRIDES) and not self.has_parameter(name):
                self.faults.once(("qos", name), f"parameter {name!r} matches none of the node's topics; ignored")

    # ------------------------------------------------------------------ worker
    def _submit(self, sets: list[SyncedSet]) -> None:
        epoch = self.sync.resets  # right after the synchroniser formed these sets: the reset they belong after
        for synced in sets:
            if self._worker is not None:  # the hand-off wait starts the set now, not at the next GIL switch
                self._worker.submit(QueuedSet(synced, epoch), handoff_timeout_s=WORKER_HANDOFF_TIMEOUT_S)

    def _dropped(self) -> int:
        return self._worker.dropped if self._worker is not None else 0

    def _on_inference_error(self, exc: Exception) -> None:
        if not self.context.ok():
            return  # shutting down (Ctrl-C): the publishers went away under the running set
        reason = f"{type(exc).__name__}: {exc}"
        self.health.failure(reason, time.monotonic())
        self.faults.throttled(("*", "inference"), f"inference failed, set skipped: {reason}")

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
            self.faults.throttled(("*", "silent"), f"no input on any topic for {min(silent.values()):.1f} s")
        for m in self.modalities:
            if m not in silent:
                if self.health.mark_silent(m, False):
                    self.get_logger().info(f"{self.topics[m]} [{m}]: receiving again")
                continue
            self.health.mark_silent(m, True)
            if not all_silent:
                effect = "nothing to segment" if m == self.reference else f"sets are published without {m}"
                if m in self.inputs.unresolved:
                    effect += f" (no publisher yet, so its type is unknown: ros.{m}_type auto)"
                self.faults.throttled((m, "silent"), f"{self.topics[m]} [{m}]: silent for {silent[m]:.1f} s; {effect}")

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
                self.outputs.overlay_alpha = value
            elif param.name == "ros.warn_throttle_s":
                self.faults.throttle.period_s = value
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
