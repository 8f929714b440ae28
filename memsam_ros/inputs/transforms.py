"""The LiDAR → camera extrinsics from ``/tf_static`` and ``/tf``, without tf2_ros (not on PyPI).

Holds the latest transform of every parent → child edge it has seen and composes the chain between two frames
through their common ancestor, as ``tf2`` does for static trees. Time travel (interpolating moving transforms) is
not needed for a rigidly mounted LiDAR and camera, so only the newest transform per edge is kept. When no chain
exists the node falls back to its ``lidar.extrinsics`` parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memsam_core.lidar import Extrinsics


def transform_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` → 4x4 matrix mapping child-frame points into the parent frame."""
    t, q = transform.translation, transform.rotation
    return Extrinsics.from_xyz_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w)).matrix()


class TransformTree:
    """Latest parent → child transforms; :meth:`lookup` composes them like ``tf2``'s ``lookup_transform``."""

    def __init__(self) -> None:
        self._parent: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, child-to-parent matrix)

    def add(self, transform_stamped: Any) -> None:
        parent = str(transform_stamped.header.frame_id).lstrip("/")
        child = str(transform_stamped.child_frame_id).lstrip("/")
        if parent and child and parent != child:
            self._parent[child] = (parent, transform_matrix(transform_stamped.transform))

    def add_message(self, tf_message: Any) -> None:
        for transform_stamped in tf_message.transforms:
            self.add(transform_stamped)

    def _to_root(self, frame: str) -> list[tuple[str, np.ndarray]]:
        """``[(frame, I), (parent, frame→parent), (grandparent, frame→grandparent), ...]``."""
        chain, current, matrix = [(frame, np.eye(4))], frame, np.eye(4)
        while current in self._parent and len(chain) <= len(self._parent):
            current, step = self._parent[current]
            matrix = step @ matrix
            chain.append((current, matrix))
        return chain

    def lookup(self, target_frame: str, source_frame: str) -> Extrinsics | None:
        """The transform mapping ``source_frame`` points into ``target_frame``, or None without a chain."""
        target_frame, source_frame = target_frame.lstrip("/"), source_frame.lstrip("/")
        if target_frame == source_frame:
            return Extrinsics()
        source_chain = dict(self._to_root(source_frame))
        for ancestor, target_to_ancestor in self._to_root(target_frame):
            if ancestor in source_chain:
                return Extrinsics.from_matrix(np.linalg.inv(target_to_ancestor) @ source_chain[ancestor])
        return None
