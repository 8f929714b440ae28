"""Raw sensor arrays → 3-channel network tensors, one documented rule per modality.

Raw formats (what the ROS codec, the bag tools and the datasets produce):

=========  ==========================================  =============================================
modality   raw array                                   tensor channels (float32, before resizing)
=========  ==========================================  =============================================
rgb        uint8 HxWx3 (RGB order)                     ImageNet-normalised R, G, B
depth      float32 HxW metres (REP 118; NaN, ±Inf,     [clip(d / depth_max_m), log1p(d)/log1p(max),
           <= 0 invalid)                               valid]; invalid pixels are 0 in all three
lidar      float32 HxW metres, sparse (0/NaN = no      same as depth with lidar_max_m, after an
           return)                                     optional max-pool densification
event      uint8 HxWx3 (red = positive, blue =         x / 255 (mono replicated to 3 channels)
           negative events) or HxW mono8
any        uint8 HxWx3 / HxW "pre-encoded" image       x / 255 — how DELIVER ships depth (HHA), LiDAR
           (DELIVER PNGs)                              and events; same rule as the reference code
=========  ==========================================  =============================================

Each modality is resized to the square network input with the right filter (bilinear for images,
nearest for metric depth so invalid pixels and sparse LiDAR stay as they are).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from memsam_core.config import InputConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RGB_MEAN_255 = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255.0
_RGB_STD_255 = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255.0


class ModalityError(ValueError):
    """A raw modality array has the wrong dtype, rank or size."""


def _as_hwc_uint8(array: np.ndarray, modality: str) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ModalityError(f"{modality}: expected HxW or HxWx3 uint8 image, got shape {array.shape}")
    return array


def _metric_channels(depth: torch.Tensor, max_m: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """[H, W] metres → [3, H, W]: linear range, log range and validity (REP 118 invalid → 0).

    Written into one (optionally caller-owned) tensor with in-place ops: at 1024² this runs per message.
    """
    valid = torch.isfinite(depth) & (depth > 0)
    if out is None:
        out = torch.empty((3, *depth.shape), dtype=depth.dtype)
    clipped = torch.where(valid, depth, torch.zeros((), dtype=depth.dtype), out=out[0]).clamp_(max=max_m)
    torch.log1p(clipped, out=out[1]).mul_(1.0 / float(np.log1p(max_m)))
    clipped.mul_(1.0 / max_m)
    out[2].copy_(valid)
    return out


def _densify_nearest(metres: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow sparse LiDAR returns by ``radius`` px; where several overlap the nearest range wins."""
    valid = torch.isfinite(metres) & (metres > 0)
    far = torch.where(valid, metres, torch.full_like(metres, float("inf")))
    nearest = -F.max_pool2d(-far[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
    return torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))


def modality_to_tensor(
    modality: str,
    array: np.ndarray,
    size: int,
    input_cfg: InputConfig | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convert one raw array to a ``[3, size, size]`` float32 tensor (see the module table).

    ``out``: a ``[3, size, size]`` float32 tensor to write into (the engine's reused input buffer), which
    saves an allocation and a copy per modality at large sizes.
    """
    cfg = input_cfg or InputConfig()
    if not isinstance(array, np.ndarray):
        raise ModalityError(f"{modality}: expected a numpy array, got {type(array).__name__}")
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise ModalityError(f"{modality}: empty image {array.shape}")
    same_size = tuple(array.shape[:2]) == (size, size)
    target = out if same_size else None  # written in place; otherwise resized into ``out`` at the end
    if array.dtype == np.uint8:
        planar = torch.from_numpy(np.ascontiguousarray(_as_hwc_uint8(array, modality))).permute(2, 0, 1)
        # one converting copy to planar float32, then in-place scaling (no temporaries)
        x = torch.empty(planar.shape, dtype=torch.float32) if target is None else target
        x.copy_(planar)
        if modality == "rgb":
            x.sub_(_RGB_MEAN_255).div_(_RGB_STD_255)  # == (x / 255 - mean) / std
        else:
            x.mul_(1.0 / 255.0)
        return _resize(x, size, "bilinear", out)
    if modality in ("depth", "lidar") and array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
        metres = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        max_m = cfg.depth_max_m if modality == "depth" else cfg.lidar_max_m
        if modality == "lidar" and cfg.lidar_dilate_px > 0:
            metres = _densify_nearest(metres, cfg.lidar_dilate_px)
        return _resize(_metric_channels(metres, max_m, target), size, "nearest", out)
    raise ModalityError(
        f"{modality}: unsupported array dtype {array.dtype} / shape {array.shape} "
        "(rgb/event: uint8 HxW[x3]; depth/lidar: float32 HxW metres or uint8 image)"
    )


def _resize(x: torch.Tensor, size: int, mode: str, out: torch.Tensor | None = None) -> torch.Tensor:
    if x.shape[-2:] != (size, size):
        kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
        x = F.interpolate(x[None], size=(size, size), mode=mode, **kwargs)[0]
    if out is None:
        return x.contiguous()
    if x is not out:
        out.copy_(x)
    return out


def present_modalities(frames: Mapping[str, np.ndarray], modalities: list[str]) -> list[str]:
    """The configured modalities present in ``frames``, in configured (= frame) order."""
    present = [m for m in modalities if m in frames and frames[m] is not None]
    if not present:
        raise ModalityError(f"no configured modality present; configured {modalities}, got {sorted(frames)}")
    return present


def frames_to_tensor(
    frames: Mapping[str, np.ndarray],
    modalities: list[str],
    size: int,
    input_cfg: InputConfig | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Stack the present modalities in configured order → ``[M, 3, size, size]`` and their names.

    Missing modalities are simply absent frames (MemorySAM copes with any ordered subset). ``out``: an
    ``[M, 3, size, size]`` float32 tensor to fill instead of allocating one.
    """
    present = present_modalities(frames, modalities)
    shape = (len(present), 3, size, size)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32)
    elif tuple(out.shape) != shape or out.dtype != torch.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {tuple(out.shape)}")
    for index, modality in enumerate(present):
        modality_to_tensor(modality, frames[modality], size, input_cfg, out=out[index])
    return out, present
