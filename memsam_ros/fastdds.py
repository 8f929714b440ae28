"""The shipped Fast DDS profile for large images, applied by default to memsam's own processes.

Fast DDS hands a sample to a reader on the same host through the *writer's* shared-memory segment, 512 KB by
default, so best-effort images of a few MB mostly never arrive (measured: 1-7 % of 720p/1024² frames between two
processes; ``benchmarks/bench_large_images.py``). ``config/fastdds_shm.xml`` gives every participant a 64 MB
segment. The node (for its ~/color and ~/confidence outputs) and the bag player (for what it publishes) load it
unless ``FASTDDS_DEFAULT_PROFILES_FILE`` is already set; set it to an empty string to opt out. Camera drivers are
other processes: they need the same variable (docs/node.md).
"""

from __future__ import annotations

import os
from pathlib import Path

PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_NAME = "fastdds_shm.xml"


def shipped_profile() -> Path | None:
    """The installed profile (``share/memsam_ros/config``), else the source checkout's; None if neither exists."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / PROFILE_NAME]
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.insert(0, Path(get_package_share_directory("memsam_ros")) / "config" / PROFILE_NAME)
        except (PackageNotFoundError, OSError):  # not installed with colcon / AMENT_PREFIX_PATH unset off-ROS
            pass
    except ImportError:  # ament_index_python ships with every ROS install and the rclpy wheels; be safe anyway
        pass
    return next((path for path in candidates if path.is_file()), None)


def use_large_data_profile() -> str | None:
    """Point Fast DDS at the shipped profile unless the user chose one (call before ``rclpy.init``); returns
    the profile in effect, or None."""
    if PROFILE_VARIABLE in os.environ:
        return os.environ[PROFILE_VARIABLE] or None
    profile = shipped_profile()
    if profile is not None:
        os.environ[PROFILE_VARIABLE] = str(profile)
    return str(profile) if profile else None
