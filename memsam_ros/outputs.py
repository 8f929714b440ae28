"""The node's outputs: ``~/labels``, ``~/color``, ``~/confidence``, ``~/camera_info``, ``~/info``, ``~/class_names``.

All are lifecycle publishers (they publish only while active) and carry the reference image's header. The
overlay and the confidence map cost time, so they are built only while someone subscribes to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
from std_msgs.msg import Header, String

from memsam_core.classes import IGNORE_INDEX
from memsam_ros.faults import FaultReporter
from memsam_ros.info import make_info
from memsam_ros.inputs.camera import window, windowed_intrinsics
from memsam_ros.inputs.codec import array_to_cdr
from memsam_ros.qos import output_qos

OUTPUTS = ("labels", "color", "confidence", "info", "camera_info", "class_names")


class Outputs:
    """The publishers of one configured node and how a segmented set becomes messages."""

    def __init__(
        self,
        node: Any,
        faults: FaultReporter,
        camera_info: Callable[[], CameraInfo | None],
        camera_info_topic: str,
        reference: str,
        extrinsics: str,
    ) -> None:
        self.node, self.faults = node, faults
        self._camera_info, self.camera_info_topic = camera_info, camera_info_topic
        self.reference, self.extrinsics = reference, extrinsics
        self.overlay_alpha = 0.5
        self.labels = self.color = self.confidence = self.info = self.camera_info = self.class_names = None

    def create(self, qos_depth: int, info_type: type | None) -> None:
        """Create the publishers (configure); raises whatever rclpy raises for a bad ``qos_overrides`` value."""

        def publisher(msg_type: type, topic: str) -> Any:
            options = QoSOverridingOptions.with_default_policies()
            return self.node.create_lifecycle_publisher(
                msg_type, topic, output_qos(qos_depth), qos_overriding_options=options
            )

        self.labels = publisher(Image, "~/labels")
        self.color = publisher(Image, "~/color")
        self.confidence = publisher(Image, "~/confidence")
        self.info = publisher(info_type or String, "~/info")
        self.camera_info = publisher(CameraInfo, "~/camera_info")
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            history=HistoryPolicy.KEEP_LAST,
        )
        self.class_names = self.node.create_lifecycle_publisher(String, "~/class_names", latched)

    def destroy(self) -> None:
        for name in OUTPUTS:
            publisher = getattr(self, name)
            if publisher is not None:
                self.node.destroy_lifecycle_publisher(publisher)
                setattr(self, name, None)

    @property
    def wants_confidence(self) -> bool:
        return self.confidence.get_subscription_count() > 0

    @property
    def wants_color(self) -> bool:
        return self.color.get_subscription_count() > 0

    def publish_labels(self, labels: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        self.labels.publish(array_to_cdr(labels, "mono8", stamp_ns, frame_id))

    def publish_confidence(self, confidence: np.ndarray, stamp_ns: int, frame_id: str) -> None:
        self.confidence.publish(array_to_cdr(confidence, "32FC1", stamp_ns, frame_id))

    def publish_color(
        self, labels: np.ndarray, colors: np.ndarray, rgb: np.ndarray | None, stamp_ns: int, frame_id: str
    ) -> None:
        self.color.publish(array_to_cdr(self.overlay(labels, colors, rgb), "rgb8", stamp_ns, frame_id))

    def publish_info(self, info_type: type | None, header: Header, fields: dict[str, Any]) -> None:
        self.info.publish(make_info(info_type, header, fields))

    def overlay(self, labels: np.ndarray, colors: np.ndarray, rgb: np.ndarray | None) -> np.ndarray:
        """Palette ``colors`` of ``labels`` blended over the RGB image by ``overlay_alpha``; unlabeled pixels show
        the image."""
        if rgb is None or rgb.shape[:2] != labels.shape:
            return colors
        alpha = self.overlay_alpha
        out = cv2.addWeighted(colors, alpha, np.ascontiguousarray(rgb), 1.0 - alpha, 0.0)  # uint8, rounded
        unlabeled = labels == IGNORE_INDEX
        if unlabeled.any():
            np.copyto(out, rgb, where=unlabeled[..., None])
        return out

    def publish_camera_info(self, header: Header, shape: tuple[int, ...]) -> None:
        """``~/camera_info``: the reference camera's calibration with the labels' header. Labels are on the RGB
        image's pixel grid, so the RGB ``CameraInfo`` describes them as it is, binning and ROI included (REP 104:
        full-resolution calibration plus the window that was published)."""
        source = self._camera_info()
        if source is None:
            self.faults.once(("camera_info",), f"no CameraInfo on {self.camera_info_topic} yet: ~/camera_info waits")
            return
        height, width = int(shape[0]), int(shape[1])
        info = CameraInfo(
            header=header,
            height=source.height,
            width=source.width,
            distortion_model=source.distortion_model,
            d=source.d,
            k=source.k,
            r=source.r,
            p=source.p,
            binning_x=source.binning_x,
            binning_y=source.binning_y,
            roi=source.roi,
        )
        if not (source.height and source.width):  # no calibrated size to check against: the labels' size
            info.height, info.width = height, width
        elif not self._fit_to_labels(info, source, height, width):
            return
        if self.extrinsics == "registered" and source.header.frame_id != header.frame_id:
            self.faults.once(
                ("camera_info_frame", source.header.frame_id, header.frame_id),
                f"{self.camera_info_topic}: frame_id {source.header.frame_id!r} differs from the {self.reference} "
                f"image's {header.frame_id!r}; ~/camera_info carries the image's",
            )
        self.camera_info.publish(info)

    def _fit_to_labels(self, info: CameraInfo, source: CameraInfo, height: int, width: int) -> bool:
        """Where the calibration describes images of another size than the labels, rewrite ``info`` as the plain
        camera of the labels: binning and ROI applied, intrinsics scaled, no binning or ROI left (one warning).
        False for a ROI the calibration cannot hold (one warning; nothing to publish)."""
        try:
            area = window(source)
        except ValueError as err:
            self.faults.once(("camera_info_window", str(err)), f"{self.camera_info_topic}: {err}; ~/camera_info waits")
            return False
        described_height, described_width = area.image_size
        if (described_height, described_width) == (height, width):
            return True
        sx, sy = width / described_width, height / described_height
        info.k = scaled_intrinsics(windowed_intrinsics(source.k, area, 3), sx, sy, 3)
        info.p = scaled_intrinsics(windowed_intrinsics(source.p, area, 4), sx, sy, 4)
        info.height, info.width, info.binning_x, info.binning_y = height, width, 0, 0
        info.roi = RegionOfInterest()
        self.faults.once(
            ("camera_info_size", str(described_width), str(described_height)),
            f"{self.camera_info_topic}: CameraInfo is {described_width}x{described_height} but the images are "
            f"{width}x{height}; ~/camera_info scales the intrinsics",
        )
        return True


def scaled_intrinsics(matrix: Sequence[float], sx: float, sy: float, columns: int) -> list[float]:
    """Intrinsics (row-major K 3x3 or P 3x4) for an image resized by ``sx``, ``sy``."""
    out = [float(v) for v in matrix]
    for column in range(columns):
        out[column] *= sx
        out[columns + column] *= sy
    return out
