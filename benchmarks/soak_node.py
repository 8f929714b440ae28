"""Soak test of the segmentation node: N synchronised sets over real DDS, memory and accounting checked.

Runs :class:`memsam_ros.node.SegmentNode` in this process (CPU, hiera-tiny at 128 px, untrained) with
a publisher flooding small RGB/depth/LiDAR/event images faster than inference, so the keep-newest
worker drops most sets. At the end it checks that nothing leaks and every set is accounted for:

* RSS growth from warm-up to end stays below ``--rss-bound-mb``;
* worker: received == processed + dropped + failed (+ pending, 0 once idle);
* synchroniser, per modality: received == used + evicted + late + discarded + queued.

Exit status 0 = pass, 1 = a check failed.  Usage::

    .venv/bin/python benchmarks/soak_node.py --sets 10000 --rate 30
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc; psutil is not a dependency)."""
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclass
class SoakResult:
    sets_published: int
    rss_start_mb: float
    rss_end_mb: float
    counts: dict[str, int]
    sync_received: dict[str, int]
    sync_identity_ok: bool
    max_sync_queue: dict[str, int]
    max_worker_pending: int
    outputs_received: int
    elapsed_s: float
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _frames(rng: np.random.Generator, height: int, width: int) -> dict[str, np.ndarray]:
    depth = rng.uniform(1.0, 60.0, (height, width)).astype(np.float32)
    lidar = np.where(rng.random((height, width)) < 0.1, depth, 0.0).astype(np.float32)
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "depth": depth,
        "lidar": lidar,
        "event": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    }


def run_soak(
    sets: int = 10_000,
    rate_hz: float = 30.0,
    image_size: int = 128,
    height: int = 64,
    width: int = 64,
    rss_bound_mb: float = 200.0,
    warmup_sets: int = 20,
    domain: int | None = None,
) -> SoakResult:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from memsam_ros.inputs.codec import array_to_image
    from memsam_ros.node import SegmentNode

    encodings = {"rgb": "rgb8", "depth": "32FC1", "lidar": "32FC1", "event": "rgb8"}
    context = Context()
    if domain is None:  # above the tests' 1..200 (tests/domains.py); the tests pass a domain of their own
        domain = random.SystemRandom().randint(201, 232)
    rclpy.init(context=context, domain_id=domain)
    params = {
        "model.image_size": image_size,
        "inference.device": "cpu",
        "ros.reliability": "reliable",
        "ros.qos_depth": 10,
        "ros.silent_after_s": 600.0,
        "sync.slop_s": 0.002,
        "sync.max_wait_s": 0.1,
    }
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    node = SegmentNode(context=context, parameter_overrides=overrides, tune_interpreter=True)
    node.start()  # configure + activate, as memsam-node does with ros.autostart
    source = Node("memsam_soak_publisher", context=context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {m: source.create_publisher(Image, topic, qos) for m, topic in node.topics.items()}
    outputs: dict[str, int] = {}  # labels received per publisher (another engineer's node may share the domain)
    lock = threading.Lock()

    def on_labels(_msg: Image, info: dict) -> None:
        publisher = str((info.get("publisher_gid") or {}).get("data", ""))
        with lock:
            outputs[publisher] = outputs.get(publisher, 0) + 1

    source.create_subscription(Image, f"/{node.get_name()}/labels", on_labels, qos)
    executor = SingleThreadedExecutor(context=context)  # as memsam-node spins it
    executor.add_node(node)
    executor.add_node(source)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
        time.sleep(0.05)

    rng = np.random.default_rng(0)
    pool = [_frames(rng, height, width) for _ in range(4)]
    max_queue = dict.fromkeys(pubs, 0)
    max_pending = 0
    rss_start = float("nan")
    period = 1.0 / rate_hz
    start = time.monotonic()
    next_at = start
    for index in range(sets):
        stamp = 1000.0 + index * period
        header = Header(frame_id="soak")
        header.stamp.sec = int(stamp)
        header.stamp.nanosec = round((stamp - int(stamp)) * 1e9) % 1_000_000_000
        frames = pool[index % len(pool)]
        for m in ("depth", "lidar", "event", "rgb"):
            pubs[m].publish(array_to_image(frames[m], encodings[m], header))
        if index == warmup_sets:
            node.wait_idle(30)
            rss_start = rss_mb()
        for m, size in node.sync.queued().items():
            max_queue[m] = max(max_queue[m], size)
        max_pending = max(max_pending, node.counts().pending)
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # cannot keep the rate: do not try to catch up in a burst
    elapsed = time.monotonic() - start
    time.sleep(max(0.5, 3 * params["sync.max_wait_s"]))  # let the last messages arrive and the sync flush
    node.wait_idle(60)
    time.sleep(0.3)
    rss_end = rss_mb()
    counts = node.counts()
    stats = node.sync.stats
    queued = node.sync.queued()
    identity = all(
        stats.received[m] == stats.used[m] + stats.evicted[m] + stats.late[m] + stats.discarded[m] + queued[m]
        for m in stats.received
    )
    with lock:
        received_outputs, publishers = sum(outputs.values()), len(outputs)
    executor.shutdown(timeout_sec=5)
    source.destroy_node()
    node.destroy_node()
    context.try_shutdown()

    result = SoakResult(
        sets_published=sets,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        counts={
            "received": counts.received,
            "processed": counts.processed,
            "dropped": counts.dropped,
            "failed": counts.failed,
            "pending": counts.pending,
        },
        sync_received=dict(stats.received),
        sync_identity_ok=identity,
        max_sync_queue=max_queue,
        max_worker_pending=max_pending,
        outputs_received=received_outputs,
        elapsed_s=elapsed,
    )
    if not counts.balanced or counts.pending:
        result.failures.append(f"set accounting broken: {result.counts}")
    if not identity:
        result.failures.append("synchroniser accounting identity broken")
    if counts.processed == 0:
        result.failures.append("no set was processed")
    if counts.failed:
        result.failures.append(f"{counts.failed} sets failed inference")
    if not rss_end - rss_start <= rss_bound_mb:
        result.failures.append(f"RSS grew {rss_end - rss_start:.1f} MB (> {rss_bound_mb} MB)")
    if publishers > 1:
        result.failures.append(
            f"labels came from {publishers} publishers on ROS domain {domain}: another node shares the domain, so "
            "the inputs and outputs counted here are not this node's alone (run again on another --domain)"
        )
    elif received_outputs > counts.processed:
        result.failures.append(f"more outputs ({received_outputs}) than processed sets ({counts.processed})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=10_000, help="synchronised sets to publish")
    parser.add_argument("--rate", type=float, default=30.0, help="sets per second")
    parser.add_argument("--image-size", type=int, default=128, help="network input size")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--rss-bound-mb", type=float, default=200.0, help="max RSS growth after warm-up")
    parser.add_argument("--domain", type=int, default=None, help="ROS domain id (default: a random one in 201-232)")
    args = parser.parse_args(argv)
    result = run_soak(
        args.sets, args.rate, args.image_size, args.height, args.width, args.rss_bound_mb, domain=args.domain
    )
    print(f"published {result.sets_published} sets in {result.elapsed_s:.1f} s")
    print(f"RSS start {result.rss_start_mb:.1f} MB, end {result.rss_end_mb:.1f} MB")
    print(f"sets: {result.counts} (outputs received: {result.outputs_received})")
    print(f"sync received per modality: {result.sync_received}, identity ok: {result.sync_identity_ok}")
    print(f"max sync queue: {result.max_sync_queue}, max worker pending: {result.max_worker_pending}")
    for failure in result.failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("PASS" if result.ok else "FAIL")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
