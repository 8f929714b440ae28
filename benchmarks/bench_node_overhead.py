"""Node overhead on real processes: publisher -> node -> subscriber at 1024², minus model time.

The node runs as its own process (``python -m memsam_ros.node`` with config/segment.yaml: best-effort
sensor-data inputs, as shipped), with the Fast DDS shared-memory profile the README prescribes for
images above 0.5 MB. This process publishes 4-modality sets of 1024x1024 images (RGB rgb8 3 MiB, depth
and LiDAR 32FC1 4 MiB each, events rgb8 3 MiB; depth/LiDAR/events first, RGB last, all with the same
stamp) and subscribes to ``~/labels`` and ``~/info`` only, like a planner (so ``~/color`` and
``~/confidence`` are not built). One set at a time: the next goes out when the previous set's labels are
in, so the keep-newest worker never drops one.

Per set (CLOCK_MONOTONIC is shared by both processes):

* end to end: RGB message handed to DDS -> ``~/labels`` received here (the messages are serialized before
  the clock starts, as a C++ camera driver or a bag player hands DDS its bytes, and the labels are taken
  raw: rclpy's own (de)serialization of large Images in this process is not the node's cost);
* model time: ``~/info`` ``inference_ms`` (the engine's whole time: preprocessing, network, postprocessing);
* **overhead = end to end - model time**: everything the node adds around the model (taking the messages,
  synchronising, decoding the set's images, encoding and publishing the labels) plus the DDS transport of
  the RGB image in and the labels out;
* inside the node: ``~/info`` ``total_latency_ms`` (RGB callback -> labels published) - model time;
* transport floor: the same traffic with ``benchmarks/transport_echo.py`` in the node's place (a bare rclpy
  process, same QoS and Fast DDS profile, that answers each RGB image at once with a ready-made 1 MiB labels
  message): what rclpy and Fast DDS alone cost; the node's own share is the node's overhead minus it.

The network runs at ``--net-size`` (default 128 px, so a set takes well under a second on a CPU); the
overhead does not depend on it, only the model time does.

    python benchmarks/bench_node_overhead.py [--sets 60] [--size 1024] [--net-size 128] [--no-floor]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description

ROOT = Path(__file__).resolve().parents[1]
ENCODINGS = {"rgb": "rgb8", "depth": "32FC1", "lidar": "32FC1", "event": "rgb8"}
TOPICS = {"rgb": "/rgb/image", "depth": "/depth/image", "lidar": "/lidar/depth_image", "event": "/event/image"}


def incoming_arrays(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Realistic inputs: LiDAR with a return on ~5 % of the pixels, a few NaN depth pixels."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 80.0, (size, size)).astype(np.float32)
    depth[rng.random((size, size)) < 0.02] = np.nan
    lidar = np.zeros((size, size), np.float32)
    hits = rng.random((size, size)) < 0.05
    lidar[hits] = rng.uniform(1.0, 100.0, int(hits.sum())).astype(np.float32)
    return {
        "rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "depth": depth,
        "lidar": lidar,
        "event": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
    }


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (``/proc/PID/stat`` field 10)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def run(command: list[str], args: argparse.Namespace, with_info: bool = True) -> dict[str, np.ndarray]:
    """Start ``command`` (the node), publish the sets, time them; per-set arrays in ms."""
    domain = random.SystemRandom().randint(30, 99)
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds_shm.xml"),
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE")})
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_node_overhead_{os.getpid()}_{with_info}.log"
    log = open(log_path, "w")  # closed below
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from memsam_ros.info import info_dict, info_wire_type
    from memsam_ros.inputs.cdr import read_header
    from memsam_ros.inputs.codec import array_to_cdr

    context = Context()
    rclpy.init(context=context, domain_id=domain)
    rig = rclpy.create_node("memsam_overhead_bench", context=context)
    pubs = {m: rig.create_publisher(Image, t, qos_profile_sensor_data) for m, t in TOPICS.items()}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    lock = threading.Condition()
    labels_at: dict[int, float] = {}
    infos: dict[int, dict] = {}

    def on_labels(raw: bytes) -> None:  # raw: the stamp is all this subscriber reads
        now = time.monotonic()
        with lock:
            labels_at[read_header(raw)[0]] = now
            lock.notify_all()

    def on_info(msg) -> None:
        info = info_dict(msg)
        with lock:
            infos[info["stamp_ns"]] = info
            lock.notify_all()

    subs = [rig.create_subscription(Image, "/memsam_segment/labels", on_labels, reliable, raw=True)]
    if with_info:
        subs.append(rig.create_subscription(info_wire_type(), "/memsam_segment/info", on_info, reliable))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(rig)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    arrays = incoming_arrays(args.size)
    end_to_end, model, inside = [], [], []
    lost = 0
    try:
        deadline = time.monotonic() + args.startup_timeout
        while not all(p.get_subscription_count() for p in pubs.values()) or not all(
            s.get_publisher_count() for s in subs
        ):
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command[-1]} did not come up; see {log_path}")
            time.sleep(0.1)
        time.sleep(1.0)
        stamp = 1_000_000_000_000
        faults_before = minor_faults(child.pid)  # counted again after the warm-up
        for index in range(args.warmup + args.sets):
            stamp += 100_000_000
            # serialized before the clock starts, as a C++ driver or a bag player hands DDS its bytes
            messages = {m: array_to_cdr(a, ENCODINGS[m], stamp, "cam") for m, a in arrays.items()}
            for m in ("depth", "lidar", "event"):
                pubs[m].publish(messages[m])
            time.sleep(0.02)  # let them land first: the RGB message completes the set
            sent = time.monotonic()
            pubs["rgb"].publish(messages["rgb"])
            with lock:
                done = lock.wait_for(lambda k=stamp: k in labels_at and (k in infos or not with_info), timeout=30.0)
            if not done:
                lost += 1  # best-effort input lost on the way
                continue
            if index == args.warmup - 1:
                faults_before = minor_faults(child.pid)
            if index >= args.warmup:
                end_to_end.append((labels_at[stamp] - sent) * 1e3)
                if with_info:
                    model.append(infos[stamp]["inference_ms"])
                    inside.append(infos[stamp]["total_latency_ms"] - infos[stamp]["inference_ms"])
            time.sleep(0.05)
        faults = (minor_faults(child.pid) - faults_before) / max(1, args.sets)
    finally:
        executor.shutdown()
        rig.destroy_node()
        context.try_shutdown()
        child.send_signal(signal.SIGINT)
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
        log.close()
    return {
        "end_to_end": np.array(end_to_end),
        "model": np.array(model),
        "inside": np.array(inside),
        "lost": lost,
        "faults": faults,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024, help="input image size (square)")
    parser.add_argument("--net-size", type=int, default=128, help="network input size (model time only)")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--no-floor", action="store_true", help="skip the transport floor (transport_echo.py) run")
    args = parser.parse_args(argv)
    node_command = [
        sys.executable, "-m", "memsam_ros.node", "--ros-args", "--params-file", str(ROOT / "config/segment.yaml"),
        "-p", f"model.image_size:={args.net_size}", "-p", "inference.device:=cpu",
    ]  # fmt: skip
    node = run(node_command, args, with_info=True)
    overhead = node["end_to_end"] - node["model"]
    echo = [sys.executable, str(ROOT / "benchmarks" / "transport_echo.py")]
    floor = None if args.no_floor else run(echo, args, with_info=False)
    lost = node["lost"] + (0 if floor is None else floor["lost"])
    print(f"# {machine_description()}; {args.size}x{args.size} inputs (4 modalities), network {args.net_size} px, "
          f"{len(overhead)} sets per run ({args.warmup} warm-up discarded, {lost} lost on the way)")  # fmt: skip
    print("| per set | p50 ms | p99 ms |")
    print("|---|---|---|")
    rows = [
        ("node process: RGB published -> ~/labels received", node["end_to_end"]),
        ("model time (~/info inference_ms)", node["model"]),
        ("**node overhead = end to end - model time**", overhead),
        ("inside the node: RGB callback -> labels published, minus model time", node["inside"]),
    ]
    if floor is not None:
        rows.append(("transport floor: bare rclpy echo in the node's place, RGB published -> labels received",
                     floor["end_to_end"]))  # fmt: skip
    for name, values in rows:
        print(f"| {name} | {np.percentile(values, 50):.1f} | {np.percentile(values, 99):.1f} |")
    if floor is not None:
        share = [np.percentile(overhead, q) - np.percentile(floor["end_to_end"], q) for q in (50, 99)]
        print(f"| the node's own share: overhead - transport floor (difference of percentiles) | {share[0]:.1f} | "
              f"{share[1]:.1f} |")  # fmt: skip
    print(f"# minor page faults per set: node process {node['faults']:.0f}"
          + ("" if floor is None else f", transport-floor process {floor['faults']:.0f}"))  # fmt: skip
    print(f"# node overhead p50 {np.percentile(overhead, 50):.1f} ms, p99 {np.percentile(overhead, 99):.1f} ms "
          "(target <= 5 ms on CPU)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
