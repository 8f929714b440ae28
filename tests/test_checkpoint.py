"""A checkpoint describes its own model: spec stored, Segmenter built from it alone, contradictions are one line.

Runtime: ~15 s on 2 CPU cores (hiera tiny at 128 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memsam_core.config import ConfigError, MemSamConfig, load_config
from memsam_core.engine import Segmenter, load_segmenter
from memsam_core.modalities import ModalityError, check_ros_sensors
from memsam_core.model import build_memorysam, save_checkpoint
from memsam_core.model.build import CHECKPOINT_VERSION, read_memsam_checkpoint
from memsam_core.model.lora import LoRAQKV

NAMES = ["road", "car", "sky"]
TRAINED = {  # everything a user would otherwise have to repeat in the node's config
    "model": {"image_size": 128, "num_classes": 3, "modalities": ["rgb", "lidar", "depth"], "lora_rank": 2,
              "lora_alpha": 1.0, "gate_logits_by_object_score": True},
    "input": {"lidar_max_m": 50.0, "event_resize": "bilinear", "depth_max_m": 60.0},
    "classes": {"names": NAMES, "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]},
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    config = MemSamConfig.model_validate(TRAINED)
    model = build_memorysam(config.model, seed=3)
    with torch.no_grad():  # weights a fresh build does not have, so a wrong load changes the output
        for m in model.modules():
            if isinstance(m, LoRAQKV):
                m.q_b.weight.normal_(std=0.05)
        model.sam.sam_mask_decoder.mask_tokens.weight.add_(0.3)
        model.sam.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(5.0)  # the gate lets frames through
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model, config)
    return path, model


def _frames(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lidar = np.zeros((96, 128), np.float32)
    lidar[::6, ::4] = rng.uniform(2, 40, lidar[::6, ::4].shape)
    return {"rgb": rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), "lidar": lidar,
            "depth": rng.uniform(1, 70, (96, 128)).astype(np.float32)}  # fmt: skip


def test_checkpoint_stores_spec_and_segmenter_builds_from_it_alone(trained) -> None:
    path, model = trained
    data = read_memsam_checkpoint(path)
    assert data["version"] == CHECKPOINT_VERSION == 2
    spec = data["spec"]
    assert spec["model"] == {**MemSamConfig().model.model_dump(include=set(spec["model"])), **TRAINED["model"],
                             "sam2_config": "sam2.1_hiera_t"}  # fmt: skip
    assert spec["input"]["depth_encoding"] == spec["input"]["lidar_encoding"] == "metric"
    assert spec["classes"] == TRAINED["classes"] and spec["input_contract_version"] == 2

    segmenter, effective = load_segmenter(path, device="cpu", threads=1)  # nothing but run-time settings
    assert effective is segmenter.config
    assert effective.model.modalities == ["rgb", "lidar", "depth"] and effective.model.image_size == 128
    assert effective.model.gate_logits_by_object_score and effective.input.lidar_max_m == 50.0
    assert segmenter.class_names == NAMES and segmenter.palette.tolist() == TRAINED["classes"]["palette"]
    assert effective.inference.device == "cpu" and effective.inference.threads == 1
    from memsam_core.modalities import frames_to_tensor

    batch, present = frames_to_tensor(_frames(), effective.model.modalities, 128, effective.input)
    assert present == ["rgb", "lidar", "depth"]  # the checkpoint's frame order, not the default's
    with torch.no_grad():
        expected = model.eval()(batch[None])["logits"]
    torch.testing.assert_close(segmenter.logits(batch[None]), expected, rtol=1e-4, atol=1e-4)
    assert float(expected.std()) > 0  # gate on and passing: a real output, not constant -1024
    labels, _ = segmenter.segment(_frames())
    assert labels.shape == (96, 128) and labels.max() < 3


def test_config_contradicting_the_checkpoint_is_one_line_naming_both(trained) -> None:
    path, _ = trained
    cases = {
        "model.image_size": (512, r"model\.image_size: config says 512, checkpoint .*best\.pt was trained with 128$"),
        "input.depth_encoding": ("image", r"input\.depth_encoding: config says 'image', checkpoint .* with 'metric'$"),
        "model.modalities": (["rgb", "depth", "lidar"], r"model\.modalities: config says \['rgb', 'depth', 'lidar'\]"),
        "model.gate_logits_by_object_score": (False, r"gate_logits_by_object_score: config says False"),
    }
    for key, (value, message) in cases.items():
        config = load_config(None, {key: value, "inference.device": "cpu"})
        with pytest.raises(ConfigError, match=message) as err:
            load_segmenter(path, config, source="segment.yaml")
        assert "\n" not in str(err.value) and str(err.value).startswith("segment.yaml: "), key
    wrong_names = load_config(None, {"model.num_classes": 3, "classes.names": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match=r"classes\.names: config says \['a', 'b', 'c'\]"):
        load_segmenter(path, wrong_names)
    # agreeing values, and a rig without one trained sensor (same order), are fine
    same = load_config(None, {"model.image_size": 128, "model.modalities": ["rgb", "depth"], "inference.device": "cpu"})
    segmenter, effective = load_segmenter(path, same)
    assert effective.model.modalities == ["rgb", "depth"] and effective.model.num_classes == 3
    assert segmenter.segment_batch([_frames()])[0].modalities == ("rgb", "depth")
    with pytest.raises(ConfigError, match=r"inference\.device: .*got 'gpu'"):
        load_segmenter(path, device="gpu")


def test_input_the_checkpoint_was_not_trained_for_is_refused(trained, tmp_path: Path) -> None:
    path, _ = trained
    segmenter = load_segmenter(path, device="cpu")[0]
    hha = {**_frames(), "depth": np.zeros((96, 128, 3), np.uint8)}  # DELIVER's HHA PNG instead of metres
    with pytest.raises(ModalityError, match=r"^depth: the model's input contract expects float32 HxW metres"):
        segmenter.segment(hha)
    image_config = MemSamConfig(model={"image_size": 128}, input={"depth_encoding": "image"})
    image_ckpt = tmp_path / "hha.pt"
    save_checkpoint(image_ckpt, build_memorysam(image_config.model), image_config)
    reference = load_segmenter(image_ckpt, device="cpu")[0]
    assert reference.config.input.depth_encoding == "image"
    with pytest.raises(ModalityError, match=r"^depth: .*expects a uint8 pre-encoded image"):
        reference.segment(_frames())  # metres into a model trained on HHA / 255
    with pytest.raises(ConfigError, match=r"input\.depth_encoding: the model was trained on depth as 8-bit images"):
        check_ros_sensors(reference.config, str(image_ckpt))


def test_version_1_checkpoint_loads_with_its_inferred_contract(tmp_path: Path) -> None:
    config = MemSamConfig(model={"image_size": 128}, data={"dataset": "deliver"})
    model = build_memorysam(config.model)
    legacy = config.to_dict()
    del legacy["input"]["depth_encoding"], legacy["input"]["lidar_encoding"], legacy["input"]["event_resize"]
    path = tmp_path / "v1.pt"
    torch.save({"format": "memsam", "version": 1, "model": model.state_dict(), "config": legacy}, path)
    segmenter = Segmenter(load_config(None, {"inference.checkpoint": str(path), "inference.device": "cpu"}))
    assert segmenter.config.model.image_size == 128  # from the checkpoint, not the default 512
    contract = segmenter.config.input  # v1 trained DELIVER on HHA/LiDAR PNGs / 255, served events bilinear
    assert (contract.depth_encoding, contract.lidar_encoding, contract.event_resize) == ("image", "image", "bilinear")
    future = tmp_path / "v9.pt"
    torch.save({"format": "memsam", "version": 9, "model": {}, "config": legacy}, future)
    with pytest.raises(Exception, match="version 9 is newer"):
        load_segmenter(future)
