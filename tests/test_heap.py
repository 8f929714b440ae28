"""keep_large_buffers: freed image-sized buffers are reused, so a set of images costs no page faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# one 4-modality 1024² set as the node's process sees it: rclpy's bytes for RGB/depth/LiDAR/events and the labels
ONE_SET = """
import resource, sys
from memsam_ros.heap import keep_large_buffers
if sys.argv[1] == "tuned":
    print(keep_large_buffers(), file=sys.stderr)
sizes = [3 << 20, 4 << 20, 4 << 20, 3 << 20, 1 << 20]
for _ in range(5):  # warm-up
    bufs = [bytearray(size) for size in sizes]
    del bufs
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    bufs = [bytearray(size) for size in sizes]
    del bufs
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_set(mode: str, **env: str) -> tuple[float, str]:
    clean = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", ONE_SET, mode],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout), result.stderr.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and ru_minflt: Linux only")
def test_a_set_of_images_faults_pages_in_without_it_and_none_with_it():
    untuned, _ = faults_per_set("untuned")
    tuned, said = faults_per_set("tuned")
    if "not glibc" in said:
        pytest.skip(f"this C library is not glibc: {said}")
    assert untuned > 500, f"glibc returned no image buffer to the kernel ({untuned} faults per set): test is moot"
    assert tuned < 5, f"{tuned} page faults per set with the buffers kept ({said})"
    assert "32 MiB" in said


def test_the_users_malloc_settings_win():
    _, said = faults_per_set("tuned", GLIBC_TUNABLES="glibc.malloc.trim_threshold=1048576")
    assert "from the environment" in said
    _, said = faults_per_set("tuned", MALLOC_MMAP_THRESHOLD_="262144")
    assert "from the environment" in said
