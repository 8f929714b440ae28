"""LiDAR projection speed: a 128-beam cloud (128 × 2048 = 262,144 points) → the 1280×720 depth image, one CPU core.

Target (issue 13): ≤ 10 ms per cloud. The process pins itself to one core and one BLAS/OpenMP thread, builds a
spinning-LiDAR cloud (ranges 1–120 m, 10 % no-return NaN rows) and projects it with a ``plumb_bob`` camera through
a rotated and offset extrinsic, as the node does per PointCloud2 message.

    python benchmarks/bench_lidar_projection.py [--repeats 50]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_description  # noqa: E402

from memsam_core.lidar import CameraModel, Extrinsics, project_to_depth  # noqa: E402

TARGET_MS = 10.0


def spinning_cloud(beams: int = 128, azimuth_steps: int = 2048, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    elevation = np.repeat(np.radians(np.linspace(-25.0, 15.0, beams)), azimuth_steps)
    azimuth = np.tile(np.radians(np.linspace(-180.0, 180.0, azimuth_steps, endpoint=False)), beams)
    distance = rng.uniform(1.0, 120.0, elevation.size)
    points = np.stack(
        [
            distance * np.cos(elevation) * np.cos(azimuth),
            distance * np.cos(elevation) * np.sin(azimuth),
            distance * np.sin(elevation),
        ],
        axis=1,
    ).astype(np.float32)
    points[rng.random(points.shape[0]) < 0.1] = np.nan
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    camera = CameraModel(
        1280,
        720,
        (700.0, 0.0, 640.0, 0.0, 700.0, 360.0, 0.0, 0.0, 1.0),
        (-0.28, 0.09, 0.001, -0.001, -0.01),
        "plumb_bob",
    )
    axes = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # LiDAR x-forward → optical z-forward
    extrinsics = Extrinsics(axes, np.array([0.02, 0.25, -0.4]))
    cloud = spinning_cloud()
    project_to_depth(cloud, extrinsics, camera)  # warm-up (fold radius, page faults)
    samples = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        depth = project_to_depth(cloud, extrinsics, camera)
        samples.append((time.perf_counter() - start) * 1000.0)
    median = statistics.median(samples)
    p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
    print(f"# {machine_description()}; pinned to 1 core, 1 BLAS thread; numpy {np.__version__}")
    print("| points | image | returns in image | median ms | p90 ms | target ms | median / target |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {cloud.shape[0]} | 1280×720 | {np.count_nonzero(depth)} | {median:.2f} | {p90:.2f} | {TARGET_MS:.0f} "
        f"| {median / TARGET_MS:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
