"""A separate process that listens to topics like ``ros2 topic echo`` would: it waits for each topic to appear in
the ROS graph, subscribes with the type the graph reports (best effort, which matches any publisher), counts the
messages and prints ``TOPIC COUNT TYPE`` per topic. ``--until-all`` stops once every topic has had a message;
for a ``memsam_msgs/SegmentationInfo`` topic every distinct list of modalities used follows the type (``;``-joined,
in the order first seen), so one list means every set used the same sensors.

    python tests/topic_listener.py --seconds 60 --until-all /memsam_segment/labels /diagnostics
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy

from memsam_ros.inputs.converter import message_class


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--until-all", action="store_true")
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("memsam_test_listener")
    counts = dict.fromkeys(args.topics, 0)
    used: dict[str, list[str]] = {}
    types: dict[str, str] = {}
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        graph = dict(node.get_topic_names_and_types())
        for topic in args.topics:
            if topic not in types and graph.get(topic):
                types[topic] = graph[topic][0]

                def count(msg: object, topic: str = topic) -> None:
                    counts[topic] += 1
                    if hasattr(msg, "modalities_used"):
                        seen = used.setdefault(topic, [])
                        if (modalities := ",".join(msg.modalities_used)) not in seen:
                            seen.append(modalities)

                info = types[topic] == "memsam_msgs/msg/SegmentationInfo"  # deserialized: its content is reported
                node.create_subscription(message_class(types[topic]), topic, count, qos, raw=not info)
        rclpy.spin_once(node, timeout_sec=0.05)
        if args.until_all and all(counts.values()):
            break
    for topic in args.topics:
        print(f"{topic} {counts[topic]} {types.get(topic, '-')} {';'.join(used.get(topic, []))}".rstrip(), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
