"""DELIVER loader (memorysam.md §7) returning the raw multimodal format shared with the synthetic data.

Layout: ``<root>/{img,hha,depth,event,lidar,semantic}/<condition>/<split>/<sequence>/<frame>_<mod>_front.png``.
Samples are indexed from ``img/*/<split>/*/*_rgb_front.png``; companions are derived like the reference
code (``img``→``hha`` or ``depth`` with ``_rgb``→``_depth``, →``lidar``/``_lidar``, →``event``/``_event``,
→``semantic``/``_semantic``), but only the folder right under ``root`` and the file-name suffix are
replaced, so a root path that happens to contain "/img" or "_rgb" is safe.

What the files contain (DELIVER README and its loader ``semseg/datasets/deliver.py``; DELIVER is rendered
in CARLA) and what this loader returns under the input contract (``config.input``):

=============  ===============================================  ============================================
folder         file content                                     returned
=============  ===============================================  ============================================
``img``        8-bit RGB(A)                                     uint8 HxWx3 RGB
``depth``      CARLA depth camera, 24-bit in R, G, B:           ``metric``: float32 metres
               (R + 256 G + 65536 B) / (2^24 - 1) × 1000 m      (far plane 1000 m = no return → NaN)
``hha``        HHA from the depth (README: Depth2HHA-python),   ``image``: uint8 HxWx3 (the MemorySAM and
               8-bit 3 channels                                 CMNeXt "depth")
``lidar``      projected LiDAR, 8-bit (1, 3 or 4 channels);     ``metric``: float32 metres = value ×
               the scale is not documented (DELIVER issue       ``lidar_m_per_level`` (0 = no return);
               #21, open)                                       ``image``: uint8 HxWx3
``event``      8-bit event image, lower resolution in           uint8 HxWx3, size as stored
               ``eventlowres`` (the loader upsamples nearest)
``semantic``   class id + 1 in R (0 = unlabeled)                uint8 train ids, 255 = ignore
=============  ===============================================  ============================================

A file that is not in the encoding the contract needs (e.g. a 1-channel or 16-bit ``depth`` PNG, a
LiDAR PNG whose channels differ) raises :class:`DatasetError` naming the path and the expectation.

Errors: a missing or unreadable file raises :class:`DatasetError` naming the path.  With
``on_error="skip"`` samples with missing companions are dropped at index time (one warning listing the
count and the first paths) and a sample that fails to decode is replaced by the next readable one
(a warning names the path; the bad index is remembered so it costs one failed read per process).

``python -m memsam_core.data.deliver ROOT`` prints what a DELIVER copy's files actually contain (dtype,
channels, value range per folder) to check the assumptions above on real data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from torch.utils.data import Dataset

from memsam_core.classes import DELIVER_CLASSES, IGNORE_INDEX

log = logging.getLogger(__name__)

DELIVER_CONDITIONS: tuple[str, ...] = ("cloud", "fog", "night", "rain", "sun")
DELIVER_CASES: tuple[str, ...] = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
DELIVER_MODALITIES: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
NORMAL_CASE = "normal"

# file kind → (top-level folder, file-name tag); MemorySAM / CMNeXt read "depth" from hha/
_FOLDERS: dict[str, tuple[str, str]] = {
    "rgb": ("img", "rgb"),
    "depth": ("depth", "depth"),
    "hha": ("hha", "depth"),
    "lidar": ("lidar", "lidar"),
    "event": ("event", "event"),
    "labels": ("semantic", "semantic"),
}
_SUFFIX = "_front.png"
CARLA_FAR_M = 1000.0
"""CARLA's depth camera range: the 24-bit code 2^24 - 1 is the far plane (sky), i.e. no return."""
_CARLA_MAX_CODE = 2**24 - 1

Transform = Callable[[dict[str, np.ndarray], np.ndarray, np.random.Generator], tuple[dict[str, np.ndarray], np.ndarray]]


class DatasetError(RuntimeError):
    """A dataset file is missing or unreadable; ``path`` names it."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)


@dataclass(frozen=True)
class DeliverItem:
    """One indexed sample: where it lives and what it is."""

    rgb_path: Path
    condition: str
    split: str
    sequence: str
    frame: str
    case: str

    def path(self, root: Path, modality: str) -> Path:
        return companion_path(root, self.rgb_path, modality)


def companion_path(root: str | Path, rgb_path: str | Path, modality: str) -> Path:
    """Path of a file kind ("rgb", "depth", "hha", "lidar", "event" or "labels") for an ``img/`` RGB path."""
    if modality not in _FOLDERS:
        raise ValueError(f"unknown DELIVER modality {modality!r}; known: {sorted(_FOLDERS)}")
    root, rgb_path = Path(root), Path(rgb_path)
    rel = rgb_path.relative_to(root)
    if rel.parts[0] != "img" or not rel.name.endswith("_rgb" + _SUFFIX):
        raise ValueError(f"not a DELIVER RGB path (img/.../*_rgb{_SUFFIX}): {rgb_path}")
    folder, tag = _FOLDERS[modality]
    name = rel.name[: -len("_rgb" + _SUFFIX)] + f"_{tag}{_SUFFIX}"
    return root.joinpath(folder, *rel.parts[1:-1], name)


def parse_case(sequence: str) -> str:
    """Sensor-failure case from a sequence folder name (``MAP_10_point1_underexposure``), else "normal"."""
    for case in DELIVER_CASES:
        if sequence.endswith("_" + case):
            return case
    return NORMAL_CASE


def decode_labels(semantic: np.ndarray, num_classes: int = len(DELIVER_CLASSES)) -> np.ndarray:
    """R channel (RGB order) → train ids: raw 1..num_classes → 0..num_classes-1; 0, 255 and others → 255.

    The reference maps 255→0 then subtracts 1 with uint8 wrap-around; values above ``num_classes``
    (not produced by DELIVER) become ignore here instead of bogus class ids.
    """
    red = semantic if semantic.ndim == 2 else semantic[..., 0]
    red = red.astype(np.int16)
    return np.where((red >= 1) & (red <= num_classes), red - 1, IGNORE_INDEX).astype(np.uint8)


def encode_labels(labels: np.ndarray, num_classes: int = len(DELIVER_CLASSES)) -> np.ndarray:
    """Inverse of :func:`decode_labels`: train id → raw R value (id + 1), ignore → 0."""
    labels = labels.astype(np.int16)
    return np.where(labels < num_classes, labels + 1, 0).astype(np.uint8)


def read_raw_png(path: Path) -> np.ndarray:
    """A PNG as stored (8 or 16 bit, 1-4 channels; colour in RGB(A) order)."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # some truncated files raise instead of returning None
        raise DatasetError(f"cannot decode {path}: {exc}", path) from exc
    if image is None:
        reason = "missing" if not path.exists() else "unreadable or corrupt"
        raise DatasetError(f"{reason} image file: {path}", path)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return image


def read_png(path: Path, *, labels: bool = False) -> np.ndarray:
    """Read a PNG as uint8: images → HxWx3 RGB, label PNGs → HxWx3 RGB or HxW as stored."""
    image = read_raw_png(path)
    if image.dtype == np.uint16:  # 16-bit PNGs: keep the high byte, like an 8-bit export
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DatasetError(f"unsupported dtype {image.dtype} in {path}", path)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 2 and not labels:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


def decode_carla_depth(image: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """CARLA's 24-bit depth PNG (RGB order) → float32 metres; the far plane (sky) → NaN (no return)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DatasetError(
            f"{path}: expected CARLA's 24-bit depth encoding (8-bit RGB, metres = (R + 256 G + 65536 B) / "
            f"(2^24 - 1) x 1000), got {image.dtype} {image.shape}; set input.depth_encoding: image to train on hha/",
            path,
        )
    rgb = image[..., :3].astype(np.uint32)
    code = rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)
    metres = (code.astype(np.float64) * (CARLA_FAR_M / _CARLA_MAX_CODE)).astype(np.float32)
    metres[code >= _CARLA_MAX_CODE] = np.nan
    return metres


def encode_carla_depth(metres: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_carla_depth`: metres (NaN/±Inf/<= 0/>= 1000 = no return) → uint8 HxWx3 RGB."""
    valid = np.isfinite(metres) & (metres > 0) & (metres < CARLA_FAR_M)
    code = np.where(valid, np.round(np.where(valid, metres, 0) / CARLA_FAR_M * _CARLA_MAX_CODE), _CARLA_MAX_CODE)
    code = np.minimum(code, _CARLA_MAX_CODE).astype(np.uint32)
    return np.stack([code & 255, (code >> 8) & 255, code >> 16], -1).astype(np.uint8)


def decode_lidar_png(image: np.ndarray, m_per_level: float, path: Path | str = "<array>") -> np.ndarray:
    """8-bit LiDAR PNG (1 channel, or 3/4 equal channels) → float32 metres = value × ``m_per_level``, 0 = no return."""
    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: expected an 8-bit LiDAR PNG, got {image.dtype}", path)
    if image.ndim == 3:
        gray = image[..., 0]
        if any(not np.array_equal(gray, image[..., c]) for c in range(1, min(image.shape[2], 3))):
            raise DatasetError(
                f"{path}: LiDAR PNG channels differ; data.deliver_lidar_m_per_level assumes one grey range "
                "value per pixel (set input.lidar_encoding: image to use the PNG as an image)",
                path,
            )
        image = gray
    return image.astype(np.float32) * np.float32(m_per_level)


def encode_lidar_png(metres: np.ndarray, m_per_level: float) -> np.ndarray:
    """Inverse of :func:`decode_lidar_png`: returns as grey levels (1..255, rounded), no return → 0."""
    valid = np.isfinite(metres) & (metres > 0)
    levels = np.clip(np.round(np.where(valid, metres, 0) / m_per_level), 1, 255)
    return np.where(valid, levels, 0).astype(np.uint8)


class DeliverDataset(Dataset):
    """DELIVER samples ``{"frames", "labels", "meta"}`` in the raw multimodal format.

    ``cases`` keeps samples whose condition (``sun``…) or failure case (``motionblur``… or
    ``normal``) is listed — the reference's substring filter on the path, made exact.
    ``transform(frames, labels, rng)`` gets a Generator seeded by ``(aug_seed, epoch, index)``.
    ``depth_encoding`` / ``lidar_encoding`` follow the input contract (module table): ``metric`` decodes
    ``depth/`` and ``lidar/`` to metres, ``image`` returns ``hha/`` and ``lidar/`` as 8-bit images.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        modalities: Sequence[str] = DELIVER_MODALITIES,
        cases: Iterable[str] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        *,
        transform: Transform | None = None,
        aug_seed: int = 0,
        num_classes: int = len(DELIVER_CLASSES),
        depth_encoding: Literal["metric", "image"] = "metric",
        lidar_encoding: Literal["metric", "image"] = "metric",
        lidar_m_per_level: float = 1.0,
    ) -> None:
        if {depth_encoding, lidar_encoding} - {"metric", "image"}:
            raise ValueError(f"encodings must be 'metric' or 'image', got {depth_encoding!r}, {lidar_encoding!r}")
        self.encodings = {"depth": depth_encoding, "lidar": lidar_encoding}
        self.lidar_m_per_level = lidar_m_per_level
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if unknown := set(modalities) - set(DELIVER_MODALITIES):
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {DELIVER_MODALITIES}")
        self.cases = None if cases is None else tuple(cases)
        if self.cases is not None and (
            unknown := set(self.cases) - set(DELIVER_CONDITIONS) - set(DELIVER_CASES) - {NORMAL_CASE}
        ):
            raise ValueError(f"unknown cases {sorted(unknown)}; use conditions, failure cases or 'normal'")
        self.root, self.split, self.modalities = Path(root), split, tuple(modalities)
        self.on_error, self.transform, self.aug_seed, self.num_classes = on_error, transform, aug_seed, num_classes
        self.epoch = 0
        self.items = self._index()
        self._bad: set[int] = set()

    def _index(self) -> list[DeliverItem]:
        pattern = f"img/*/{self.split}/*/*_rgb{_SUFFIX}"
        items = []
        for path in sorted(self.root.glob(pattern)):
            condition, _, sequence = path.parts[-4:-1]
            item = DeliverItem(path, condition, self.split, sequence, path.name.split("_", 1)[0], parse_case(sequence))
            if self.cases is None or item.condition in self.cases or item.case in self.cases:
                items.append(item)
        if not items:
            raise DatasetError(f"no DELIVER samples matching {self.root / pattern} (cases={self.cases})", self.root)
        if self.on_error == "skip":
            missing = [(i, p) for i, item in enumerate(items) for p in self._paths(item).values() if not p.exists()]
            if missing:
                bad = {i for i, _ in missing}
                log.warning("skipping %d DELIVER samples with missing files, e.g. %s", len(bad), missing[0][1])
                items = [item for i, item in enumerate(items) if i not in bad]
            if not items:
                raise DatasetError(f"every DELIVER sample under {self.root} has missing files", self.root)
        return items

    def _file_kind(self, modality: str) -> str:
        return "hha" if modality == "depth" and self.encodings["depth"] == "image" else modality

    def _paths(self, item: DeliverItem) -> dict[str, Path]:
        return {m: item.path(self.root, self._file_kind(m)) for m in (*self.modalities, "labels")}

    def _read(self, modality: str, path: Path) -> np.ndarray:
        if self.encodings.get(modality) != "metric":
            return read_png(path)
        if modality == "depth":
            return decode_carla_depth(read_raw_png(path), path)
        return decode_lidar_png(read_raw_png(path), self.lidar_m_per_level, path)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws per epoch while staying reproducible."""
        self.epoch = epoch

    def load(self, index: int) -> dict[str, Any]:
        """Read sample ``index`` (no skipping, no transform); raises :class:`DatasetError`."""
        item = self.items[index]
        paths = self._paths(item)
        frames = {m: self._read(m, paths[m]) for m in self.modalities}
        labels = decode_labels(read_png(paths["labels"], labels=True), self.num_classes)
        for m in ("rgb", "depth", "lidar"):  # events may legitimately be low-resolution
            if m in frames and frames[m].shape[:2] != labels.shape:
                raise DatasetError(f"{paths[m]}: size {frames[m].shape[:2]} != label size {labels.shape}", paths[m])
        meta = {
            "source": "deliver",
            "index": index,
            "condition": item.condition,
            "case": item.case,
            "split": item.split,
            "sequence": item.sequence,
            "frame": item.frame,
            "paths": {m: str(p) for m, p in paths.items()},
        }
        return {"frames": frames, "labels": labels, "meta": meta}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.items):
            raise IndexError(index)
        sample = self._load_or_skip(index)
        if self.transform is not None:
            rng = np.random.default_rng([self.aug_seed, self.epoch, index])
            sample["frames"], sample["labels"] = self.transform(sample["frames"], sample["labels"], rng)
        return sample

    def _load_or_skip(self, index: int) -> dict[str, Any]:
        if self.on_error == "raise":
            return self.load(index)
        n = len(self.items)
        for step in range(n):
            candidate = (index + step) % n
            if candidate in self._bad:
                continue
            try:
                return self.load(candidate)
            except DatasetError as exc:
                self._bad.add(candidate)
                log.warning("skipping DELIVER sample %d: %s", candidate, exc)
        raise DatasetError(f"no readable DELIVER sample left under {self.root}", self.root)


# ---------------------------------------------------------------------------------------------- inspection
def describe_files(root: str | Path, split: str = "val", samples: int = 5) -> list[dict[str, Any]]:
    """What the first ``samples`` frames' files of each folder contain: dtype, channels, value range.

    The LiDAR scale (and whether ``depth/`` is CARLA's 24-bit code) is not documented by DELIVER; this is
    how to check the loader's assumptions on a real copy before training with the metric contract.
    """
    root = Path(root)
    rgb_paths = sorted(root.glob(f"img/*/{split}/*/*_rgb{_SUFFIX}"))[:samples]
    if not rgb_paths:
        raise DatasetError(f"no DELIVER samples under {root}/img/*/{split}/*/", root)
    rows = []
    for kind in ("rgb", "depth", "hha", "lidar", "event", "labels"):
        arrays = []
        for rgb in rgb_paths:
            path = companion_path(root, rgb, kind)
            if path.exists():
                arrays.append(read_raw_png(path))
        if not arrays:
            rows.append({"folder": _FOLDERS[kind][0], "files": 0})
            continue
        first = arrays[0]
        channels = 1 if first.ndim == 2 else first.shape[2]
        equal = all(a.ndim == 2 or all(np.array_equal(a[..., 0], a[..., c]) for c in range(1, min(3, a.shape[2])))
                    for a in arrays)  # fmt: skip
        values = np.concatenate([a.reshape(-1) for a in arrays])
        rows.append({
            "folder": _FOLDERS[kind][0], "files": len(arrays), "dtype": str(first.dtype), "channels": channels,
            "size": f"{first.shape[1]}x{first.shape[0]}", "min": int(values.min()), "max": int(values.max()),
            "distinct": int(np.unique(values).size), "equal_channels": equal,
        })  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m memsam_core.data.deliver ROOT [--split val] [--samples 5]``: print :func:`describe_files`."""
    import argparse

    parser = argparse.ArgumentParser(description=describe_files.__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        rows = describe_files(args.root, args.split, args.samples)
    except DatasetError as err:
        print(f"error: {err}")
        return 2
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
