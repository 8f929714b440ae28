"""``sensor_msgs/PointCloud2`` → ``[N, 3]`` float32 x, y, z (what the LiDAR projection needs), no sensor_msgs_py.

``sensor_msgs_py.point_cloud2`` is not on PyPI, so this reads the cloud the way it does: a numpy structured view
over ``data`` built from the message's own ``fields`` (any ``point_step``, padding and extra fields, organised or
not, either byte order). Like :mod:`memsam_ros.inputs.codec` it only reads attributes, so rclpy and rosbags
messages work.

No-return points are dropped in both conventions drivers use: NaN coordinates (velodyne and current ouster-ros
organised clouds) and points exactly at (0, 0, 0) (older ouster-ros, ros2_ouster_drivers unless
``pointcloud_filter_zero_points``; ouster-lidar/ouster-ros#396). A return at the sensor's own origin is not a
measurement (every LiDAR has a minimum range), and kept it would project onto the pixel of the LiDAR's origin and,
the nearest return winning, hide the real return there whenever that origin is in front of the camera.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memsam_ros.inputs.codec import ImageDecodeError, as_bytes

# sensor_msgs/PointField datatype constants
_FIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


class PointCloudError(ImageDecodeError):
    """A PointCloud2 cannot be read; the message names the reason."""


def pointcloud2_to_xyz(msg: Any) -> np.ndarray:
    """The cloud's x, y, z as float32 ``[N, 3]``; no-return rows (a non-finite coordinate, or exactly (0, 0, 0))
    are dropped."""
    fields = {str(f.name): f for f in msg.fields}
    missing = [axis for axis in "xyz" if axis not in fields]
    if missing:
        raise PointCloudError(f"no {'/'.join(missing)} field (fields: {', '.join(fields) or 'none'})")
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if height * width == 0:
        return np.zeros((0, 3), np.float32)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for axis in "xyz":
        field = fields[axis]
        kind = _FIELD_TYPES.get(int(field.datatype))
        if kind not in ("f4", "f8"):
            raise PointCloudError(f"field {axis} has datatype {int(field.datatype)}; x, y, z must be FLOAT32/FLOAT64")
        if int(field.offset) + np.dtype(kind).itemsize > point_step:
            raise PointCloudError(f"field {axis} at offset {int(field.offset)} does not fit point_step {point_step}")
        names.append(axis)
        formats.append(order + kind)
        offsets.append(int(field.offset))
    if row_step < width * point_step:
        raise PointCloudError(f"row_step {row_step} < width*point_step {width}*{point_step}")
    data = as_bytes(msg.data)
    if data.size != row_step * height:
        raise PointCloudError(f"data length {data.size} != row_step*height {row_step}*{height}")
    point = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    rows = data.reshape(height, row_step)[:, : width * point_step]
    structured = np.ascontiguousarray(rows).view(point).reshape(-1)
    xyz = np.empty((structured.size, 3), np.float32)
    for column, axis in enumerate("xyz"):
        xyz[:, column] = structured[axis]
    return xyz[np.isfinite(xyz).all(axis=1) & xyz.any(axis=1)]
