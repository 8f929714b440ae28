"""The node's QoS profiles, in one place: its inputs, its outputs and tf's.

Each call returns a fresh profile, because rclpy applies ``qos_overrides.<topic>.*`` to the profile object in
place. ``benchmarks/transport_echo.py`` uses the same ones, so its transport floor is the node's.
"""

from __future__ import annotations

from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def input_qos(ros: Any) -> QoSProfile:
    """Sensor inputs from ``ros.reliability`` and ``ros.qos_depth`` (best effort by default: sensor data)."""
    return QoSProfile(
        depth=ros.qos_depth,
        reliability=ReliabilityPolicy.RELIABLE if ros.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST,
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int) -> QoSProfile:
    """``~/labels``, ``~/info`` and the other outputs: reliable, so planners using the default QoS get them."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def tf_static_qos() -> QoSProfile:
    """What tf2's static broadcaster offers: reliable, transient local (latched)."""
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf_qos() -> QoSProfile:
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
