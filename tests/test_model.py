"""MemorySAM core on real sam2 modules (hiera tiny, 256 px so it runs on 2 cores)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sam2.build_sam import build_sam2 as sam2_build

from memsam_core.config import ConfigError, MemSamConfig, ModelConfig
from memsam_core.engine import Segmenter
from memsam_core.model import CheckpointError, build_memorysam, load_memsam, save_checkpoint
from memsam_core.model.lora import LoRAQKV, merge_lora

SIZE = 256
MODALITIES = ["rgb", "depth", "lidar", "event"]


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return ModelConfig(image_size=SIZE, num_classes=5, lora_rank=4)


@pytest.fixture(scope="module")
def model(cfg):
    return build_memorysam(cfg, seed=0)


def _frames(batch: int, count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_every_modality_subset_gives_full_resolution_logits(model):
    subsets = [s for r in range(1, 5) for s in itertools.combinations(MODALITIES, r)]
    assert len(subsets) == 15
    seen_counts = set()
    with torch.no_grad():
        for subset in subsets:
            if len(subset) in seen_counts and len(subset) > 1:
                continue  # the network only sees the frame count; one subset per count suffices here
            seen_counts.add(len(subset))
            out = model(_frames(2, len(subset)), return_features=True)
            assert out["logits"].shape == (2, 5, SIZE, SIZE)
            assert out["features"].shape == (2, 32, SIZE // 4, SIZE // 4)
            assert torch.isfinite(out["logits"]).all()
    assert seen_counts == {1, 2, 3, 4}


def test_engine_path_matches_sam2_track_step_reference(cfg):
    gated = build_memorysam(cfg.model_copy(update={"gate_logits_by_object_score": True}), seed=1)
    frames = _frames(1, 4, seed=3)
    head = gated.sam.sam_mask_decoder.pred_obj_score_head.layers[-1]
    scores: list[float] = []
    hook = gated.sam.sam_mask_decoder.pred_obj_score_head.register_forward_hook(
        lambda module, args, out: scores.append(float(out.flatten()[0]))
    )
    # With random weights SAM 2's object-score head says "no object" on every frame, which would gate every
    # logit to -1024 and make any two paths agree. Spread its scores and centre them so that some frames pass
    # the gate and others are blanked: both branches of the gate are compared.
    with torch.no_grad():
        head.weight.mul_(40.0)
        gated.forward_reference(frames)
        head.bias.sub_((max(scores) + min(scores)) / 2)
    scores.clear()
    reference = gated.forward_reference(frames)
    reference_scores = list(scores)
    scores.clear()
    with torch.no_grad():
        engine = gated(frames, skip_last_memory=True)["logits"]
    hook.remove()
    assert reference_scores == pytest.approx(scores[: len(reference_scores)], abs=1e-4)
    assert max(reference_scores) > 0.05 and min(reference_scores) < -0.05, reference_scores  # both gate branches
    assert float(reference.std()) > 1e-3 and not torch.all(reference == reference.flatten()[0])  # not constant
    torch.testing.assert_close(engine, reference, rtol=0, atol=5e-4)
    assert (engine.argmax(1) == reference.argmax(1)).float().mean() > 0.999  # near-ties at |logit| ~ 256 may flip
    with torch.no_grad():  # fewer frames than configured (a missing sensor): same pointer positions in both paths
        torch.testing.assert_close(gated(frames[:, :2])["logits"], gated.forward_reference(frames[:, :2]),
                                   rtol=0, atol=5e-4)  # fmt: skip
    assert gated.pointer_frames(2) == 4  # SAM 2.1 pointer positions scaled by the configured modality count


@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam2_hiera_b+"])  # 2.1: object-pointer tpos on; 2.0: off
def test_memory_conditioning_equals_sam2_for_every_frame(name):
    model = build_memorysam(ModelConfig(sam2_config=name, image_size=128, num_classes=5), seed=0).eval()
    sam, generator = model.sam, torch.Generator().manual_seed(0)
    batch, height, width, frames = 2, 8, 8, 4

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    memories = [
        {
            "maskmem_features": rand(batch, sam.mem_dim, height, width),
            "maskmem_pos_enc": [rand(batch, sam.mem_dim, height, width)],
            "obj_ptr": rand(batch, sam.hidden_dim),
        }
        for _ in range(frames - 1)
    ]
    feat, pos = rand(height * width, batch, sam.hidden_dim), rand(height * width, batch, sam.hidden_dim)
    with torch.no_grad():
        for k in range(frames):
            ours = model.condition_on_memory(feat, pos, (height, width), memories[:k], frames)
            theirs = sam._prepare_memory_conditioned_features(
                frame_idx=k,
                is_init_cond_frame=k == 0,
                current_vision_feats=[feat],
                current_vision_pos_embeds=[pos],
                feat_sizes=[(height, width)],
                output_dict={"cond_frame_outputs": dict(enumerate(memories[:k])), "non_cond_frame_outputs": {}},
                num_frames=frames,
            )
            assert ours.std() > 0.1  # a real feature map, not a constant
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_later_frames_see_earlier_frames_through_memory(model):
    frames = _frames(1, 2, seed=4)
    changed = frames.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])
    with torch.no_grad():
        # frame 1's own prediction changes when only frame 0 changes: memory carries it over
        base = model(frames)["logits"] * 2 - model(frames[:, :1])["logits"]
        other = model(changed)["logits"] * 2 - model(changed[:, :1])["logits"]
    assert (base - other).abs().max() > 1e-4


def test_gradients_reach_trainable_parts_and_not_frozen_trunk(cfg):
    model = build_memorysam(cfg, seed=2).train()
    out = model(_frames(1, 3, seed=5), return_features=True)
    labels = torch.randint(0, cfg.num_classes, (1, SIZE, SIZE))
    loss = torch.nn.functional.cross_entropy(out["logits"], labels) + out["features"].square().mean()
    loss.backward()
    sam = model.sam

    def grad_norm(module: torch.nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    lora = [m for m in sam.image_encoder.modules() if isinstance(m, LoRAQKV)]
    assert len(lora) == len(sam.image_encoder.trunk.blocks)
    # B starts at zero, so the first gradient lands on B (A's gradient is B^T-weighted = 0)
    assert sum(float(m.q_b.weight.grad.abs().sum() + m.v_b.weight.grad.abs().sum()) for m in lora) > 0
    assert grad_norm(sam.memory_attention) > 0
    assert grad_norm(sam.memory_encoder) > 0
    assert grad_norm(sam.sam_mask_decoder.transformer) > 0
    assert sam.sam_mask_decoder.mask_tokens.weight.grad.abs().sum() > 0
    frozen = [
        p for n, p in sam.image_encoder.named_parameters() if not any(k in n for k in ("q_a", "q_b", "v_a", "v_b"))
    ]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.grad is None for p in sam.sam_prompt_encoder.parameters())
    assert all(p.grad is None for p in sam.sam_mask_decoder.iou_prediction_head.parameters())


def test_lora_covers_all_q_and_v_channels_and_merges_exactly(model):
    block = next(
        m for m in model.sam.image_encoder.modules() if isinstance(m, LoRAQKV) and m.dim_out != m.qkv.in_features
    )
    assert block.q_b.weight.shape[0] == block.dim_out  # widened block: all dim_out channels adapted
    with torch.no_grad():
        block.q_b.weight.normal_()
        block.v_b.weight.normal_()
        x = torch.randn(3, block.qkv.in_features)
        expected = block(x)
        torch.testing.assert_close(block.merged()(x), expected, rtol=1e-4, atol=1e-4)
        block.q_b.weight.zero_()
        block.v_b.weight.zero_()


def _meta_layout_checkpoint(path, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", seed: int = 7):
    """A file laid out like Meta's ``sam2.1_hiera_*.pt``: ``{"model": state}`` of the stock SAM2Base built by the
    ``sam2`` package's own builder at its native 1024 px, float32 (memsam's builders are not involved)."""
    torch.manual_seed(seed)
    sam = sam2_build(config, ckpt_path=None, device="cpu", mode="eval", apply_postprocessing=False)
    state = sam.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    torch.save({"model": state}, path)
    return state


def test_official_sam2_checkpoint_loads_and_wrong_size_is_a_clear_error(tmp_path, cfg):
    official = tmp_path / "sam2.1_hiera_tiny.pt"
    state = _meta_layout_checkpoint(official)
    sam2_build("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=str(official), device="cpu")  # sam2 loads it strictly
    model = build_memorysam(cfg, sam2_checkpoint=official)  # ours: 256 px, semantic decoder, LoRA wrapped
    key = "image_encoder.trunk.blocks.0.attn.qkv.weight"
    torch.testing.assert_close(model.sam.state_dict()["image_encoder.trunk.blocks.0.attn.qkv.qkv.weight"], state[key])
    torch.testing.assert_close(
        model.sam.sam_mask_decoder.transformer.layers[0].mlp.layers[0].weight,
        state["sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight"],
    )
    torch.testing.assert_close(model.sam.memory_attention.layers[3].linear2.weight,
                               state["memory_attention.layers.3.linear2.weight"])  # fmt: skip
    wrong = cfg.model_copy(update={"sam2_config": "sam2.1_hiera_s"})
    with pytest.raises(CheckpointError, match=r"sam2\.1_hiera_tiny\.pt.*another model size"):
        build_memorysam(wrong, sam2_checkpoint=official)
    with pytest.raises(CheckpointError, match="not found"):
        build_memorysam(cfg, sam2_checkpoint=tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(official.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"corrupt\.pt: cannot read"):
        build_memorysam(cfg, sam2_checkpoint=corrupt)


def test_memsam_checkpoint_round_trip_and_class_count_mismatch(tmp_path, cfg, model):
    path = tmp_path / "memsam.pt"
    config = MemSamConfig(model=cfg, classes={"names": [f"c{i}" for i in range(cfg.num_classes)]})
    with torch.no_grad():
        model.sam.sam_mask_decoder.mask_tokens.weight.add_(0.5)  # make it differ from a fresh build
    save_checkpoint(path, model, config.to_dict())
    loaded, payload = load_memsam(path, cfg)
    frames = _frames(1, 2, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames)["logits"], model(frames)["logits"])
    assert payload["config"]["model"]["num_classes"] == cfg.num_classes
    message = r"model\.num_classes: config says 7, checkpoint .*memsam\.pt was trained with 5$"
    with pytest.raises(ConfigError, match=message):
        load_memsam(path, cfg.model_copy(update={"num_classes": 7}))
    with pytest.raises(CheckpointError, match="plain SAM 2 checkpoint"):
        official = tmp_path / "official.pt"
        torch.save({"model": {}}, official)
        load_memsam(official, cfg)


def test_segmenter_outputs_at_rgb_resolution_with_missing_modalities():
    config = MemSamConfig(model={"image_size": SIZE, "num_classes": 3}, classes={"names": ["a", "b", "c"]})
    segmenter = Segmenter(config)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 50, (60, 80)).astype(np.float32)
    depth[0, :] = np.nan
    lidar = np.zeros((120, 160), np.float32)
    lidar[::8, ::3] = 10.0
    event = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    labels, confidence = segmenter.segment({"rgb": rgb, "depth": depth, "lidar": lidar, "event": event})
    assert labels.shape == (120, 160) and labels.dtype == np.uint8 and labels.max() < 3
    assert confidence.shape == (120, 160) and confidence.dtype == np.float32
    assert np.all((confidence >= 1 / 3 - 1e-5) & (confidence <= 1))
    results = segmenter.segment_batch([{"rgb": rgb, "depth": depth}, {"rgb": rgb}, {"rgb": rgb, "depth": depth}])
    assert [r.missing for r in results] == [("lidar", "event"), ("depth", "lidar", "event"), ("lidar", "event")]
    np.testing.assert_array_equal(results[0].labels, results[2].labels)  # batched rows independent


def test_segmenter_merged_lora_matches_training_model(cfg, tmp_path):
    model = build_memorysam(cfg, seed=5)
    config = MemSamConfig(model=cfg, classes={"names": [f"c{i}" for i in range(cfg.num_classes)]})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRAQKV):
                m.q_b.weight.normal_(std=0.05)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, config.to_dict())
    segmenter = Segmenter(MemSamConfig.model_validate({**config.to_dict(), "inference": {"checkpoint": str(path)}}))
    assert not any(isinstance(m, LoRAQKV) for m in segmenter.model.modules())
    frames = _frames(1, 4, seed=11)
    with torch.no_grad():
        torch.testing.assert_close(segmenter.logits(frames), model(frames)["logits"], rtol=1e-3, atol=1e-3)
    assert merge_lora(model) == len(model.sam.image_encoder.trunk.blocks)


# blocks and first-stage width of each Hiera trunk (SAM 2 paper, Table: tiny/small/base+/large)
_HIERA = {"t": (12, 96), "s": (16, 96), "b+": (24, 112), "l": (48, 144)}


@pytest.mark.parametrize("name", ["sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
                                  "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"])  # fmt: skip
def test_every_sam2_config_builds_and_segments(name):
    # every model size of SAM 2.0 and 2.1 builds from the sam2 package's configs, gets LoRA on every block,
    # and runs a 2-frame sequence at a small input size
    blocks, width = _HIERA[name.rsplit("_", 1)[1]]
    cfg = ModelConfig(sam2_config=name, image_size=128, num_classes=3, lora_rank=2)
    model = build_memorysam(cfg, seed=0)
    trunk = model.sam.image_encoder.trunk
    assert len(trunk.blocks) == blocks
    assert trunk.blocks[0].dim == width
    assert all(isinstance(block.attn.qkv, LoRAQKV) for block in trunk.blocks)
    assert model.sam.sam_mask_decoder.num_multimask_outputs == 3  # one multimask token per class
    with torch.no_grad():
        logits = model(torch.randn(1, 2, 3, 128, 128, generator=torch.Generator().manual_seed(0)))["logits"]
    assert logits.shape == (1, 3, 128, 128) and torch.isfinite(logits).all()
