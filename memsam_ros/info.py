"""``~/info``: the ``memsam_msgs/SegmentationInfo`` message, or its JSON ``std_msgs/String`` fallback.

One loader for the node (which publishes) and the tools (which subscribe): if ``memsam_msgs`` is not
built, both sides use the JSON form with the same fields plus ``header``.
"""

from __future__ import annotations

import json
from typing import Any

from memsam_ros.inputs.stamps import json_stamp, json_stamp_ns, stamp_ns

BUILD_MSGS_HINT = "bash scripts/build_msgs.sh"


def info_message_type() -> type | None:
    """``memsam_msgs.msg.SegmentationInfo``, or None when the package is not importable."""
    try:
        from memsam_msgs.msg import SegmentationInfo
    except ImportError:
        return None
    return SegmentationInfo


def info_wire_type() -> type:
    """The type ``~/info`` is published with: SegmentationInfo, else ``std_msgs/String`` (JSON)."""
    info_type = info_message_type()
    if info_type is not None:
        return info_type
    from std_msgs.msg import String

    return String


def make_info(info_type: type | None, header: Any, fields: dict[str, Any]) -> Any:
    """The message to publish: ``info_type(header=..., **fields)``, or the JSON String when None."""
    if info_type is not None:
        return info_type(header=header, **fields)
    from std_msgs.msg import String

    payload = {"header": {"stamp": json_stamp(stamp_ns(header)), "frame_id": header.frame_id}, **fields}
    return String(data=json.dumps(payload))


def info_dict(msg: Any) -> dict[str, Any]:
    """Fields of a received ``~/info`` (either form) as a dict with ``stamp_ns`` and ``frame_id``."""
    if hasattr(msg, "data"):  # the JSON fallback
        data = json.loads(msg.data)
        data["stamp_ns"] = json_stamp_ns(data["header"]["stamp"])
        data["frame_id"] = data["header"].get("frame_id", "")
        return data
    fields = ("class_names", "modalities_used", "modalities_missing", "stamp_skew_s")
    out: dict[str, Any] = {name: list(getattr(msg, name)) for name in fields}
    out |= {
        "stamp_ns": stamp_ns(msg.header),
        "frame_id": msg.header.frame_id,
        "inference_ms": float(msg.inference_ms),
        "total_latency_ms": float(msg.total_latency_ms),
        "sets_dropped": int(msg.sets_dropped),
        "model_name": msg.model_name,
        "memory_instants": int(getattr(msg, "memory_instants", 0)),
        "memory_resets": int(getattr(msg, "memory_resets", 0)),
    }
    return out
