"""``sensor_msgs/CompressedImage`` → the model's raw input arrays, decoded with OpenCV.

What ``image_transport`` records: the ``compressed`` plugin (``format`` like ``"rgb8; jpeg compressed bgr8"``, or
plain ``"jpeg"``/``"png"`` from older publishers) for colour and event images, and ``compressedDepth`` for depth
(``"16UC1; compressedDepth png"``: millimetres as a 16-bit PNG; ``"32FC1; compressedDepth png"``: inverse depth
quantised to 16 bits with the two parameters in a 12-byte header before the PNG, exactly as
``compressed_depth_image_transport`` writes it). Its ``rvl`` variant is not decoded (no OpenCV codec for it).
Output conventions are those of :func:`memsam_ros.inputs.codec.decode_modality`: RGB uint8, depth float32 metres.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from memsam_ros.inputs.codec import ImageDecodeError, as_bytes, depth_to_metres

_HEADER_BYTES = 12  # compressed_depth_image_transport ConfigHeader: int32 format, float32 depthParam[2]
# sensor_msgs::image_encodings::isColor
_COLOUR_ENCODINGS = frozenset({"rgb8", "rgba8", "rgb16", "rgba16", "bgr8", "bgra8", "bgr16", "bgra16"})
_TO_RGB = {("bgr", 3): cv2.COLOR_BGR2RGB, ("bgr", 4): cv2.COLOR_BGRA2RGB, ("rgb", 4): cv2.COLOR_RGBA2RGB}


def _imdecode(data: np.ndarray, what: str) -> np.ndarray:
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageDecodeError(f"corrupt {what} payload ({data.size} bytes): OpenCV could not decode it")
    return image


def decoded_channel_order(fmt: str, channels: int) -> str:
    """``"bgr"`` or ``"rgb"``: the channel order of what ``cv2.imdecode`` returns for a colour ``CompressedImage``
    of format ``fmt``, by the rule of image_transport's own subscriber (ros-perception/image_transport_plugins,
    ``compressed_image_transport/src/compressed_subscriber.cpp``, ``internalCallback``):

    * no ``;`` (older publishers: ``"jpeg"``, ``"png"``): 3 channels are BGR (1 is mono); others are refused;
    * ``"<encoding>; <codec> compressed bgr…"`` (what its publisher writes for colour): BGR;
    * any other colour ``<encoding>`` (``rgb8``/``rgba8``/``bgr8``/``bgra8``, 8 or 16 bit) without
      ``compressed bgr`` (e.g. ``"rgb8; jpeg compressed rgb8"``): the decoded array is already in RGB(A) order;
    * a non-colour ``<encoding>`` (``mono8``…) with a colour payload has no defined order and is refused.

    Raises ImageDecodeError."""
    encoding, separator, compression = (part.strip() for part in fmt.partition(";"))
    if not separator:
        if channels != 3:
            raise ImageDecodeError(f"format {fmt!r} names no encoding: {channels} channels are not decoded (1 or 3)")
        return "bgr"
    if "compressed bgr" in compression:
        return "bgr"
    if encoding in _COLOUR_ENCODINGS:
        return "rgb"
    raise ImageDecodeError(f"format {fmt!r}: encoding {encoding!r} is not a colour encoding but the image has colour")


def decode_compressed_image(msg: Any, modality: str) -> np.ndarray:
    """``jpeg``/``png`` colour or mono → uint8 HxWx3 RGB (rgb) or as sent (event: RGB or mono); the channel order
    follows the ``format`` string as image_transport's subscriber reads it (:func:`decoded_channel_order`)."""
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(f"format {fmt!r} is a depth image; not allowed for modality {modality!r}")
    image = _imdecode(as_bytes(msg.data), fmt.split(";")[-1].strip() or "compressed image")
    if image.dtype != np.uint8:
        raise ImageDecodeError(f"{modality}: compressed image has {image.dtype} pixels, expected 8-bit")
    if image.ndim == 2 or image.shape[2] == 1:
        gray = image.reshape(image.shape[:2])
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) if modality == "rgb" else gray
    channels = image.shape[2]
    order = decoded_channel_order(fmt, channels)
    if channels not in (3, 4):
        raise ImageDecodeError(f"format {fmt!r}: {channels} channels are not decoded (1, 3 or 4)")
    return image if (order, channels) == ("rgb", 3) else cv2.cvtColor(image, _TO_RGB[order, channels])


def decode_compressed_depth(msg: Any) -> np.ndarray:
    """``compressedDepth`` → float32 metres (REP 118: no data is NaN)."""
    fmt = str(msg.format)
    encoding, _, compression = (part.strip() for part in fmt.partition(";"))
    if compression and "compressedDepth" not in compression:
        raise ImageDecodeError(f"format {fmt!r} is not compressedDepth (expected e.g. '32FC1; compressedDepth png')")
    if "rvl" in compression:
        raise ImageDecodeError(f"format {fmt!r}: compressedDepth rvl is not decoded; publish with png")
    data = as_bytes(msg.data)
    if data.size <= _HEADER_BYTES:
        raise ImageDecodeError(f"corrupt compressedDepth payload: {data.size} bytes, header alone is {_HEADER_BYTES}")
    image = _imdecode(data[_HEADER_BYTES:], "compressedDepth png")
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ImageDecodeError(f"compressedDepth PNG holds {image.dtype} {image.shape}, expected 16-bit mono")
    if encoding == "32FC1":
        quant_a, quant_b = np.frombuffer(data[4:_HEADER_BYTES].tobytes(), dtype="<f4")
        inverse = image.astype(np.float32)
        with np.errstate(divide="ignore"):
            metres = np.float32(quant_a) / (inverse - np.float32(quant_b))
        metres[image == 0] = np.nan
        return metres
    if encoding in ("16UC1", "mono16"):
        return depth_to_metres(image, encoding)
    raise ImageDecodeError(f"compressedDepth of {encoding!r} is not decoded (16UC1 or 32FC1)")


def encode_compressed_depth(
    metres: np.ndarray, encoding: str = "32FC1", depth_max: float = 10.0, depth_quantization: float = 100.0
) -> tuple[str, bytes]:
    """``(format, data)`` the way ``compressed_depth_image_transport`` encodes (its defaults: max 10 m,
    quantisation 100): for recording raw-sensor bags and for tests."""
    header = np.zeros(3, dtype="<f4")
    header.view("<i4")[0] = 0  # INV_DEPTH
    if encoding == "32FC1":
        quant_a = np.float32(depth_quantization * (depth_quantization + 1.0))
        quant_b = np.float32(1.0 - quant_a / depth_max)
        valid = np.isfinite(metres) & (metres > 0) & (metres < depth_max)
        inverse = np.zeros(metres.shape, np.uint16)
        inverse[valid] = (quant_a / metres[valid] + quant_b).astype(np.uint16)
        header[1], header[2] = quant_a, quant_b
        image = inverse
    elif encoding == "16UC1":
        millimetres = np.where(np.isfinite(metres) & (metres > 0), np.round(metres * 1000.0), 0)
        image = np.where(millimetres > depth_max * 1000.0, 0, millimetres).astype(np.uint16)
    else:
        raise ValueError(f"compressedDepth encodes 16UC1 or 32FC1, not {encoding!r}")
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ImageDecodeError("cv2.imencode failed on a depth image")
    return f"{encoding}; compressedDepth png", header.tobytes() + png.tobytes()
