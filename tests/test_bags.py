"""Synthetic multimodal bags: topics, counts, encodings, jittered stamps, GT alignment, exact round trip.

Runtime: ~5 s on 2 CPU cores (6 small frames rendered and written twice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memsam_core.data.synthetic import SceneConfig, generate_scene
from memsam_ros.inputs.codec import decode_modality, image_to_array
from memsam_ros.tools.bag_tools import (
    GT_LABELS_TOPIC,
    GT_SCENE_TOPIC,
    SENSOR_TOPICS,
    BagError,
    BagSpec,
    bag_topics,
    condition_schedule,
    make_bag_main,
    open_reader,
    read_synthetic_bag,
    scene_values,
    write_synthetic_bag,
)

SPEC = BagSpec(frames=6, height=48, width=64, seed=3, conditions=("sun", "fog", "night"), drop={"lidar": 0.5})
ENCODINGS = {"rgb": "rgb8", "depth": "32FC1", "lidar": "32FC1", "event": "rgb8"}


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "synthetic"
    write_synthetic_bag(path, SPEC)
    return path


@pytest.fixture(scope="module")
def messages(bag: Path) -> dict:
    return read_synthetic_bag(bag)


def test_topics_types_and_counts(bag: Path, messages: dict) -> None:
    topics = bag_topics(bag)
    assert set(topics) == {*SENSOR_TOPICS.values(), GT_LABELS_TOPIC, GT_SCENE_TOPIC}
    assert topics[GT_SCENE_TOPIC][0] == "diagnostic_msgs/msg/DiagnosticArray"
    assert all(kind == "sensor_msgs/msg/Image" for t, (kind, _) in topics.items() if t != GT_SCENE_TOPIC)
    dropped = [scene_values(msg)["dropped"] for _, msg in messages[GT_SCENE_TOPIC]]
    lidar_dropped = sum("lidar" in d.split(",") for d in dropped)
    assert 0 < lidar_dropped < SPEC.frames, "seed 3 must drop some but not all LiDAR frames"
    for topic in (
        SENSOR_TOPICS["rgb"],
        SENSOR_TOPICS["depth"],
        SENSOR_TOPICS["event"],
        GT_LABELS_TOPIC,
        GT_SCENE_TOPIC,
    ):
        assert topics[topic][1] == SPEC.frames
    assert topics[SENSOR_TOPICS["lidar"]][1] == SPEC.frames - lidar_dropped


def test_encodings_and_shapes(messages: dict) -> None:
    for modality, topic in SENSOR_TOPICS.items():
        for _, msg in messages[topic]:
            assert msg.encoding == ENCODINGS[modality]
            assert (msg.height, msg.width) == (SPEC.height, SPEC.width)
    assert {msg.encoding for _, msg in messages[GT_LABELS_TOPIC]} == {"mono8"}


def test_stamps_jittered_monotone_and_aligned(messages: dict) -> None:
    rgb = [stamp for stamp, _ in messages[SENSOR_TOPICS["rgb"]]]
    for topic in SENSOR_TOPICS.values():
        stamps = np.array([stamp for stamp, _ in messages[topic]], dtype=np.int64)
        steps = np.diff(stamps) * 1e-9
        assert np.all(steps > 0), f"{topic}: stamps must increase"
        assert len(set(steps.round(9))) > 1, f"{topic}: stamps should be jittered, not perfectly periodic"
        nearest = [min(abs(s - r) for r in rgb) * 1e-9 for s in stamps]
        assert max(nearest) < 0.02, f"{topic}: every message within 20 ms of an RGB stamp (node slop is 50 ms)"
    if len(rgb) > 1:
        assert np.allclose(np.diff(rgb) * 1e-9, 1 / SPEC.rate_hz, atol=0.005)
    assert [s for s, _ in messages[GT_LABELS_TOPIC]] == rgb, "ground truth is stamped with the RGB stamp"
    assert [s for s, _ in messages[GT_SCENE_TOPIC]] == rgb
    conditions = [scene_values(m)["condition"] for _, m in messages[GT_SCENE_TOPIC]]
    assert conditions == condition_schedule(SPEC.frames, SPEC.conditions) == ["sun"] * 2 + ["fog"] * 2 + ["night"] * 2


def test_receive_time_after_stamp(bag: Path) -> None:
    reader = open_reader(bag)
    try:
        from memsam_ros.inputs.stamps import stamp_ns
        from memsam_ros.tools.bag_tools import iter_messages

        log_times = []
        for _, log_ns, msg in iter_messages(reader, reader.topics):
            assert log_ns > stamp_ns(msg.header)
            log_times.append(log_ns)
        assert log_times == sorted(log_times)
    finally:
        reader.close()


def test_round_trip_equals_generator(messages: dict) -> None:
    """Decoding the bag with the node's codec gives back the generator's arrays bit for bit."""
    scenes = messages[GT_SCENE_TOPIC]
    lidar_by_frame = {}
    for stamp, scene in scenes:
        values = scene_values(scene)
        frame = int(values["frame"])
        sample = generate_scene(
            int(values["seed"]), SceneConfig(height=SPEC.height, width=SPEC.width, condition=values["condition"])
        )
        gt = dict(messages[GT_LABELS_TOPIC])[stamp]
        np.testing.assert_array_equal(image_to_array(gt), sample.labels)
        rgb = messages[SENSOR_TOPICS["rgb"]][frame][1]
        np.testing.assert_array_equal(decode_modality(rgb, "rgb"), sample.frames["rgb"])
        depth = messages[SENSOR_TOPICS["depth"]][frame][1]
        np.testing.assert_array_equal(decode_modality(depth, "depth"), sample.frames["depth"])  # NaN/Inf equal
        event = messages[SENSOR_TOPICS["event"]][frame][1]
        np.testing.assert_array_equal(decode_modality(event, "event"), sample.frames["event"])
        lidar_by_frame[frame] = ("lidar" not in values["dropped"].split(","), sample.frames["lidar"])
    lidar_msgs = iter(messages[SENSOR_TOPICS["lidar"]])
    for frame in sorted(lidar_by_frame):
        present, expected = lidar_by_frame[frame]
        if present:
            decoded = decode_modality(next(lidar_msgs)[1], "lidar")
            np.testing.assert_array_equal(decoded, expected)
            assert np.any(decoded == 0.0) and np.any(decoded > 0.0), "LiDAR is sparse: 0 = no return"


def test_cli_writes_bag_and_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli_bag"
    args = [str(out), "--frames", "2", "--height", "32", "--width", "48", "--conditions", "rain", "--drop", "event:1"]
    assert make_bag_main(args) == 0
    topics = bag_topics(out)
    assert topics[SENSOR_TOPICS["event"]][1] == 0 and topics[SENSOR_TOPICS["rgb"]][1] == 2
    assert make_bag_main(args) == 2, "existing path"
    assert "already exists" in capsys.readouterr().err
    assert make_bag_main([str(tmp_path / "x"), "--drop", "lidar"]) == 2
    assert make_bag_main([str(tmp_path / "y"), "--drop", "rgb:0.1"]) == 2
    assert make_bag_main([str(tmp_path / "z"), "--conditions", "snow", "--frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "MODALITY:PROBABILITY" in err and "never dropped" in err and "snow" in err


def test_missing_bag_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="no such bag"):
        bag_topics(tmp_path / "nope")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "metadata.yaml").write_text("not: a bag")
    with pytest.raises(BagError, match="cannot open"):
        bag_topics(tmp_path / "garbage")
