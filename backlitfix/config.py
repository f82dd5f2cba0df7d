"""Layered settings: package defaults < user config < ``--config FILE`` < command-line flags.

The shipped ``config.yaml`` (repo root, symlinked as ``backlitfix/config.yaml``) is the only place
default *values* live; the dataclasses below define the keys, their types and allowed values. Every
layer is validated here, in one place, and any problem is a :class:`ConfigError` naming the key, the
file (or "command line"), the value and what is allowed. The result is a frozen :class:`Config`::

    cfg = load_config(Path("my.yaml"), {"mode": "exact", "output.format": None})
    cfg.output.jpeg_quality
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .userdirs import config_dir

__all__ = [
    "COMMAND_LINE",
    "Config",
    "ConfigError",
    "ExactConfig",
    "FastConfig",
    "InputConfig",
    "OutputConfig",
    "WatchConfig",
    "BurstConfig",
    "TrainingConfig",
    "EvalConfig",
    "config_keys",
    "load_config",
    "user_config_path",
]

COMMAND_LINE = "command line"
APP_NAME = "backlitfix"
CONFIG_NAME = "config.yaml"


class ConfigError(Exception):
    """A bad setting or config file. ``str(err)`` is a complete, user-facing message."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None, value: Any = None):
        super().__init__(message)
        self.key = key
        self.source = source
        self.value = value


# --------------------------------------------------------------------------------------------
# Schema: the dataclasses are the schema. Field metadata carries the range / extra checks.
# --------------------------------------------------------------------------------------------


def _opt(*, ge=None, gt=None, le=None, allowed: str | None = None, check=None):
    """A field with no default (defaults come from config.yaml) and validation metadata."""
    return field(metadata={"ge": ge, "gt": gt, "le": le, "allowed": allowed, "check": check})


def _check_suffix(value: str) -> str | None:
    if any(c in value for c in ("/", "\\", "\0")):
        return "contains a path separator"
    return None


def _check_nonempty(value: str) -> str | None:
    return "empty" if not value.strip() else None


@dataclass(frozen=True)
class FastConfig:
    working_megapixels: float = _opt(gt=0)
    guide_radius: int = _opt(ge=1)
    guide_eps: float = _opt(gt=0)


@dataclass(frozen=True)
class ExactConfig:
    tile: int = _opt(ge=64)


@dataclass(frozen=True)
class InputConfig:
    recursive: bool = _opt()
    max_pixels: int = _opt(ge=1)


@dataclass(frozen=True)
class OutputConfig:
    dir: Path | None = _opt(allowed="a folder path, or null for a 'backlitfix' folder beside the inputs",
                            check=_check_nonempty)
    suffix: str = _opt(allowed="a string without / or \\ (quote it if it looks like a number)", check=_check_suffix)
    format: Literal["auto", "jpeg", "tiff", "png"] = _opt()
    jpeg_quality: int = _opt(ge=1, le=100)
    overwrite: bool = _opt()


@dataclass(frozen=True)
class WatchConfig:
    quiet_seconds: float = _opt(gt=0)
    polling_interval: float = _opt(gt=0)
    rescan_seconds: float = _opt(ge=0)
    journal: str = _opt(allowed="output, state, or a file path", check=_check_nonempty)


@dataclass(frozen=True)
class AutoConfig:
    bias: float = _opt(ge=-3, le=3)  # added to auto strength's score: < 0 leaves more photos alone


@dataclass(frozen=True)
class BurstConfig:
    gap_seconds: float = _opt(ge=0)


@dataclass(frozen=True)
class TrainingConfig:
    clip_model: str = _opt(allowed="an open_clip architecture name, e.g. ViT-B-32", check=_check_nonempty)
    clip_pretrained: str = _opt(allowed="an open_clip pretrained tag (e.g. openai) or a local checkpoint file",
                                check=_check_nonempty)
    identity: Literal["guidance", "RN101"] = _opt()
    identity_pretrained: str = _opt(allowed="an open_clip pretrained tag or a local checkpoint file for RN101",
                                    check=_check_nonempty)
    steps: int = _opt(ge=1)
    warmup_steps: int = _opt(ge=0)
    prompt_init_steps: int = _opt(ge=0)
    round_steps: int = _opt(ge=1)
    refine_steps: int = _opt(ge=0)
    views: int = _opt(ge=1)
    batch_size: int = _opt(ge=1)
    image_size: int = _opt(ge=32)
    lr: float = _opt(gt=0)
    checkpoint_every: int = _opt(ge=1)
    seed: int = _opt(ge=0)
    shift_tokens: int = _opt(ge=0)
    embed_size: int = _opt(ge=64)


@dataclass(frozen=True)
class EvalConfig:
    niqe_params: Path | None = _opt(allowed="the NIQE pristine-model file (.mat or .npz), or null",
                                    check=_check_nonempty)
    lpips_backbone: Path | None = _opt(allowed="a file of ImageNet AlexNet weights, or null (no LPIPS)",
                                       check=_check_nonempty)
    inception_weights: Path | None = _opt(allowed="a file of FID Inception weights, or null (no FID)",
                                          check=_check_nonempty)


@dataclass(frozen=True)
class Config:
    model: str | None = _opt(allowed="a model name or checkpoint path, or null for the embedded default",
                             check=_check_nonempty)
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt()
    mode: Literal["fast", "exact"] = _opt()
    strength: float | Literal["auto"] = _opt(ge=0, le=2)  # "auto": backlitfix.strength decides per photo
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _opt()
    backend: Literal["auto", "torch", "onnxruntime", "openvino"] = _opt()
    jobs: int = _opt(ge=0)
    memory_budget_mb: int = _opt(ge=0)
    fast: FastConfig = _opt()
    exact: ExactConfig = _opt()
    input: InputConfig = _opt()
    output: OutputConfig = _opt()
    watch: WatchConfig = _opt()
    auto: AutoConfig = _opt()
    burst: BurstConfig = _opt()
    training: TrainingConfig = _opt()
    eval: EvalConfig = _opt()


@dataclass(frozen=True)
class _Leaf:
    key: str  # dotted
    base: type  # bool | int | float | str | Path, or str for a Literal
    choices: tuple[str, ...]
    nullable: bool
    meta: Mapping[str, Any]
    words: tuple[str, ...] = ()  # a number-or-word setting (strength: auto) accepts these words too


def _schema(cls: type, prefix: str = "") -> tuple[dict[str, _Leaf], dict[str, type]]:
    """Flatten the dataclass tree into {dotted key: _Leaf} and {dotted section: dataclass}."""
    leaves: dict[str, _Leaf] = {}
    sections: dict[str, type] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            sections[key] = hint
            sub_leaves, sub_sections = _schema(hint, key + ".")
            leaves.update(sub_leaves)
            sections.update(sub_sections)
            continue
        args = typing.get_args(hint)
        nullable = type(None) in args
        if nullable:
            (hint,) = [a for a in args if a is not type(None)]
        words = tuple(w for a in typing.get_args(hint) if typing.get_origin(a) is Literal for w in typing.get_args(a))
        if words:  # float | Literal["auto"]: a number, or one of the words
            (hint,) = [a for a in typing.get_args(hint) if typing.get_origin(a) is not Literal]
            leaves[key] = _Leaf(key, hint, (), nullable, f.metadata, words)
        elif typing.get_origin(hint) is Literal:
            leaves[key] = _Leaf(key, str, tuple(typing.get_args(hint)), nullable, f.metadata)
        else:
            leaves[key] = _Leaf(key, hint, (), nullable, f.metadata)
    return leaves, sections


_LEAVES, _SECTIONS = _schema(Config)


def config_keys() -> tuple[str, ...]:
    """Every dotted setting key, in declaration order (e.g. ``"output.jpeg_quality"``)."""
    return tuple(_LEAVES)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _fmt_num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _allowed(leaf: _Leaf) -> str:
    m = leaf.meta
    if m.get("allowed"):
        return m["allowed"]
    if leaf.choices:
        text = "one of " + ", ".join(leaf.choices)
    elif leaf.base is bool:
        text = "true or false"
    else:
        noun = "an integer" if leaf.base is int else "a number" if leaf.base is float else "a string"
        ge, gt, le = m.get("ge"), m.get("gt"), m.get("le")
        lo = ge if ge is not None else gt
        if lo is not None and le is not None and gt is None:
            text = f"{noun} from {_fmt_num(lo)} to {_fmt_num(le)}"
        else:
            parts = []
            if ge is not None:
                parts.append(f">= {_fmt_num(ge)}")
            if gt is not None:
                parts.append(f"> {_fmt_num(gt)}")
            if le is not None:
                parts.append(f"<= {_fmt_num(le)}")
            text = f"{noun} " + " and ".join(parts) if parts else noun
    if leaf.words:
        text += ", or " + ", ".join(leaf.words)
    if leaf.nullable:
        text += ", or null"
    return text


def _where(source: str) -> str:
    return "on the command line" if source == COMMAND_LINE else f"in {source}"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return repr(str(value))
    return repr(value)


def _bad(leaf: _Leaf, value: Any, source: str, why: str = "") -> ConfigError:
    reason = f" ({why})" if why else ""
    return ConfigError(
        f"invalid value for {leaf.key} {_where(source)}: {_show(value)}{reason}; allowed: {_allowed(leaf)}",
        key=leaf.key, source=source, value=value,
    )


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce_text(leaf: _Leaf, value: str) -> Any:
    """Flags may arrive as text (e.g. a generic ``--set key=value``); files never get this leniency."""
    text = value.strip()
    if leaf.base is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
    elif leaf.base is int:
        try:
            return int(text)
        except ValueError:
            pass
    elif leaf.base is float:
        try:
            return float(text)
        except ValueError:
            pass
    elif leaf.nullable and text.lower() in ("null", "none"):
        return None
    return value


def _validate(leaf: _Leaf, value: Any, source: str) -> Any:
    """Return the typed value, or raise ConfigError."""
    original = value
    if leaf.words and isinstance(value, str) and value.strip() in leaf.words:
        return value.strip()
    if source == COMMAND_LINE and isinstance(value, str):
        value = _coerce_text(leaf, value)
    if value is None:
        if leaf.nullable:
            return None
        raise _bad(leaf, original, source, "a value is required")
    base = leaf.base
    if base is bool:
        if not isinstance(value, bool):
            raise _bad(leaf, original, source, "not true/false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _bad(leaf, original, source, "not an integer")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(leaf, original, source, "not a number")
        value = float(value)
        if not math.isfinite(value):
            raise _bad(leaf, original, source, "not a finite number")
    elif base in (str, Path):
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            raise _bad(leaf, original, source, "not a string")
        if leaf.choices and value not in leaf.choices:
            hint = difflib.get_close_matches(value.lower(), leaf.choices, n=1)
            raise _bad(leaf, original, source, f"did you mean {hint[0]}?" if hint else "")
    else:  # pragma: no cover - schema programming error
        raise TypeError(f"unsupported setting type {base!r} for {leaf.key}")
    m = leaf.meta
    if base in (int, float):
        if (m.get("ge") is not None and value < m["ge"]) or (m.get("gt") is not None and value <= m["gt"]) or (
            m.get("le") is not None and value > m["le"]
        ):
            raise _bad(leaf, original, source, "out of range")
    if m.get("check"):
        problem = m["check"](value)
        if problem:
            raise _bad(leaf, original, source, problem)
    if base is Path:
        value = Path(value).expanduser()
    return value


def _unknown(key: str, source: str) -> ConfigError:
    candidates = list(_LEAVES) + list(_SECTIONS)
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    if not close:  # a right name in the wrong section, e.g. "jpeg_quality" at the top level
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in _LEAVES if k.rsplit(".", 1)[-1] == leaf][:1]
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(_LEAVES)}"
    return ConfigError(f"unknown key {key} {_where(source)}{hint}", key=key, source=source)


def _flatten(data: Mapping, source: str, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {dotted key: validated value}; unknown keys and misplaced sections raise."""
    flat: dict[str, Any] = {}
    for raw_key, value in data.items():
        if not isinstance(raw_key, str):
            raise ConfigError(f"invalid key {raw_key!r} {_where(source)} (keys must be names)",
                              key=str(raw_key), source=source)
        key = prefix + raw_key
        if key in _SECTIONS:
            if value is None:  # an empty section ("output:" with nothing under it) changes nothing
                continue
            if not isinstance(value, Mapping):
                sub = ", ".join(k for k in _LEAVES if k.startswith(key + "."))
                raise ConfigError(
                    f"invalid value for {key} {_where(source)}: {_show(value)}; "
                    f"allowed: a section with the keys {sub}",
                    key=key, source=source, value=value,
                )
            flat.update(_flatten(value, source, key + "."))
        elif key in _LEAVES:
            flat[key] = _validate(_LEAVES[key], value, source)
        else:
            raise _unknown(key, source)
    return flat


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse(text: str, source: str) -> dict:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or " ".join(str(exc).split())
        if mark is not None:
            detail += f" (line {mark.line + 1}, column {mark.column + 1})"
        raise ConfigError(f"cannot parse config file {source}: {detail}", source=source) from None
    if data is None:  # empty file, or comments only
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {source} must hold key: value settings, not a {type(data).__name__}", source=source)
    return data


def _read_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {source} is a folder, not a file", source=source) from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {source}: not UTF-8 text", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}", source=source) from None
    return _flatten(_parse(text, source), source)


def _package_defaults() -> dict[str, Any]:
    resource = importlib.resources.files("backlitfix") / CONFIG_NAME
    source = f"package defaults ({resource})"
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:  # a packaging mistake, not a user mistake
        raise ConfigError(f"cannot read {source}: {exc}; the installation is incomplete", source=source) from None
    flat = _flatten(_parse(text, source), source)
    missing = [k for k in _LEAVES if k not in flat]
    if missing:
        raise ConfigError(f"{source} lack the keys {', '.join(missing)}", source=source)
    return flat


def user_config_path(*, platform: str | None = None) -> Path:
    """Where the per-user config lives (the file need not exist): ``config.yaml`` in
    :func:`backlitfix.userdirs.config_dir` (Linux: ``$XDG_CONFIG_HOME/backlitfix``, absolute values
    only, else ``~/.config/backlitfix``; macOS: ``$XDG_CONFIG_HOME`` when set, else ``~/Library/Application
    Support/backlitfix``; Windows: ``%APPDATA%\\backlitfix``)."""
    return config_dir(platform) / CONFIG_NAME


def _overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted (or nested) flag values -> validated flat dict; None means "flag not given"."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and key in _SECTIONS:
            for sub_key, sub_value in value.items():
                if sub_value is not None:
                    nested[f"{key}.{sub_key}"] = sub_value
        else:
            nested[key] = value
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if key not in _LEAVES:
            raise _unknown(key, COMMAND_LINE)
        flat[key] = _validate(_LEAVES[key], value, COMMAND_LINE)
    return flat


def _build(cls: type, flat: Mapping[str, Any], prefix: str = ""):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if key in _SECTIONS:
            kwargs[f.name] = _build(hints[f.name], flat, key + ".")
        else:
            kwargs[f.name] = flat[key]
    return cls(**kwargs)


_DEFAULT = "default"


def load_config(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    user_config: Path | None | Literal["default"] = _DEFAULT,
) -> Config:
    """Merge the layers and return a validated, frozen :class:`Config`.

    ``config_file``: the ``--config FILE`` (must exist and parse). ``overrides``: command-line values
    by dotted key, e.g. ``{"mode": "exact", "output.format": "png"}``; None values are ignored.
    ``user_config``: ``"default"`` = :func:`user_config_path`; None = skip it; a path = use that
    (a missing user config is simply absent; a present but broken one is an error).
    """
    flat = _package_defaults()
    if isinstance(user_config, str) and user_config == _DEFAULT:
        user_path: Path | None = user_config_path()
    else:
        user_path = None if user_config is None else Path(user_config)
    if user_path is not None and (user_path.exists() or user_path.is_symlink()):
        flat.update(_read_file(user_path))
    if config_file is not None:
        flat.update(_read_file(Path(config_file)))
    if overrides:
        flat.update(_overrides(overrides))
    return _build(Config, flat)
