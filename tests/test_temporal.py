"""Memory across time (issue 22): the model, the engine's stream of sets, checkpoints, and K = 0 unchanged.

K = 0 is compared with the engine as it was before this feature (git commit ``4d9c07c``, loaded as a separate package
from the repository's history in this process, so both run the same CPU kernels and the comparison is bit for bit on
any machine; skipped, saying why, where the history is not there).
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoints import perturbed_checkpoint

from memsam_core.config import ConfigError, ModelConfig, load_config
from memsam_core.data.synthetic import SceneConfig, generate_sequence
from memsam_core.engine import Segmenter, load_segmenter
from memsam_core.modalities import frames_to_tensor
from memsam_core.model import build_memorysam, load_memsam, save_checkpoint
from memsam_core.model.build import load_for_config, read_memsam_checkpoint
from memsam_core.model.lora import merge_lora
from memsam_core.model.memorysam import InstantMemory
from memsam_core.temporal import TemporalMemory

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "4d9c07c"  # HEAD before memory across time
SIZE = 128
MODALITIES = ["rgb", "depth", "lidar", "event"]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def before(tmp_path_factory: pytest.TempPathFactory):
    """``memsam_core`` as of commit 4d9c07c, importable as ``memsam_core_4d9c07c``."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot load the engine of commit 4d9c07c")
    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{BEFORE}^{{commit}}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"commit {BEFORE} is not in this checkout's history (shallow clone?): no engine to compare with")
    root = tmp_path_factory.mktemp("before")
    command = ["git", "-C", str(ROOT), "archive", BEFORE, "memsam_core"]
    archive = subprocess.run(command, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    package = root / f"memsam_core_{BEFORE}"
    (root / "memsam_core").rename(package)
    for source in package.rglob("*.py"):
        source.write_text(re.sub(r"\bmemsam_core\b", package.name, source.read_text()))
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(f"{package.name}.engine")
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def stream() -> list[dict[str, np.ndarray]]:
    """Three consecutive instants of one synthetic world (fog), as raw sensor arrays."""
    samples = generate_sequence(5, SceneConfig(height=96, width=128, condition="fog"), length=3)
    return [dict(s.frames) for s in samples]


@pytest.fixture(scope="module")
def k0_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_checkpoint(tmp_path_factory.mktemp("k0") / "k0.pt")


@pytest.fixture(scope="module")
def k2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_checkpoint(tmp_path_factory.mktemp("k2") / "k2.pt", {"model.temporal_memory": 2})


def _batch(seed: int, frames: int = 4) -> torch.Tensor:
    return torch.randn(1, frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def network_size_stream() -> list[dict[str, np.ndarray]]:
    """The instants at the network's size: the engines compared below then resize nothing (the resize itself was
    changed since, deliberately: bilinear without antialiasing, as training resizes; memsam_core/modalities.py)."""
    samples = generate_sequence(5, SceneConfig(height=SIZE, width=SIZE, condition="fog"), length=3)
    return [dict(s.frames) for s in samples]


# ---------------------------------------------------------------------------------------------- K = 0 unchanged
def test_k0_gives_bit_identical_logits_to_the_engine_before_memory_across_time(
    before, k0_checkpoint, network_size_stream
):
    old, _ = before.load_segmenter(k0_checkpoint, device="cpu")
    new, effective = load_segmenter(k0_checkpoint, device="cpu")
    assert effective.model.temporal_memory == 0 and new.temporal is None
    for seed, frames in ((0, 4), (1, 2), (2, 1)):  # every modality count takes its own path
        batch = _batch(seed, frames)
        assert torch.equal(old.logits(batch), new.logits(batch)), f"{frames} frames"
    for frames in network_size_stream:  # the node's stream path, set after set: nothing carried over at K = 0
        before_labels, before_confidence = old.segment(frames)
        result = new.segment_instant(frames, stamp_s=0.0)
        assert np.array_equal(result.labels, before_labels)
        assert np.array_equal(result.confidence, before_confidence)
        assert result.extras["memory_instants"] == 0


def test_the_bit_identity_check_fails_with_memory_across_time(before, k0_checkpoint, stream):
    """Fault rule: the same weights with K = 1 and a memory of the previous instant are no longer today's engine."""
    old, _ = before.load_segmenter(k0_checkpoint, device="cpu")
    model, config, _ = load_for_config(k0_checkpoint, load_config(None, {"inference.device": "cpu"}))
    merge_lora(model)  # as load_segmenter does
    config.model.temporal_memory = 1  # past the checkpoint check on purpose: a model it was not trained as
    temporal = Segmenter(config, model=model)
    temporal.segment_instant(stream[0], stamp_s=0.0)  # the memory is not empty from here on
    batch = frames_to_tensor(stream[1], MODALITIES, SIZE, config.input)[0][None]
    past = temporal.temporal.past()
    difference = (old.logits(batch) - temporal.logits(batch, past)).abs().max()
    assert len(past) == 1 and float(difference) > 1e-3


# ---------------------------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def model(k2_checkpoint):
    """K = 2, with the perturbed weights of the test checkpoints (random SAM 2 weights barely pass memory on)."""
    return load_memsam(k2_checkpoint)[0].eval()


def test_an_instant_sees_the_last_frame_and_the_chain_of_the_instant_before(model):
    """Instant t+1's output depends on instant t's last frame (its memory is kept) and, through the memory chain,
    on instant t's first frame. The chain runs through the last frame's predicted mask, which SAM 2 replaces by
    "no object" where its (frozen, here random) object-score head says so: that head is biased to "object" here."""
    model = copy.deepcopy(model)
    head = model.sam.sam_mask_decoder.pred_obj_score_head
    with torch.no_grad():
        (head.layers[-1] if hasattr(head, "layers") else head).bias.add_(50.0)
    first, second = _batch(10), _batch(11)
    with torch.no_grad():
        base = model(second, past=[model(first, past=[])["memory"]])["logits"]
        for changed_frame in (3, 0):
            changed = first.clone()
            changed[:, changed_frame] = _batch(12, 1)[:, 0]
            memory = model(changed, past=[])["memory"]
            # without a path from the changed frame the computation is the same, bit for bit: any change is one
            assert (model(second, past=[memory])["logits"] - base).abs().max() > 1e-6, changed_frame


def test_temporal_mode_without_a_past_is_sam2_video_pointer_positions(model):
    """With no past instant yet, each frame is conditioned as SAM 2 conditions a video frame on its conditioning
    frames (pointer distances over ``max_obj_ptrs_in_encoder - 1``, SAM 2's video scale); the modality-only path
    scales them by the modality count, which differs (the check is not vacuous)."""
    sam, generator = model.sam, torch.Generator().manual_seed(0)
    batch, height, width, frames = 1, 8, 8, 4
    memories = [
        {
            "maskmem_features": torch.randn(batch, sam.mem_dim, height, width, generator=generator),
            "maskmem_pos_enc": [torch.randn(batch, sam.mem_dim, height, width, generator=generator)],
            "obj_ptr": torch.randn(batch, sam.hidden_dim, generator=generator),
        }
        for _ in range(frames - 1)
    ]
    feat = torch.randn(height * width, batch, sam.hidden_dim, generator=generator)
    pos = torch.randn(height * width, batch, sam.hidden_dim, generator=generator)
    with torch.no_grad():
        for k in range(1, frames):
            ours = model.condition_on_memory(feat, pos, (height, width), memories[:k], frames, past=[])
            theirs = sam._prepare_memory_conditioned_features(
                frame_idx=k,
                is_init_cond_frame=False,
                current_vision_feats=[feat],
                current_vision_pos_embeds=[pos],
                feat_sizes=[(height, width)],
                output_dict={"cond_frame_outputs": dict(enumerate(memories[:k])), "non_cond_frame_outputs": {}},
                num_frames=10_000,  # a long video: SAM 2 scales pointer distances by min(num_frames, 16) - 1
            )
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
            modality_only = model.condition_on_memory(feat, pos, (height, width), memories[:k], frames)
            assert (modality_only - ours).abs().max() > 1e-4


def test_past_instants_take_sam2_non_conditioning_slots(model, monkeypatch):
    """Plumbing (true by construction, checked so a refactor cannot break it): the memory d instants back gets
    ``maskmem_tpos_enc[d - 1]``, this instant's frames the conditioning slot; pointers follow, 4 tokens each."""
    sam = model.sam
    captured = {}
    original = sam.memory_attention.forward

    def capture(**kwargs):
        captured.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(sam.memory_attention, "forward", capture)
    generator = torch.Generator().manual_seed(1)
    hw, mem = (8, 8), sam.mem_dim

    def memory() -> InstantMemory:
        def rand(*shape):
            return torch.randn(*shape, generator=generator)

        return InstantMemory(rand(1, mem, *hw), rand(1, mem, *hw), rand(1, sam.hidden_dim))

    within = [{"maskmem_features": m.features, "maskmem_pos_enc": [m.pos_enc], "obj_ptr": m.obj_ptr}
              for m in (memory(),)]  # fmt: skip
    past = [memory(), memory()]
    feat = torch.randn(64, 1, sam.hidden_dim, generator=generator)
    with torch.no_grad():
        out = model.condition_on_memory(feat, feat, hw, within, 4, past=past)
    tokens = 64
    memory_pos = captured["memory_pos"]
    expected = [within[0]["maskmem_pos_enc"][0], past[0].pos_enc, past[1].pos_enc]
    slots = [sam.maskmem_tpos_enc[sam.num_maskmem - 1], sam.maskmem_tpos_enc[0], sam.maskmem_tpos_enc[1]]
    for i, (pos_enc, slot) in enumerate(zip(expected, slots)):
        block = memory_pos[i * tokens : (i + 1) * tokens]
        torch.testing.assert_close(block, pos_enc.flatten(2).permute(2, 0, 1) + slot)
    assert captured["num_obj_ptr_tokens"] == 3 * (sam.hidden_dim // mem)
    with torch.no_grad():  # fault: the same memories in the other temporal order are another input
        swapped = model.condition_on_memory(feat, feat, hw, within, 4, past=past[::-1])
    assert (swapped - out).abs().max() > 1e-4


def test_more_past_instants_than_sam2_slots_is_refused(model):
    memory = model(_batch(3, 1), past=[])["memory"]
    with pytest.raises(ValueError, match="6 past instants|7 past instants"):
        model(_batch(3, 1), past=[memory] * 7)
    with pytest.raises(ValueError, match="less than or equal to 6"):
        ModelConfig(temporal_memory=7)


# ---------------------------------------------------------------------------------------------- the stream rules
def test_stream_rules_reset_on_synchroniser_reset_stamps_back_gap_and_deactivate():
    memory = TemporalMemory(2, max_gap_s=0.5)
    blank = InstantMemory(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    steps = [(10.0, 0, None), (10.1, 0, None), (10.2, 0, None), (10.2, 0, "stamp_back"), (9.0, 0, "stamp_back"),
             (9.1, 1, "sync_reset"), (9.7, 1, "gap"), (9.8, 1, None)]  # fmt: skip
    for stamp, epoch, expected in steps:
        assert memory.admit(stamp, epoch) == expected, (stamp, epoch)
        memory.push(blank)
        assert len(memory.past()) <= 2
    memory.reset("deactivate")
    memory.reset("deactivate")  # nothing left to forget: not counted twice
    assert memory.resets == {"sync_reset": 1, "stamp_back": 2, "gap": 1, "deactivate": 1, "new_stream": 0}
    assert memory.past() == [] and memory.total_resets == 5


@pytest.fixture(scope="module")
def temporal_segmenter(k2_checkpoint):
    return load_segmenter(k2_checkpoint, device="cpu", temporal_max_gap_s=0.5)[0]


def test_stamps_going_back_do_not_mix_past_and_future(temporal_segmenter, k2_checkpoint, stream):
    segmenter = temporal_segmenter
    segmenter.reset("new_stream")
    stream = [{m: frames[m] for m in ("rgb", "lidar")} for frames in stream]  # two frames a set: quicker
    fresh = load_segmenter(k2_checkpoint, device="cpu")[0].segment_instant(stream[0], stamp_s=0.0)
    used = [segmenter.segment_instant(frames, stamp_s=100.0 + 0.1 * i).extras["memory_instants"] for i, frames in
            enumerate(stream)]  # fmt: skip
    assert used == [0, 1, 2]
    forward = segmenter.segment_instant(stream[0], stamp_s=100.3)  # fault: a later stamp keeps the memory ...
    assert forward.extras["memory_instants"] == 2 and not np.array_equal(forward.confidence, fresh.confidence)
    back = segmenter.segment_instant(stream[0], stamp_s=100.05)  # ... an earlier one starts afresh
    assert back.extras["memory_reset"] == "stamp_back" and back.extras["memory_instants"] == 0
    assert np.array_equal(back.labels, fresh.labels) and np.array_equal(back.confidence, fresh.confidence)
    assert segmenter.segment_instant(stream[1], stamp_s=100.15).extras["memory_instants"] == 1
    gap = segmenter.segment_instant(stream[2], stamp_s=101.0)
    assert gap.extras["memory_reset"] == "gap" and gap.extras["memory_instants"] == 0
    epoch = segmenter.segment_instant(stream[2], stamp_s=101.1, epoch=1)
    assert epoch.extras["memory_reset"] == "sync_reset"
    segmenter.reset("deactivate")
    counts = segmenter.memory_resets_by_reason
    assert counts["stamp_back"] == 1 and counts["gap"] == 1 and counts["sync_reset"] == 1 and counts["deactivate"] == 1


def test_memoryless_batches_of_a_temporal_model_are_a_fresh_stream(temporal_segmenter, stream):
    """segment_batch of a K ≥ 1 model: independent sets, each as the first after a reset."""
    segmenter = temporal_segmenter
    segmenter.reset("new_stream")
    first = segmenter.segment_instant(stream[1], stamp_s=0.0)
    batched = segmenter.segment_batch([stream[1]])[0]
    assert np.array_equal(first.confidence, batched.confidence)


def test_compile_and_cuda_graphs_fall_back_to_eager_with_one_line(k2_checkpoint, caplog):
    with caplog.at_level(logging.INFO, logger="memsam_core.engine"):
        segmenter, _ = load_segmenter(k2_checkpoint, device="cpu", compile=True)
    lines = [r.getMessage() for r in caplog.records if "temporal_memory" in r.getMessage()]
    assert len(lines) == 1 and "eager" in lines[0], lines
    assert segmenter._net is segmenter.model and segmenter._graphs is None


# ---------------------------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_records_k_and_the_engine_builds_it(k2_checkpoint):
    data = read_memsam_checkpoint(k2_checkpoint)
    assert data["spec"]["model"]["temporal_memory"] == 2 and data["version"] == 3
    segmenter, effective = load_segmenter(k2_checkpoint, device="cpu")
    assert effective.model.temporal_memory == 2 and segmenter.temporal.instants == 2
    fewer, effective = load_segmenter(k2_checkpoint, load_config(None, {"model.temporal_memory": 1}))
    assert effective.model.temporal_memory == 1 and fewer.temporal.instants == 1


def test_a_k_the_checkpoint_does_not_support_is_one_line_naming_both(k2_checkpoint, k0_checkpoint, tmp_path):
    cases = [(k2_checkpoint, 3, 2), (k0_checkpoint, 1, 0)]
    legacy = tmp_path / "legacy.pt"  # written before the spec had the field: trained with K = 0
    data = read_memsam_checkpoint(k0_checkpoint)
    del data["spec"]["model"]["temporal_memory"]
    torch.save(data, legacy)
    cases.append((legacy, 2, 0))
    for path, asked, trained in cases:
        with pytest.raises(ConfigError) as err:
            load_segmenter(path, load_config(None, {"model.temporal_memory": asked}), source="segment.yaml")
        message = str(err.value)
        assert "\n" not in message
        assert re.fullmatch(
            rf"segment\.yaml: model\.temporal_memory: config says {asked}, checkpoint .*{path.name} was trained "
            rf"with {trained}",
            message,
        ), message


def test_the_node_refuses_such_a_k_at_start_up_in_one_line(k0_checkpoint):
    result = subprocess.run(
        [sys.executable, "-m", "memsam_ros.node", "--ros-args", "-p", f"inference.checkpoint:={k0_checkpoint}",
         "-p", "model.temporal_memory:=2", "-p", "inference.device:=cpu"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "model.temporal_memory: config says 2" in errors[0] and "trained with 0" in errors[0], errors[0]


def test_a_newer_checkpoint_format_is_still_refused(k2_checkpoint, tmp_path):
    data = read_memsam_checkpoint(k2_checkpoint)
    data["version"] = 4
    path = tmp_path / "future.pt"
    torch.save(data, path)
    from memsam_core.model import CheckpointError

    with pytest.raises(CheckpointError, match="version 4 is newer"):
        read_memsam_checkpoint(path)


def test_save_checkpoint_writes_version_2_for_k0(tmp_path):
    config = load_config(None, {"model.image_size": SIZE})
    path = tmp_path / "plain.pt"
    save_checkpoint(path, build_memorysam(config.model), config)
    assert read_memsam_checkpoint(path)["version"] == 2
