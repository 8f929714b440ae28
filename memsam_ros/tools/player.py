"""``memsam-play-bag``: a pure-Python ``ros2 bag play`` for pip-only ROS installs (rosbags + rclpy).

rosbag2_py and the ``ros2`` CLI are not on PyPI, but rclpy publishes raw CDR bytes as they are
(``publisher.publish(raw)``) and rosbags' CDR is wire-compatible, so messages go out without any
decode/re-encode. Messages are paced by their bag (log) time divided by ``rate``; ``--clock``
publishes ``/clock`` with the bag time for nodes run with ``use_sim_time:=true``.

``--gate-topic`` (lock-step) is for evaluation: before each new reference (RGB) message the player
waits until a message stamped at least the previous reference stamp arrived on that topic (the
node's ``~/labels``), so a node slower than the sensors processes every set instead of keeping only
the newest. The pacing clock is shifted by the time spent waiting, like a pause.

``--hold-reference S`` (used with lock-step) publishes each reference message only after the other
messages logged up to S seconds after it, so a set's depth/LiDAR/event frames are already queued at
the node when its RGB frame arrives. Lock-step pauses every stream while the node works, and messages
on different topics may arrive in any order; holding the reference back keeps a set from going out
before its frames on a CPU too starved to receive them within ``sync.max_wait_s``. Evaluation holds it
by ``sync.max_wait_s``: everything the synchroniser may wait for (the frames within ``slop_s`` and, under
``nearest``, the first message after the reference's stamp on each topic) is then sent first.

On a ROS install the equivalent is ``ros2 bag play BAG --rate R [--clock]`` (no lock-step).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memsam_ros.fastdds import use_large_data_profile
from memsam_ros.heap import keep_large_buffers
from memsam_ros.inputs.cdr import read_header
from memsam_ros.inputs.converter import TF_STATIC_TOPIC, message_class
from memsam_ros.inputs.stamps import stamp_ns
from memsam_ros.tools.bag_tools import SENSOR_TOPICS, BagError, open_reader
from memsam_ros.tools.progress import progress as show_progress

DEFAULT_GATE_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 5.0  # how long an exiting player waits for reliable subscribers to acknowledge


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)
    gate_timeouts: int = 0
    wall_s: float = 0.0
    aborted: bool = False


def _message_class(msgtype: str) -> type:
    try:
        return message_class(msgtype)
    except ImportError as err:
        raise BagError(f"message type {msgtype} is not importable in this Python ({err})") from None


class StampGate:
    """Remembers the newest header stamp seen on one topic; :meth:`wait_for` blocks until one is new enough."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.newest_ns: int | None = None

    def on_message(self, msg: Any) -> None:
        stamp = stamp_ns(msg.header)
        with self._cond:
            if self.newest_ns is None or stamp > self.newest_ns:
                self.newest_ns = stamp
            self._cond.notify_all()

    def wait_for(self, stamp_ns: int, timeout_s: float, abort: Callable[[], bool] = lambda: False) -> bool:
        """True once a stamp >= ``stamp_ns`` was seen; False on time-out or when ``abort()`` turns true."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not (self.newest_ns is not None and self.newest_ns >= stamp_ns):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or abort():
                    return False
                self._cond.wait(min(remaining, 0.25))
            return True


class BagPlayer:
    """Publishes a bag's messages on ``node`` (which must be spun by an executor for the gate to work)."""

    def __init__(
        self,
        node: Any,
        bag: str | Path,
        rate: float = 1.0,
        clock: bool = False,
        topics: Sequence[str] | None = None,
        reliable: bool = True,
        qos_depth: int = 100,
        gate_topic: str | None = None,
        reference_topic: str = SENSOR_TOPICS["rgb"],
        gate_timeout_s: float = DEFAULT_GATE_TIMEOUT_S,
        hold_reference_s: float = 0.0,
    ) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.node = node
        self.bag = Path(bag)
        self.rate = rate
        self.reference_topic = reference_topic
        self.gate_timeout_s = gate_timeout_s
        self.hold_reference_s = hold_reference_s
        self._reader = open_reader(self.bag)
        available = {c.topic: c.msgtype for c in self._reader.connections}
        unknown = [t for t in topics or () if t not in available]
        if unknown:
            self._reader.close()
            raise BagError(f"{self.bag}: no topic {', '.join(unknown)} (the bag has {', '.join(sorted(available))})")
        self.topics = {t: available[t] for t in (topics or available)}
        qos = QoSProfile(
            depth=qos_depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        )
        # /tf_static is latched, as tf2's static broadcaster offers it: subscribers that come later still get it
        latched = QoSProfile(
            depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.publishers = {
            t: node.create_publisher(_message_class(m), t, latched if t == TF_STATIC_TOPIC else qos)
            for t, m in self.topics.items()
        }
        self._clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.gate: StampGate | None = None
        if gate_topic:
            from sensor_msgs.msg import Image

            self.gate = StampGate()
            gate_qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
            self._gate_sub = node.create_subscription(Image, gate_topic, self.gate.on_message, gate_qos)

    def gate_matched(self) -> bool:
        """A publisher of the gate topic is matched (its first message will not be missed)."""
        return self.gate is not None and self._gate_sub.get_publisher_count() > 0

    def close(self) -> None:
        self._reader.close()

    def _publishers_of(self, topics: Iterable[str]) -> list[Any]:
        """The publishers of ``topics``, and of ``/clock`` when the player publishes it."""
        return [self.publishers[t] for t in topics] + ([self._clock_pub] if self._clock_pub else [])

    def wait_for_delivery(self, timeout_s: float = DELIVERY_TIMEOUT_S) -> bool:
        """Block until every reliable subscriber has acknowledged every message published so far.

        A player process that exits right after its last message can take that message down with it (the DDS
        writer is destroyed before the reader acknowledged it); call this before exiting. Best-effort
        publishers return at once. False when some subscriber had not acknowledged by ``timeout_s``.
        """
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout_s
        for publisher in self._publishers_of(self.publishers):
            remaining = max(deadline - time.monotonic(), 0.0)
            if not publisher.wait_for_all_acked(Duration(nanoseconds=int(remaining * 1e9))):
                return False
        return True

    def wait_for_subscribers(
        self, topics: Sequence[str], timeout_s: float, alive: Callable[[], bool] = lambda: True
    ) -> bool:
        """Wait until every topic in ``topics`` (and ``/clock`` if published) has a matched subscriber."""
        deadline = time.monotonic() + timeout_s
        publishers = self._publishers_of(topics)
        while time.monotonic() < deadline and alive():
            if all(p.get_subscription_count() > 0 for p in publishers):
                return True
            time.sleep(0.05)
        return False

    def play(self, progress: bool = False, abort: Callable[[], bool] = lambda: False) -> PlayStats:
        """Publish every message once, in bag order; stops early (``aborted``) when ``abort()`` turns true.

        With ``hold_reference_s`` > 0 a reference message is held back until the bag time passes it by
        that much, so the other modalities of the same instant go out first (see the module doc).
        """
        stats = PlayStats(published=dict.fromkeys(self.topics, 0))
        connections = [c for c in self._reader.connections if c.topic in self.topics]
        total = sum(c.msgcount for c in connections)
        hold_ns = round(self.hold_reference_s * 1e9)
        self._start_wall = time.monotonic()
        self._first_ns: int | None = None
        self._shift_s = 0.0  # time spent waiting at the gate, added to the schedule
        self._last_reference_ns: int | None = None
        held: tuple[str, int, bytes] | None = None
        messages = self._reader.messages(connections=connections)
        for connection, log_ns, raw in show_progress(
            messages, total=total, desc="playing", unit="msg", enabled=progress
        ):
            if abort():
                stats.aborted = True
                break
            if held is not None and (log_ns > held[1] + hold_ns or connection.topic == self.reference_topic):
                self._publish(*held, stats, abort)
                held = None
            if connection.topic == self.reference_topic and hold_ns > 0:
                held = (connection.topic, log_ns, raw)
            else:
                self._publish(connection.topic, log_ns, raw, stats, abort)
        if held is not None and not stats.aborted:
            self._publish(*held, stats, abort)
        if self.gate is not None and self._last_reference_ns is not None and not stats.aborted:
            if not self.gate.wait_for(self._last_reference_ns, self.gate_timeout_s, abort):
                stats.gate_timeouts += 1
        stats.wall_s = time.monotonic() - self._start_wall
        return stats

    def _publish(self, topic: str, log_ns: int, raw: bytes, stats: PlayStats, abort: Callable[[], bool]) -> None:
        """Gate (before a reference), pace by bag time / rate, publish /clock and the raw message."""
        is_reference = topic == self.reference_topic
        if is_reference and self.gate is not None and self._last_reference_ns is not None:
            waited = time.monotonic()
            if not self.gate.wait_for(self._last_reference_ns, self.gate_timeout_s, abort):
                stats.gate_timeouts += 1
                self.node.get_logger().warning(
                    f"no output for stamp {self._last_reference_ns} within {self.gate_timeout_s:.0f} s; continuing"
                )
            self._shift_s += time.monotonic() - waited
        self._first_ns = log_ns if self._first_ns is None else self._first_ns
        delay = self._start_wall + self._shift_s + (log_ns - self._first_ns) * 1e-9 / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if self._clock_pub is not None:
            self._publish_clock(log_ns)
        self.publishers[topic].publish(raw)
        stats.published[topic] += 1
        if is_reference:
            self._last_reference_ns = read_header(raw)[0]

    def _publish_clock(self, log_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self._clock_pub.publish(Clock(clock=Time(sec=log_ns // 1_000_000_000, nanosec=log_ns % 1_000_000_000)))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memsam-play-bag",
        description="Play a rosbag2 bag over DDS with rclpy (no ROS install needed); like `ros2 bag play`.",
    )
    p.add_argument("bag", help="bag directory (or .mcap/.db3 file)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    p.add_argument("--topics", nargs="*", default=None, help="only these topics (default: all)")
    p.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    p.add_argument("--best-effort", action="store_true", help="BEST_EFFORT publishers (default RELIABLE)")
    p.add_argument(
        "--wait-subscribers", type=float, default=0.0, help="wait up to S s for a subscriber on every topic first"
    )
    p.add_argument(
        "--gate-topic", default=None, help="lock-step: wait for a message on this topic (e.g. /memsam_segment/labels)"
    )
    p.add_argument("--gate-timeout", type=float, default=DEFAULT_GATE_TIMEOUT_S)
    p.add_argument(
        "--hold-reference",
        type=float,
        default=0.0,
        metavar="S",
        help="publish each RGB message after the others logged up to S s after it",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``memsam-play-bag BAG [--rate R] [--clock] [--loop]``; returns 2 on a bad bag/arguments."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    args = parser().parse_args(argv)
    use_large_data_profile()  # the images it publishes are large (memsam_ros.fastdds)
    keep_large_buffers()  # each bag message is a fresh multi-MiB buffer (memsam_ros.heap)
    rclpy.init()
    node = rclpy.create_node("memsam_bag_player")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    player: BagPlayer | None = None
    try:
        player = BagPlayer(
            node,
            args.bag,
            rate=args.rate,
            clock=args.clock,
            topics=args.topics,
            reliable=not args.best_effort,
            gate_topic=args.gate_topic,
            gate_timeout_s=args.gate_timeout,
            hold_reference_s=args.hold_reference,
        )
        if args.wait_subscribers > 0 and not player.wait_for_subscribers(list(player.topics), args.wait_subscribers):
            print(f"memsam-play-bag: not every topic has a subscriber after {args.wait_subscribers} s; playing anyway")
        while True:
            stats = player.play(progress=True)
            print(f"published {sum(stats.published.values())} messages in {stats.wall_s:.1f} s", flush=True)
            if not args.loop:
                break
        if not player.wait_for_delivery():
            print(f"memsam-play-bag: some subscriber had not received everything after {DELIVERY_TIMEOUT_S:.0f} s")
    except (BagError, ValueError) as err:
        print(f"memsam-play-bag: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if player is not None:
            player.close()
        executor.shutdown()
        spinner.join(timeout=5.0)  # a still-spinning thread at exit aborts the process
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
