"""Header stamps in one place: integer nanoseconds are the exact key, float seconds are for arithmetic.

Predictions are matched to ground truth by exact stamp, so conversions go through integer nanoseconds;
the synchroniser works in float seconds (sub-microsecond precision at epoch stamps).
"""

from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def stamp_ns(header: Any) -> int:
    """Exact nanoseconds of ``header.stamp`` (rclpy, rosbags or any object with ``stamp.sec/nanosec``)."""
    return int(header.stamp.sec) * NS_PER_S + int(header.stamp.nanosec)


def stamp_s(header: Any) -> float:
    """``header.stamp`` in float seconds."""
    return ns_to_s(stamp_ns(header))


def ns_to_s(ns: int) -> float:
    return ns / NS_PER_S


def s_to_ns(seconds: float) -> int:
    """Nearest nanosecond of ``seconds`` (float seconds from a test or a clock)."""
    return round(seconds * NS_PER_S)


def split_ns(ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (negative stamps keep a non-negative nanosec)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def to_time(ns: int) -> Any:
    """``builtin_interfaces/Time`` for ``ns`` (rclpy's message class; imported lazily)."""
    from builtin_interfaces.msg import Time

    sec, nanosec = split_ns(ns)
    return Time(sec=sec, nanosec=nanosec)


def json_stamp_ns(stamp: dict[str, Any]) -> int:
    """Nanoseconds of a ``{"sec": .., "nanosec": ..}`` mapping (the JSON form of ``~/info``)."""
    return int(stamp["sec"]) * NS_PER_S + int(stamp["nanosec"])


def json_stamp(ns: int) -> dict[str, int]:
    sec, nanosec = split_ns(ns)
    return {"sec": sec, "nanosec": nanosec}
