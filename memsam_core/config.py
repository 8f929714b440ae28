"""One configuration schema for the node, bag replay/evaluation and training.

Every consumer loads the same YAML into :class:`MemSamConfig`; the ROS node exposes each leaf as a
parameter (``model.image_size``, ``sync.slop_s`` …) so a ROS params file and a training YAML use the
same names. Validation errors are raised as :class:`ConfigError` naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from memsam_core.classes import DELIVER_CLASSES

Modality = Literal["rgb", "depth", "lidar", "event"]
MODALITIES: tuple[str, ...] = ("rgb", "depth", "lidar", "event")

SAM2_CONFIGS: dict[str, str] = {
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
"""Short names for the ``sam2`` package's model configs (SAM 2.0 and 2.1, tiny to large)."""


class ConfigError(ValueError):
    """A configuration value or file is wrong; the message names the file and the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _unique_modalities(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError(f"modalities must be unique, got {value}")
    return value


class ModelConfig(_Section):
    """Architecture: which SAM 2, input size, classes, LoRA and the modality (frame) order."""

    sam2_config: str = Field("sam2.1_hiera_t", description="SAM 2 model config: " + ", ".join(SAM2_CONFIGS))
    image_size: int = Field(512, ge=128, le=2048, description="square network input size (multiple of 32)")
    num_classes: int = Field(25, ge=1, le=254, description="semantic classes (one mask token each)")
    lora_rank: int = Field(4, ge=0, le=64, description="LoRA rank on Q and V of every Hiera block (0 = off)")
    lora_alpha: float = Field(4.0, gt=0, description="LoRA scale numerator: delta is scaled by alpha/rank")
    modalities: list[Modality] = Field(
        default_factory=lambda: ["rgb", "depth", "lidar", "event"],
        min_length=1,
        description="frame order through SAM 2 memory; frame 0 gets no_mem_embed",
    )
    gate_logits_by_object_score: bool = Field(
        False,
        description="reference behaviour: replace a frame's class logits by -1024 when SAM 2's object "
        "score is <= 0 (off by default: it blanks single-modality outputs)",
    )
    train_memory: bool = Field(True, description="train memory attention + memory encoder (final official recipe)")
    temporal_memory: int = Field(
        0,
        ge=0,
        le=6,
        description="K: the frames of an instant also attend to the memories of the last K instants (one memory "
        "per instant: its last frame's, at SAM 2's non-conditioning temporal positions d = 1..K); 0 = memory across "
        "modalities only. A checkpoint records the K it was trained with; a node may run it with a smaller K",
    )

    @field_validator("sam2_config")
    @classmethod
    def _known_sam2(cls, value: str) -> str:
        if value not in SAM2_CONFIGS and value not in SAM2_CONFIGS.values():
            raise ValueError(f"unknown SAM 2 config {value!r}; choose one of {sorted(SAM2_CONFIGS)}")
        return value

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"must be a multiple of 32 (Hiera stride), got {value}")
        return value

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: list[str]) -> list[str]:
        return _unique_modalities(value)

    @property
    def sam2_config_path(self) -> str:
        return SAM2_CONFIGS.get(self.sam2_config, self.sam2_config)


SensorEncoding = Literal["metric", "image"]
INPUT_CONTRACT_VERSION = 2
"""Version of the input contract below; stored in checkpoints next to the ``input`` section."""


class InputConfig(_Section):
    """The input contract: how raw sensor arrays become network tensors (memsam_core.modalities).

    Every checkpoint stores this section; a checkpoint refuses inputs encoded another way, so a model
    trained on one encoding never silently sees another in the node.
    """

    depth_encoding: SensorEncoding = Field(
        "metric",
        description="metric: float32 metres (REP 118) -> [range/max, log-range, valid]; image: a pre-encoded "
        "8-bit image / 255 (DELIVER's HHA PNGs, the MemorySAM recipe; not available from ROS sensors)",
    )
    lidar_encoding: SensorEncoding = Field(
        "metric", description="as depth_encoding, for projected LiDAR (image: DELIVER's LiDAR PNG / 255)"
    )
    event_resize: Literal["nearest", "bilinear"] = Field(
        "nearest",
        description="filter that brings event frames to the network size (after low-resolution events are "
        "matched to the RGB size with nearest, as DELIVER's loader does); the same rule in training and inference",
    )
    depth_max_m: float = Field(80.0, gt=0, le=1000, description="depth range mapped to [0, 1]")
    lidar_max_m: float = Field(80.0, gt=0, le=1000, description="LiDAR range mapped to [0, 1]")
    lidar_dilate_px: int = Field(0, ge=0, le=9, description="max-pool radius to densify sparse LiDAR (0 = off)")

    def encoding(self, modality: str) -> str:
        """``metric`` or ``image`` for depth/LiDAR; RGB and events are always 8-bit images."""
        return {"depth": self.depth_encoding, "lidar": self.lidar_encoding}.get(modality, "image")


class InferenceConfig(_Section):
    """Engine options: where and how fast the one inference path runs."""

    checkpoint: str = Field("", description="trained memsam checkpoint (.pt); empty = untrained weights")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    compile: bool = Field(False, description="torch.compile the network (warm-up at start)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        "default", description="torch.compile mode when compile is on; reduce-overhead = CUDA graphs (static shapes)"
    )
    cuda_graphs: bool = Field(
        True,
        description="CUDA without compile: replay the network from a CUDA graph per modality count (one capture "
        "each; removes the per-kernel launch cost that dominates on the GPU)",
    )
    skip_last_memory: bool = Field(True, description="skip the memory encoder of the last frame (no effect on output)")
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads (0 = torch default)")
    temporal_max_gap_s: float = Field(
        0.5,
        gt=0,
        le=3600.0,
        description="model.temporal_memory >= 1: the memory of past instants is reset when the next set is stamped "
        "more than this after the last one segmented (and on stamps going back, a synchroniser reset, deactivate)",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value


class SyncConfig(_Section):
    """Approximate-time synchronisation of the modality topics (RGB is the reference)."""

    reference: Modality = Field("rgb", description="pivot modality; its header stamps the outputs")
    required: list[Modality] = Field(default_factory=lambda: ["rgb"], description="sets without these are dropped")
    slop_s: float = Field(0.05, gt=0, le=5.0, description="max |stamp - reference stamp| for a match")
    queue_size: int = Field(10, ge=1, le=1000, description="messages kept per modality")
    max_wait_s: float = Field(
        0.2, ge=0, le=10.0, description="a topic silent this long is not waited for; no set waits longer than this"
    )
    single_use: list[Modality] = Field(
        default_factory=list,
        description="modalities whose messages serve one set each (message_filters style); the others may "
        "serve consecutive sets (a 15 Hz LiDAR in every 30 Hz RGB set)",
    )
    policy: Literal["nearest", "latest"] = Field(
        "nearest",
        description="nearest: the message nearest in stamp within slop_s, as an oracle would pick (a set waits "
        "until every sensor has sent a message stamped at or after the RGB stamp, or is silent, up to max_wait_s); "
        "latest: a set goes out when its RGB frame arrives, with the newest message of each other modality "
        "within slop_s received so far (no waiting; needs slop_s >= the slowest sensor's period + its latency)",
    )


class RosConfig(_Section):
    """Node-only settings: topics, QoS, outputs."""

    rgb_topic: str = "rgb/image"
    depth_topic: str = "depth/image"
    lidar_topic: str = "lidar/depth_image"
    event_topic: str = "event/image"
    rgb_type: Literal["auto", "image", "compressed"] = Field(
        "auto",
        description="message type on rgb_topic: auto (from the topic's publishers, as `ros2 topic echo` finds it), "
        "image (sensor_msgs/Image) or compressed (CompressedImage)",
    )
    depth_type: Literal["auto", "image", "compressed"] = Field(
        "auto", description="auto, image (32FC1/16UC1 Image) or compressed (CompressedImage, compressedDepth png)"
    )
    lidar_type: Literal["auto", "image", "pointcloud"] = Field(
        "auto",
        description="auto; image: depth already projected into the RGB camera; pointcloud: sensor_msgs/PointCloud2 "
        "in the LiDAR's frame, projected by the node with the RGB camera_info and the LiDAR->camera extrinsics",
    )
    event_type: Literal["auto", "image", "compressed", "event_packet", "event_array_msgs", "event_array"] = Field(
        "auto",
        description="auto; image/compressed: event frames; event_packet: event_camera_msgs/EventPacket (mono, evt3); "
        "event_array_msgs: event_array_msgs/EventArray (EventPacket's name in older recordings, same fields); "
        "event_array: dvs_msgs/EventArray. Streams are accumulated over event_window_s up to the RGB stamp",
    )
    event_window_s: float = Field(
        0.05, gt=0, le=1.0, description="event streams: the window (before the RGB stamp) accumulated into a frame"
    )
    lidar_extrinsics: list[float] = Field(
        default_factory=list,
        description="LiDAR -> camera optical frame [x, y, z, qx, qy, qz, qw], used when /tf_static and /tf have no "
        "chain between the point cloud's and the camera_info's frames; empty = tf only",
    )
    reliability: Literal["best_effort", "reliable"] = Field("best_effort", description="subscription QoS")
    qos_depth: int = Field(5, ge=1, le=100, description="subscription history depth")
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0, description="class colour weight in ~/color")
    diagnostics_period_s: float = Field(1.0, gt=0, le=60.0)
    warn_throttle_s: float = Field(5.0, ge=0, le=600.0, description="min seconds between repeated warnings")
    silent_after_s: float = Field(
        3.0, gt=0, le=3600.0, description="an input topic with no message for this long is reported missing"
    )
    camera_info_topic: str = Field(
        "", description="CameraInfo of the reference camera; empty = 'camera_info' next to the reference image topic"
    )
    extrinsics: Literal["registered", "unchecked"] = Field(
        "registered",
        description="registered: every modality is an image in the reference camera (depth registered, LiDAR "
        "projected), so its frame_id must equal the reference's (warned once otherwise); unchecked: no check",
    )
    autostart: bool = Field(True, description="configure and activate the lifecycle node at start-up")
    gil_switch_interval_ms: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Python GIL switch interval; 0 = auto: 0.5 ms when inference runs on the CPU, Python's "
        "default (5 ms) on CUDA",
    )

    @field_validator("lidar_extrinsics")
    @classmethod
    def _pose(cls, value: list[float]) -> list[float]:
        if value and (len(value) != 7 or not any(value[3:])):
            raise ValueError(f"expected [x, y, z, qx, qy, qz, qw] with a non-zero quaternion, got {value}")
        return value

    def topic(self, modality: str) -> str:
        return getattr(self, f"{modality}_topic")

    def input_type(self, modality: str) -> str:
        return getattr(self, f"{modality}_type")


class ClassesConfig(_Section):
    """Class names and optional palette (rgb triplets); defaults are DELIVER's 25 classes."""

    names: list[str] = Field(default_factory=lambda: list(DELIVER_CLASSES))
    palette: list[list[int]] = Field(default_factory=list, description="[[r,g,b], ...]; empty = default")

    @field_validator("palette")
    @classmethod
    def _rgb(cls, value: list[list[int]]) -> list[list[int]]:
        for row in value:
            if len(row) != 3 or not all(0 <= c <= 255 for c in row):
                raise ValueError(f"palette entries must be [r, g, b] in 0..255, got {row}")
        return value


class DataConfig(_Section):
    """Where training/evaluation samples come from."""

    dataset: Literal["synthetic", "deliver"] = "synthetic"
    root: str = Field("", description="DELIVER root (dataset=deliver)")
    train_split: str = "train"
    val_split: str = "val"
    synthetic_train_size: int = Field(256, ge=1)
    synthetic_val_size: int = Field(48, ge=1)
    synthetic_height: int = Field(256, ge=32)
    synthetic_width: int = Field(256, ge=32)
    conditions: list[Literal["sun", "cloud", "rain", "fog", "night"]] = Field(
        default_factory=lambda: ["sun", "cloud", "rain", "fog", "night"]
    )
    deliver_depth_rule: Literal["carla24", "grey_linear", "grey_log"] = Field(
        "grey_linear",
        description="how DELIVER's depth/ PNGs encode metres when input.depth_encoding is metric: carla24 (CARLA's "
        "raw 24-bit code), grey_linear (deliver_depth_m_per_level per grey level; CARLA's Depth converter) or "
        "grey_log (CARLA's LogarithmicDepth). DELIVER does not document it; grey_linear is an assumption until "
        "python -m memsam_core.data.deliver ROOT has fitted the rules to your copy",
    )
    deliver_depth_m_per_level: float = Field(
        1000.0 / 255,
        gt=0,
        le=100.0,
        description="metres per grey level of depth/ under deliver_depth_rule grey_linear (CARLA's Depth: 1000/255)",
    )
    deliver_lidar_m_per_level: float = Field(
        1.0,
        gt=0,
        le=10.0,
        description="metres per grey level of DELIVER's 8-bit LiDAR PNGs (0 = no return) when input.lidar_encoding "
        "is metric; DELIVER does not document the scale: check your copy with python -m memsam_core.data.deliver",
    )
    on_error: Literal["raise", "skip"] = Field("raise", description="corrupt sample: fail or skip with a warning")
    num_workers: int = Field(0, ge=0, le=64)
    clip_length: int = Field(
        1,
        ge=1,
        le=64,
        description="training samples are clips of this many consecutive instants (synthetic: one world with ego "
        "and object motion; DELIVER: consecutive frames of a scene folder); 1 = single frames. Needs >= "
        "model.temporal_memory + 1 to train the memory of past instants",
    )
    clip_frame_dt_s: float = Field(0.1, gt=0, le=10.0, description="synthetic clips: seconds between instants")


class TrainConfig(_Section):
    """Optimisation recipe (memorysam.md §5)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(2, ge=1, description="per process (per GPU under torchrun)")
    lr: float = Field(6e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    warmup_ratio: float = Field(0.1, gt=0, le=1)
    poly_power: float = Field(0.9, gt=0)
    crop_size: int = Field(256, ge=32)
    scale_range: list[float] = Field(default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2)
    ohem_thresh: float = Field(0.7, gt=0, le=1)
    ohem_min_kept_ratio: float = Field(1 / 16, gt=0, le=1)
    spmm: bool = Field(True, description="semantic prototype memory (training only)")
    spmm_momentum: float = Field(0.8, ge=0, lt=1, description="EMA: memory <- m*memory + (1-m)*batch")
    spmm_weight: float = Field(1.0, ge=0)
    spmm_scale: float = Field(
        10.0, gt=0, description="MSE scale; the reference uses 65536 to offset its double division (docs/training.md)"
    )
    amp: Literal["off", "bf16", "fp16"] = "off"
    grad_clip: float = Field(1.0, ge=0, description="max grad norm (0 = off)")
    seed: int = 3407
    eval_every: int = Field(1, ge=1, description="epochs between evaluations")
    log_every: int = Field(10, ge=1, description="iterations between scalar logs")
    output_dir: str = "runs/memsam"
    init_checkpoint: str = Field("", description="official SAM 2 checkpoint to start from (sam2*_hiera_*.pt)")
    checkpoint_every_iters: int = Field(
        0, ge=0, description="also write last.pt every N iterations (mid-epoch resume; 0 = end of epoch only)"
    )
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms (bitwise-reproducible resume)")
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads per process (0 = torch default)")
    modality_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="probability that a non-RGB modality is left out of a training batch (missing sensors are "
        "learnt; RGB is always kept)",
    )
    eval_subsets: bool = Field(
        False, description="after the last epoch also evaluate every modality subset that contains RGB"
    )
    dropout_min_instants: int = Field(
        2,
        ge=1,
        le=64,
        description="clips (data.clip_length > 1): a dropped sensor stays out for a run of at least this many "
        "consecutive instants (up to the clip length), as real dropouts do",
    )


class MemSamConfig(_Section):
    """The whole configuration; every section has working defaults (the demo's)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    ros: RosConfig = Field(default_factory=RosConfig)
    classes: ClassesConfig = Field(default_factory=ClassesConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _consistent(self) -> MemSamConfig:
        if len(self.classes.names) != self.model.num_classes:
            raise ValueError(
                f"classes.names has {len(self.classes.names)} entries but model.num_classes is {self.model.num_classes}"
            )
        if self.classes.palette and len(self.classes.palette) != self.model.num_classes:
            raise ValueError(f"classes.palette needs {self.model.num_classes} colours, got {len(self.classes.palette)}")
        if self.sync.reference not in self.model.modalities:
            raise ValueError(f"sync.reference {self.sync.reference!r} is not in model.modalities")
        unknown = [m for m in self.sync.required if m not in self.model.modalities]
        if unknown:
            raise ValueError(f"sync.required {unknown} not in model.modalities {self.model.modalities}")
        if self.sync.reference in self.sync.single_use:
            raise ValueError(f"sync.single_use: the reference {self.sync.reference!r} always serves one set")
        return self

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def format_validation_error(err: ValidationError, source: str, prefix: str = "") -> str:
    """One line per invalid field: ``source: section.field: reason (got value)``."""
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(item["loc"])) or "(root)"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{source}: {field}: {message}{shown}")
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any] | None, source: str = "<dict>") -> MemSamConfig:
    """Validate a (possibly partial) nested dict; raise :class:`ConfigError` naming ``source`` and field."""
    try:
        return MemSamConfig.model_validate(dict(data or {}))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> MemSamConfig:
    """Load YAML (``None`` = defaults), apply dotted ``overrides`` (``{"model.image_size": 256}``), validate.

    A ROS params file (``/**: ros__parameters: ...``) is accepted too, so the node's file can be replayed.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"{source}: cannot read config file ({err.strerror})") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(loaded).__name__}")
        data = _strip_ros_params(loaded)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return config_from_dict(data, source)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Command-line ``--set KEY=VALUE`` items → dotted overrides for :func:`load_config` (values parsed as
    YAML: ``model.modalities=[rgb,depth]``, ``train.lr=1e-3``, ``inference.compile=true``)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. model.image_size=128")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _strip_ros_params(loaded: dict[str, Any]) -> dict[str, Any]:
    """``{node: {ros__parameters: {...}}}`` → the inner dict, minus node-only keys like ``config_file``."""
    if len(loaded) == 1:
        inner = next(iter(loaded.values()))
        if isinstance(inner, dict) and "ros__parameters" in inner:
            params = dict(inner["ros__parameters"])
            params.pop("config_file", None)
            params.pop("use_sim_time", None)
            nested: dict[str, Any] = {}
            for key, value in params.items():
                _set_dotted(nested, key, value)
            return nested
    return loaded


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def iter_leaves(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Yield ``(dotted_name, value, FieldInfo)`` for every leaf field (used to declare ROS parameters)."""
    for name, info in type(config).model_fields.items():
        value = getattr(config, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from iter_leaves(value, dotted + ".")
        else:
            yield dotted, value, info
