"""DELIVER loader on a fixture tree in the real layout and file encodings: indexing, decoding, label mapping, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from memsam_core.classes import class_index
from memsam_core.config import ConfigError, load_config
from memsam_core.data.deliver import (
    DELIVER_CASES,
    DELIVER_CONDITIONS,
    DatasetError,
    DeliverDataset,
    companion_path,
    decode_labels,
    describe_files,
    encode_labels,
    parse_case,
    read_png,
    read_raw_png,
)
from memsam_core.data.deliver_codes import (
    CARLA_DEPTH_M_PER_LEVEL,
    CARLA_FAR_M,
    CARLA_LOG_CONSTANT,
    DepthRule,
    describe_array,
    encode_carla_depth,
)
from memsam_core.data.deliver_fixture import write_deliver_fixture
from memsam_core.data.synthetic import SceneConfig, generate_scene

SIZE = 48
CONDS = ("sun", "night", "fog")
CASES = ("normal", "eventlowres", "lidarjitter")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # "img" and "_rgb" in the root path must not confuse the companion-path mapping
    root = tmp_path_factory.mktemp("img_rgb") / "DELIVER"
    write_deliver_fixture(root, conditions=CONDS, cases=CASES, frames_per_sequence=2, size=SIZE, seed=1)
    return root


def _small_tree(root: Path) -> Path:
    write_deliver_fixture(root, splits=("train",), conditions=("rain",), cases=("normal",), frames_per_sequence=3,
                          size=32)  # fmt: skip
    return root


def test_constants() -> None:
    assert DELIVER_CONDITIONS == ("cloud", "fog", "night", "rain", "sun")
    assert set(DELIVER_CASES) == {"motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres"}


def test_layout_and_length(tree: Path) -> None:
    for folder in ("img", "hha", "depth", "event", "lidar", "semantic"):
        assert (tree / folder / "night" / "val" / "MAP_2_point1_eventlowres").is_dir()
    assert (tree / "hha/fog/train/MAP_3_point0/000005_depth_front.png").is_file()
    assert len(DeliverDataset(tree, "train")) == len(CONDS) * len(CASES) * 2
    assert len(DeliverDataset(tree, "val")) == len(CONDS) * len(CASES) * 2
    with pytest.raises(DatasetError, match="no DELIVER samples"):
        DeliverDataset(tree, "test")


def test_companion_paths(tree: Path) -> None:
    rgb = tree / "img/sun/train/MAP_5_point1_motionblur/000123_rgb_front.png"
    seq = "sun/train/MAP_5_point1_motionblur"
    assert companion_path(tree, rgb, "depth") == tree / f"depth/{seq}/000123_depth_front.png"
    assert companion_path(tree, rgb, "hha") == tree / f"hha/{seq}/000123_depth_front.png"
    assert companion_path(tree, rgb, "lidar") == tree / f"lidar/{seq}/000123_lidar_front.png"
    assert companion_path(tree, rgb, "event") == tree / f"event/{seq}/000123_event_front.png"
    assert companion_path(tree, rgb, "labels") == tree / f"semantic/{seq}/000123_semantic_front.png"
    assert companion_path(tree, rgb, "rgb") == rgb
    with pytest.raises(ValueError):
        companion_path(tree, tree / "hha/sun/train/x/000000_depth_front.png", "lidar")


def test_case_parsing() -> None:
    assert parse_case("MAP_10_point1_underexposure") == "underexposure"
    assert parse_case("MAP_1_point2_eventlowres") == "eventlowres"
    assert parse_case("MAP_1_point2") == "normal"


def test_sample_format_and_meta(tree: Path) -> None:
    ds = DeliverDataset(tree, "val")  # the default metric contract: depth/ and lidar/ decoded to metres
    seen = set()
    for i in range(len(ds)):
        s = ds[i]
        meta, frames = s["meta"], s["frames"]
        seen.add((meta["condition"], meta["case"]))
        assert meta["sequence"].startswith("MAP_") and meta["frame"] in ("000000", "000005")
        assert meta["split"] == "val" and meta["source"] == "deliver"
        assert Path(meta["paths"]["depth"]).parts[-5] == "depth"
        assert frames.keys() == {"rgb", "depth", "event", "lidar"}
        for m in ("rgb", "event"):
            assert frames[m].dtype == np.uint8 and frames[m].ndim == 3 and frames[m].shape[2] == 3, m
        for m in ("depth", "lidar"):
            assert frames[m].dtype == np.float32 and frames[m].shape == (SIZE, SIZE), m
        assert np.nanmax(frames["depth"]) < CARLA_FAR_M and np.isnan(frames["depth"]).any()  # sky = no return
        assert (frames["lidar"] == 0).mean() > 0.5 and frames["lidar"].max() > 1  # sparse metres
        assert frames["rgb"].shape == (SIZE, SIZE, 3) and s["labels"].shape == (SIZE, SIZE)
        expected_event = SIZE // 4 if meta["case"] == "eventlowres" else SIZE
        assert frames["event"].shape == (expected_event, expected_event, 3)  # RGBA alpha dropped, size kept
        assert s["labels"].max() < 25
    assert seen == {(c, k) for c in CONDS for k in CASES}


def test_image_contract_reads_hha_and_lidar_pngs_like_the_reference(tree: Path) -> None:
    s = DeliverDataset(tree, "val", depth_encoding="image", lidar_encoding="image")[0]
    assert Path(s["meta"]["paths"]["depth"]).parts[-5] == "hha"
    for m, a in s["frames"].items():
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3, m
    lidar = s["frames"]["lidar"]  # 1-channel PNG repeated to 3
    assert np.array_equal(lidar[..., 0], lidar[..., 1]) and np.array_equal(lidar[..., 0], lidar[..., 2])


# Half a level of each rule, from the rule's definition (CARLA's converters round to the nearest level), plus one
# step of the 24-bit code the grey converters start from and float32 rounding.
CODE_STEP_M = CARLA_FAR_M / (2**24 - 1)
HALF_LEVEL = {
    "carla24": lambda metres: CODE_STEP_M / 2 + 1e-6 * metres,
    "grey_linear": lambda metres: CARLA_DEPTH_M_PER_LEVEL / 2 + CODE_STEP_M + 1e-6 * metres,
    "grey_log": lambda metres: metres * np.expm1(CARLA_LOG_CONSTANT / 255 / 2) + CODE_STEP_M + 1e-6 * metres,
}


@pytest.mark.parametrize("rule", ["carla24", "grey_linear", "grey_log"])
def test_fixture_files_decode_to_the_scene_metres(tmp_path: Path, rule: str) -> None:
    """Round trip scene metres → CARLA converter → PNG → declared rule → metres, to the rule's rounding."""
    root = tmp_path / "d"
    write_deliver_fixture(root, splits=("train",), conditions=("sun",), cases=("normal",), frames_per_sequence=1,
                          size=64, lidar_m_per_level=0.5, depth_rule=DepthRule(rule))  # fmt: skip
    scene = generate_scene(0, SceneConfig(height=64, width=64, condition="sun"))  # what the fixture rendered
    s = DeliverDataset(root, "train", lidar_m_per_level=0.5, depth_rule=DepthRule(rule))[0]
    depth, truth = s["frames"]["depth"], scene.frames["depth"]
    sky = ~np.isfinite(truth)
    assert sky.any() and np.isnan(depth[sky]).all()
    measured = np.isfinite(depth)
    lowest = {"carla24": 0.0, "grey_linear": CARLA_DEPTH_M_PER_LEVEL / 2, "grey_log": 3.5}[rule]
    assert measured[~sky & (truth > lowest * 1.02)].all()  # only the rule's unmeasurable near range is NaN
    error = np.abs(depth[measured] - truth[measured])
    assert (error <= HALF_LEVEL[rule](truth[measured])).all(), error.max()
    lidar, returns = s["frames"]["lidar"], scene.frames["lidar"]
    hit = returns > 0
    assert hit.sum() > 10 and (lidar[~hit] == 0).all()
    np.testing.assert_allclose(lidar[hit], np.clip(np.round(returns[hit] / 0.5), 1, 255) * 0.5)
    raw = read_raw_png(Path(s["meta"]["paths"]["depth"]))
    assert describe_array(raw).grey == (rule != "carla24") and raw.ndim == (3 if rule == "carla24" else 2)


def test_a_linear_code_at_any_declared_scale_decodes(tmp_path: Path) -> None:
    root = tmp_path / "d"
    rule = DepthRule("grey_linear", 0.25)
    write_deliver_fixture(root, splits=("train",), conditions=("sun",), frames_per_sequence=1, size=64,
                          depth_rule=rule)  # fmt: skip
    truth = generate_scene(0, SceneConfig(height=64, width=64, condition="sun")).frames["depth"]
    depth = DeliverDataset(root, "train", modalities=("depth",), depth_rule=rule)[0]["frames"]["depth"]
    inside = np.isfinite(truth) & (truth > 0.125) & (truth < 254.5 * 0.25)
    assert inside.sum() > 100
    np.testing.assert_allclose(depth[inside], truth[inside], rtol=1e-6, atol=0.125)
    assert np.isnan(depth[np.isfinite(truth) & (truth > 255 * 0.25)]).all()  # saturated at level 255


def _carla_converter(code: np.ndarray, logarithmic: bool) -> np.ndarray:
    """CARLA's ColorConverter (LibCarla image/ColorConverter.h), written out in float32 like the C++: Depth →
    normalized; LogarithmicLinear → clamp(1 + log(normalized) / 5.70378f, 0.005f, 1); gil's float → uint8 is
    ``x * 255 + 0.5f`` truncated."""
    normalized = code.astype(np.float32) / np.float32(256 * 256 * 256 - 1)
    if logarithmic:
        with np.errstate(divide="ignore"):
            value = np.float32(1) + np.log(normalized) / np.float32(5.70378)
        normalized = np.maximum(np.minimum(value, np.float32(1)), np.float32(0.005))
    return (normalized * np.float32(255) + np.float32(0.5)).astype(np.uint8)


@pytest.mark.parametrize("rule", ["grey_linear", "grey_log"])
def test_grey_encoders_write_what_carlas_converters_write(rule: str) -> None:
    """The fixture's grey files against CARLA's converter formulas applied to the raw 24-bit code.

    CARLA's converter is C++ (LibCarla) working on a server-made ``carla.Image``, so it cannot run here; the
    formulas are transcribed from its source in float32 (``_carla_converter``), independently of ``DepthRule``."""
    metres = np.concatenate([np.geomspace(0.01, 999.0, 20000), [np.inf, np.nan, 0.0]]).astype(np.float32)
    rgb = encode_carla_depth(metres).astype(np.uint32)
    code = rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)
    ours = DepthRule(rule).encode(metres).astype(np.int16)
    theirs = _carla_converter(code, rule == "grey_log").astype(np.int16)
    assert np.abs(ours - theirs).max() <= 1 and (ours != theirs).mean() < 0.001  # float32 vs float64 at .5 ties
    assert ours[-3:].tolist() == [255, 255, 255]  # sky and no value: the far plane


def test_grey_depth_with_three_or_four_equal_channels_reads_like_one(tmp_path: Path) -> None:
    grey = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    expected = DepthRule("grey_log").decode(grey)
    for channels in (3, 4):
        image = np.repeat(grey[..., None], channels, axis=2)
        if channels == 4:
            image[..., 3] = 255  # CARLA's save_to_disk writes BGRA with alpha 255
        cv2.imwrite(str(tmp_path / f"{channels}.png"), image)
        raw = read_raw_png(tmp_path / f"{channels}.png")
        assert str(describe_array(raw)) == f"{channels} channels, colour channels equal (grey), 8-bit"
        np.testing.assert_array_equal(DepthRule("grey_log").decode(raw), expected)


def _refusal(rule: DepthRule, image: np.ndarray, path: Path) -> str:
    with pytest.raises(DatasetError) as err:
        rule.decode(image, path)
    assert err.value.path == path and "\n" not in str(err.value)
    return str(err.value)


def test_a_file_that_does_not_fit_the_declared_rule_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "000000_depth_front.png"
    grey = np.full((8, 8), 40, np.uint8)
    code = encode_carla_depth(np.linspace(1, 90, 64, dtype=np.float32).reshape(8, 8))
    message = _refusal(DepthRule("carla24"), grey, path)
    assert message.startswith(f"{path} holds 1 channel, 8-bit; depth rule carla24 (CARLA's raw 24-bit code) needs")
    message = _refusal(DepthRule("carla24"), np.repeat(grey[..., None], 3, 2), path)  # as 24-bit: 157 m, absurd
    assert "holds 3 channels, colour channels equal (grey), 8-bit; depth rule carla24" in message
    assert "grey_linear or grey_log" in message
    message = _refusal(DepthRule("grey_linear"), code, path)
    assert "holds 3 channels, colour channels unequal, 8-bit; depth rule grey_linear (3.92157 m per level)" in message
    message = _refusal(DepthRule("grey_log"), grey.astype(np.uint16) * 257, path)
    assert "holds 1 channel, 16-bit; depth rule grey_log (CARLA's LogarithmicDepth) needs one 8-bit grey" in message
    assert np.isfinite(DepthRule("carla24").decode(code)).all()  # the same arrays under the right rule decode


def test_files_in_another_encoding_are_a_clear_error_when_loading(tmp_path: Path) -> None:
    ds = DeliverDataset(_small_tree(tmp_path / "d"), "train")  # written and read as grey_linear
    depth = Path(ds[0]["meta"]["paths"]["depth"])
    cv2.imwrite(str(depth), np.zeros((32, 32), np.uint16))  # e.g. a 16-bit millimetre depth PNG
    with pytest.raises(DatasetError, match=rf"^{depth} holds 1 channel, 16-bit; depth rule grey_linear"):
        ds.load(0)
    carla = DeliverDataset(ds.root, "train", depth_rule=DepthRule("carla24"))
    with pytest.raises(DatasetError, match=r"holds 1 channel, 8-bit; depth rule carla24"):
        carla.load(1)  # grey files declared carla24
    lidar = Path(ds[1]["meta"]["paths"]["lidar"])
    colour = np.zeros((32, 32, 3), np.uint8)
    colour[..., 0] = 9
    cv2.imwrite(str(lidar), colour)  # a colour-mapped LiDAR image: no single range per pixel
    with pytest.raises(DatasetError, match=rf"^{lidar} holds 3 channels, colour channels unequal, 8-bit; the LiDAR"):
        ds.load(1)
    skipping = DeliverDataset(ds.root, "train", on_error="skip")
    assert skipping[0]["meta"]["index"] == 2  # bad input: a warning and the next sample, not a crash


def test_the_config_declares_the_rule_and_training_passes_it_on(tmp_path: Path) -> None:
    from memsam_training.data import raw_dataset

    root = tmp_path / "d"
    write_deliver_fixture(root, splits=("train",), conditions=("sun",), frames_per_sequence=1, size=32,
                          depth_rule=DepthRule("grey_log"))  # fmt: skip
    overrides = {"data.dataset": "deliver", "data.root": str(root), "data.conditions": ["sun"]}
    cfg = load_config(None, {**overrides, "data.deliver_depth_rule": "grey_log"})
    assert raw_dataset(cfg, train=True).depth_rule == DepthRule("grey_log")
    linear = load_config(None, {**overrides, "data.deliver_depth_m_per_level": 0.5})
    assert raw_dataset(linear, train=True).depth_rule == DepthRule("grey_linear", 0.5)
    with pytest.raises(ConfigError, match="deliver_depth_rule"):
        load_config(None, {"data.deliver_depth_rule": "grey_cubic"})


def test_describe_files_reports_what_the_files_contain(tree: Path) -> None:
    rows = {r["folder"]: r for r in describe_files(tree, "val", samples=3)}
    assert rows["depth"]["channels"] == 1 and rows["depth"]["dtype"] == "uint8" and rows["depth"]["equal_channels"]
    assert rows["lidar"]["channels"] == 1 and rows["lidar"]["max"] <= 255
    assert rows["event"]["channels"] == 4 and rows["semantic"]["max"] <= 25
    assert rows["img"]["channels"] == 3 and not rows["img"]["equal_channels"]


def test_cases_filter(tree: Path) -> None:
    night = DeliverDataset(tree, "train", cases=["night"])
    assert len(night) == len(CASES) * 2 and {it.condition for it in night.items} == {"night"}
    low = DeliverDataset(tree, "train", cases=["eventlowres", "lidarjitter"])
    assert {it.case for it in low.items} == {"eventlowres", "lidarjitter"} and len(low) == len(CONDS) * 4
    assert {it.case for it in DeliverDataset(tree, "train", cases=["normal"]).items} == {"normal"}
    with pytest.raises(ValueError, match="unknown cases"):
        DeliverDataset(tree, "train", cases=["snow"])


def test_modalities_subset(tree: Path) -> None:
    s = DeliverDataset(tree, "train", modalities=("rgb", "lidar"))[0]
    assert s["frames"].keys() == {"rgb", "lidar"}


def test_label_mapping_raw_values(tmp_path: Path) -> None:
    root = _small_tree(tmp_path / "d")
    ds = DeliverDataset(root, "train")
    path = Path(ds[0]["meta"]["paths"]["labels"])
    raw = np.zeros((32, 32, 3), np.uint8)  # RGB order
    raw[0, :5, 0] = [0, 1, 25, 255, 26]
    raw[1, :, 0] = 7
    raw[2, :, 1:] = 99  # G and B are ignored: only R carries the class
    assert cv2.imwrite(str(path), cv2.cvtColor(raw, cv2.COLOR_RGB2BGR))
    labels = ds[0]["labels"]
    assert labels[0, :5].tolist() == [255, 0, 24, 255, 255]
    assert (labels[1] == 6).all() and (labels[2] == 255).all()


def test_decode_encode_roundtrip() -> None:
    assert decode_labels(np.array([[0, 1, 2, 25, 255]], np.uint8)).tolist() == [[255, 0, 1, 24, 255]]
    train_ids = np.array([[0, 24, 255, 12]], np.uint8)
    assert np.array_equal(decode_labels(encode_labels(train_ids)), train_ids)


def test_read_png_channel_handling(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_png(tmp_path / "c.png"), rgb)
    rgba = np.concatenate([rgb, np.zeros((8, 9, 1), np.uint8)], -1)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert np.array_equal(read_png(tmp_path / "a.png"), rgb)
    cv2.imwrite(str(tmp_path / "g.png"), rgb[..., 0])
    assert np.array_equal(read_png(tmp_path / "g.png"), np.repeat(rgb[..., :1], 3, 2))


def test_fixture_content_matches_labels(tree: Path) -> None:
    s = DeliverDataset(tree, "train", cases=["sun"], depth_encoding="image")[0]
    sky = s["labels"] == class_index("Sky")
    assert sky.any() and (s["labels"] == class_index("Road")).any()  # Sky and Road from the synthetic scene
    hha = s["frames"]["depth"]
    assert (hha[sky][:, 2] == 0).all() and (hha[~sky][:, 2] == 255).all()  # HHA-like validity channel


def test_corrupt_png_raises_with_path(tmp_path: Path) -> None:
    ds = DeliverDataset(_small_tree(tmp_path / "d"), "train")
    bad = Path(ds[1]["meta"]["paths"]["depth"])
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage, not a png")
    with pytest.raises(DatasetError, match=str(bad)) as info:
        ds[1]
    assert info.value.path == bad
    ds[0]  # the others still load


def test_missing_file_raises_with_path(tmp_path: Path) -> None:
    ds = DeliverDataset(_small_tree(tmp_path / "d"), "train")
    gone = Path(ds[2]["meta"]["paths"]["labels"])
    gone.unlink()
    with pytest.raises(DatasetError, match=str(gone)):
        ds[2]


def test_skip_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _small_tree(tmp_path / "d")
    probe = DeliverDataset(root, "train")
    corrupt = Path(probe[1]["meta"]["paths"]["event"])
    missing = Path(probe[2]["meta"]["paths"]["lidar"])
    corrupt.write_bytes(b"nope")
    missing.unlink()
    with caplog.at_level(logging.WARNING, logger="memsam_core.data.deliver"):
        ds = DeliverDataset(root, "train", on_error="skip")
        assert len(ds) == 2  # missing companion filtered at index time
        assert str(missing) in caplog.text
        s = ds[1]  # corrupt → next readable sample (wraps around)
    assert s["meta"]["index"] == 0
    assert str(corrupt) in caplog.text
    assert DeliverDataset(root, "train", on_error="skip", modalities=("rgb",)).__len__() == 3
    with pytest.raises(ValueError):
        DeliverDataset(root, "train", on_error="ignore")  # type: ignore[arg-type]


def test_transform_applied_with_seeded_rng(tree: Path) -> None:
    def crop(frames, labels, rng):
        y = int(rng.integers(0, 8))
        return {m: a[y : y + 16] for m, a in frames.items()}, labels[y : y + 16]

    ds = DeliverDataset(tree, "train", modalities=("rgb",), transform=crop, aug_seed=5)
    a, b = ds[3], ds[3]
    assert a["frames"]["rgb"].shape == (16, SIZE, 3)
    assert np.array_equal(a["frames"]["rgb"], b["frames"]["rgb"])
