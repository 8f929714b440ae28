"""Multimodal rosbag2 bags from the synthetic generator, and helpers to read them back without ROS.

The bag is what a real rig would record: four ``sensor_msgs/Image`` streams at ~10 Hz with their own
per-sensor stamp offsets and a few ms of jitter (so the node's approximate-time synchroniser has real
work to do), receive (log) times a few ms after the stamps, optional sensor dropouts, and two
ground-truth topics whose header stamp equals the RGB stamp so evaluation can match by stamp:

==========================  ===================================  =============================================
topic                       type / encoding                      content
==========================  ===================================  =============================================
``/rgb/image``              Image ``rgb8``                       camera
``/depth/image``            Image ``32FC1`` (or ``16UC1``)       metres, NaN = invalid (REP 118; 16UC1: mm, 0)
``/lidar/depth_image``      Image ``32FC1`` (or ``16UC1``)       projected LiDAR metres, sparse, 0 = no return
``/event/image``            Image ``rgb8`` (``mono8`` if 2-D)    event frame
``/ground_truth/labels``    Image ``mono8``                      class ids, 255 = unlabeled; stamp = RGB stamp
``/ground_truth/scene``     diagnostic_msgs/DiagnosticArray      KeyValues ``condition``, ``failures``,
                                                                 ``dropped``, ``frame``, ``seed``; stamp = RGB
==========================  ===================================  =============================================

Written with ``rosbags`` (MCAP storage, rosbag2 metadata version 9), readable by ``ros2 bag play``.
:func:`write_bag` records given instants (e.g. DELIVER validation scenes decoded to metres) the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsam_core.config import MODALITIES, MemSamConfig
from memsam_ros.inputs.converter import ACCEPTED, MESSAGE_TYPES, TF_STATIC_TOPIC
from memsam_ros.inputs.stamps import split_ns, stamp_ns
from memsam_ros.tools import rig
from memsam_ros.topics import TRANSPORTS, camera_info_topic, modality_topics

LOG = logging.getLogger(__name__)
SENSOR_TOPICS: dict[str, str] = modality_topics(MemSamConfig(), modalities=MODALITIES)
"""Absolute topic per modality: the node's defaults (``ros.*_topic``) resolved without a namespace."""
GT_LABELS_TOPIC = "/ground_truth/labels"
GT_SCENE_TOPIC = "/ground_truth/scene"
SCENE_STATUS_NAME = "memsam/ground_truth_scene"
IMAGE_TYPE = "sensor_msgs/msg/Image"
SCENE_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
FRAME_IDS: dict[str, str] = dict.fromkeys(MODALITIES, "camera_rgb")
"""Every image is registered to the RGB camera (depth aligned, LiDAR projected, events aligned), so all carry
its frame, as the node's ``ros.extrinsics: registered`` expects."""
SENSOR_OFFSETS_S: dict[str, float] = {"rgb": 0.0, "depth": 0.003, "lidar": 0.008, "event": -0.004}
"""Per-sensor trigger offset from the RGB exposure; well inside the node's default 50 ms slop."""
STAMP_JITTER_S = 0.002
RECEIVE_DELAY_S = (0.002, 0.012)  # log time = stamp + transport/driver delay, uniform in this range
START_TIME_S = 1_700_000_000  # realistic epoch stamps (and exercises float precision of stamp handling)


class BagError(RuntimeError):
    """A bag cannot be opened or lacks what is needed; the message names the bag and the problem."""


@dataclass
class BagSpec:
    """What :func:`write_synthetic_bag` records."""

    frames: int = 48
    height: int = 96
    width: int = 128
    seed: int = 0
    rate_hz: float = 10.0
    conditions: tuple[str, ...] = ("sun", "cloud", "rain", "fog", "night")
    drop: dict[str, float] = field(default_factory=dict)  # modality -> probability a frame's message is missing
    rig: bool = False  # record as a real rig publishes (memsam_ros.tools.rig): compressed, PointCloud2, events
    rates: dict[str, float] = field(default_factory=dict)  # rig: depth/LiDAR rate in Hz (default: rate_hz)

    def __post_init__(self) -> None:
        if self.frames < 1 or self.height < 8 or self.width < 8 or self.rate_hz <= 0:
            raise ValueError("need frames >= 1, height/width >= 8 and rate_hz > 0")
        for modality, probability in self.drop.items():
            if modality not in MODALITIES or modality == "rgb":
                raise ValueError(
                    f"--drop: can drop depth, lidar or event (the reference rgb is never dropped), got {modality!r}"
                )
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"--drop {modality}: probability must be in [0, 1], got {probability}")
        if not self.conditions:
            raise ValueError("need at least one condition")
        for modality, rate in self.rates.items():
            if modality not in ("depth", "lidar") or rate <= 0:
                raise ValueError(f"--rates: depth or lidar with a rate > 0 Hz, got {modality}:{rate}")


@dataclass
class BagSummary:
    path: Path
    frames: int
    message_counts: dict[str, int]
    conditions: list[str]


VENDORED_MESSAGES = {
    "event_camera_msgs": ("EventPacket",),
    "event_array_msgs": ("EventArray",),  # EventPacket's name before the rename, in older recordings
    "dvs_msgs": ("Event", "EventArray"),
}
"""Interface types rosbags does not know, registered from their definitions (msg/vendor/, or an installed share/)."""


def _definition(package: str, name: str) -> str:
    candidates = [Path(__file__).resolve().parents[2] / "msg" / "vendor" / package / "msg" / f"{name}.msg"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(package)) / "msg" / f"{name}.msg")
    except Exception:  # not installed with colcon, or no AMENT_PREFIX_PATH: the source tree's copy
        pass
    for path in candidates:
        if path.is_file():
            return path.read_text()
    raise BagError(f"no definition of {package}/msg/{name} found (looked in {', '.join(map(str, candidates))})")


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for package, names in VENDORED_MESSAGES.items():
        for name in names:
            store.register(get_types_from_msg(_definition(package, name), f"{package}/msg/{name}"))
    return store


def condition_schedule(frames: int, conditions: Sequence[str]) -> list[str]:
    """Contiguous runs of each condition (like driving into fog), covering every condition when possible."""
    runs = len(conditions)
    return [conditions[min(i * runs // frames, runs - 1)] for i in range(frames)]


def _frame_sample(seed: int, spec: BagSpec, condition: str) -> Any:
    from memsam_core.data.synthetic import SceneConfig, generate_scene

    return generate_scene(seed, SceneConfig(height=spec.height, width=spec.width, condition=condition))


def image_encoding(modality: str, array: np.ndarray, encodings: dict[str, str] | None = None) -> str:
    """Wire encoding for a raw modality array: depth/LiDAR metres as ``32FC1`` (or ``16UC1`` millimetres via
    ``encodings``, REP 118), colour or mono uint8 otherwise."""
    if modality in ("depth", "lidar"):
        return (encodings or {}).get(modality, "32FC1")
    return "rgb8" if array.ndim == 3 else "mono8"


def metres_to_millimetres(metres: np.ndarray) -> np.ndarray:
    """REP 118 ``16UC1``: millimetres, 0 = invalid (NaN, ±Inf, <= 0); beyond 65.535 m saturates at 65535."""
    valid = np.isfinite(metres) & (metres > 0)
    return np.where(valid, np.clip(np.round(np.where(valid, metres, 0) * 1000.0), 1, 65535), 0).astype(np.uint16)


def _stamp(ns: int, ts: Any) -> Any:
    sec, nanosec = split_ns(ns)
    return ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def _image_msg(ts: Any, array: np.ndarray, encoding: str, stamp: int, frame_id: str) -> Any:
    if encoding == "16UC1" and np.issubdtype(array.dtype, np.floating):
        array = metres_to_millimetres(array)
    dtype = {"32FC1": np.dtype(np.float32), "16UC1": np.dtype(np.uint16)}.get(encoding, np.dtype(np.uint8))
    packed = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
    header = ts.types["std_msgs/msg/Header"](stamp=_stamp(stamp, ts), frame_id=frame_id)
    return ts.types[IMAGE_TYPE](
        header=header,
        height=packed.shape[0],
        width=packed.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=packed.strides[0],
        data=packed.reshape(-1).view(np.uint8),
    )


def _scene_msg(ts: Any, stamp: int, values: dict[str, str]) -> Any:
    status = ts.types["diagnostic_msgs/msg/DiagnosticStatus"](
        level=0,
        name=SCENE_STATUS_NAME,
        message=values.get("condition", ""),
        hardware_id="synthetic",
        values=[ts.types["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in values.items()],
    )
    header = ts.types["std_msgs/msg/Header"](stamp=_stamp(stamp, ts), frame_id=FRAME_IDS["rgb"])
    return ts.types[SCENE_TYPE](header=header, status=[status])


@dataclass
class BagFrame:
    """One instant to record: raw modality arrays (metres for depth/LiDAR), ground truth and scene KeyValues."""

    frames: dict[str, np.ndarray]
    labels: np.ndarray
    scene: dict[str, str]


def _frame_messages(
    ts: Any,
    rng: np.random.Generator,
    index: int,
    item: BagFrame,
    nominal_ns: int,
    rgb_stamp: int,
    dropped: Sequence[str],
    encodings: dict[str, str] | None,
) -> list[tuple[int, str, Any]]:
    """``(log time ns, topic, message)`` of one instant: sensors with their offsets and jitter, then ground truth."""
    pending = []
    for modality in MODALITIES:
        array = item.frames.get(modality)
        if array is None or modality in dropped:
            continue
        stamp = (
            rgb_stamp if modality == "rgb" else nominal_ns + round(SENSOR_OFFSETS_S[modality] * 1e9) + _jitter_ns(rng)
        )
        msg = _image_msg(ts, array, image_encoding(modality, array, encodings), stamp, FRAME_IDS[modality])
        pending.append((stamp + _delay_ns(rng), SENSOR_TOPICS[modality], msg))
    gt_log = rgb_stamp + round(RECEIVE_DELAY_S[1] * 1e9) + 1  # after the RGB image, as annotation would be
    pending.append((gt_log, GT_LABELS_TOPIC, _image_msg(ts, item.labels, "mono8", rgb_stamp, FRAME_IDS["rgb"])))
    scene = {**item.scene, "dropped": ",".join(dropped), "frame": str(index)}
    pending.append((gt_log + 1, GT_SCENE_TOPIC, _scene_msg(ts, rgb_stamp, scene)))
    return pending


def _write_pending(
    path: Path, ts: Any, pending: list[tuple[int, str, Any]], progress: bool, types: dict[str, str] | None = None
) -> dict[str, int]:
    """Write ``(log ns, topic, message)`` sorted by log time; ``types``: topic → message type (default: the
    Image bag's topics)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from memsam_ros.tools.progress import progress as show_progress

    if types is None:
        types = dict.fromkeys([*SENSOR_TOPICS.values(), GT_LABELS_TOPIC], IMAGE_TYPE) | {GT_SCENE_TOPIC: SCENE_TYPE}
    pending.sort(key=lambda item: item[0])
    counts: dict[str, int] = {}
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections: dict[str, Any] = {}
        for topic, msgtype in types.items():
            connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
        for log_ns, topic, msg in show_progress(
            pending, total=len(pending), desc="writing bag", unit="msg", enabled=progress
        ):
            writer.write(connections[topic], log_ns, ts.serialize_cdr(msg, connections[topic].msgtype))
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def write_synthetic_bag(path: str | Path, spec: BagSpec | None = None, progress: bool = False) -> BagSummary:
    """Record ``spec.frames`` synthetic frames into a new MCAP rosbag2 directory at ``path``."""
    spec = spec or BagSpec()
    path = Path(path)
    if path.exists():
        raise BagError(f"{path}: already exists (rosbag2 writers never overwrite; delete it first)")
    if spec.rig:
        return _write_rig_bag(path, spec, progress)
    ts = _typestore()
    rng = np.random.default_rng(spec.seed)
    period_ns = round(1e9 / spec.rate_hz)
    start_ns = START_TIME_S * 1_000_000_000
    schedule = condition_schedule(spec.frames, spec.conditions)
    pending: list[tuple[int, str, Any]] = []  # (log time ns, topic, message)
    for index in range(spec.frames):
        sample = _frame_sample(spec.seed * 100_003 + index, spec, schedule[index])
        nominal_ns = start_ns + index * period_ns
        rgb_stamp = _rgb_stamp(spec.seed, index, nominal_ns)
        dropped = [m for m in ("depth", "lidar", "event") if rng.random() < spec.drop.get(m, 0.0)]
        scene = {
            "condition": str(sample.condition),
            "failures": ",".join(_as_strings(getattr(sample, "failures", ()))),
            "seed": str(getattr(sample, "seed", spec.seed)),
        }
        item = BagFrame(sample.frames, sample.labels, scene)
        pending += _frame_messages(ts, rng, index, item, nominal_ns, rgb_stamp, dropped, None)
    counts = _write_pending(path, ts, pending, progress)
    return BagSummary(path, spec.frames, counts, sorted(set(schedule), key=schedule.index))


def _write_rig_bag(path: Path, spec: BagSpec, progress: bool) -> BagSummary:
    """The same scenes as a rig records them (memsam_ros.tools.rig): compressed RGB with its camera_info,
    compressedDepth, a PointCloud2 in the LiDAR frame (depth and LiDAR at ``spec.rates``), an event stream over
    the ``event_dt_s`` before each RGB frame, the static LiDAR → camera transform, and the same ground truth."""
    ts = _typestore()
    make = rig.rosbags_factory(ts)
    rng = np.random.default_rng(spec.seed)
    period_ns = round(1e9 / spec.rate_hz)
    start_ns = START_TIME_S * 1_000_000_000
    schedule = condition_schedule(spec.frames, spec.conditions)
    samples, rgb_stamps, dropped = [], [], []
    pending: list[tuple[int, str, Any]] = [
        (start_ns - 1_000_000, TF_STATIC_TOPIC, rig.static_transform(make, start_ns))
    ]
    for index in range(spec.frames):
        sample = _frame_sample(spec.seed * 100_003 + index, spec, schedule[index])
        rgb_stamp = _rgb_stamp(spec.seed, index, start_ns + index * period_ns)
        drops = [m for m in ("depth", "lidar", "event") if rng.random() < spec.drop.get(m, 0.0)]
        samples.append(sample)
        rgb_stamps.append(rgb_stamp)
        dropped.append(drops)
        height, width = sample.frames["rgb"].shape[:2]
        log = rgb_stamp + _delay_ns(rng)
        pending.append((log, rig.RIG_TOPICS["rgb"], rig.compressed_rgb(make, sample.frames["rgb"], rgb_stamp)))
        info = rig.camera_info(make, sample.intrinsics, height, width, rgb_stamp)
        pending.append((log, rig.CAMERA_INFO_TOPIC, info))
        if "event" not in drops:
            window_ns = min(round(sample.event_window_s * 1e9), period_ns)
            seed = spec.seed * 100_003 + index
            for end, packet in rig.event_packets(make, sample.frames["event"], rgb_stamp, window_ns, seed):
                pending.append((end + _delay_ns(rng), rig.RIG_TOPICS["event"], packet))
        gt_log = rgb_stamp + round(RECEIVE_DELAY_S[1] * 1e9) + 1
        pending.append((gt_log, GT_LABELS_TOPIC, _image_msg(ts, sample.labels, "mono8", rgb_stamp, rig.CAMERA_FRAME)))
        scene = {
            "condition": str(sample.condition),
            "failures": ",".join(_as_strings(getattr(sample, "failures", ()))),
            "seed": str(getattr(sample, "seed", spec.seed)),
            "dropped": ",".join(drops),
            "frame": str(index),
        }
        pending.append((gt_log + 1, GT_SCENE_TOPIC, _scene_msg(ts, rgb_stamp, scene)))
    duration_ns = spec.frames * period_ns
    for modality in ("depth", "lidar"):
        sensor_period = round(1e9 / spec.rates.get(modality, spec.rate_hz))
        for nominal in range(start_ns, start_ns + duration_ns, sensor_period):
            index = min(round((nominal - start_ns) / period_ns), spec.frames - 1)  # the scene at that time
            if modality in dropped[index]:
                continue
            stamp = nominal + round(SENSOR_OFFSETS_S[modality] * 1e9) + _jitter_ns(rng)
            sample = samples[index]
            if modality == "depth":
                msg = rig.compressed_depth(make, sample.frames["depth"], stamp)
            else:
                msg = rig.point_cloud(make, sample.frames["lidar"], sample.intrinsics, stamp)
            pending.append((stamp + _delay_ns(rng), rig.RIG_TOPICS[modality], msg))
    types = {rig.RIG_TOPICS[m]: MESSAGE_TYPES[kind] for m, kind in rig.RIG_TYPES.items()}
    types |= {
        rig.CAMERA_INFO_TOPIC: "sensor_msgs/msg/CameraInfo",
        TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage",
        GT_LABELS_TOPIC: IMAGE_TYPE,
        GT_SCENE_TOPIC: SCENE_TYPE,
    }
    counts = _write_pending(path, ts, pending, progress, types)
    return BagSummary(path, spec.frames, counts, sorted(set(schedule), key=schedule.index))


def write_bag(
    path: str | Path,
    items: Iterable[BagFrame],
    rate_hz: float = 10.0,
    seed: int = 0,
    encodings: dict[str, str] | None = None,
    progress: bool = False,
) -> BagSummary:
    """Record given instants (e.g. a dataset's validation scenes) like :func:`write_synthetic_bag` records its own.

    ``encodings``: wire encoding of depth/LiDAR, ``{"lidar": "16UC1"}`` for millimetres (default ``32FC1``).
    """
    path = Path(path)
    if path.exists():
        raise BagError(f"{path}: already exists (rosbag2 writers never overwrite; delete it first)")
    ts, rng = _typestore(), np.random.default_rng(seed)
    start_ns, period_ns = START_TIME_S * 1_000_000_000, round(1e9 / rate_hz)
    pending: list[tuple[int, str, Any]] = []
    conditions: list[str] = []
    frames = 0
    for index, item in enumerate(items):
        nominal_ns = start_ns + index * period_ns
        pending += _frame_messages(ts, rng, index, item, nominal_ns, nominal_ns + _jitter_ns(rng), (), encodings)
        conditions.append(item.scene.get("condition", ""))
        frames += 1
    counts = _write_pending(path, ts, pending, progress)
    return BagSummary(path, frames, counts, list(dict.fromkeys(conditions)))


def _rgb_stamp(seed: int, index: int, nominal_ns: int) -> int:
    """A frame's RGB stamp, from its own random stream: the Image and the rig recording of a scene share it, so
    their evaluations can be compared stamp by stamp."""
    return nominal_ns + _jitter_ns(np.random.default_rng((seed, index)))


def _jitter_ns(rng: np.random.Generator) -> int:
    return round(rng.uniform(-STAMP_JITTER_S, STAMP_JITTER_S) * 1e9)


def _delay_ns(rng: np.random.Generator) -> int:
    return round(rng.uniform(*RECEIVE_DELAY_S) * 1e9)


def _as_strings(values: Any) -> list[str]:
    if isinstance(values, str):
        return [values] if values else []
    if isinstance(values, dict):
        return [str(k) for k, v in values.items() if v]
    return [str(v) for v in values or ()]


# ---------------------------------------------------------------------- reading
def open_reader(path: str | Path) -> Any:
    """An opened ``rosbags`` Reader (close it, or use as a context manager), with a clear error if unreadable."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag (create one with `memsam-make-bag {path}`)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as err:  # rosbags raises several types for unreadable/corrupt bags
        raise BagError(f"{path}: cannot open as a rosbag2 bag: {err}") from None
    return reader


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """``{topic: (msgtype, message_count)}`` of a bag."""
    reader = open_reader(path)
    try:
        return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}
    finally:
        reader.close()


def detect_inputs(types: dict[str, str], config: MemSamConfig) -> MemSamConfig:
    """``config`` with each modality's topic and message type (``ros.<m>_topic``/``_type``) and the camera_info
    topic taken from a bag's ``{topic: type}``, so replaying a rig's bag needs no flags: the configured topic
    (of any type the modality accepts), its image_transport sub-topics (``<topic>/compressed``,
    ``<topic>/compressedDepth``), else for LiDAR the bag's PointCloud2 topic and for events its event-stream
    topic. A modality found nowhere keeps its configured topic (and is then absent)."""
    kind_of = {msgtype: kind for kind, msgtype in MESSAGE_TYPES.items()}
    configured = modality_topics(config)
    updates: dict[str, str] = {}
    for modality, topic in configured.items():
        candidates = [topic, *(f"{topic}/{transport}" for transport in TRANSPORTS)]
        event_streams = ("event_packet", "event_array_msgs", "event_array")
        streams = {"lidar": ("pointcloud",), "event": event_streams}.get(modality, ())
        candidates += sorted(t for t, msgtype in types.items() if kind_of.get(msgtype) in streams)
        for candidate in candidates:
            kind = kind_of.get(types.get(candidate, ""))
            if kind in ACCEPTED[modality]:
                updates[f"{modality}_topic"], updates[f"{modality}_type"] = candidate, kind
                break
    reference = config.sync.reference
    info = config.ros.camera_info_topic or camera_info_topic(configured[reference])
    if info in types:
        updates["camera_info_topic"] = info
    return config.model_copy(update={"ros": config.ros.model_copy(update=updates)})


def require_topics(path: str | Path, available: Iterable[str], required: dict[str, str]) -> None:
    """Raise :class:`BagError` listing every ``{topic: why}`` the bag lacks, and what it has instead."""
    have = set(available)
    missing = {topic: why for topic, why in required.items() if topic not in have}
    if missing:
        lines = [f"{path}: missing topic {t} ({why})" for t, why in missing.items()]
        lines.append(f"{path}: the bag has: {', '.join(sorted(have)) or '(no topics)'}")
        raise BagError("\n".join(lines))


def iter_messages(reader: Any, topics: Iterable[str]) -> Iterator[tuple[str, int, Any]]:
    """``(topic, log_time_ns, deserialised message)`` in log-time order for ``topics``."""
    ts = _typestore()
    wanted = set(topics)
    connections = [c for c in reader.connections if c.topic in wanted]
    for connection, log_ns, raw in reader.messages(connections=connections):
        try:
            msg = ts.deserialize_cdr(raw, connection.msgtype)
        except Exception as err:  # a corrupt message must not end the whole evaluation
            LOG.warning(
                "%s at log time %d: cannot deserialise %s, skipped: %s",
                connection.topic,
                log_ns,
                connection.msgtype,
                err,
            )
            continue
        yield connection.topic, log_ns, msg


def scene_values(msg: Any) -> dict[str, str]:
    """KeyValues of a ground-truth scene message (DiagnosticArray) as a dict."""
    values: dict[str, str] = {}
    for status in msg.status:
        for item in status.values:
            values[item.key] = item.value
    return values


def read_synthetic_bag(path: str | Path) -> dict[str, list[tuple[int, Any]]]:
    """All messages per topic as ``(header stamp ns, message)`` (tests and small bags only: loads everything)."""
    out: dict[str, list[tuple[int, Any]]] = {}
    reader = open_reader(path)
    try:
        for topic, _, msg in iter_messages(reader, reader.topics):
            out.setdefault(topic, []).append((stamp_ns(msg.header), msg))
    finally:
        reader.close()
    return out


# ---------------------------------------------------------------------- CLI
def _parse_pairs(items: Sequence[str], flag: str, expected: str) -> dict[str, float]:
    """``["lidar:0.2", "event:0.1"]`` → ``{"lidar": 0.2, "event": 0.1}``."""
    pairs: dict[str, float] = {}
    for item in items:
        modality, sep, value = item.partition(":")
        try:
            pairs[modality] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{flag} {item!r}: expected {expected}")
    return pairs


def make_bag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memsam-make-bag",
        description="Write a multimodal rosbag2 (MCAP) of synthetic scenes with ground-truth labels.",
    )
    parser.add_argument("out", help="bag directory to create (must not exist)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    parser.add_argument(
        "--conditions", nargs="+", default=list(BagSpec().conditions), help="weather/light conditions, in order"
    )
    parser.add_argument(
        "--drop",
        nargs="*",
        default=[],
        metavar="MODALITY:P",
        help="simulated sensor dropouts, e.g. --drop lidar:0.2 event:0.1",
    )
    parser.add_argument(
        "--rig",
        action="store_true",
        help="record as a real rig publishes: compressed RGB + camera_info, compressedDepth, PointCloud2 in the "
        "LiDAR frame with /tf_static, an EventPacket stream (default: the four as registered Images)",
    )
    parser.add_argument(
        "--rates", nargs="*", default=[], metavar="MODALITY:HZ", help="--rig: depth/LiDAR rates, e.g. lidar:15"
    )
    return parser


def make_bag_main(argv: Sequence[str] | None = None) -> int:
    """``memsam-make-bag OUT [--frames N ...]``; returns 2 on bad arguments."""
    args = make_bag_parser().parse_args(argv)
    try:
        spec = BagSpec(
            frames=args.frames,
            height=args.height,
            width=args.width,
            seed=args.seed,
            rate_hz=args.rate,
            conditions=tuple(args.conditions),
            drop=_parse_pairs(args.drop, "--drop", "MODALITY:PROBABILITY, e.g. lidar:0.2"),
            rig=args.rig,
            rates=_parse_pairs(args.rates, "--rates", "MODALITY:HZ, e.g. lidar:15"),
        )
        summary = write_synthetic_bag(args.out, spec, progress=True)
    except (ValueError, BagError) as err:
        print(f"memsam-make-bag: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary.path} ({summary.frames} frames, conditions {', '.join(summary.conditions)})")
    for topic, count in summary.message_counts.items():
        print(f"  {topic}: {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(make_bag_main())
