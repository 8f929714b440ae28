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


def _metric_channels(depth: torch.Tensor, max_m: float) -> torch.Tensor:
    """[H, W] metres → [3, H, W]: linear range, log range and validity (REP 118 invalid → 0)."""
    valid = torch.isfinite(depth) & (depth > 0)
    d = torch.where(valid, depth, torch.zeros_like(depth)).clamp(max=max_m)
    linear = d / max_m
    log = torch.log1p(d) / float(np.log1p(max_m))
    return torch.stack([linear, log, valid.to(depth.dtype)], dim=0)


def _densify_nearest(metres: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow sparse LiDAR returns by ``radius`` px; where several overlap the nearest range wins."""
    valid = torch.isfinite(metres) & (metres > 0)
    far = torch.where(valid, metres, torch.full_like(metres, float("inf")))
    nearest = -F.max_pool2d(-far[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
    return torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))


def modality_to_tensor(
    modality: str, array: np.ndarray, size: int, input_cfg: InputConfig | None = None
) -> torch.Tensor:
    """Convert one raw array to a ``[3, size, size]`` float32 tensor (see the module table)."""
    cfg = input_cfg or InputConfig()
    if not isinstance(array, np.ndarray):
        raise ModalityError(f"{modality}: expected a numpy array, got {type(array).__name__}")
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise ModalityError(f"{modality}: empty image {array.shape}")
    if array.dtype == np.uint8:
        image = torch.from_numpy(np.ascontiguousarray(_as_hwc_uint8(array, modality)))
        x = image.permute(2, 0, 1).float().div_(255.0)
        if modality == "rgb":
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            x = (x - mean) / std
        return _resize(x, size, "bilinear")
    if modality in ("depth", "lidar") and array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
        metres = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        max_m = cfg.depth_max_m if modality == "depth" else cfg.lidar_max_m
        if modality == "lidar" and cfg.lidar_dilate_px > 0:
            metres = _densify_nearest(metres, cfg.lidar_dilate_px)
        return _resize(_metric_channels(metres, max_m), size, "nearest")
    raise ModalityError(
        f"{modality}: unsupported array dtype {array.dtype} / shape {array.shape} "
        "(rgb/event: uint8 HxW[x3]; depth/lidar: float32 HxW metres or uint8 image)"
    )


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    return F.interpolate(x[None], size=(size, size), mode=mode, **kwargs)[0]


def frames_to_tensor(
    frames: Mapping[str, np.ndarray], modalities: list[str], size: int, input_cfg: InputConfig | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Stack the present modalities in configured order → ``[M, 3, size, size]`` and their names.

    Missing modalities are simply absent frames (MemorySAM copes with any ordered subset).
    """
    present = [m for m in modalities if m in frames and frames[m] is not None]
    if not present:
        raise ModalityError(f"no configured modality present; configured {modalities}, got {sorted(frames)}")
    tensors = [modality_to_tensor(m, frames[m], size, input_cfg) for m in present]
    return torch.stack(tensors, dim=0), present
