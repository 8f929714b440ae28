"""The transport floor for bench_node_overhead: a bare rclpy process in the node's place.

It subscribes to the node's four image topics with the node's shipped input QoS (raw, like the node), and
answers each RGB image at once with a ready-made 1024² ``mono8`` labels message on the node's ``~/labels``
topic (same stamp, the node's publisher QoS). No synchroniser, no decoding, no model, no second thread: what it
costs is what rclpy and Fast DDS cost to move a 3 MiB image in and a 1 MiB image out between Python processes.

    python benchmarks/transport_echo.py  (started by the benchmark)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from sensor_msgs.msg import Image

from memsam_core.config import load_config
from memsam_ros.fastdds import use_large_data_profile
from memsam_ros.heap import keep_large_buffers
from memsam_ros.inputs.cdr import read_header
from memsam_ros.inputs.codec import array_to_cdr
from memsam_ros.qos import input_qos, output_qos
from memsam_ros.topics import modality_topics

NODE_NAME = "memsam_segment"  # the node's name: same topics, so the benchmark's subscriber is unchanged


def main() -> int:
    use_large_data_profile()
    keep_large_buffers()  # as the node does
    rclpy.init(args=sys.argv)
    # the shipped node parameters: input topics, QoS depth and reliability
    config = load_config(Path(__file__).resolve().parents[1] / "config" / "segment.yaml")
    node = rclpy.create_node(NODE_NAME)
    labels = node.create_publisher(Image, "~/labels", output_qos(config.ros.qos_depth))
    answer = np.zeros((1024, 1024), np.uint8)

    def on_rgb(raw: bytes) -> None:
        stamp_ns, frame_id = read_header(raw)
        labels.publish(array_to_cdr(answer, "mono8", stamp_ns, frame_id))

    for modality, topic in modality_topics(config, node.resolve_topic_name).items():
        callback = on_rgb if modality == "rgb" else (lambda raw: None)
        node.create_subscription(Image, topic, callback, input_qos(config.ros), raw=True)
    executor = SingleThreadedExecutor()  # as the node's
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
