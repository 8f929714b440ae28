"""Builders: SAM 2 from the ``sam2`` package's configs → MemorySAM (semantic decoder + LoRA + freezing),
and loading of official SAM 2 checkpoints and of memsam checkpoints with clear errors.

A memsam checkpoint describes its own model (``spec``): SAM 2 config, image size, classes, LoRA,
modalities in frame order, the object-score gate, the input contract (``config.input``) and the class
names and palette. :func:`resolve_config` makes the effective config from it: a config field left at
its default takes the checkpoint's value, a field set to something else is a one-line error naming both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from sam2.build_sam import build_sam2
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam2_base import SAM2Base
from sam2.modeling.sam2_utils import MLP
from torch import nn

from memsam_core.config import (
    INPUT_CONTRACT_VERSION,
    ConfigError,
    InputConfig,
    MemSamConfig,
    ModelConfig,
    config_from_dict,
)
from memsam_core.model.lora import add_lora_to_hiera
from memsam_core.model.memorysam import MemorySAM

LOG = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "memsam"
CHECKPOINT_VERSION = 2
"""1: model + full config; 2: adds ``spec``, the model's own description (input contract included)."""
TEMPORAL_CHECKPOINT_VERSION = 3
"""3: a version-2 checkpoint whose model attends to past instants (``model.temporal_memory`` ≥ 1): written only
then, so a memsam from before memory across time refuses it instead of running it without its memory."""
_CLASS_SPECIFIC = ("mask_tokens.", "output_hypernetworks_mlps.", "iou_prediction_head.")
SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("sam2_config", "image_size", "num_classes", "lora_rank", "lora_alpha", "modalities",
              "gate_logits_by_object_score", "temporal_memory"),
    "input": tuple(InputConfig.model_fields),
    "classes": ("names", "palette"),
}  # fmt: skip
"""Config fields a checkpoint owns: what the weights were trained for. Everything else is run time."""
SPEC_DEFAULTS: dict[tuple[str, str], Any] = {("model", "temporal_memory"): 0}
"""What a checkpoint written before a spec field existed was trained with (memory across time came later: K = 0)."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the configured model."""


def build_sam2_base(cfg: ModelConfig) -> SAM2Base:
    """Instantiate SAM 2 (random weights) at ``cfg.image_size``; RoPE tables sized for it up front."""
    feat = cfg.image_size // 16
    overrides = [
        f"++model.image_size={cfg.image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]
    return build_sam2(
        cfg.sam2_config_path, ckpt_path=None, device="cpu", mode="eval",
        hydra_overrides_extra=overrides, apply_postprocessing=False,
    )  # fmt: skip


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt archives
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{path}: not a SAM 2 / memsam checkpoint (expected a dict with a 'model' state dict)")
    return data


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong_shape:
        details = []
        if wrong_shape:
            details.append(f"{len(wrong_shape)} shape mismatches, e.g. {wrong_shape[0]}")
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"{path}: does not fit {what} ({'; '.join(details)}); is it for another model size or class count?"
        )
    module.load_state_dict(state, strict=True)


def load_sam2_checkpoint(sam: SAM2Base, path: str | Path, cfg: ModelConfig) -> None:
    """Load an official ``sam2*_hiera_*.pt`` (``{"model": state}``) strictly into a stock SAM 2."""
    _load_strict(sam, _read_checkpoint(path)["model"], path, f"SAM 2 {cfg.sam2_config}")


def semantic_mask_decoder(decoder: MaskDecoder, num_classes: int) -> MaskDecoder:
    """A copy of SAM 2's decoder with ``num_classes`` mask tokens; class-specific parts fresh.

    As in MemorySAM, mask tokens, hypernetwork MLPs and the IoU head are new (the IoU head is then
    frozen); the two-way transformer, upscaling, high-res convs and object-score head are kept.
    """
    iou_head: MLP = decoder.iou_prediction_head
    semantic = MaskDecoder(
        transformer_dim=decoder.transformer_dim,
        transformer=decoder.transformer,
        num_multimask_outputs=num_classes,
        iou_head_depth=iou_head.num_layers,
        iou_head_hidden_dim=iou_head.layers[0].out_features,
        use_high_res_features=decoder.use_high_res_features,
        iou_prediction_use_sigmoid=iou_head.sigmoid_output,
        pred_obj_scores=decoder.pred_obj_scores,
        pred_obj_scores_mlp=isinstance(getattr(decoder, "pred_obj_score_head", None), MLP),
        use_multimask_token_for_obj_ptr=decoder.use_multimask_token_for_obj_ptr,
    )
    shared = {k: v for k, v in decoder.state_dict().items() if not k.startswith(_CLASS_SPECIFIC)}
    result = semantic.load_state_dict(shared, strict=False)
    assert not result.unexpected_keys and all(k.startswith(_CLASS_SPECIFIC) for k in result.missing_keys)
    for layer in semantic.iou_prediction_head.layers:
        nn.init.kaiming_normal_(layer.weight, mode="fan_in")
        nn.init.zeros_(layer.bias)
    return semantic


def set_trainable(model: MemorySAM, train_memory: bool = True) -> None:
    """Freeze as the final official recipe: trunk, neck, prompt encoder, obj-pointer MLP, IoU and
    object-score heads frozen; LoRA, decoder, memory attention/encoder and SAM 2 embeddings train."""
    sam = model.sam
    for param in sam.parameters():
        param.requires_grad_(False)
    for name, param in sam.image_encoder.named_parameters():
        if ".q_a." in name or ".q_b." in name or ".v_a." in name or ".v_b." in name:
            param.requires_grad_(True)
    decoder = sam.sam_mask_decoder
    for name, param in decoder.named_parameters():
        if not name.startswith(("iou_prediction_head.", "pred_obj_score_head.")):
            param.requires_grad_(True)
    for module in (sam.memory_attention, sam.memory_encoder):
        module.requires_grad_(train_memory)
    for name in ("maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial"):
        param = getattr(sam, name, None)
        if isinstance(param, nn.Parameter):
            param.requires_grad_(True)
    for name in ("mask_downsample", "obj_ptr_tpos_proj"):
        module = getattr(sam, name, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(True)


def build_memorysam(cfg: ModelConfig, sam2_checkpoint: str | Path | None = None, seed: int = 0) -> MemorySAM:
    """Build MemorySAM; deterministic for a given ``seed`` (DDP ranks and tests agree without a broadcast)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam2_base(cfg)
        if sam2_checkpoint:
            load_sam2_checkpoint(sam, sam2_checkpoint, cfg)
        sam.sam_mask_decoder = semantic_mask_decoder(sam.sam_mask_decoder, cfg.num_classes)
        if cfg.lora_rank > 0:
            add_lora_to_hiera(sam.image_encoder.trunk, cfg.lora_rank, cfg.lora_alpha)
        model = MemorySAM(sam, cfg.num_classes, cfg.gate_logits_by_object_score, num_modalities=len(cfg.modalities))
    if cfg.temporal_memory > model.max_temporal_memory:
        raise ConfigError(
            f"model.temporal_memory: {cfg.temporal_memory} past instants, but {cfg.sam2_config} has "
            f"{model.max_temporal_memory} non-conditioning temporal slots (num_maskmem - 1)"
        )
    set_trainable(model, cfg.train_memory)
    return model.eval()


# ---------------------------------------------------------------------- memsam checkpoints
def model_spec(config: MemSamConfig) -> dict[str, Any]:
    """The part of ``config`` that describes the trained model (:data:`SPEC_FIELDS`), as plain data."""
    data = config.to_dict()
    spec: dict[str, Any] = {section: {f: data[section][f] for f in fields} for section, fields in SPEC_FIELDS.items()}
    spec["input_contract_version"] = INPUT_CONTRACT_VERSION
    return spec


def save_checkpoint(path: str | Path, model: MemorySAM, config: MemSamConfig | dict[str, Any], **extra: Any) -> None:
    """Write ``{"format", "version", "model", "config", "spec", **extra}`` atomically (tmp file + rename).

    ``spec`` (the model's own description) is derived from ``config`` when it is a full memsam config.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(config, MemSamConfig):
        config = config.to_dict()
    if "spec" not in extra and isinstance(config.get("model"), dict):
        extra["spec"] = model_spec(config_from_dict(config, str(path)))
    temporal = int(((extra.get("spec") or {}).get("model") or {}).get("temporal_memory", 0))
    version = TEMPORAL_CHECKPOINT_VERSION if temporal else CHECKPOINT_VERSION
    payload = {"format": CHECKPOINT_FORMAT, "version": version, "model": model.state_dict(),
               "config": config, **extra}  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def read_memsam_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a memsam checkpoint (refusing an official SAM 2 one with advice)."""
    data = _read_checkpoint(path)
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: this is a plain SAM 2 checkpoint, not a trained memsam one; use it as "
            "train.init_checkpoint to start training from it"
        )
    if int(data.get("version", 1)) > TEMPORAL_CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {data['version']} is newer than this memsam "
            f"({TEMPORAL_CHECKPOINT_VERSION})"
        )
    return data


def checkpoint_spec(data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's model description; version-1 checkpoints get one from their stored config.

    Version 1 had no explicit input contract: its training fed DELIVER's HHA/LiDAR PNGs / 255 and the
    synthetic set metres, and the engine resized events bilinearly, so that is what is filled in.
    """
    if "spec" in data:
        return data["spec"]
    stored = data.get("config") or {}
    if not isinstance(stored.get("model"), dict):
        raise CheckpointError(f"{path}: memsam checkpoint without a model description (no 'spec', no 'config')")
    legacy_input = dict(stored.get("input") or {})
    encoding = "image" if (stored.get("data") or {}).get("dataset") == "deliver" else "metric"
    legacy_input.setdefault("depth_encoding", encoding)
    legacy_input.setdefault("lidar_encoding", encoding)
    legacy_input.setdefault("event_resize", "bilinear")
    try:
        config = config_from_dict({k: stored[k] for k in ("model", "classes") if k in stored} | {"input": legacy_input},
                                  f"{path} (stored config)")  # fmt: skip
    except ConfigError as err:
        raise CheckpointError(str(err).splitlines()[0]) from None
    LOG.info("%s: version-1 checkpoint; input contract inferred: %s", path, config.input.model_dump())
    return model_spec(config)


def _ordered_subset(subset: list[str], full: list[str]) -> bool:
    return bool(subset) and all(m in full for m in subset) and [m for m in full if m in subset] == list(subset)


def resolve_config(spec: dict[str, Any], config: MemSamConfig, path: str | Path, source: str) -> MemSamConfig:
    """The effective config for a checkpoint: its spec, plus ``config``'s run-time settings.

    A spec field that ``config`` leaves at its default takes the checkpoint's value; one set explicitly
    to another value is a one-line :class:`ConfigError` naming both (``model.image_size: config says 512,
    checkpoint X was trained with 128``). ``model.modalities`` may name a subset of the checkpoint's in
    the same order (a rig without one of the trained sensors); ``model.temporal_memory`` a K up to the trained
    one (the model attends to fewer past instants, as it learnt to after every reset), never more (a K = 0
    checkpoint has never seen a past instant).
    """
    data = config.to_dict()
    for section, fields in SPEC_FIELDS.items():
        current_section = getattr(config, section)
        explicit = current_section.model_fields_set
        stored_section = spec.get(section, {})
        for field in fields:
            if field not in stored_section and (section, field) not in SPEC_DEFAULTS:
                continue
            stored = stored_section.get(field, SPEC_DEFAULTS.get((section, field)))
            current = data[section][field]
            if field in explicit and current != stored:
                if section == "model" and field == "modalities" and _ordered_subset(current, stored):
                    continue
                if section == "model" and field == "temporal_memory" and 0 <= current < stored:
                    continue  # fewer past instants than trained: what the model sees after a reset, for a while
                raise ConfigError(
                    f"{source}: {section}.{field}: config says {current!r}, checkpoint {path} was trained "
                    f"with {stored!r}"
                )
            data[section][field] = stored
    if data["sync"]["reference"] not in data["model"]["modalities"]:
        data["sync"]["reference"] = data["model"]["modalities"][0]
    data["sync"]["required"] = [m for m in data["sync"]["required"] if m in data["model"]["modalities"]]
    return config_from_dict(data, f"{source} + {path}")


def check_spec(spec: dict[str, Any], config: MemSamConfig, path: str | Path, source: str) -> None:
    """Every spec field of ``config`` must equal the checkpoint's (resuming training: nothing may drift)."""
    data = config.to_dict()
    for section, fields in SPEC_FIELDS.items():
        for field in fields:
            stored = spec.get(section, {}).get(field, SPEC_DEFAULTS.get((section, field), data[section][field]))
            if stored != data[section][field]:
                raise ConfigError(
                    f"{source}: {section}.{field}: config says {data[section][field]!r}, checkpoint {path} was "
                    f"trained with {stored!r}"
                )


def checkpoint_config(path: str | Path, config: MemSamConfig, source: str = "config") -> MemSamConfig:
    """The effective config for a checkpoint (its spec + ``config``'s run-time settings), without building the model."""
    return resolve_config(checkpoint_spec(read_memsam_checkpoint(path), path), config, path, source)


def load_for_config(
    path: str | Path, config: MemSamConfig, source: str = "config"
) -> tuple[MemorySAM, MemSamConfig, dict[str, Any]]:
    """Checkpoint + run-time config → (model with the weights loaded strictly, effective config, payload)."""
    data = read_memsam_checkpoint(path)
    effective = resolve_config(checkpoint_spec(data, path), config, path, source)
    model = build_memorysam(effective.model)
    what = f"memsam {effective.model.sam2_config} with {effective.model.num_classes} classes"
    _load_strict(model, data["model"], path, what)
    return model, effective, data


def load_memsam(
    path: str | Path, cfg: ModelConfig | None = None, source: str = "config"
) -> tuple[MemorySAM, dict[str, Any]]:
    """Build the checkpoint's model and load its weights (strict); returns model + payload.

    ``cfg``: fields set in it must agree with the checkpoint (one-line ConfigError otherwise); ``None``
    builds from the checkpoint alone. ``payload["effective_config"]`` is the resolved MemSamConfig.
    """
    given = MemSamConfig() if cfg is None else MemSamConfig.model_construct(model=cfg)  # classes come from the spec
    model, effective, data = load_for_config(path, given, source)
    data["effective_config"] = effective
    return model, data
