"""ROS parameters generated from the one config schema (``memsam_core.config``).

The node's parameters are what belongs to run time: every leaf of ``inference``, ``sync`` and ``ros`` becomes a
parameter with the same dotted name (``inference.precision``, ``sync.slop_s`` …), a description and the schema's
numeric range, so a ROS params file, ``-p`` overrides and a training YAML all speak the same names. Defaults come
from ``config_file`` (when set) so a training config can be reused and explicit ROS parameters override it.

What the model is (``model.*``, ``input.*``, ``classes.*``) comes from the checkpoint, which describes its own
model. Those keys are not parameters; given anyway (params file, ``-p`` or ``config_file``), each is a claim
about the checkpoint, and one that contradicts it stops start-up with one line naming both values.

ROS parameters cannot hold nested lists, and an empty list has no type: ``classes.palette`` given as a flat int
array ``[r, g, b, r, g, b, ...]`` (or a YAML/JSON string ``"[[r, g, b], ...]"``) is converted, and empty lists
are declared with the type taken from the schema annotation.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from memsam_core.config import (
    ConfigError,
    MemSamConfig,
    config_from_dict,
    format_validation_error,
    iter_leaves,
    load_config,
)
from memsam_core.model import CheckpointError
from memsam_core.model.build import checkpoint_config

NODE_SECTIONS: tuple[str, ...] = ("inference", "sync", "ros")
"""Sections exposed as parameters (run time); ``data.*``/``train.*`` are training-only (ignored if present)."""

CHECKPOINT_SECTIONS: tuple[str, ...] = ("model", "input", "classes")
"""What the checkpoint describes: not parameters, but values given for them are checked against it."""

RUNTIME_PARAMETERS: frozenset[str] = frozenset(
    {"ros.overlay_alpha", "ros.warn_throttle_s", "ros.silent_after_s", "sync.slop_s", "sync.max_wait_s"}
)
"""Parameters the node applies while running; all others need a restart and are read-only."""

CONFIG_FILE_PARAM = "config_file"
PALETTE_PARAM = "classes.palette"
_INT_MAX = 2**63 - 1
_FLOAT_MAX = sys.float_info.max
_LIST_TYPES = {str: Parameter.Type.STRING_ARRAY, int: Parameter.Type.INTEGER_ARRAY, float: Parameter.Type.DOUBLE_ARRAY}


def params_files(args: Sequence[str] | None) -> list[str]:
    """``--params-file`` paths in a ROS command line, to name them in error messages."""
    args = list(args if args is not None else sys.argv)
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--params-file"]


def parameter_source(args: Sequence[str] | None) -> str:
    """Where ROS parameter values came from, for error messages: params files and/or ``-p``."""
    args = list(args if args is not None else sys.argv)
    origins = params_files(args)
    if any(arg in ("-p", "--param") for arg in args):
        origins.append("-p")
    return "ROS parameters" + (f" ({', '.join(origins)})" if origins else "")


def describe(name: str, info: Any) -> ParameterDescriptor:
    """Descriptor with the schema's description, range (from Ge/Gt/Le/Lt metadata) and read-only flag."""
    descriptor = ParameterDescriptor(
        name=name, description=info.description or "", read_only=name not in RUNTIME_PARAMETERS
    )
    if name == PALETTE_PARAM:
        descriptor.description = "flat [r, g, b, r, g, b, ...] per class, or a string '[[r,g,b], ...]'; empty = default"
        descriptor.dynamic_typing = True
        return descriptor
    low, high = None, None
    for item in info.metadata:
        if isinstance(item, Ge | Gt):
            low = item.ge if isinstance(item, Ge) else item.gt
        elif isinstance(item, Le | Lt):
            high = item.le if isinstance(item, Le) else item.lt
    if low is None and high is None:
        return descriptor
    if info.annotation is int:
        lo = int(low) if low is not None else -_INT_MAX
        hi = int(high) if high is not None else _INT_MAX
        descriptor.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
    elif info.annotation is float:
        lo = float(low) if low is not None else -_FLOAT_MAX
        hi = float(high) if high is not None else _FLOAT_MAX
        descriptor.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    return descriptor


def list_type(info: Any) -> Parameter.Type:
    """ROS array type of a list field, from its annotation (an empty list carries no type)."""
    (element,) = typing.get_args(info.annotation) or (str,)
    return _LIST_TYPES.get(element, Parameter.Type.STRING_ARRAY)


def to_parameter_value(name: str, value: Any) -> Any:
    """Config value → something ``declare_parameter`` accepts (palette flattened, tuples as lists)."""
    if name == PALETTE_PARAM:
        return [int(c) for rgb in value for c in rgb]
    return list(value) if isinstance(value, tuple) else value


def palette_from_parameter(value: Any, source: str) -> list[list[int]]:
    """Flat int array or YAML/JSON string → ``[[r, g, b], ...]`` (validated later by the schema)."""
    if value is None or value == "" or (isinstance(value, list | tuple) and len(value) == 0):
        return []
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: {PALETTE_PARAM}: not a YAML list of [r, g, b]: {err}") from None
        if not isinstance(parsed, list):
            raise ConfigError(f"{source}: {PALETTE_PARAM}: expected a list, got {value!r}")
        if parsed and all(isinstance(c, int) for c in parsed):
            return palette_from_parameter(parsed, source)
        return parsed
    flat = list(value)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in flat) or len(flat) % 3:
        raise ConfigError(
            f"{source}: {PALETTE_PARAM}: expected a flat int array [r, g, b, ...] (length a multiple of 3), got {flat}"
        )
    return [flat[i : i + 3] for i in range(0, len(flat), 3)]


def _normalise_overrides(node: Node, leaves: list[tuple[str, Any, Any]]) -> None:
    """Make params-file values fit the declared types, as YAML users expect.

    rclpy rejects an INTEGER override for a DOUBLE parameter (``sync.slop_s: 1``), and rcl parses an
    empty YAML list (``sync.required: []``) as NOT_SET; both are converted here.
    """
    overrides = getattr(node, "_parameter_overrides", None)
    if not isinstance(overrides, dict):
        return
    for name, value, info in leaves:
        param = overrides.get(name)
        if param is None or name == PALETTE_PARAM:
            continue
        if info.annotation is float and param.type_ == Parameter.Type.INTEGER:
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(param.value))
        elif param.type_ == Parameter.Type.NOT_SET and isinstance(value, list):
            overrides[name] = Parameter(name, list_type(info), [])


def unknown_overrides(node: Node) -> list[str]:
    """Parameters given on the command line / params file that the node does not know (typos)."""
    overrides = getattr(node, "_parameter_overrides", None) or {}
    described = {name for name, _, _ in iter_leaves(MemSamConfig()) if name.split(".")[0] in CHECKPOINT_SECTIONS}
    return sorted(
        name
        for name in overrides
        if not node.has_parameter(name)
        and name not in described
        and name.split(".")[0] not in ("data", "train", "qos_overrides")
    )


def _claimed_model(node: Node, base: MemSamConfig, source: str) -> dict[str, dict[str, Any]]:
    """``model``/``input``/``classes`` values given explicitly (config_file, params file, ``-p``): the claims the
    checkpoint is checked against. Fields nobody set stay out, so they take the checkpoint's values."""
    claims: dict[str, dict[str, Any]] = {
        section: {key: getattr(getattr(base, section), key) for key in getattr(base, section).model_fields_set}
        for section in CHECKPOINT_SECTIONS
    }
    overrides = getattr(node, "_parameter_overrides", None) or {}
    for name, parameter in overrides.items():
        section, _, key = name.partition(".")
        if section in CHECKPOINT_SECTIONS and key in type(getattr(base, section)).model_fields:
            value = parameter.value
            if name == PALETTE_PARAM:
                value = palette_from_parameter(value, source)
            claims[section][key] = list(value) if isinstance(value, list | tuple) else value
    return claims


def declare_config_parameters(node: Node, source: str) -> MemSamConfig:
    """Declare ``config_file`` and every run-time leaf; return the validated config, in which the ``model``,
    ``input`` and ``classes`` sections hold only the values given explicitly (``model_fields_set``), so that
    :func:`memsam_core.model.build.resolve_config` fills in the checkpoint's and rejects contradictions.

    Raises :class:`ConfigError` (naming the file or ``source`` and the field) for any bad value.
    """
    config_file = node.declare_parameter(
        CONFIG_FILE_PARAM,
        "",
        ParameterDescriptor(
            description="YAML with the config schema (e.g. a training config) providing defaults; "
            "explicit ROS parameters override it",
            read_only=True,
        ),
    ).value
    base = load_config(config_file or None)  # its errors name config_file and the field
    leaves = [leaf for leaf in iter_leaves(base) if leaf[0].split(".")[0] in NODE_SECTIONS]
    _normalise_overrides(node, leaves)
    data = base.to_dict()
    for name, value, info in leaves:
        descriptor = describe(name, info)
        ros_value = to_parameter_value(name, value)
        if isinstance(ros_value, list) and not ros_value and not descriptor.dynamic_typing:
            descriptor.type = list_type(info).value
        try:
            declared = node.declare_parameter(name, ros_value, descriptor).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            raise ConfigError(f"{source}: {name}: {_short_reason(err)}") from None
        if name == PALETTE_PARAM:
            declared = palette_from_parameter(declared, source)
        section, key = name.split(".", 1)
        data[section][key] = list(declared) if isinstance(declared, list | tuple) else declared
    runtime = config_from_dict({k: v for k, v in data.items() if k not in CHECKPOINT_SECTIONS}, source)
    sections = {}
    for section, claims in _claimed_model(node, base, source).items():
        schema = type(getattr(runtime, section))
        try:  # each claim checked on its own; how they fit together is checked once the checkpoint's are in
            sections[section] = schema.model_validate(claims)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source, prefix=section)) from None
    return runtime.model_copy(update=sections)


def _short_reason(err: Exception) -> str:
    text = str(err)
    if "Reason: " in text:
        text = text.split("Reason: ", 1)[1]
    return text.rsplit(":", 1)[0] if text.count(":") else text


def effective_config(config: MemSamConfig, source: str) -> MemSamConfig:
    """The node's whole config: the checkpoint's model, input contract and classes plus the run-time parameters
    (a claim that contradicts the checkpoint is a one-line :class:`ConfigError`). Without a checkpoint (untrained
    weights) the claims and the schema's defaults make the model."""
    checkpoint = config.inference.checkpoint
    if not checkpoint:
        return config_from_dict(config.to_dict(), source)
    try:
        return checkpoint_config(checkpoint, config, source)
    except CheckpointError as err:
        raise ConfigError(f"inference.checkpoint: {err}") from None
