"""Convert the MemorySAM repository's released weights into a memsam checkpoint.

The released DELIVER RGB-D-E-L model (``RGBDEL_epoch95_65.38.pth``, 65.38 mIoU on DELIVER val) is
``LoRA_Sam.state_dict()`` of the reference code (``torch.save(model.module.state_dict(), ...)``): keys
``sam.<SAM 2 key>``, with every Hiera block's fused qkv wrapped as

==============================================  ====================  =========================================
reference key (block i)                         shape                 memsam key
==============================================  ====================  =========================================
``...blocks.i.attn.qkv.qkv.{weight,bias}``      [3·dim_out, dim]      same
``...blocks.i.attn.qkv.linear_a_q.weight``      [r, dim]              ``...attn.qkv.q_a.weight``
``...blocks.i.attn.qkv.linear_b_q.weight``      [dim, r]              ``...attn.qkv.q_b.weight`` [dim_out, r]
``...blocks.i.attn.qkv.linear_a_v.weight``      [r, dim]              ``...attn.qkv.v_a.weight``
``...blocks.i.attn.qkv.linear_b_v.weight``      [dim, r]              ``...attn.qkv.v_b.weight`` [dim_out, r]
==============================================  ====================  =========================================

The reference adds the Q delta to qkv output channels ``[:dim]`` and the V delta to ``[-dim:]``, without
an alpha/r scale. Where Hiera widens (``dim_out = 2·dim``, blocks 2, 5 and 21 of Hiera-B+) that is the
first half of Q and the last half of V, so B_q is placed in rows ``[:dim]`` and B_v in rows
``[dim_out - dim:]`` of ours and the rest is zero: the same function. The mask decoder has 26 mask
tokens (25 classes + SAM's single-mask token), like ours. The model is SAM 2.0 Hiera-B+ at 1024 px, the
object-score gate on, and the reference's inputs: HHA and LiDAR PNGs / 255 (``input.*_encoding: image``),
events nearest to the RGB size then resized like images. Such a model runs on DELIVER files, not on ROS
metric depth/LiDAR.

The weights do not say which modalities they were trained on, nor in which order: the reference takes the
order from ``DATASET.MODALS`` and sets the frame count in code (``m`` in ``LoRA_Sam.forward``). So
``--modalities`` chooses them (comma list, frame order, RGB first; the reference's ``img`` may be written for
``rgb``); the default is the released RGB-D-E-L weights' ``DATASET.MODALS: [img, depth, event, lidar]``. The
converted checkpoint records them in its spec (``model.modalities``), so everything that loads it runs those
frames in that order.

    python -m memsam_core.model.convert RGBDEL_epoch95_65.38.pth memorysam_deliver_rgbdel.pt
    python -m memsam_core.model.convert RGBD.pth memorysam_rgbd.pt --modalities rgb,depth
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from memsam_core.classes import DELIVER_CLASSES, DELIVER_PALETTE
from memsam_core.config import MemSamConfig
from memsam_core.model.build import CheckpointError, _load_strict, build_memorysam, save_checkpoint

REFERENCE_MODALITIES: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
"""``DATASET.MODALS: ['img', 'depth', 'event', 'lidar']`` of the reference's RGB-D-E-L config."""
_LORA = re.compile(r"^(?P<block>.*\.attn\.qkv)\.linear_(?P<ab>[ab])_(?P<qv>[qv])\.weight$")
_REFERENCE_NAMES = {"img": "rgb"}
"""DATASET.MODALS spelling → memsam's; the other modalities are spelt alike."""


def parse_modalities(text: str) -> tuple[str, ...]:
    """``--modalities`` (comma list, frame order) → memsam names; unknown, repeated or RGB not first → ValueError."""
    names = tuple(_REFERENCE_NAMES.get(n, n) for n in (part.strip().lower() for part in text.split(",")) if n)
    if unknown := [n for n in names if n not in REFERENCE_MODALITIES]:
        raise ValueError(f"--modalities {text!r}: unknown {', '.join(unknown)}; known: rgb (img), depth, event, lidar")
    if len(set(names)) != len(names):
        raise ValueError(f"--modalities {text!r}: each modality once (the frame order)")
    if not names or names[0] != "rgb":
        raise ValueError(f"--modalities {text!r}: rgb must be first (frame 0 in every reference config)")
    return names


def reference_config(lora_rank: int = 4, modalities: Sequence[str] = REFERENCE_MODALITIES) -> MemSamConfig:
    """What the reference trains (memorysam.md §2, §10); by default the released DELIVER RGB-D-E-L model."""
    return MemSamConfig(
        model={
            "sam2_config": "sam2_hiera_b+",
            "image_size": 1024,
            "num_classes": len(DELIVER_CLASSES),
            "lora_rank": lora_rank,
            "lora_alpha": float(lora_rank),  # the reference adds B·A·x unscaled: alpha / rank = 1
            "modalities": list(modalities),
            "gate_logits_by_object_score": True,
        },
        input={"depth_encoding": "image", "lidar_encoding": "image", "event_resize": "bilinear"},
        classes={"names": list(DELIVER_CLASSES), "palette": [list(c) for c in DELIVER_PALETTE]},
    )


def _unwrap(data: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a reference file: plain, or ``{"model_state_dict": ...}`` (its *_checkpoint.pth)."""
    if isinstance(data, dict) and isinstance(data.get("model_state_dict"), dict):
        data = data["model_state_dict"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: not a MemorySAM state dict (expected a dict of tensors)")
    state = {k.removeprefix("module."): v for k, v in data.items()}
    if not any(k.startswith("sam.") for k in state):
        raise CheckpointError(f"{path}: no 'sam.*' keys; not a MemorySAM LoRA_Sam state dict")
    if not any(_LORA.match(k) for k in state):
        raise CheckpointError(f"{path}: no LoRA keys (attn.qkv.linear_a_q ...); not a MemorySAM LoRA_Sam state dict")
    return state


def convert_reference_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference ``LoRA_Sam`` keys → memsam ``MemorySAM`` keys, LoRA B zero-padded where Hiera widens."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _LORA.match(key)
        if match is None:
            out[key] = value
            continue
        block, ab, qv = match["block"], match["ab"], match["qv"]
        name = f"{block}.{qv}_{ab}.weight"
        if ab == "a":
            out[name] = value
            continue
        dim_out = state[f"{block}.qkv.weight"].shape[0] // 3
        dim, rank = value.shape
        padded = value.new_zeros(dim_out, rank)
        if qv == "q":
            padded[:dim] = value  # reference: qkv[..., :dim] += B_q A_q x
        else:
            padded[dim_out - dim :] = value  # reference: qkv[..., -dim:] += B_v A_v x
        out[name] = padded
    return out


def convert_memorysam_checkpoint(
    src: str | Path, dst: str | Path, modalities: Sequence[str] = REFERENCE_MODALITIES
) -> MemSamConfig:
    """Read the reference file, check it fits the reference model strictly, write a memsam checkpoint whose spec
    records ``modalities`` (frame order)."""
    try:
        data = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt archives
        raise CheckpointError(f"{src}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    state = convert_reference_state(_unwrap(data, src))
    rank = next(v.shape[0] for k, v in state.items() if k.endswith(".q_a.weight"))
    config = reference_config(rank, modalities)
    model = build_memorysam(config.model)
    _load_strict(model, state, src, "the MemorySAM DELIVER model (SAM 2.0 Hiera-B+, 25 classes)")
    reference_modals = [{v: k for k, v in _REFERENCE_NAMES.items()}.get(m, m) for m in modalities]
    save_checkpoint(dst, model, config, converted_from=str(src), source="Chenfei-Liao/MemorySAM LoRA_Sam",
                    reference_modals=reference_modals)  # fmt: skip
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m memsam_core.model.convert SRC.pth out.pt [--modalities rgb,depth,event,lidar]``; returns 2 on a
    bad file or modality list."""
    parser = argparse.ArgumentParser(prog="memsam-convert-memorysam", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="the MemorySAM repository's .pth (LoRA_Sam state dict)")
    parser.add_argument("dst", help="memsam checkpoint to write")
    parser.add_argument("--modalities", default=",".join(REFERENCE_MODALITIES),
                        help="the frames the weights were trained on, in order, RGB first (the reference's "
                        "DATASET.MODALS; default: the released RGB-D-E-L weights' rgb,depth,event,lidar)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        config = convert_memorysam_checkpoint(args.src, args.dst, parse_modalities(args.modalities))
    except (CheckpointError, ValueError) as err:
        print(f"memsam-convert-memorysam: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {config.model.sam2_config} {config.model.image_size} px, "
          f"modalities {'/'.join(config.model.modalities)}, object-score gate on")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
