"""Topic names: the node's relative defaults resolved the way rcl resolves them, and camera_info siblings.

The node resolves through rclpy (``Node.resolve_topic_name``, which also applies remappings); tools
without a node use :func:`absolute`. Both go through :func:`modality_topics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

CAMERA_INFO = "camera_info"


def absolute(name: str, namespace: str = "/") -> str:
    """``rgb/image`` → ``/rgb/image`` (or ``/ns/rgb/image``); absolute names are kept. No ``~`` or remapping."""
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        raise ValueError(f"{name!r}: private names need the node name; resolve them with the node")
    return f"{namespace.rstrip('/')}/{name}"


def modality_topics(
    config: Any, resolve: Callable[[str], str] = absolute, modalities: Iterable[str] | None = None
) -> dict[str, str]:
    """``{modality: resolved topic}`` from ``config.ros.<modality>_topic`` for the configured modalities."""
    names = config.model.modalities if modalities is None else modalities
    return {m: resolve(config.ros.topic(m)) for m in names}


TRANSPORTS = ("compressed", "compressedDepth")
"""image_transport's sub-topics: ``/cam/image_raw/compressed`` carries ``/cam/image_raw`` compressed."""


def camera_info_topic(image_topic: str) -> str:
    """The image_transport convention: ``/cam/color/image_raw`` (or its ``/compressed`` sub-topic) →
    ``/cam/color/camera_info``."""
    base, _, last = image_topic.rstrip("/").rpartition("/")
    if last in TRANSPORTS and base:
        image_topic = base
    parent, _, _ = image_topic.rstrip("/").rpartition("/")
    return f"{parent}/{CAMERA_INFO}" if parent or image_topic.startswith("/") else CAMERA_INFO
