"""One place that knows every model: the embedded default, the user's trained models, and any path.

A name resolves, in order, to: a path that exists; the embedded default (``default``); a file
``<name>.safetensors`` (or ``.pth``) in the user model folder or a folder listed in
``$BACKLITFIX_MODEL_PATH``. `backlitfix train` writes into the user model folder, so a trained
style is then usable by name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..userdirs import data_dir
from .checkpoint import CheckpointError

DEFAULT_NAME = "default"
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt")


class ModelNotFound(CheckpointError):
    pass


def embedded_default() -> Path | None:
    """The model shipped inside the package, if this build has one."""
    ref = resources.files("backlitfix") / "models" / "default.safetensors"
    return Path(str(ref)) if ref.is_file() else None


def user_model_dir() -> Path:
    return data_dir() / "models"


def search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("BACKLITFIX_MODEL_PATH", "").split(os.pathsep) if p]
    return [user_model_dir(), *extra]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    kind: str  # embedded | user | path


def available() -> list[ModelEntry]:
    """Every model known by name, embedded default first."""
    out = []
    if (d := embedded_default()) is not None:
        out.append(ModelEntry(DEFAULT_NAME, d, "embedded"))
    seen = {DEFAULT_NAME}
    for folder in search_dirs():
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in MODEL_SUFFIXES and p.stem not in seen and p.is_file():
                seen.add(p.stem)
                out.append(ModelEntry(p.stem, p, "user"))
    return out


def resolve(spec: str | os.PathLike | None) -> ModelEntry:
    """Turn ``--model NAME|PATH`` (or None for the default) into a model file."""
    if spec is None or str(spec) == DEFAULT_NAME:
        d = embedded_default()
        if d is None:
            raise ModelNotFound(
                "no default model is embedded in this build of backlitfix yet: "
                "pass --model NAME|PATH (a .safetensors or official CLIP-LIT/RAVE .pth checkpoint)"
            )
        return ModelEntry(DEFAULT_NAME, d, "embedded")
    p = Path(spec).expanduser()
    if p.is_file():
        return ModelEntry(p.stem, p, "path")
    for entry in available():
        if entry.name == str(spec):
            return entry
    names = ", ".join(e.name for e in available()) or "none"
    raise ModelNotFound(
        f"model {str(spec)!r} is neither a file nor a known model name (known: {names}; "
        f"user models live in {user_model_dir()})"
    )
