"""One received input message while it waits in the synchroniser: decoded once, and only if a set uses it.

The node builds it from the serialized bytes (:func:`received_from_cdr`, header only, on the executor
thread), offline evaluation from a bag's message (:func:`received_from_message`); the inference thread
and the evaluation loop decode a set's frames with :func:`decode_set`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsam_ros.inputs.cdr import read_header, read_image
from memsam_ros.inputs.codec import ImageDecodeError, decode_modality
from memsam_ros.inputs.stamps import stamp_ns

# A set's frames are views of the received (immutable) buffers where the layout allows; the engine only
# reads them, so torch's notice that it cannot make such a tensor writable is noise.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


@dataclass(slots=True, eq=False)
class Received:
    """An input message (``image``: an :class:`~memsam_ros.inputs.cdr.ImageView`, any Image-like message, or whatever
    ``decoder`` takes: a CompressedImage, a PointCloud2, raw bytes...).

    ``decoder(payload, reference_stamp_ns)`` makes the array (default: an Image for the modality). Event streams
    render the window ending at the set's stamp, so their result depends on the set: ``cache=False``.
    """

    modality: str
    stamp_ns: int
    frame_id: str
    arrival: float  # caller clock (the node: time.monotonic() in the callback)
    image: Any
    decoder: Callable[[Any, int | None], np.ndarray] | None = None
    cache: bool = True
    _array: np.ndarray | None = field(default=None, repr=False)
    _error: str | None = field(default=None, repr=False)

    def decode(self, reference_ns: int | None = None) -> np.ndarray:
        """The model's input array (cached: a reused message is decoded once); raises ImageDecodeError."""
        if self._array is not None:
            return self._array
        if self._error is not None:
            raise ImageDecodeError(self._error)
        try:  # a view of the received buffer where the layout allows: the set is only read from
            if self.decoder is None:
                array = decode_modality(self.image, self.modality, copy=False)
            else:
                array = self.decoder(self.image, reference_ns)
        except ImageDecodeError as err:
            if self.cache:
                self._error = str(err)
            raise
        except Exception as err:  # whatever a malformed message does, the caller keeps going
            error = f"{type(err).__name__}: {err}"
            if self.cache:
                self._error = error
            raise ImageDecodeError(error) from err
        if self.cache:
            self._array = array
            self.image = None  # the array (or view, which keeps the buffer alive) replaces the message
        return array

    @property
    def decoded(self) -> bool:
        return self._array is not None or self._error is not None


def received_from_cdr(modality: str, raw: bytes, arrival: float) -> Received:
    """From a raw subscription's bytes; reads the header only (raises :class:`~memsam_ros.inputs.cdr.CdrError`)."""
    view = read_image(raw)
    return Received(modality, view.stamp_ns, view.frame_id, arrival, view)


def received_from_message(modality: str, msg: Any, arrival: float) -> Received:
    """From a deserialized Image (rclpy or rosbags)."""
    return Received(modality, stamp_ns(msg.header), str(msg.header.frame_id), arrival, msg)


def received_from_raw(
    modality: str, raw: bytes, arrival: float, decoder: Callable[[Any, int | None], np.ndarray], cache: bool = True
) -> Received:
    """Any message whose first field is a Header, from a raw subscription: the header is read here, the rest by
    ``decoder`` (which gets the bytes) if a set uses it (raises :class:`~memsam_ros.inputs.cdr.CdrError`)."""
    stamp, frame_id = read_header(raw)
    return Received(modality, stamp, frame_id, arrival, raw, decoder, cache)


def decode_set(
    items: Mapping[str, Received], reference_ns: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(frames, errors)``: the decodable frames, and the reason for each message that failed just now
    (one that failed in an earlier set is left out silently, so a reused bad message warns once).
    ``reference_ns``: the set's stamp, for inputs rendered for it (event streams)."""
    frames: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for modality, received in items.items():
        first = not received.decoded or not received.cache
        try:
            frames[modality] = received.decode(reference_ns)
        except ImageDecodeError as err:
            if first:
                errors[modality] = f"cannot decode: {err}"
    return frames, errors
