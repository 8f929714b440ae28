"""DELIVER loader (memorysam.md §7) returning the raw multimodal format shared with the synthetic data.

Layout: ``<root>/{img,hha,depth,event,lidar,semantic}/<condition>/<split>/<sequence>/<frame>_<mod>_front.png``.
Samples are indexed from ``img/*/<split>/*/*_rgb_front.png``; companions are derived like the reference
code (``img``→``hha`` with ``_rgb``→``_depth`` for "depth", →``lidar``/``_lidar``, →``event``/``_event``,
→``semantic``/``_semantic``), but only the folder right under ``root`` and the file-name suffix are
replaced, so a root path that happens to contain "/img" or "_rgb" is safe.

Frames stay what DELIVER ships: uint8 HxWx3 images (1-channel PNGs repeated to 3, alpha dropped,
BGR→RGB); the model-side converter scales them by 1/255 like the reference.  Event images can be
smaller than RGB (``eventlowres``) and are returned as they are.

Errors: a missing or unreadable file raises :class:`DatasetError` naming the path.  With
``on_error="skip"`` samples with missing companions are dropped at index time (one warning listing the
count and the first paths) and a sample that fails to decode is replaced by the next readable one
(a warning names the path; the bad index is remembered so it costs one failed read per process).
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

# modality → (top-level folder, file-name tag); "depth" is HHA as in MemorySAM / CMNeXt
_FOLDERS: dict[str, tuple[str, str]] = {
    "rgb": ("img", "rgb"),
    "depth": ("hha", "depth"),
    "lidar": ("lidar", "lidar"),
    "event": ("event", "event"),
    "labels": ("semantic", "semantic"),
}
_SUFFIX = "_front.png"

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
    """Path of ``modality`` ("rgb", "depth", "lidar", "event" or "labels") for an ``img/`` RGB path."""
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


def read_png(path: Path, *, labels: bool = False) -> np.ndarray:
    """Read a PNG with OpenCV as uint8: images → HxWx3 RGB, label PNGs → HxWx3 RGB or HxW as stored."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # some truncated files raise instead of returning None
        raise DatasetError(f"cannot decode {path}: {exc}", path) from exc
    if image is None:
        reason = "missing" if not path.exists() else "unreadable or corrupt"
        raise DatasetError(f"{reason} image file: {path}", path)
    if image.dtype == np.uint16:  # 16-bit PNGs: keep the high byte, like an 8-bit export
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DatasetError(f"unsupported dtype {image.dtype} in {path}", path)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif not labels:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image)


class DeliverDataset(Dataset):
    """DELIVER samples ``{"frames", "labels", "meta"}`` in the raw multimodal format.

    ``cases`` keeps samples whose condition (``sun``…) or failure case (``motionblur``… or
    ``normal``) is listed — the reference's substring filter on the path, made exact.
    ``transform(frames, labels, rng)`` gets a Generator seeded by ``(aug_seed, epoch, index)``.
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
    ) -> None:
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

    def _paths(self, item: DeliverItem) -> dict[str, Path]:
        return {m: item.path(self.root, m) for m in (*self.modalities, "labels")}

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws per epoch while staying reproducible."""
        self.epoch = epoch

    def load(self, index: int) -> dict[str, Any]:
        """Read sample ``index`` (no skipping, no transform); raises :class:`DatasetError`."""
        item = self.items[index]
        paths = self._paths(item)
        frames = {m: read_png(paths[m]) for m in self.modalities}
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
