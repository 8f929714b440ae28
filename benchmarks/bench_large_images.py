"""Large images between two processes over best-effort QoS, with and without the shipped Fast DDS profile.

A publisher process sends ``rgb8`` images at a fixed rate to a subscriber process on the node's default input QoS
(best effort, keep last 5); the subscriber counts what arrives and the latency from the publish stamp. Fast DDS
hands a sample to a same-host reader through the *writer's* shared-memory segment (512 KB by default), so what
decides delivery is whether the publishing process loaded ``config/fastdds_shm.xml`` (64 MB segment).

    python benchmarks/bench_large_images.py            # 1280x720 and 1024x1024, 30 Hz, 3 s, four profile set-ups
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"


def _qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)


def _subscribe(seconds: float) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("large_image_subscriber")
    latencies: list[float] = []

    def on_image(msg: Image) -> None:
        sent = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latencies.append((time.time_ns() - sent) / 1e6)

    node.create_subscription(Image, "large_image", on_image, _qos())
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)
    print(json.dumps(latencies), flush=True)
    rclpy.shutdown()


def _publish(width: int, height: int, frames: int, rate: float) -> None:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("large_image_publisher")
    publisher = node.create_publisher(Image, "large_image", _qos())
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let the subscriber's endpoint match fully
    data = np.random.default_rng(0).integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=data)
    start = time.monotonic()
    for index in range(frames):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 1_000_000_000)
        publisher.publish(msg)
        time.sleep(max(0.0, start + (index + 1) / rate - time.monotonic()))
    time.sleep(0.5)
    rclpy.shutdown()


def measure(
    width: int, height: int, publisher_profile: bool, subscriber_profile: bool, frames: int = 90, rate: float = 30.0
) -> dict:
    """Run one publisher/subscriber pair in two processes; delivered fraction and latency percentiles (ms)."""
    base = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    base.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

    def env(profile: bool) -> dict[str, str]:
        return {**base, "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE)} if profile else base

    script = [sys.executable, os.path.abspath(__file__)]
    seconds = frames / rate + 6.0
    subscriber = subprocess.Popen(
        [*script, "--role", "subscriber", "--seconds", str(seconds)],
        env=env(subscriber_profile),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert subscriber.stdout.readline().strip() == "ready"
        subprocess.run(
            [*script, "--role", "publisher", "--size", f"{width}x{height}", "--frames", str(frames), "--rate",
             str(rate)],
            env=env(publisher_profile),
            check=True,
            timeout=60,
        )  # fmt: skip
        latencies = sorted(json.loads(subscriber.stdout.readline()))
    finally:
        subscriber.kill()
        subscriber.wait()

    def percentile(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {
        "size": f"{width}x{height}",
        "publisher_profile": publisher_profile,
        "subscriber_profile": subscriber_profile,
        "sent": frames,
        "delivered": len(latencies) / frames,
        "p50_ms": percentile(0.5),
        "p99_ms": percentile(0.99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["subscriber", "publisher"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.role == "subscriber":
        _subscribe(args.seconds)
        return 0
    if args.role == "publisher":
        width, height = (int(v) for v in args.size.split("x"))
        _publish(width, height, args.frames, args.rate)
        return 0
    print(f"# {args.frames} rgb8 frames at {args.rate:.0f} Hz, best effort depth 5, two processes on one host")
    print("| image | publisher profile | subscriber profile | delivered | latency p50 / p99 ms |")
    print("|---|---|---|---|---|")
    for width, height in ((1280, 720), (1024, 1024)):
        for publisher_profile, subscriber_profile in ((True, True), (False, False), (False, True), (True, False)):
            row = measure(width, height, publisher_profile, subscriber_profile, args.frames, args.rate)
            latency = f"{row['p50_ms']:.1f} / {row['p99_ms']:.1f}" if row["p50_ms"] is not None else "-"
            print(
                f"| {row['size']} | {'yes' if publisher_profile else 'no'} | {'yes' if subscriber_profile else 'no'} "
                f"| {row['delivered']:.0%} | {latency} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
