"""``sensor_msgs/Image`` <-> numpy, our own codec instead of cv_bridge.

ROS 2's cv_bridge is an ament_cmake package with a Boost.Python extension, so it cannot be installed
off-ROS from PyPI; the PyPI ``cv-bridge`` is a broken ROS 1 port (it decodes 16UC1 as uint8 and
fails on NumPy 2) and ``rosbags-image`` ignores ``step`` padding. Decoding only reads attributes
(``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``, ``data``), so rclpy messages and
rosbags messages both work, whatever container ``data`` is (array.array, bytes, list, ndarray).

Depth follows REP 118: 32FC1 is metres, 16UC1 (and mono16) is millimetres with 0 = invalid.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

# encoding -> (element dtype, channels)
_LAYOUTS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "mono16": (np.dtype(np.uint16), 1),
}
_DEPTH_ENCODINGS = frozenset({"32FC1", "16UC1", "mono16"})
_MODALITY_ENCODINGS: dict[str, frozenset[str]] = {
    "rgb": frozenset({"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}),
    "depth": _DEPTH_ENCODINGS,
    "lidar": _DEPTH_ENCODINGS,
    "event": frozenset({"rgb8", "bgr8", "mono8"}),
}
# encoding -> (dtype, ndim) accepted by array_to_image
_ENCODABLE: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "mono8": (np.dtype(np.uint8), 2),
    "32FC1": (np.dtype(np.float32), 2),
    "16UC1": (np.dtype(np.uint16), 2),
}


class ImageDecodeError(ValueError):
    """An Image cannot be converted; the message names the reason."""


def as_bytes(data: Any) -> np.ndarray:
    """Flat uint8 view (no copy where possible) of any container rclpy or rosbags puts in ``data``."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(f"data must hold uint8, got dtype {data.dtype}")
        return data.reshape(-1)
    if isinstance(data, bytes | bytearray | memoryview | array.array):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageDecodeError(f"data is not a sequence of bytes: {exc}") from exc


def _data_length(data: Any) -> int:
    if isinstance(data, memoryview):
        return data.nbytes
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError(f"data must hold uint8, got dtype {data.dtype}")
        return data.size
    return len(data)


def check_layout(msg: Any) -> None:
    """Encoding known and ``width``/``height``/``step`` consistent with the data, without touching a pixel
    (the node checks every message on arrival; only those that go into a set are decoded)."""
    encoding = str(msg.encoding)
    if encoding not in _LAYOUTS:
        raise ImageDecodeError(f"unsupported encoding {encoding!r} (supported: {', '.join(_LAYOUTS)})")
    dtype, channels = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"zero-size image {width}x{height}")
    pixel_bytes = dtype.itemsize * channels
    if step < width * pixel_bytes:
        raise ImageDecodeError(f"step {step} < width*bytes_per_pixel {width}*{pixel_bytes} for {encoding}")
    try:
        length = _data_length(msg.data)
    except TypeError as exc:
        raise ImageDecodeError(f"data is not a sequence of bytes: {exc}") from exc
    if length != step * height:
        raise ImageDecodeError(f"data length {length} != step*height {step}*{height}")


def check_modality(msg: Any, modality: str) -> None:
    """:func:`check_layout` plus: the encoding is one the modality accepts."""
    if modality not in _MODALITY_ENCODINGS:
        raise ValueError(f"unknown modality {modality!r} (known: {', '.join(_MODALITY_ENCODINGS)})")
    encoding = str(msg.encoding)
    allowed = _MODALITY_ENCODINGS[modality]
    if encoding not in allowed:
        known = "" if encoding in _LAYOUTS else "unsupported encoding; "
        options = ", ".join(sorted(allowed))
        raise ImageDecodeError(f"{known}encoding {encoding!r} not allowed for modality {modality!r} ({options})")
    check_layout(msg)


def image_to_array(msg: Any, copy: bool = True) -> np.ndarray:
    """Decode to a native-endian array: uint8 HxWx3 RGB for colour, HxW for single channel.

    ``copy=False`` returns a view of ``msg.data`` when the wire layout already is that array (packed rows,
    native byte order, rgb8/mono8/32FC1/16UC1...): no copy of a large image, but the view shares (and, for
    an immutable buffer, is as read-only as) the message's data.
    """
    check_layout(msg)
    encoding = str(msg.encoding)
    dtype, channels = _LAYOUTS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    pixel_bytes = dtype.itemsize * channels
    buf = as_bytes(msg.data)
    if buf.size != step * height:  # a container whose len() is not its byte size
        raise ImageDecodeError(f"data length {buf.size} != step*height {step}*{height}")
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    # Strided view skips the row padding; astype copies into a packed native-endian array.
    view = np.ndarray((height, width, channels), dtype=wire, buffer=buf, strides=(step, pixel_bytes, dtype.itemsize))
    if encoding in ("bgr8", "bgra8"):
        view = view[..., 2::-1]
    elif encoding == "rgba8":
        view = view[..., :3]
    out = view.astype(dtype, order="C", copy=copy)
    return out[..., 0] if channels == 1 else out


def depth_to_metres(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Depth in float32 metres (REP 118); 16-bit 0 becomes NaN, non-finite floats are kept as they are."""
    if encoding == "32FC1":
        return arr.astype(np.float32, copy=False)
    if encoding in ("16UC1", "mono16"):
        metres = arr.astype(np.float32) * np.float32(1e-3)
        metres[arr == 0] = np.nan
        return metres
    raise ImageDecodeError(f"encoding {encoding!r} is not a depth encoding ({', '.join(sorted(_DEPTH_ENCODINGS))})")


def decode_modality(msg: Any, modality: str, copy: bool = True) -> np.ndarray:
    """The model's raw input for ``modality``: rgb/event uint8 images, depth/lidar float32 metres
    (``copy=False``: a view of the message's data where no conversion is needed, see :func:`image_to_array`)."""
    check_modality(msg, modality)
    encoding = str(msg.encoding)
    arr = image_to_array(msg, copy=copy)
    if encoding in _DEPTH_ENCODINGS:
        return depth_to_metres(arr, encoding)
    if modality == "rgb" and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return arr


def _packed(arr: np.ndarray, encoding: str) -> np.ndarray:
    """``arr`` checked against ``encoding`` and laid out as the wire wants it (C order, little-endian)."""
    if encoding not in _ENCODABLE:
        raise ImageDecodeError(f"cannot encode {encoding!r} (supported: {', '.join(_ENCODABLE)})")
    dtype, ndim = _ENCODABLE[encoding]
    if arr.dtype != dtype or arr.ndim != ndim or (ndim == 3 and arr.shape[2] != 3):
        raise ImageDecodeError(f"{encoding} needs a {dtype} array of {ndim} dims, got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageDecodeError(f"zero-size image {arr.shape[1]}x{arr.shape[0]}")
    return np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))


def array_to_cdr(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> bytes:
    """The serialized ``sensor_msgs/Image`` of ``arr`` for ``publisher.publish(bytes)`` (one copy)."""
    from memsam_ros.inputs.cdr import write_image

    packed = _packed(arr, encoding)
    return write_image(stamp_ns, frame_id, packed.shape[0], packed.shape[1], encoding, packed.strides[0], packed)


def array_to_image(arr: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Build an rclpy ``sensor_msgs.msg.Image`` (little-endian, packed rows) from a numpy array."""
    packed = _packed(arr, encoding)
    from sensor_msgs.msg import Image  # lazy: keeps this module usable without rclpy

    data = array.array("B")
    data.frombytes(packed.reshape(-1).view(np.uint8))  # one memcpy; the setter's fast path takes array('B')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = packed.shape[0], packed.shape[1]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = packed.strides[0]
    msg.data = data
    return msg
