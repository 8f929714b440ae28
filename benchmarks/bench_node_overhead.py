"""Per-set cost of everything the node does around the network forward, with real rclpy messages.

"Node overhead" (issue target: <= 5 ms at 1024² on CPU) is the node's own code from message in to ``~/labels``
published: decoding, depth checks, synchroniser, encoding + publishing the labels. The engine's host-side
pre/postprocessing (``frames_to_tensor``, upsampling + argmax + confidence) runs inside ``Segmenter`` and so
is model time; it is printed separately because on a CPU it is far larger than the node's share.

Stages (what ``SegmentNode`` runs for one 4-modality set): decode 4 ``sensor_msgs/Image`` (rgb8, 32FC1 depth,
32FC1 LiDAR, rgb8 events) + depth checks + synchroniser; preprocessing (``frames_to_tensor``); postprocessing
(resize/argmax/confidence of the network's ``[1, C, S, S]`` logits); ``~/color`` overlay; encoding and
publishing the 3 output Images + ``~/info``. The network itself is not run (its logits are random).

    python benchmarks/bench_node_overhead.py                    # 1024x1024 input, 1024 px network
    python benchmarks/bench_node_overhead.py --height 720 --width 1280 --net-size 512 --repeats 50
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import rclpy
import torch
from std_msgs.msg import Header

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_config, machine_description, peak_rss_mib

from memsam_core.engine import Segmenter
from memsam_core.modalities import frames_to_tensor
from memsam_ros.codec import array_to_image, decode_modality
from memsam_ros.info import info_message_type
from memsam_ros.node import SegmentNode
from memsam_ros.sync import ModalitySynchronizer

MODALITIES = ["rgb", "depth", "lidar", "event"]
NODE_TO_LABELS = ("decode+sync", "publish ~/labels")  # node code on the way to ~/labels
NODE_AFTER_LABELS = ("overlay + publish confidence/color/info",)
ENGINE_HOST = ("engine preprocess", "engine postprocess")  # inside Segmenter: part of model time
STAGES = NODE_TO_LABELS[:1] + ENGINE_HOST + NODE_TO_LABELS[1:] + NODE_AFTER_LABELS


def incoming_messages(height: int, width: int, seed: int = 0) -> dict[str, object]:
    """One set of realistic input Images (LiDAR ~5 % of pixels with a return)."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 80.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.02] = np.nan
    lidar = np.zeros((height, width), np.float32)
    hits = rng.random((height, width)) < 0.05
    lidar[hits] = rng.uniform(1.0, 100.0, int(hits.sum())).astype(np.float32)
    arrays = {
        "rgb": (rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb8"),
        "depth": (depth, "32FC1"),
        "lidar": (lidar, "32FC1"),
        "event": (rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "rgb8"),
    }
    return {m: array_to_image(a, enc, Header(frame_id="cam")) for m, (a, enc) in arrays.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--net-size", type=int, default=1024, help="network input size (logits resolution)")
    parser.add_argument("--num-classes", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config = benchmark_config(args.net_size, args.num_classes, device="cpu")
    segmenter = Segmenter(config)
    # the node's own methods, run without a node (no warning is expected from valid inputs)
    node_like = types.SimpleNamespace(
        segmenter=segmenter, _overlay_alpha=config.ros.overlay_alpha, warn=lambda *args, **kwargs: None
    )
    logits = torch.randn(1, args.num_classes, args.net_size, args.net_size)
    messages = incoming_messages(args.height, args.width)
    info_type = info_message_type()

    rclpy.init()
    node = rclpy.create_node("memsam_overhead_bench")
    publishers = [node.create_publisher(type(messages["rgb"]), f"~/out{i}", 5) for i in range(3)]
    info_pub = node.create_publisher(info_type, "~/info", 5) if info_type else None
    sync = ModalitySynchronizer(MODALITIES, required=("rgb",), slop_s=0.05, max_wait_s=0.2)
    stages: dict[str, list[float]] = {k: [] for k in STAGES}

    def clock(name: str, start: float) -> float:
        now = time.perf_counter()
        stages[name].append((now - start) * 1000.0)
        return now

    for index in range(args.repeats + 1):
        stamp = float(index)
        t = time.perf_counter()
        ready = []
        for modality, msg in messages.items():
            array = decode_modality(msg, modality)
            if modality in ("depth", "lidar"):
                SegmentNode._check_depth(node_like, modality, array)
            ready += sync.add(modality, stamp, array, now_s=stamp)
        assert len(ready) == 1, "synchroniser should emit exactly one set"
        frames = ready[0].items
        t = clock("decode+sync", t)
        frames_to_tensor(frames, MODALITIES, args.net_size, config.input, out=segmenter._input_buffer(1, 4)[0])
        t = clock("engine preprocess", t)
        labels, confidence = segmenter._postprocess(logits, frames["rgb"].shape[:2])
        t = clock("engine postprocess", t)
        header = messages["rgb"].header
        publishers[0].publish(array_to_image(labels, "mono8", header))
        t = clock("publish ~/labels", t)
        publishers[1].publish(array_to_image(confidence, "32FC1", header))
        color = SegmentNode._overlay(node_like, labels, frames["rgb"])
        publishers[2].publish(array_to_image(color, "rgb8", header))
        if info_pub is not None:
            info_pub.publish(
                info_type(header=header, class_names=segmenter.class_names, modalities_used=MODALITIES,
                          stamp_skew_s=[0.0] * 4, inference_ms=0.0, total_latency_ms=0.0, model_name="bench")
            )  # fmt: skip
        clock("overlay + publish confidence/color/info", t)
    node.destroy_node()
    rclpy.shutdown()

    print(f"# {machine_description()}; input {args.width}x{args.height}, network {args.net_size} px, "
          f"{args.num_classes} classes, {args.repeats} sets (first discarded)")  # fmt: skip
    print("| stage | median ms | min ms |")
    print("|---|---|---|")
    kept = {name: np.asarray(samples[1:]) for name, samples in stages.items()}
    for name, samples in kept.items():
        print(f"| {name} | {np.median(samples):.1f} | {samples.min():.1f} |")

    def total(names: tuple[str, ...]) -> np.ndarray:
        return np.sum([kept[n] for n in names], axis=0)

    to_labels = total(NODE_TO_LABELS)
    node_all = total(NODE_TO_LABELS + NODE_AFTER_LABELS)
    engine = total(ENGINE_HOST)
    print(f"| **node overhead, message in → ~/labels** | {np.median(to_labels):.1f} | {to_labels.min():.1f} |")
    print(f"| node overhead, all outputs | {np.median(node_all):.1f} | {node_all.min():.1f} |")
    print(f"| engine pre+postprocess (model time; on the GPU with device cuda) | {np.median(engine):.1f} | "
          f"{engine.min():.1f} |")  # fmt: skip
    print(f"# node overhead to ~/labels: {np.median(to_labels):.1f} ms median (target <= 5 ms)")
    print(f"# peak RSS {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
