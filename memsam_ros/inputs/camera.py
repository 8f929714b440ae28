"""``sensor_msgs/CameraInfo`` → the camera of the image actually published, with REP 104 binning and ROI applied.

A ``CameraInfo`` holds the calibration at the sensor's full resolution (``width``/``height``, ``K``, ``P``); a driver
that bins or crops says so in ``binning_x``/``binning_y`` (0 and 1 both mean none) and ``roi`` (in full-resolution,
unbinned pixels; all zeros means the full image). The image on the wire is then ``roi.width / binning_x`` by
``roi.height / binning_y`` pixels, and its intrinsics are the full ones shifted by the ROI offset, then divided by
the binning — exactly what ``image_geometry::PinholeCameraModel::fromCameraInfo`` (ros-perception/vision_opencv,
``image_geometry/src/pinhole_camera_model.cpp``) computes, so a point lands on the pixel every ROS consumer expects.
Distortion ``D`` acts on normalised coordinates and is unchanged. ``roi.do_rectify`` only concerns the rectified
image; the LiDAR projection works on the raw image with ``K`` and ``D``, where the raw ROI offset is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from memsam_core.lidar import CameraModel


@dataclass(frozen=True)
class Window:
    """Binning and ROI of a CameraInfo, defaults resolved (binning ≥ 1, ROI in full-resolution pixels)."""

    binning_x: int
    binning_y: int
    x_offset: int
    y_offset: int
    roi_width: int
    roi_height: int

    @property
    def identity(self) -> bool:
        """No binning and no ROI offset: the full calibration describes the image as it is."""
        return self.binning_x == self.binning_y == 1 and self.x_offset == self.y_offset == 0

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the published image (image_geometry's ``reducedResolution``)."""
        return self.roi_height // self.binning_y, self.roi_width // self.binning_x


def window(msg: Any) -> Window:
    """The binning and ROI of ``msg``; raises ValueError for a ROI outside the calibrated resolution."""
    width, height = int(msg.width), int(msg.height)
    roi = msg.roi
    x_offset, y_offset, roi_width, roi_height = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
    if x_offset == y_offset == roi_width == roi_height == 0:
        roi_width, roi_height = width, height
    if x_offset + roi_width > width or y_offset + roi_height > height or roi_width <= 0 or roi_height <= 0:
        raise ValueError(
            f"roi {roi_width}x{roi_height} at ({x_offset}, {y_offset}) does not fit the calibrated {width}x{height}"
        )
    found = Window(max(int(msg.binning_x), 1), max(int(msg.binning_y), 1), x_offset, y_offset, roi_width, roi_height)
    if 0 in found.image_size:
        raise ValueError(
            f"binning {found.binning_x}x{found.binning_y} leaves no pixel of the {roi_width}x{roi_height} roi"
        )
    return found


def windowed_intrinsics(matrix: Sequence[float], area: Window, columns: int) -> list[float]:
    """Row-major ``K`` (3 columns) or ``P`` (4 columns) of the full calibration → those of the published image:
    principal point moved by the ROI offset, then row 0 divided by ``binning_x`` and row 1 by ``binning_y``."""
    out = [float(v) for v in matrix]
    out[2] -= area.x_offset
    out[columns + 2] -= area.y_offset
    for column in range(columns):
        out[column] /= area.binning_x
        out[columns + column] /= area.binning_y
    return out


def camera_model(msg: Any) -> CameraModel:
    """``sensor_msgs/CameraInfo`` → :class:`CameraModel` of the published image (binning and ROI applied);
    raises ValueError for an unusable calibration."""
    area = window(msg)
    height, width = area.image_size
    return CameraModel(
        width,
        height,
        tuple(windowed_intrinsics(msg.k, area, 3)),
        tuple(float(v) for v in msg.d),
        str(msg.distortion_model),
        str(msg.header.frame_id),
    )
