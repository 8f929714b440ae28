"""Datasets → model tensors, reproducible sharded batch order, and collation.

Raw samples (synthetic or DELIVER, ``{"frames", "labels", "meta"}``) go through the consistent
multi-modal augmentations of ``memsam_core.data.transforms`` and then through
``memsam_core.modalities.frames_to_tensor`` — the same conversion the inference engine uses, so
training sees exactly what the node will feed the network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from memsam_core.config import MemSamConfig
from memsam_core.data.synthetic import SceneConfig, SyntheticDataset
from memsam_core.data.transforms import TrainTransform
from memsam_core.modalities import frames_to_tensor, resample_mode

VAL_SEED_OFFSET = 1_000_000
"""Synthetic validation scenes use seeds from here on, so they never overlap the training scenes."""


def raw_dataset(cfg: MemSamConfig, train: bool) -> Dataset:
    """The configured dataset in the raw format; train split augmented (seeded per epoch and index)."""
    data, tcfg = cfg.data, cfg.train
    modalities = list(cfg.model.modalities)
    nearest = tuple(m for m in modalities if resample_mode(m, cfg.input) == "nearest")  # the inference rule
    transform = TrainTransform(size=tcfg.crop_size, scale=tuple(tcfg.scale_range), nearest=nearest) if train else None
    if data.dataset == "synthetic":
        return SyntheticDataset(
            data.synthetic_train_size if train else data.synthetic_val_size,
            SceneConfig(height=data.synthetic_height, width=data.synthetic_width),
            seed_offset=0 if train else VAL_SEED_OFFSET,
            modalities=modalities,
            conditions=data.conditions,
            transform=transform,
            aug_seed=tcfg.seed,
            clip_length=data.clip_length,
            frame_dt_s=data.clip_frame_dt_s,
        )
    from memsam_core.data.deliver import DeliverDataset
    from memsam_core.data.deliver_codes import DepthRule

    if not data.root:
        raise ValueError("data.dataset is 'deliver' but data.root is empty (point it at the DELIVER folder)")
    return DeliverDataset(
        data.root,
        data.train_split if train else data.val_split,
        modalities=modalities,
        cases=data.conditions,
        on_error=data.on_error,
        transform=transform,
        aug_seed=tcfg.seed,
        num_classes=cfg.model.num_classes,
        depth_encoding=cfg.input.depth_encoding,
        lidar_encoding=cfg.input.lidar_encoding,
        lidar_m_per_level=data.deliver_lidar_m_per_level,
        depth_rule=DepthRule(data.deliver_depth_rule, data.deliver_depth_m_per_level),
        clip_length=data.clip_length,
    )


class TrainTensors(Dataset):
    """Augmented raw samples → ``{"frames": [M, 3, S, S] float32, "labels": [S, S] int64, "meta"}``; clips
    (``{"instants": [...]}``) → ``{"frames": [T, M, 3, S, S], "labels": [T, S, S], "meta"}``."""

    def __init__(self, raw: Dataset, cfg: MemSamConfig) -> None:
        self.raw, self.cfg = raw, cfg

    def __len__(self) -> int:
        return len(self.raw)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.raw.set_epoch(epoch)  # type: ignore[attr-defined]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.raw[index]
        if "instants" not in item:
            return self._tensors(item)
        instants = [self._tensors(sample) for sample in item["instants"]]
        return {
            "frames": torch.stack([i["frames"] for i in instants]),
            "labels": torch.stack([i["labels"] for i in instants]),
            "meta": item["meta"],
        }

    def _tensors(self, sample: dict[str, Any]) -> dict[str, Any]:
        size = self.cfg.model.image_size
        frames, present = frames_to_tensor(sample["frames"], list(self.cfg.model.modalities), size, self.cfg.input)
        if len(present) != len(self.cfg.model.modalities):
            raise ValueError(f"sample {sample['meta']} lacks modalities; training batches need all of them")
        labels = torch.from_numpy(np.ascontiguousarray(sample["labels"])).long()
        if tuple(labels.shape) != (size, size):  # crop_size != image_size: nearest, like the reference
            labels = F.interpolate(labels[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
        return {"frames": frames, "labels": labels, "meta": sample["meta"]}


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frames": torch.stack([i["frames"] for i in items]),
        "labels": torch.stack([i["labels"] for i in items]),
        "meta": [i["meta"] for i in items],
    }


def collate_raw(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Evaluation batches stay raw: the inference engine does its own conversion."""
    return items


class ShardedBatchSampler(Sampler[list[int]]):
    """Per-epoch seeded permutation, cut to whole global batches, sharded round-robin over ranks.

    ``start_iteration`` skips the batches already trained on before a mid-epoch checkpoint, so a resumed
    run sees exactly the batches the interrupted one would have seen.
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.length, self.batch_size, self.rank, self.world_size, self.seed = length, batch_size, rank, world_size, seed
        self.epoch, self.start_iteration = 0, 0
        if self.iterations_per_epoch == 0:
            raise ValueError(
                f"dataset of {length} samples is smaller than one global batch ({batch_size} x {world_size} ranks)"
            )

    @property
    def iterations_per_epoch(self) -> int:
        return self.length // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_iteration: int = 0) -> None:
        self.epoch, self.start_iteration = epoch, start_iteration

    def __len__(self) -> int:
        return self.iterations_per_epoch - self.start_iteration

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        per_rank = order[: self.iterations_per_epoch * self.batch_size * self.world_size][self.rank :: self.world_size]
        for it in range(self.start_iteration, self.iterations_per_epoch):
            yield per_rank[it * self.batch_size : (it + 1) * self.batch_size]


def clip_dropout(
    modalities: Sequence[str], length: int, p: float, min_run: int, rng: np.random.Generator
) -> list[list[int]]:
    """Frame indices kept at each of a clip's ``length`` instants: each non-RGB modality (RGB, or the first modality
    without RGB, always stays) drops out of the clip with probability ``p``, for one run of consecutive instants
    ``U{min(min_run, length) .. length}`` long at a random start, as a real sensor dropout lasts several frames."""
    always = "rgb" if "rgb" in modalities else modalities[0]
    dropped_at: dict[str, range] = {}
    draws = rng.random(len(modalities))
    for index, modality in enumerate(modalities):
        if modality == always or p <= 0:
            continue
        run = int(rng.integers(min(min_run, length), length + 1))
        start = int(rng.integers(0, length - run + 1))
        if draws[index] < p:
            dropped_at[modality] = range(start, start + run)
    return [[i for i, m in enumerate(modalities) if t not in dropped_at.get(m, ())] for t in range(length)]
