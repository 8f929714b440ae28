"""The shared config schema: defaults, YAML/ROS-params loading, and errors naming file and field."""

from __future__ import annotations

import pytest

from memsam_core.config import ConfigError, MemSamConfig, iter_leaves, load_config, parse_overrides


def test_defaults_are_valid_and_round_trip(tmp_path):
    config = MemSamConfig()
    path = tmp_path / "c.yaml"
    config.save(path)
    assert load_config(path) == config
    assert config.model.modalities == ["rgb", "depth", "lidar", "event"]
    assert len(config.classes.names) == config.model.num_classes == 25


def test_overrides_and_ros_params_file(tmp_path):
    params = tmp_path / "segment.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    config_file: ''\n    model.image_size: 256\n"
        "    sync:\n      slop_s: 0.02\n    ros.rgb_topic: /cam/rgb\n"
    )
    config = load_config(params, overrides={"inference.device": "cpu"})
    assert config.model.image_size == 256
    assert config.sync.slop_s == 0.02
    assert config.ros.rgb_topic == "/cam/rgb"
    assert config.inference.device == "cpu"


@pytest.mark.parametrize(
    ("yaml_text", "field", "reason"),
    [
        ("model:\n  image_size: 500\n", "model.image_size", "multiple of 32"),
        ("model:\n  image_size: -1\n", "model.image_size", "greater than or equal"),
        ("model:\n  sam2_config: hiera_xxl\n", "model.sam2_config", "unknown SAM 2 config"),
        ("model:\n  modalities: [rgb, rgb]\n", "model.modalities", "unique"),
        ("model:\n  modalities: [rgb, thermal]\n", "model.modalities.1", "Input should be"),
        ("inference:\n  device: tpu\n", "inference.device", "auto, cpu, cuda"),
        ("inference:\n  precision: int3\n", "inference.precision", "Input should be"),
        ("sync:\n  slop_s: 0\n", "sync.slop_s", "greater than 0"),
        ("model:\n  num_classes: 3\n", "(root)", "classes.names has 25 entries"),
        ("modle:\n  image_size: 256\n", "modle", "unknown field"),
        ("classes:\n  names: [a, b]\n  palette: [[1, 2]]\n", "classes.palette", "[r, g, b]"),
    ],
)
def test_bad_values_name_the_file_and_the_field(tmp_path, yaml_text, field, reason):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {field}:"), message
    assert reason in message


def test_unreadable_and_malformed_files_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_leaves_cover_every_field_with_dotted_names():
    leaves = {name: value for name, value, _ in iter_leaves(MemSamConfig())}
    assert leaves["model.image_size"] == 512
    assert leaves["sync.max_wait_s"] == 0.2
    assert "ros.rgb_topic" in leaves and "train.spmm_momentum" in leaves
    assert not any(isinstance(v, dict) for v in leaves.values())


def test_command_line_overrides_parse_as_yaml_and_reject_malformed_items():
    overrides = parse_overrides(["model.modalities=[rgb,depth]", "train.lr=1e-3", " inference.compile =true"])
    assert overrides["model.modalities"] == ["rgb", "depth"] and overrides["inference.compile"] is True
    config = load_config(None, overrides)  # PyYAML reads 1e-3 as a string; the schema makes it a float
    assert config.model.modalities == ["rgb", "depth"] and config.train.lr == 1e-3 and config.inference.compile
    for bad in ("model.image_size", "=128"):
        with pytest.raises(ConfigError, match="expected KEY=VALUE"):
            parse_overrides([bad])


def test_shipped_configs_load_and_the_reference_recipe_is_the_converted_models():
    from pathlib import Path

    from memsam_core.model.build import SPEC_FIELDS
    from memsam_core.model.convert import reference_config

    root = Path(__file__).resolve().parents[1] / "config"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)  # every shipped config validates
    recipe, converted = load_config(root / "train_deliver_reference.yaml"), reference_config()
    for section in ("model", "input"):
        for field in SPEC_FIELDS[section]:
            assert getattr(getattr(recipe, section), field) == getattr(getattr(converted, section), field), field
    ours = load_config(root / "train_deliver.yaml")
    assert (ours.input.depth_encoding, ours.input.lidar_encoding) == ("metric", "metric")  # what the node feeds
    assert ours.train.modality_dropout > 0 and recipe.train.modality_dropout == 0
