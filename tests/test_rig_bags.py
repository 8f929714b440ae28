"""Bags recorded the way a real rig records them (``memsam-make-bag --rig``): compressed RGB + camera_info,
compressedDepth, a PointCloud2 in the LiDAR frame + /tf_static, an EventPacket stream. Offline and live evaluation
detect the topics and types from the bag (no flags) and segment the same scenes as the Image bag's, pixel for pixel
up to JPEG and inverse-depth quantisation.

Rig = Image is compared per pixel on predicted labels, per modality: the Image bag's decoded set with one modality
taken from the rig path instead, segmented, against the Image bag's own labels. A whole-set mIoU (or even whole-set
label agreement) cannot tell: the test checkpoint leans on RGB, so a mirrored point cloud moves the whole-set
labels less than JPEG does, and mIoU moved by 0.0002 for every broken decoder. The decoded model inputs are
compared as well. Each broken decoder (monkeypatched into the offline path) must fail the check: depth flipped
and ×10, LiDAR mirrored, event polarity swapped, RGB channels swapped. ~45 s on 2 idle cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from checkpoints import perturbed_checkpoint

import memsam_ros.inputs.converter as converter
import memsam_ros.tools.evaluate as evaluate
from memsam_core.config import load_config
from memsam_core.events import EventWindow
from memsam_ros.inputs.received import decode_set
from memsam_ros.tools import rig
from memsam_ros.tools.bag_tools import BagSpec, bag_topics, detect_inputs, write_synthetic_bag
from memsam_ros.tools.recorder import evaluate_bag_live
from memsam_ros.tools.scoring import EvaluationRun, compare_runs, label_agreement

pytestmark = pytest.mark.ros
SPEC = BagSpec(frames=6, height=96, width=128, seed=4, conditions=("sun", "night"))
MODALITIES = ("rgb", "depth", "lidar", "event")
# Least per-frame label agreement with the Image bag's labels when one modality comes from the rig path. Measured
# (6 frames, 2 cores, 2026-12): real decoders rgb 0.969 (JPEG), depth 0.977 (inverse-depth quantisation), LiDAR and
# events 1.0 (exact); broken ones at most: depth flipped ×10 0.827, LiDAR mirrored 0.965, event polarity swapped
# 0.945, RGB channels swapped 0.807 (least frame). Each tolerance sits between the two.
LABEL_TOLERANCE = {"rgb": 0.95, "depth": 0.95, "lidar": 0.99, "event": 0.99}
WHOLE_SET_TOLERANCE = 0.95  # mean agreement of the rig bag's own labels; measured 0.967 (least frame 0.957)
# JPEG at quality 95: per-channel mean error (colour bias) measured ≤ 0.19, with R and B swapped ≥ 3.3; mean |error|
# measured 3.5-3.9 by day, 9.2-9.8 at night (noise), a loose bound against gross failures
JPEG_BIAS, JPEG_MEAN_ERROR = 1.0, 16.0
QUANT_A = 100.0 * 101.0  # compressed_depth_image_transport's a = q (q + 1), q = 100: one step is d^2 / (a - d)
LIVE_MIOU_TOLERANCE = 1e-4


@dataclasses.dataclass
class Replay:
    """An offline run with its predicted labels and the decoded set each prediction was made from, by stamp."""

    run: EvaluationRun
    frames: dict[int, dict[str, np.ndarray]]


Breakage = Callable[[pytest.MonkeyPatch], None]


def _depth_flipped_x10(mp: pytest.MonkeyPatch) -> None:
    decode = converter.decode_compressed_depth
    mp.setattr(converter, "decode_compressed_depth", lambda msg: np.flipud(decode(msg)) * 10)


def _lidar_mirrored(mp: pytest.MonkeyPatch) -> None:
    to_xyz = converter.pointcloud2_to_xyz
    mp.setattr(converter, "pointcloud2_to_xyz", lambda msg: to_xyz(msg) * np.float32([1, -1, 1]))  # y left → right


def _event_polarity_swapped(mp: pytest.MonkeyPatch) -> None:
    add = EventWindow.add  # every decoded packet goes through it: robust to how the decoder is organised
    mp.setattr(EventWindow, "add", lambda self, batch: add(self, dataclasses.replace(batch, polarity=~batch.polarity)))


def _rgb_channels_swapped(mp: pytest.MonkeyPatch) -> None:
    decode = converter.decode_compressed_image
    mp.setattr(converter, "decode_compressed_image", lambda msg, modality: decode(msg, modality)[..., ::-1])


BROKEN: dict[str, tuple[str, Breakage]] = {
    "depth flipped and x10": ("depth", _depth_flipped_x10),
    "lidar mirrored": ("lidar", _lidar_mirrored),
    "event polarity swapped": ("event", _event_polarity_swapped),
    "rgb channels swapped": ("rgb", _rgb_channels_swapped),
}


def _replay(bag: Path, segmenter, breakage: Breakage | None = None) -> Replay:
    """Offline evaluation of ``bag`` keeping labels, recording each set as decoded (optionally with a decoder
    broken on purpose)."""
    frames: dict[int, dict[str, np.ndarray]] = {}

    def recording(items, reference_ns):
        decoded, errors = decode_set(items, reference_ns)
        frames[reference_ns] = {m: np.array(a, copy=True) for m, a in decoded.items()}
        return decoded, errors

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "decode_set", recording)
        if breakage is not None:
            breakage(mp)
        run = evaluate.evaluate_bag_offline(bag, segmenter.config, segmenter, progress=False, keep_labels=True)
    return Replay(run, frames)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def segmenter(checkpoint: Path):
    from memsam_core.engine import Segmenter

    return Segmenter(_config(checkpoint), source=str(checkpoint))


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    write_synthetic_bag(root / "images", SPEC)
    write_synthetic_bag(root / "rig", BagSpec(**{**SPEC.__dict__, "rig": True}))
    return {"images": root / "images", "rig": root / "rig"}


@pytest.fixture(scope="module")
def replays(bags, segmenter) -> dict[str, Replay]:
    return {name: _replay(path, segmenter) for name, path in bags.items()}


@pytest.fixture(scope="module")
def broken(bags, segmenter) -> dict[str, Replay]:
    return {name: _replay(bags["rig"], segmenter, breakage) for name, (_, breakage) in BROKEN.items()}


def _config(checkpoint: Path):
    return load_config(None, {"inference.device": "cpu", "inference.checkpoint": str(checkpoint)})


def modality_label_agreement(segmenter, images: Replay, rig_path: Replay, modality: str) -> list[float]:
    """Per frame: the Image bag's set with ``modality`` decoded by the rig path, segmented, against the Image bag's
    labels (fraction of equal pixels)."""
    agreement = []
    for stamp, image_frames in sorted(images.frames.items()):
        mixed = {**image_frames, modality: rig_path.frames[stamp][modality]}
        labels = segmenter.segment_batch([mixed])[0].labels
        agreement.append(float(np.mean(labels == images.run.scoreboard.labels[stamp])))
    return agreement


def label_check(segmenter, images: Replay, rig_path: Replay, modalities=MODALITIES) -> tuple[dict, dict]:
    """The rig = Image claim on predicted labels, per pixel: ``(violations, measured)``, what falls outside its
    tolerance and the per-frame agreements (whole set, and each modality taken from the rig path)."""
    whole = label_agreement(images.run, rig_path.run)
    measured = {"whole set": list(whole["per_frame"].values())}
    measured |= {m: modality_label_agreement(segmenter, images, rig_path, m) for m in modalities}
    violations = {}
    if whole["frames_common"] != SPEC.frames or whole["pixel_agreement"] < WHOLE_SET_TOLERANCE:
        violations["whole set"] = f"mean {whole['pixel_agreement']:.4f} on {whole['frames_common']} frames"
    for modality in modalities:
        if (least := min(measured[modality])) < LABEL_TOLERANCE[modality]:
            violations[modality] = f"least frame {least:.4f} < {LABEL_TOLERANCE[modality]}"
    return violations, {key: [round(v, 4) for v in values] for key, values in measured.items()}


def _depth_outside_quantisation(image_depth: np.ndarray, rig_depth: np.ndarray) -> str | None:
    both = np.isfinite(image_depth) & np.isfinite(rig_depth)
    step = image_depth[both] ** 2 / (QUANT_A - image_depth[both])  # one inverse-depth step, metres
    error = rig_depth[both] - image_depth[both]  # the encoder floors inverse depth: decoded depth is never less
    if np.any(error < -1e-4) or np.any(error > step * 1.001 + 1e-4):
        return f"depth off by up to {np.abs(error).max():.3f} m, beyond one inverse-depth step"
    lost = np.isfinite(image_depth) & ~np.isfinite(rig_depth)
    if np.any(image_depth[lost] < rig.DEPTH_MAX_M * 0.99):  # beyond depth_max the encoder stores no data
        return f"{int(lost.sum())} valid depth pixels lost below {rig.DEPTH_MAX_M} m"
    return None


def input_violations(images: Replay, rig_path: Replay) -> dict[str, str]:
    """The decoded model inputs, per modality: RGB within JPEG error (no colour bias), depth within one
    inverse-depth step, LiDAR and events exact (up to float32 rounding)."""
    out: dict[str, str] = {}
    for stamp, image_frames in sorted(images.frames.items()):
        got = rig_path.frames[stamp]
        rgb_error = got["rgb"].astype(np.float64) - image_frames["rgb"]
        bias = np.abs(rgb_error.reshape(-1, 3).mean(axis=0)).max()
        if bias > JPEG_BIAS or np.abs(rgb_error).mean() > JPEG_MEAN_ERROR:
            out["rgb"] = f"channel bias {bias:.2f}, mean |difference| {np.abs(rgb_error).mean():.2f}"
        if problem := _depth_outside_quantisation(image_frames["depth"], got["depth"]):
            out["depth"] = problem
        if not np.allclose(got["lidar"], image_frames["lidar"], rtol=0, atol=1e-4):
            out["lidar"] = f"{int((np.abs(got['lidar'] - image_frames['lidar']) > 1e-4).sum())} pixels differ"
        if not np.array_equal(got["event"], image_frames["event"]):
            out["event"] = f"{int((got['event'] != image_frames['event']).any(axis=-1).sum())} pixels differ"
    return out


def live_violations(offline: EvaluationRun, live: EvaluationRun) -> dict[str, object]:
    """The offline = live claim (same code, same checkpoint, same bag: it checks the plumbing, not accuracy)."""
    replayed = compare_runs(offline, live)
    wrong = {
        "frames_common": replayed["frames_common"] != SPEC.frames,
        "miou_abs_diff": not replayed["miou_abs_diff"] < LIVE_MIOU_TOLERANCE,
        "missing_case_agreement": replayed["missing_case_agreement"] != SPEC.frames,
        "frames_identical_confusion": replayed["frames_identical_confusion"] != SPEC.frames,
    }
    return {key: replayed[key] for key, bad in wrong.items() if bad}


def test_rig_bag_topics_and_types_are_detected(bags) -> None:
    types = {topic: msgtype for topic, (msgtype, _) in bag_topics(bags["rig"]).items()}
    assert types[rig.RIG_TOPICS["lidar"]] == "sensor_msgs/msg/PointCloud2"
    assert types[rig.RIG_TOPICS["event"]] == "event_camera_msgs/msg/EventPacket"
    detected = detect_inputs(types, load_config(None)).ros
    assert {m: detected.topic(m) for m in rig.RIG_TOPICS} == rig.RIG_TOPICS
    assert {m: detected.input_type(m) for m in rig.RIG_TYPES} == rig.RIG_TYPES
    assert detected.camera_info_topic == rig.CAMERA_INFO_TOPIC
    plain = detect_inputs({t: m for t, (m, _) in bag_topics(bags["images"]).items()}, load_config(None)).ros
    assert plain.lidar_type == "image" and plain.lidar_topic == "/lidar/depth_image"


def test_rig_bag_segments_like_the_image_bag_pixel_for_pixel(replays, segmenter) -> None:
    images, offline = replays["images"], replays["rig"]
    assert offline.run.details["decode_errors"] == {}, offline.run.details
    assert offline.run.details["topics"]["lidar"] == rig.RIG_TOPICS["lidar"]
    assert len(offline.run.scoreboard.frames) == SPEC.frames == len(images.frames) == len(offline.frames)
    assert {frame.missing for frame in offline.run.scoreboard.frames} == {"none"}, "every set uses all four sensors"
    for stamp, frames in images.frames.items():  # plumbing: the recorded sets are what the path segmented
        np.testing.assert_array_equal(segmenter.segment_batch([frames])[0].labels, images.run.scoreboard.labels[stamp])
    assert input_violations(images, offline) == {}
    violations, measured = label_check(segmenter, images, offline)
    assert violations == {}, measured
    assert min(measured["lidar"]) == min(measured["event"]) == 1.0, measured  # decoded exactly


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_decoder_fails_the_rig_check(name: str, replays, broken, segmenter) -> None:
    """The fault rule: each decoder broken on purpose makes the labels check (and the inputs check) fail for its
    modality, so the passing test above says something."""
    modality, _ = BROKEN[name]
    bad = broken[name]
    violations, measured = label_check(segmenter, replays["images"], bad, modalities=(modality,))
    assert modality in violations, f"{name}: labels within tolerance {measured}"
    assert modality in input_violations(replays["images"], bad), name


def test_rig_bag_live_equals_offline_and_a_broken_offline_run_does_not(
    replays, broken, checkpoint, bags, ros_context, tmp_path
) -> None:
    """Offline = live holds by construction (same converter, synchroniser and Segmenter on the same bag): it checks
    the plumbing (player, DDS, node), not accuracy. Its broken counterpart, the offline run with the LiDAR mirrored
    (the subtlest of the broken decoders), falls outside the same tolerance."""
    live = evaluate_bag_live(
        bags["rig"], _config(checkpoint), context=ros_context, progress=False, log_dir=tmp_path / "live"
    )
    node_log = (tmp_path / "live" / "node.log").read_text()
    assert live.details["node_exit_code"] == 0 and live.details["gate_timeouts"] == 0, node_log
    comparison = compare_runs(replays["rig"].run, live)
    assert live_violations(replays["rig"].run, live) == {}, (comparison["frames_differing"], live.details, node_log)
    assert "frames_identical_confusion" in live_violations(broken["lidar mirrored"].run, live)
