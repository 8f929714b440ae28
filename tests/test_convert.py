"""The MemorySAM repository's released checkpoint → memsam, on a state dict with the reference's keys and shapes.

The reference file is built the way ``train_sam2_lora.py`` makes it, from the ``sam2`` package alone (not
memsam's builders): SAM 2.0 Hiera-B+ from ``configs/sam2/sam2_hiera_b+.yaml``, the mask decoder rebuilt with
``num_multimask_outputs=25`` (the reference's vendored ``sam2_base.py``), every block's qkv wrapped by
``_LoRA_qkv`` (keys ``attn.qkv.{qkv,linear_a_q,linear_b_q,linear_a_v,linear_b_v}``), ``sam.`` prefix from
``LoRA_Sam.sam``; saved with ``torch.save(model.state_dict(), ...)``.

Runtime: ~40 s on 2 CPU cores (two Hiera-B+ builds).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sam2.build_sam import build_sam2
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.transformer import TwoWayTransformer

from memsam_core.engine import load_segmenter
from memsam_core.modalities import ModalityError
from memsam_core.model import CheckpointError
from memsam_core.model.convert import main
from memsam_core.model.lora import LoRAQKV

pytestmark = pytest.mark.slow
RANK = 4


def _reference_state_dict() -> dict[str, torch.Tensor]:
    sam = build_sam2("configs/sam2/sam2_hiera_b+.yaml", ckpt_path=None, device="cpu", apply_postprocessing=False)
    sam.sam_mask_decoder = MaskDecoder(  # sam2_base.py l.224 of the reference: 25 multimask outputs
        num_multimask_outputs=25,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256, use_high_res_features=True,
        iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in sam.state_dict().items():
        if ".attn.qkv." in key and key.startswith("image_encoder.trunk.blocks."):
            block = key.rsplit(".", 1)[0]  # ...blocks.i.attn.qkv
            state[f"sam.{block}.qkv.{key.rsplit('.', 1)[1]}"] = value
            if key.endswith(".weight"):
                dim = value.shape[1]  # _LoRA_qkv: self.dim = qkv.in_features; A: dim→r, B: r→dim
                for qv in "qv":
                    state[f"sam.{block}.linear_a_{qv}.weight"] = torch.randn(RANK, dim, generator=generator) * 0.1
                    state[f"sam.{block}.linear_b_{qv}.weight"] = torch.randn(dim, RANK, generator=generator) * 0.1
        else:
            state[f"sam.{key}"] = value
    return state


def _reference_lora_qkv(state: dict[str, torch.Tensor], block: str, x: torch.Tensor) -> torch.Tensor:
    """The reference ``_LoRA_qkv.forward``: qkv(x), Q delta on ``[:dim]``, V delta on ``[-dim:]``, unscaled."""
    p = {k.removeprefix(f"sam.{block}."): v for k, v in state.items() if k.startswith(f"sam.{block}.")}
    qkv = x @ p["qkv.weight"].T + p["qkv.bias"]
    dim = p["qkv.weight"].shape[1]
    qkv[..., :dim] += x @ p["linear_a_q.weight"].T @ p["linear_b_q.weight"].T
    qkv[..., -dim:] += x @ p["linear_a_v.weight"].T @ p["linear_b_v.weight"].T
    return qkv


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("memorysam")
    state = _reference_state_dict()
    src = folder / "RGBDEL_epoch95_65.38.pth"
    torch.save(state, src)  # train_sam2_lora.py: torch.save(model.module.state_dict(), cur_best)
    dst = folder / "memorysam_deliver_rgbdel.pt"
    assert main([str(src), str(dst)]) == 0
    return state, dst


def test_converted_checkpoint_is_the_reference_model(converted) -> None:
    state, dst = converted
    segmenter, config = load_segmenter(dst, device="cpu")  # the checkpoint alone defines the model
    model = config.model
    assert (model.sam2_config, model.image_size, model.num_classes) == ("sam2_hiera_b+", 1024, 25)
    assert model.modalities == ["rgb", "depth", "event", "lidar"]  # the reference's frame order
    assert model.gate_logits_by_object_score and model.lora_rank == RANK and model.lora_alpha == RANK
    assert (config.input.depth_encoding, config.input.lidar_encoding) == ("image", "image")
    assert len(segmenter.class_names) == 25 and segmenter.class_names[12] == "Sky"
    loaded = segmenter.model.sam.state_dict()  # LoRA merged into qkv at inference
    for key in ("sam_mask_decoder.mask_tokens.weight", "memory_attention.layers.0.self_attn.q_proj.weight",
                "sam_mask_decoder.output_hypernetworks_mlps.24.layers.2.weight", "obj_ptr_proj.layers.0.bias"):
        torch.testing.assert_close(loaded[key], state[f"sam.{key}"], rtol=0, atol=0)  # fmt: skip
    assert loaded["sam_mask_decoder.mask_tokens.weight"].shape == (26, 256)


def test_lora_is_the_same_function_where_hiera_widens(converted) -> None:
    from memsam_core.model import build_memorysam
    from memsam_core.model.build import read_memsam_checkpoint
    from memsam_core.model.convert import reference_config

    state, dst = converted
    model = build_memorysam(reference_config(RANK).model)
    model.load_state_dict(read_memsam_checkpoint(dst)["model"], strict=True)
    widened = []
    for index, block in enumerate(model.sam.image_encoder.trunk.blocks):
        lora = block.attn.qkv
        assert isinstance(lora, LoRAQKV)
        x = torch.randn(2, 3, 5, lora.qkv.in_features, generator=torch.Generator().manual_seed(index))
        with torch.no_grad():
            ours = lora(x)
            theirs = _reference_lora_qkv(state, f"image_encoder.trunk.blocks.{index}.attn.qkv", x)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        if lora.dim_out != lora.qkv.in_features:
            widened.append(index)
            dim = lora.qkv.in_features
            assert lora.q_b.weight[dim:].abs().max() == 0 and lora.v_b.weight[: lora.dim_out - dim].abs().max() == 0
    assert widened == [2, 5, 21]  # Hiera-B+ stage transitions


def test_converted_model_takes_deliver_pngs_not_metric_depth(converted) -> None:
    import numpy as np

    _, dst = converted
    segmenter, _ = load_segmenter(dst, device="cpu")
    rgb = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ModalityError, match="depth: .*uint8 pre-encoded image"):
        segmenter.segment({"rgb": rgb, "depth": np.ones((64, 64), np.float32)})


def test_wrong_files_are_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "sam2_hiera_base_plus.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1)}}, plain)  # an official SAM 2 file
    assert main([str(plain), str(tmp_path / "x.pt")]) == 2
    assert "not a MemorySAM state dict" in capsys.readouterr().err
    no_lora = tmp_path / "no_lora.pth"
    torch.save({"sam.image_encoder.trunk.pos_embed": torch.zeros(1)}, no_lora)
    with pytest.raises(CheckpointError, match="no LoRA keys"):
        from memsam_core.model.convert import convert_memorysam_checkpoint

        convert_memorysam_checkpoint(no_lora, tmp_path / "y.pt")


@pytest.mark.parametrize(
    ("given", "wrong"),
    [("rgb,thermal", "unknown thermal"), ("rgb,depth,depth", "each modality once"), ("depth,rgb", "rgb must be first")],
)
def test_a_wrong_modality_list_is_one_line_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str, wrong: str
) -> None:
    assert main([str(tmp_path / "absent.pth"), str(tmp_path / "x.pt"), "--modalities", given]) == 2
    err = capsys.readouterr().err
    assert wrong in err and err.count("\n") == 1 and "absent.pth" not in err  # the list is checked first
    assert not (tmp_path / "x.pt").exists()


def test_a_chosen_frame_order_is_recorded_and_the_segmenter_runs_it(converted) -> None:
    """The reference's img name is accepted; the order reaches the spec and the network's input frames."""
    import numpy as np

    from memsam_core.model.build import read_memsam_checkpoint

    _, default_dst = converted
    dst = default_dst.with_name("memorysam_rgb_lidar_depth.pt")
    src = default_dst.with_name("RGBDEL_epoch95_65.38.pth")
    assert main([str(src), str(dst), "--modalities", "img,lidar,depth"]) == 0
    data = read_memsam_checkpoint(dst)
    assert data["spec"]["model"]["modalities"] == ["rgb", "lidar", "depth"]
    assert data["reference_modals"] == ["img", "lidar", "depth"]  # as the reference's DATASET.MODALS spells them
    assert read_memsam_checkpoint(default_dst)["spec"]["model"]["modalities"] == ["rgb", "depth", "event", "lidar"]
    segmenter, config = load_segmenter(dst, device="cpu")
    assert config.model.modalities == ["rgb", "lidar", "depth"] and segmenter.model.num_modalities == 3
    seen = []
    segmenter.model.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    values = {"rgb": 0, "depth": 90, "lidar": 200}
    frames = {name: np.full((64, 64, 3), value, np.uint8) for name, value in values.items()}
    result = segmenter.segment_batch([frames], confidence=False)[0]
    assert result.modalities == ("rgb", "lidar", "depth") and result.labels.shape == (64, 64)
    means = [float(seen[0][0, k, :, 100:200, 100:200].mean()) for k in range(3)]  # input frames, in network order
    assert means[1] == pytest.approx(200 / 255, abs=1e-3) and means[2] == pytest.approx(90 / 255, abs=1e-3)
