"""Training on sequences (issue 22): synthetic clips with ego and object motion, DELIVER clips, sensor dropouts that
last several instants, and a clip through the model with gradients carried in the memory of past instants."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from memsam_core.config import ConfigError, ModelConfig, load_config
from memsam_core.data.deliver import DeliverDataset
from memsam_core.data.deliver_fixture import write_deliver_fixture
from memsam_core.data.synthetic import SceneConfig, SyntheticDataset, generate_scene, generate_sequence
from memsam_core.data.transforms import TrainTransform
from memsam_core.model import build_memorysam
from memsam_core.model.clip import ClipForward
from memsam_training.data import TrainTensors, clip_dropout, collate_train, raw_dataset
from memsam_training.train import Trainer, check_clips

SCENE = SceneConfig(height=48, width=64, condition="sun")


# ---------------------------------------------------------------------------------------------- synthetic clips
def test_the_first_instant_is_the_single_scene_bit_for_bit():
    first = generate_sequence(3, SCENE, length=3)[0]
    scene = generate_scene(3, SCENE)
    for m in scene.frames:
        np.testing.assert_array_equal(first.frames[m], scene.frames[m])
    np.testing.assert_array_equal(first.labels, scene.labels)


def test_the_world_moves_between_instants_and_only_because_of_motion():
    moving = generate_sequence(4, SCENE, length=3, frame_dt_s=0.2)
    still = generate_sequence(4, replace(SCENE, ego_speed_mps=0.0, object_motion=False), length=3, frame_dt_s=0.2)
    assert np.mean(moving[2].labels != moving[0].labels) > 0.01
    # fault check: without ego and object motion the same world gives the same labels and, noise apart, depth
    np.testing.assert_array_equal(still[2].labels, still[0].labels)
    finite = np.isfinite(still[0].frames["depth"])
    np.testing.assert_allclose(still[2].frames["depth"][finite], still[0].frames["depth"][finite], rtol=0.02)
    assert not np.array_equal(still[2].frames["rgb"], still[0].frames["rgb"])  # fresh sensor noise per instant


def test_the_ego_camera_drives_forward():
    """The ego camera moves speed × t along the road: the backdrop closing the street (beyond 120 m, facing the
    camera) is about 8 m/s × 0.5 s = 4 m nearer half a second later (the yaw rate tilts it a little)."""
    first, later = generate_sequence(6, replace(SCENE, object_motion=False), length=2, frame_dt_s=0.5)
    depth0, depth1 = first.frames["depth"], later.frames["depth"]
    far = np.isfinite(depth0) & np.isfinite(depth1) & (depth0 > 120) & (depth1 > 110)
    nearer = float(np.median(depth0[far] - depth1[far]))
    assert far.sum() > 20 and 3.0 < nearer < 5.5, (int(far.sum()), nearer)


def test_a_synthetic_clip_keeps_its_augmentation_along_the_clip():
    data = SyntheticDataset(2, SCENE, clip_length=3, transform=TrainTransform(size=32, scale=(0.5, 1.0)), aug_seed=5)
    clip = data[1]
    assert len(clip["instants"]) == 3 and clip["meta"]["instants"] == 3
    stamps = [i["meta"]["stamp_s"] for i in clip["instants"]]
    assert stamps == pytest.approx([0.0, 0.1, 0.2]) and len({i["meta"]["sequence"] for i in clip["instants"]}) == 1
    raw = SyntheticDataset(2, SCENE, clip_length=3)[1]
    for augmented, original in zip(clip["instants"], raw["instants"]):  # one crop and flip for the whole clip
        again = TrainTransform(size=32, scale=(0.5, 1.0))(
            original["frames"], original["labels"], np.random.default_rng([5, 0, 1])
        )
        np.testing.assert_array_equal(augmented["labels"], again[1])


def test_training_tensors_of_a_clip(tmp_path):
    config = load_config(None, {"model.image_size": 128, "data.clip_length": 2, "data.synthetic_height": 64,
                                "data.synthetic_width": 64, "train.crop_size": 64})  # fmt: skip
    item = TrainTensors(raw_dataset(config, train=True), config)[0]
    assert item["frames"].shape == (2, 4, 3, 128, 128) and item["labels"].shape == (2, 128, 128)


# ---------------------------------------------------------------------------------------------- DELIVER clips
@pytest.fixture(scope="module")
def deliver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deliver")
    write_deliver_fixture(root, splits=("val",), conditions=("fog", "night"), frames_per_sequence=5, size=32)
    write_deliver_fixture(root / "short", splits=("val",), conditions=("sun",), frames_per_sequence=1, size=32)
    return root


def test_deliver_clips_are_consecutive_frames_of_one_scene_folder(deliver):
    data = DeliverDataset(deliver, "val", clip_length=2)
    assert len(data) == 2 * 3  # per folder of 5 frames: [0, 1], [2, 3] and the last window [3, 4]
    frames = [[i["meta"]["frame"] for i in data[c]["instants"]] for c in range(len(data))]
    assert frames[:3] == [["000000", "000005"], ["000010", "000015"], ["000015", "000020"]]
    for c in range(len(data)):
        clip = data[c]
        assert len({(i["meta"]["condition"], i["meta"]["sequence"]) for i in clip["instants"]}) == 1
        assert [i["meta"]["instant"] for i in clip["instants"]] == [0, 1]
    single = DeliverDataset(deliver, "val")
    assert len(single) == 10 and "instants" not in single[0]


def test_deliver_folders_too_short_or_unevenly_numbered_are_reported(deliver, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        DeliverDataset(deliver / "short", "val", clip_length=1)
        with pytest.raises(Exception, match="no DELIVER scene folder has 2 frames"):
            DeliverDataset(deliver / "short", "val", clip_length=2)
    assert any("fewer than 2 frames" in r.getMessage() for r in caplog.records)
    uneven = tmp_path / "uneven"
    paths = write_deliver_fixture(uneven, splits=("val",), conditions=("fog",), frames_per_sequence=3, size=32)
    for folder in ("img", "hha", "depth", "lidar", "event", "semantic"):  # frame 000010 becomes 000030
        tag = "depth" if folder == "hha" else {"img": "rgb"}.get(folder, folder)
        for path in (uneven / folder).rglob(f"000010_{tag}_front.png"):
            path.rename(path.with_name(f"000030_{tag}_front.png"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        data = DeliverDataset(uneven, "val", clip_length=3)
    assert len(paths) == 3 and len(data) == 1
    assert any("step by [5, 25]" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_the_training_config_asks_the_deliver_loader_for_clips(deliver):
    config = load_config(None, {"data.dataset": "deliver", "data.root": str(deliver), "data.val_split": "val",
                                "data.clip_length": 3, "data.conditions": ["fog", "night"]})  # fmt: skip
    data = raw_dataset(config, train=False)
    assert data.clip_length == 3 and len(data[0]["instants"]) == 3


# ---------------------------------------------------------------------------------------------- dropouts and training
def test_a_sensor_drops_out_for_a_run_of_consecutive_instants():
    modalities = ["rgb", "depth", "lidar", "event"]
    runs = []
    for seed in range(200):
        keeps = clip_dropout(modalities, 6, 0.5, 2, np.random.default_rng(seed))
        assert all(0 in keep for keep in keeps)  # RGB always stays
        for index in (1, 2, 3):
            missing = [t for t, keep in enumerate(keeps) if index not in keep]
            if missing:
                assert missing == list(range(missing[0], missing[-1] + 1)) and len(missing) >= 2  # one run, >= 2
                runs.append(len(missing))
    assert 200 < len(runs) < 400 and max(runs) == 6  # p = 0.5 per sensor and clip, up to the whole clip
    assert clip_dropout(modalities, 4, 0.0, 2, np.random.default_rng(0)) == [[0, 1, 2, 3]] * 4


def test_memory_of_k_instants_needs_clips_of_k_plus_one():
    with pytest.raises(ConfigError, match="needs training clips of at least 3 instants"):
        check_clips(load_config(None, {"model.temporal_memory": 2, "data.clip_length": 2}))
    check_clips(load_config(None, {"model.temporal_memory": 2, "data.clip_length": 3}))


def test_the_loss_of_a_later_instant_reaches_an_earlier_one_through_the_memory():
    """Gradients are carried through the memory of past instants (not truncated): instant 1's loss has a gradient
    with respect to instant 0's images with K = 1, and none with K = 0 (the check is not vacuous)."""
    model = build_memorysam(ModelConfig(image_size=128, num_classes=5, temporal_memory=1), seed=0).train()
    grads = {}
    for k in (0, 1):
        first = torch.randn(1, 2, 3, 128, 128, generator=torch.Generator().manual_seed(1), requires_grad=True)
        second = torch.randn(1, 2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
        logits = ClipForward(model, k)([first, second])["logits"]
        logits[1:].square().mean().backward()  # the second instant's output only
        grads[k] = first.grad
    assert grads[0] is None or float(grads[0].abs().sum()) == 0.0
    assert float(grads[1].abs().sum()) > 0.0


def test_a_clip_training_step(tmp_path):
    config = load_config(None, {
        "model.image_size": 128, "model.modalities": ["rgb", "depth"], "model.temporal_memory": 1,
        "data.clip_length": 2, "data.synthetic_train_size": 2, "data.synthetic_val_size": 1,
        "data.synthetic_height": 64, "data.synthetic_width": 64, "train.crop_size": 64, "train.batch_size": 2,
        "train.modality_dropout": 0.5, "train.output_dir": str(tmp_path), "inference.device": "cpu",
    })  # fmt: skip
    trainer = Trainer(config)
    keeps = trainer.kept_modalities_per_instant()
    assert len(keeps) == 2 and all(0 in keep for keep in keeps)
    batch = collate_train([trainer.train_set[0], trainer.train_set[1]])
    losses = trainer.train_step(batch)
    assert np.isfinite(losses["loss"]) and 1.0 <= losses["frames"] <= 2.0
    memory_grads = [p.grad for p in trainer.model.sam.memory_attention.parameters() if p.grad is not None]
    assert memory_grads and any(float(g.abs().sum()) > 0 for g in memory_grads)


@pytest.mark.slow
def test_two_gloo_ranks_train_on_clips_in_sync(tmp_path: Path) -> None:
    """DDP as today, on clips with memory across time: one reduction per step (the clip is one forward), the ranks
    end with the same weights, and the sharded clip evaluation (mVC8 included) is merged across them."""
    from test_ddp import run_two_ranks

    sets = ["model.image_size=128", "model.modalities=[rgb,depth]", "model.temporal_memory=1", "data.clip_length=2",
            "data.synthetic_height=64", "data.synthetic_width=64", "data.synthetic_train_size=4",
            "data.synthetic_val_size=2", "train.crop_size=64", "train.batch_size=1", "train.epochs=1",
            "train.threads=1", "train.modality_dropout=0.5", "inference.device=cpu",
            f"train.output_dir={tmp_path / 'run'}"]  # fmt: skip
    r0, r1 = run_two_ranks(tmp_path, sets)
    changed = 0
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
        changed += not torch.equal(value, r0["init"][name])
    assert changed > 10 and r0["miou"] == r1["miou"]


class _StopAfterOneStep(Trainer):
    """Dies after the first step (its ``last.pt`` written by ``checkpoint_every_iters``), like a killed run."""

    def train_step(self, batch):
        if self.progress.step == 1:
            raise KeyboardInterrupt("stopped")
        return super().train_step(batch)


@pytest.mark.slow
def test_clip_training_resumes_mid_epoch_to_the_same_weights(tmp_path: Path) -> None:
    """Resumable as today: clips, their dropout runs (drawn from seed, rank and step) and the memory of past instants
    change nothing in what a resumed run does."""

    def config(out: Path):
        return load_config(None, {
            "model.image_size": 128, "model.modalities": ["rgb", "depth"], "model.temporal_memory": 1,
            "data.clip_length": 2, "data.synthetic_train_size": 3, "data.synthetic_val_size": 1,
            "data.synthetic_height": 64, "data.synthetic_width": 64, "train.crop_size": 64, "train.batch_size": 1,
            "train.epochs": 1, "train.modality_dropout": 0.5, "train.checkpoint_every_iters": 1,
            "train.deterministic": True, "train.output_dir": str(out), "inference.device": "cpu",
        })  # fmt: skip

    Trainer(config(tmp_path / "full")).fit()
    with pytest.raises(KeyboardInterrupt):
        _StopAfterOneStep(config(tmp_path / "cut")).fit()
    Trainer(config(tmp_path / "cut"), resume=tmp_path / "cut" / "last.pt").fit()
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert full["step"] == resumed["step"] == 3
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
