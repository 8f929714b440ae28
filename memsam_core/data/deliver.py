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
``depth``      undocumented: a grey image by third-party         ``metric``: float32 metres by the declared
               evidence (1 channel or R = G = B), scale         ``depth_rule`` (``carla24``, ``grey_linear``,
               unknown; or CARLA's 24-bit code                  ``grey_log``: :mod:`.deliver_codes`); no
                                                                measurement (sky, clamp) → NaN
``hha``        HHA from the depth (README: Depth2HHA-python),   ``image``: uint8 HxWx3 (the MemorySAM and
               8-bit 3 channels                                 CMNeXt "depth")
``lidar``      projected LiDAR, 8-bit grey (1, 3 or 4 ch.);     ``metric``: float32 metres = level ×
               the scale is not documented (DELIVER issue       ``lidar_m_per_level`` (0 = no return);
               #21, open)                                       ``image``: uint8 HxWx3
``event``      8-bit event image, lower resolution in           uint8 HxWx3, size as stored
               ``eventlowres`` (the loader upsamples nearest)
``semantic``   class id + 1 in R (0 = unlabeled)                uint8 train ids, 255 = ignore
=============  ===============================================  ============================================

A ``depth`` or ``lidar`` file that does not fit the declared rule (a grey file under ``carla24``, unequal channels
under a grey rule, a 16-bit file) raises :class:`DatasetError`: one line naming the file, what it holds (channels,
whether they are equal, bit depth) and the rule.

Errors: a missing or unreadable file raises :class:`DatasetError` naming the path.  With
``on_error="skip"`` samples with missing companions are dropped at index time (one warning listing the
count and the first paths) and a sample that fails to decode is replaced by the next readable one
(a warning names the path; the bad index is remembered so it costs one failed read per process).

Clips (``clip_length`` T > 1, for memory across time): DELIVER's scene folders are sequences of frames, and a clip
is T files of one folder in frame-number order (DELIVER gives no timestamps: the rule is that consecutive files are
consecutive instants). Folders are cut into windows of T, the last one ending at the folder's last frame (it may
overlap the one before), so every frame is in a clip; a folder with fewer than T frames is left out (one warning).
Frame numbers that do not step evenly within a folder are warned about once per folder, naming the steps. With
``on_error="skip"`` a clip with an unreadable frame is replaced by the next readable clip.

``python -m memsam_core.data.deliver ROOT [--fov 90] [--camera-height H]`` prints what a DELIVER copy's files
contain (dtype, channels, value range per folder), fits the depth rules to the road pixels of a sample of frames
and the LiDAR scale to the decoded depth (:mod:`.deliver_calibration`), and prints the rule and scales to put in
the config, or says that the files fit no rule.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from torch.utils.data import Dataset

from memsam_core.classes import DELIVER_CLASSES, IGNORE_INDEX
from memsam_core.data.deliver_calibration import (
    ROAD_CLASSES,
    DepthCalibration,
    LidarCalibration,
    calibrate_depth,
    calibrate_lidar,
    combined_content,
    precise_depth_m,
    report_lines,
)
from memsam_core.data.deliver_codes import ASSUMED_DEPTH_RULE, DatasetError, DepthRule, decode_lidar_png

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

Transform = Callable[[dict[str, np.ndarray], np.ndarray, np.random.Generator], tuple[dict[str, np.ndarray], np.ndarray]]


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


class DeliverDataset(Dataset):
    """DELIVER samples ``{"frames", "labels", "meta"}`` in the raw multimodal format.

    ``cases`` keeps samples whose condition (``sun``…) or failure case (``motionblur``… or
    ``normal``) is listed — the reference's substring filter on the path, made exact.
    ``transform(frames, labels, rng)`` gets a Generator seeded by ``(aug_seed, epoch, index)``.
    ``depth_encoding`` / ``lidar_encoding`` follow the input contract (module table): ``metric`` decodes
    ``depth/`` by ``depth_rule`` and ``lidar/`` by ``lidar_m_per_level`` to metres, ``image`` returns ``hha/``
    and ``lidar/`` as 8-bit images.
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
        depth_rule: DepthRule = ASSUMED_DEPTH_RULE,
        clip_length: int = 1,
    ) -> None:
        if clip_length < 1:
            raise ValueError(f"clip_length must be >= 1, got {clip_length}")
        self.clip_length = clip_length
        if {depth_encoding, lidar_encoding} - {"metric", "image"}:
            raise ValueError(f"encodings must be 'metric' or 'image', got {depth_encoding!r}, {lidar_encoding!r}")
        self.encodings = {"depth": depth_encoding, "lidar": lidar_encoding}
        self.lidar_m_per_level, self.depth_rule = lidar_m_per_level, depth_rule
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
        self.clips = clip_windows(self.items, clip_length) if clip_length > 1 else None

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
            return self.depth_rule.decode(read_raw_png(path), path)
        return decode_lidar_png(read_raw_png(path), self.lidar_m_per_level, path)

    def __len__(self) -> int:
        return len(self.items) if self.clips is None else len(self.clips)

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
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self.clips is not None:
            return self._clip(index)
        return self._augmented(self._load_or_skip(index), index)

    def _augmented(self, sample: dict[str, Any], index: int) -> dict[str, Any]:
        """The transform with the draws of item ``index`` (a clip's instants all get the same: crops stay put)."""
        if self.transform is not None:
            rng = np.random.default_rng([self.aug_seed, self.epoch, index])
            sample["frames"], sample["labels"] = self.transform(sample["frames"], sample["labels"], rng)
        return sample

    def _clip(self, index: int) -> dict[str, Any]:
        """``{"instants": [sample, ...], "meta"}``; each instant's meta adds ``instant``."""
        for step in range(len(self.clips) if self.on_error == "skip" else 1):
            candidate = (index + step) % len(self.clips)
            try:
                samples = [self.load(i) for i in self.clips[candidate]]
            except DatasetError as exc:
                if self.on_error == "raise":
                    raise
                log.warning("skipping DELIVER clip %d: %s", candidate, exc)
                continue
            instants = []
            for position, sample in enumerate(samples):
                sample["meta"]["instant"] = position
                instants.append(self._augmented(sample, index))
            return {"instants": instants, "meta": {**instants[0]["meta"], "instants": len(instants)}}
        raise DatasetError(f"no readable DELIVER clip left under {self.root}", self.root)

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


def _frame_number(item: DeliverItem) -> tuple[int, str]:
    return (int(item.frame), item.frame) if item.frame.isdigit() else (-1, item.frame)


def clip_windows(items: Sequence[DeliverItem], length: int) -> list[list[int]]:
    """Indices into ``items`` of every clip of ``length`` consecutive frames of one scene folder (module docstring)."""
    folders: dict[tuple[str, str, str], list[int]] = {}
    for index, item in enumerate(items):
        folders.setdefault((item.condition, item.split, item.sequence), []).append(index)
    clips, short = [], []
    for folder, indices in folders.items():
        indices.sort(key=lambda i: _frame_number(items[i]))
        numbers = [_frame_number(items[i])[0] for i in indices]
        steps = sorted({b - a for a, b in itertools.pairwise(numbers)})
        if len(steps) > 1:
            log.warning("DELIVER %s: frame numbers step by %s; clips take consecutive files as consecutive instants",
                        "/".join(folder), steps)  # fmt: skip
        if len(indices) < length:
            short.append("/".join(folder))
            continue
        starts = list(range(0, len(indices) - length + 1, length))
        if starts[-1] + length < len(indices):
            starts.append(len(indices) - length)  # the last window ends at the last frame
        clips += [indices[start : start + length] for start in starts]
    if short:
        log.warning("DELIVER: %d scene folders have fewer than %d frames and give no clip, e.g. %s",
                    len(short), length, short[0])  # fmt: skip
    if not clips:
        raise DatasetError(f"no DELIVER scene folder has {length} frames for a clip", None)
    return clips


# ---------------------------------------------------------------------------------------------- inspection
def sample_rgb_paths(root: str | Path, split: str = "val", samples: int = 20) -> list[Path]:
    """``samples`` RGB paths spread evenly over the split's sorted frames (many sequences, not the first one)."""
    root = Path(root)
    paths = sorted(root.glob(f"img/*/{split}/*/*_rgb{_SUFFIX}"))
    if not paths:
        raise DatasetError(f"no DELIVER samples under {root}/img/*/{split}/*/", root)
    picks = np.unique(np.linspace(0, len(paths) - 1, max(1, min(samples, len(paths)))).round().astype(int))
    return [paths[i] for i in picks]


def describe_files(root: str | Path, split: str = "val", samples: int = 5) -> list[dict[str, Any]]:
    """What the sampled frames' files of each folder contain: dtype, channels, equal channels, value range."""
    root = Path(root)
    rgb_paths = sample_rgb_paths(root, split, samples)
    rows = []
    for kind in ("rgb", "depth", "hha", "lidar", "event", "labels"):
        arrays = [read_raw_png(path) for rgb in rgb_paths if (path := companion_path(root, rgb, kind)).exists()]
        if not arrays:
            rows.append({"folder": _FOLDERS[kind][0], "files": 0})
            continue
        first, content = arrays[0], combined_content(arrays)
        values = np.concatenate([a.reshape(-1) for a in arrays])
        rows.append({
            "folder": _FOLDERS[kind][0], "files": len(arrays), "dtype": str(first.dtype),
            "channels": content.channels, "size": f"{first.shape[1]}x{first.shape[0]}", "min": int(values.min()),
            "max": int(values.max()), "distinct": int(np.unique(values).size), "equal_channels": content.grey,
        })  # fmt: skip
    return rows


def inspect_copy(
    root: str | Path,
    split: str = "val",
    samples: int = 20,
    hfov_deg: float = 90.0,
    camera_height_m: float | None = None,
) -> tuple[DepthCalibration, LidarCalibration | None]:
    """Fit the depth rules to the road of ``samples`` frames, then the LiDAR scale to the decoded depth.

    Frames without a ``depth/`` or ``semantic/`` file are left out; the LiDAR fit needs a depth rule.
    """
    root = Path(root)
    frames, lidar_images = [], []
    for rgb in sample_rgb_paths(root, split, samples):
        depth_path, label_path = companion_path(root, rgb, "depth"), companion_path(root, rgb, "labels")
        if not (depth_path.exists() and label_path.exists()):
            continue
        labels = decode_labels(read_png(label_path, labels=True))
        frames.append((read_raw_png(depth_path), np.isin(labels, ROAD_CLASSES)))
        lidar_path = companion_path(root, rgb, "lidar")
        lidar_images.append(read_raw_png(lidar_path) if lidar_path.exists() else None)
    if not frames:
        raise DatasetError(f"no sampled frame under {root} has both a depth/ and a semantic/ file", root)
    depth = calibrate_depth(frames, hfov_deg, camera_height_m)
    pairs = [(image, lidar) for (image, _), lidar in zip(frames, lidar_images) if lidar is not None]
    if not pairs:
        return depth, None
    if depth.rule is None:
        content = combined_content([lidar for _, lidar in pairs])
        return depth, LidarCalibration(content, 0, None, float("nan"), "not fitted: the depth files fit no rule")
    decoded = [(depth.rule.decode(image), lidar) for image, lidar in pairs]
    return depth, calibrate_lidar(decoded, precise_depth_m(depth.rule))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m memsam_core.data.deliver ROOT``: what the files hold and which rules decode them.

    Exit status 0 when a depth rule was found, 1 when the files fit no rule, 2 on an error.
    """
    import argparse

    parser = argparse.ArgumentParser(description="What a DELIVER copy's files hold, and the depth/LiDAR rules "
                                     "that decode them (fitted to the road pixels of a sample of frames)")  # fmt: skip
    parser.add_argument("root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--samples", type=int, default=20, help="frames to inspect, spread over the split")
    parser.add_argument("--fov", type=float, default=90.0,
                        help="the camera's horizontal field of view in degrees (DELIVER does not state it; "
                        "CARLA's default is 90)")  # fmt: skip
    parser.add_argument(
        "--camera-height",
        type=float,
        default=None,
        help="the camera's height above the road in metres, if known (fixes a linear code's scale)",
    )
    args = parser.parse_args(argv)
    try:
        rows = describe_files(args.root, args.split, args.samples)
        depth, lidar = inspect_copy(args.root, args.split, args.samples, args.fov, args.camera_height)
    except DatasetError as err:
        print(f"error: {err}")
        return 2
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print("\n".join(report_lines(depth, lidar)))
    return 0 if depth.rule is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
