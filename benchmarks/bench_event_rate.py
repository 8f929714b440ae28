"""A driver-rate event stream against the node's throughput, with real publisher processes (issue 23, part 1).

Five driver processes (``benchmarks/sensor_publishers.py``; rclpy, the sensor-data QoS drivers use, the shipped
Fast DDS profile) publish what a rig records: RGB 640×480 JPEG ``CompressedImage`` at 30 Hz with ``camera_info``,
``compressedDepth`` at 30 Hz, a VLP-16-like ``PointCloud2`` (16 × 1,800 points) at 10 Hz with ``/tf_static``, and an
EVT3 ``EventPacket`` stream of 1 Mev/s (``--event-rate``) cut into a packet every 1 ms as metavision_driver sends it
(``/event/events``); a second EVT3 driver sends a stream of the same rate in 33 ms packets (``/event/events_30hz``).
The node runs as its own process (``python -m memsam_ros.node`` with the shipped ``config/segment.yaml``, a
4-modality hiera-tiny checkpoint with random weights at ``--net-size`` px, CPU). The same traffic in every run:

* **events**: the node subscribes the 1 kHz packet stream;
* **remapped**: the event topic remapped away (``-r /event/events:=...``), as in the issue: no packet reaches the
  node, but its sets then have 3 frames instead of 4, so the model is cheaper as well;
* **30 Hz packets**: the event topic remapped to the 33 ms stream: the model's work equals the first run's and only
  the packet rate the node takes differs.

Per run, over ``--seconds`` after ``--warmup``: sets segmented per second (``~/info`` messages), inference p50
(``~/info`` ``inference_ms``), the executor's time per message of each input topic (``/diagnostics``
``executor_us_p50/p99``: the callback, or an event packet's share of a drained batch), the CPU time of the node's
executor thread (its main thread, ``/proc``) per second, and of the whole node process.

    python benchmarks/bench_event_rate.py [--seconds 30] [--warmup 12] [--net-size 128] [--runs events remapped 30hz]
        [--repeat 2]   # the runs interleaved, so a change of the machine's load hits all of them
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description

ROOT = Path(__file__).resolve().parents[1]
PUBLISHERS = Path(__file__).resolve().parent / "sensor_publishers.py"
RUNS = {
    "events": ("events subscribed, 1 kHz packets", []),
    "remapped": ("event topic remapped away", ["-r", "/event/events:=/event/remapped_away"]),
    "30hz": ("events subscribed as 30 Hz packets (same event rate)", ["-r", "/event/events:=/event/events_30hz"]),
}
EVENT_DRIVERS = {"/event/events": 1000, "/event/events_30hz": 33333}  # topic: packet period (µs)
TOPIC_TYPES = {"rgb": ("/rgb/image/compressed", "compressed"), "depth": ("/depth/image/compressedDepth", "compressed"),
               "lidar": ("/lidar/points", "pointcloud"), "event": ("/event/events", "event_packet")}  # fmt: skip


def make_checkpoint(folder: Path, net_size: int) -> Path:
    from memsam_core.config import load_config
    from memsam_core.model import build_memorysam, save_checkpoint

    config = load_config(None, {"model.image_size": net_size, "model.modalities": ["rgb", "depth", "lidar", "event"]})
    path = folder / f"bench_{net_size}.pt"
    save_checkpoint(path, build_memorysam(config.model, seed=0), config)
    return path


def thread_cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Listener:
    """``~/info`` and ``/diagnostics`` of the node, in this process."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from memsam_ros.info import info_wire_type

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("memsam_event_rate_bench", context=self.context)
        self.lock = threading.Lock()
        self.infos: list[tuple[float, Any]] = []
        self.diagnostics: list[Any] = []
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(info_wire_type(), "/memsam_segment/info", self._on_info, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_info(self, msg: Any) -> None:
        with self.lock:
            self.infos.append((time.monotonic(), msg))

    def _on_diagnostics(self, msg: Any) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def topic_values(self) -> dict[str, dict[str, str]]:
        """The latest ``/diagnostics`` values per input (``rgb``, ``depth``, ...)."""
        with self.lock:
            latest = self.diagnostics[-1] if self.diagnostics else None
        out: dict[str, dict[str, str]] = {}
        for status in latest.status if latest is not None else ():
            if ": input " in status.name:
                out[status.name.rsplit(" ", 1)[1]] = {kv.key: kv.value for kv in status.values}
        return out

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def run(name: str, args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    """One run: drivers + node, warm up, measure; the figures of :func:`main`'s table."""
    from memsam_ros.info import info_dict

    description, remap = RUNS[name]
    domain = random.SystemRandom().randint(201, 232)  # above the tests' 1..200 (tests/domains.py): no crosstalk
    profile = str(ROOT / "config" / "fastdds_shm.xml")
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "FASTDDS_DEFAULT_PROFILES_FILE": profile, "PYTHONUNBUFFERED": "1"}  # fmt: skip
    total_s = args.warmup + args.seconds + args.startup_timeout
    logs = Path(tempfile.mkdtemp(prefix=f"bench_event_rate_{name}_"))
    params = [f"inference.checkpoint:={checkpoint}", "inference.device:=cpu", "ros.diagnostics_period_s:=1.0",
              "ros.camera_info_topic:=/rgb/camera_info"]  # fmt: skip
    for modality, (topic, kind) in TOPIC_TYPES.items():
        params += [f"ros.{modality}_topic:={topic}", f"ros.{modality}_type:={kind}"]
    node_command = [sys.executable, "-m", "memsam_ros.node", "--ros-args", "--params-file",
                    str(ROOT / "config" / "segment.yaml"), *(a for p in params for a in ("-p", p)), *remap]  # fmt: skip
    processes: list[subprocess.Popen] = []
    listener = Listener(domain)
    try:
        node = subprocess.Popen(node_command, env=env, cwd=ROOT, stdout=open(logs / "node.log", "w"),
                                stderr=subprocess.STDOUT)  # fmt: skip
        processes.append(node)
        drivers = [("rgb", []), ("depth", []), ("lidar", [])]
        drivers += [("events", ["--topic", t, "--packet-us", str(us)]) for t, us in EVENT_DRIVERS.items()]
        for index, (sensor, options) in enumerate(drivers):
            command = [sys.executable, str(PUBLISHERS), sensor, "--seconds", str(total_s),
                       "--event-rate", str(args.event_rate), *options]  # fmt: skip
            log = open(logs / f"{sensor}_{index}.log", "w")
            processes.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + args.startup_timeout
        while not listener.infos:
            if node.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name}: the node produced no set; see {logs}/node.log")
            time.sleep(0.2)
        time.sleep(args.warmup)
        cpu_start = (thread_cpu_s(node.pid, node.pid), thread_cpu_s(node.pid), time.monotonic())
        with listener.lock:
            first = len(listener.infos)
        time.sleep(args.seconds)
        cpu_end = (thread_cpu_s(node.pid, node.pid), thread_cpu_s(node.pid), time.monotonic())
        with listener.lock:
            window = [info_dict(msg) for _, msg in listener.infos[first:]]
        topics = listener.topic_values()
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        listener.close()
    elapsed = cpu_end[2] - cpu_start[2]
    return {
        "name": name,
        "description": description,
        "sets_per_s": len(window) / elapsed,
        "sets": len(window),
        "inference_p50": float(np.median([i["inference_ms"] for i in window])) if window else float("nan"),
        "with_events": sum("event" in i["modalities_used"] for i in window),
        "executor_cpu": (cpu_end[0] - cpu_start[0]) / elapsed,
        "process_cpu": (cpu_end[1] - cpu_start[1]) / elapsed,
        "topics": topics,
        "logs": logs,
    }


def _executor_cell(result: dict[str, Any], modality: str) -> str:
    values = result["topics"].get(modality, {})
    p50, p99 = values.get("executor_us_p50", "nan"), values.get("executor_us_p99", "nan")
    return "–" if p50 == "nan" else f"{float(p50):.0f} / {float(p99):.0f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=12.0, help="after the first set, before measuring")
    parser.add_argument("--net-size", type=int, default=128, help="network input size (the demo checkpoint's: 128)")
    parser.add_argument("--event-rate", type=float, default=1e6, help="events per second")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=["events", "remapped", "30hz"])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the runs, interleaved")
    args = parser.parse_args(argv)
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = make_checkpoint(Path(folder), args.net_size)
        for _ in range(args.repeat):
            rounds.append({name: run(name, args, checkpoint) for name in args.runs})
    print(f"# {machine_description()}; node: hiera tiny {args.net_size} px, 4 modalities, CPU; drivers: RGB + depth "
          f"640x480 30 Hz, VLP-16 10 Hz, two EVT3 streams of {args.event_rate / 1e6:g} Mev/s (1 ms and 33 ms packets); "
          f"{args.seconds:.0f} s per run after "
          f"{args.warmup:.0f} s of warm-up")  # fmt: skip
    print("| run | sets/s | sets with events | inference p50 | executor µs per message p50 / p99: rgb, depth, lidar, "
          "event | executor thread CPU | node process CPU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for result in (r for results in rounds for r in results.values()):
        cells = ", ".join(_executor_cell(result, m) for m in ("rgb", "depth", "lidar", "event"))
        print(f"| {result['description']} | {result['sets_per_s']:.2f} | {result['with_events']}/{result['sets']} | "
              f"{result['inference_p50']:.0f} ms | {cells} | {result['executor_cpu']:.1%} | "
              f"{result['process_cpu']:.0%} |")  # fmt: skip

    def total(name: str, key: str) -> float:  # over the rounds: sets / seconds, CPU seconds / seconds
        return sum(r[name][key] for r in rounds) / len(rounds)

    for reference in ("remapped", "30hz"):
        if "events" in args.runs and reference in args.runs:
            ratios = [r["events"]["sets_per_s"] / max(r[reference]["sets_per_s"], 1e-9) for r in rounds]
            overall = total("events", "sets_per_s") / max(total(reference, "sets_per_s"), 1e-9)
            print(f"# set rate with the 1 kHz event stream / {RUNS[reference][0]}: {overall:.2f} over {len(rounds)} "
                  f"round(s) (per round {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.90)")  # fmt: skip
    if "events" in args.runs and "remapped" in args.runs:
        extra = total("events", "executor_cpu") - total("remapped", "executor_cpu")
        print(f"# executor thread CPU per event packet (difference of the runs / 1,000 packets/s): "
              f"{extra * 1e3:.1f} µs (target <= 50 µs)")  # fmt: skip
    print(f"# logs: {', '.join(str(r['logs']) for results in rounds for r in results.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
