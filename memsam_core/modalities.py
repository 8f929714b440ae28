"""Raw sensor arrays → 3-channel network tensors: the input contract, one documented rule per modality.

The contract is ``config.input`` (:class:`memsam_core.config.InputConfig`); every checkpoint stores it
and an array encoded another way is refused with a one-line :class:`ModalityError`, so a model never
silently sees inputs it was not trained on.

=========  ================================  ===========================================================
modality   raw array                         tensor channels (float32)
=========  ================================  ===========================================================
rgb        uint8 HxWx3 (RGB order)           ImageNet-normalised R, G, B
depth      ``metric``: float32 HxW metres    [clip(d / depth_max_m), log1p(d)/log1p(max), valid];
           (REP 118: NaN, ±Inf, <= 0         invalid pixels are 0 in all three
           invalid)
           ``image``: uint8 HxW[x3]          x / 255 (DELIVER's HHA PNGs, the MemorySAM recipe)
lidar      as depth (``metric``: sparse,     as depth with lidar_max_m, after an optional max-pool
           0/NaN = no return)                densification
event      uint8 HxWx3 (red = positive,      x / 255 (mono replicated to 3 channels)
           blue = negative) or HxW mono8
=========  ================================  ===========================================================

Resampling, the same in training (memsam_core.data.transforms) and inference: RGB and image-encoded
depth/LiDAR bilinear, metric depth/LiDAR nearest (invalid pixels and sparse returns stay as they are),
events ``input.event_resize`` (nearest by default: event counts are never blended). An event frame
smaller than RGB (DELIVER's ``eventlowres``) is first brought to the RGB size with nearest, as DELIVER's
loader does (:func:`nearest_to`). Nearest is pixel-centre ("nearest-exact", OpenCV's
``INTER_NEAREST_EXACT``) everywhere.
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


def resample_mode(modality: str, cfg: InputConfig) -> str:
    """``bilinear`` or ``nearest``: the contract's filter for ``modality`` (module docstring)."""
    if modality == "event":
        return cfg.event_resize
    if modality in ("depth", "lidar") and cfg.encoding(modality) == "metric":
        return "nearest"
    return "bilinear"


def _describe(modality: str, encoding: str) -> str:
    if encoding == "metric":
        return f"float32 HxW metres (input.{modality}_encoding: metric)"
    if modality in ("depth", "lidar"):
        return f"a uint8 pre-encoded image (input.{modality}_encoding: image)"
    return "a uint8 HxW or HxWx3 image"


def modality_to_tensor(
    modality: str,
    array: np.ndarray,
    size: int,
    input_cfg: InputConfig | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convert one raw array to a ``[3, size, size]`` float32 tensor under the input contract.

    ``out``: a ``[3, size, size]`` float32 tensor to write into (the engine's reused input buffer), which
    saves an allocation and a copy per modality at large sizes.
    """
    cfg = input_cfg or InputConfig()
    if not isinstance(array, np.ndarray):
        raise ModalityError(f"{modality}: expected a numpy array, got {type(array).__name__}")
    if array.size == 0 or min(array.shape[:2]) == 0:
        raise ModalityError(f"{modality}: empty image {array.shape}")
    encoding = cfg.encoding(modality)
    metric = encoding == "metric"
    if metric != (array.ndim == 2 and np.issubdtype(array.dtype, np.floating)) or (
        not metric and array.dtype != np.uint8
    ):
        raise ModalityError(
            f"{modality}: the model's input contract expects {_describe(modality, encoding)}, "
            f"got {array.dtype} {array.shape} (unsupported array dtype for this model)"
        )
    same_size = tuple(array.shape[:2]) == (size, size)
    target = out if same_size else None  # written in place; otherwise resized into ``out`` at the end
    mode = resample_mode(modality, cfg)
    if not metric:
        planar = torch.from_numpy(np.ascontiguousarray(_as_hwc_uint8(array, modality))).permute(2, 0, 1)
        # one converting copy to planar float32, then in-place scaling (no temporaries)
        x = torch.empty(planar.shape, dtype=torch.float32) if target is None else target
        x.copy_(planar)
        if modality == "rgb":
            x.sub_(_RGB_MEAN_255).div_(_RGB_STD_255)  # == (x / 255 - mean) / std
        else:
            x.mul_(1.0 / 255.0)
        return _resize(x, size, mode, out)
    metres = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    max_m = cfg.depth_max_m if modality == "depth" else cfg.lidar_max_m
    if modality == "lidar" and cfg.lidar_dilate_px > 0:
        metres = _densify_nearest(metres, cfg.lidar_dilate_px)
    return _resize(_metric_channels(metres, max_m, target), size, mode, out)


def _resize(x: torch.Tensor, size: int, mode: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear without antialiasing: OpenCV's ``INTER_LINEAR``, which the training transforms resize with (an
    antialiased downscale differs from it by up to 50 grey levels at edges)."""
    if x.shape[-2:] != (size, size):
        if mode == "bilinear":
            x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]
        else:
            x = F.interpolate(x[None], size=(size, size), mode="nearest-exact")[0]
    if out is None:
        return x.contiguous()
    if x is not out:
        out.copy_(x)
    return out


def nearest_to(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel-centre nearest resize of an HxW[xC] array (OpenCV's ``INTER_NEAREST_EXACT``, torch "nearest-exact")."""
    if array.shape[:2] == (height, width):
        return array
    rows = np.minimum(((np.arange(height) + 0.5) * array.shape[0] / height).astype(np.int64), array.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * array.shape[1] / width).astype(np.int64), array.shape[1] - 1)
    return np.ascontiguousarray(array[rows[:, None], cols[None, :]])


def check_ros_sensors(config, source: str) -> None:
    """ROS sensors give metric depth/LiDAR (``32FC1``/``16UC1``, REP 118); a checkpoint trained on pre-encoded
    images (the MemorySAM recipe's HHA/LiDAR PNGs) cannot run on them. Raises a one-line ConfigError."""
    from memsam_core.config import ConfigError

    for modality in ("depth", "lidar"):
        if modality in config.model.modalities and config.input.encoding(modality) != "metric":
            raise ConfigError(
                f"{source}: input.{modality}_encoding: the model was trained on {modality} as 8-bit images "
                f"(input.{modality}_encoding: image) but ROS sensors give metric {modality} (32FC1/16UC1); "
                "use a checkpoint trained with the metric encoding"
            )


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
    reference = frames.get("rgb") if "rgb" in present else None
    for index, modality in enumerate(present):
        array = frames[modality]
        if reference is not None and modality == "event" and array.shape[:2] != reference.shape[:2]:
            array = nearest_to(array, *reference.shape[:2])  # DELIVER's rule for low-resolution events
        modality_to_tensor(modality, array, size, input_cfg, out=out[index])
    return out, present
