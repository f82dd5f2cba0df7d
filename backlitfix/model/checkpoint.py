"""Reading and writing enhancement-network checkpoints.

Two formats are read:
- the project's own: safetensors, with string metadata (method, guidance encoder, training data,
  date, project version, padding). This is what `save_model` writes.
- the authors' released ``.pth`` files: a plain mapping of 30 tensors, names prefixed ``module.``
  (DataParallel), saved from CUDA. Loaded on CPU with ``weights_only=True``: never an unrestricted pickle.
Anything else is rejected with an error that says what was found.
"""
from __future__ import annotations

import datetime as _dt
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from .network import EnhanceNet

FORMAT_TAG = "backlitfix-enhancer/1"


class CheckpointError(Exception):
    """A file that is not a usable enhancement-network checkpoint."""


@dataclass
class ModelInfo:
    """What is known about a model besides its weights; stored as safetensors metadata."""

    name: str = ""
    method: str = "unknown"  # rave | clip-lit | clip-lit-latent | official | ...
    guidance: str = "unknown"  # guidance encoder, e.g. "ViT-B-32/openai"
    training_data: str = ""  # a short summary: folders, counts
    date: str = ""
    version: str = ""  # backlitfix version that wrote it
    padding: str = "reflect"  # padding of the four outer convs the model must run with (§1.5)
    source: str = ""  # the file it came from
    extra: dict = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT_TAG,
            "method": self.method,
            "guidance": self.guidance,
            "training_data": self.training_data,
            "date": self.date or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "version": self.version or __version__,
            "padding": self.padding,
        }
        if self.extra:
            meta["extra"] = json.dumps(self.extra, sort_keys=True)
        return meta


def _strip_prefix(state: Mapping) -> dict[str, torch.Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _check_state(state: Mapping, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: not an enhancement-network checkpoint (expected a mapping of tensors, "
            f"found {type(state).__name__})"
        )
    state = _strip_prefix(state)
    expected = {k: v.shape for k, v in EnhanceNet().state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unknown tensors (e.g. {unexpected[0]})")
        raise CheckpointError(f"{path}: not a CLIP-LIT/RAVE enhancement network: " + ", ".join(detail))
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(shape)}")
    return {k: v.float() for k, v in state.items()}


def _pth_problem(e: Exception) -> str:
    """Our own words for torch.load's refusal. Never torch's advice to retry with weights_only=False:
    that runs whatever code the file holds."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"not a plain checkpoint of tensors: it holds a Python object ({found.group(1)}) that is "
                "never loaded, for safety; save the network's state_dict (or a .safetensors file) instead")
    if "weights_only" in text or isinstance(e, pickle.UnpicklingError):
        return "not a PyTorch checkpoint of tensors (unreadable pickle data); is it a complete .pth file?"
    if "zip archive" in text or "central directory" in text:
        return "a damaged PyTorch checkpoint (its zip archive is incomplete); download or copy it again"
    return f"cannot read as a PyTorch checkpoint: {type(e).__name__}"


def _read_pth(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, refused globals
        raise CheckpointError(f"{path}: {_pth_problem(e)}") from None
    # Training scripts commonly nest the weights; accept the usual wrappers, nothing else.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "net", "params"):
            if key in obj and isinstance(obj[key], Mapping):
                return obj[key]
    return obj


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelInfo]:
    """Read a state dict and its metadata from a ``.safetensors`` or official ``.pth`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix.lower() == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
        extra = json.loads(meta.get("extra", "{}") or "{}")
        info = ModelInfo(
            name=path.stem,
            method=meta.get("method", "unknown"),
            guidance=meta.get("guidance", "unknown"),
            training_data=meta.get("training_data", ""),
            date=meta.get("date", ""),
            version=meta.get("version", ""),
            padding=meta.get("padding", "reflect"),
            source=str(path),
            extra=extra,
        )
        if info.padding not in ("reflect", "zeros"):
            raise CheckpointError(f"{path}: unknown padding {info.padding!r} in metadata")
    else:
        state = _read_pth(path)
        # The released checkpoints were trained with zero padding in the RAVE repo but are run with
        # reflect padding by both reference inference scripts; reproduce the reference (§1.5).
        info = ModelInfo(name=path.stem, method="official", padding="reflect", source=str(path))
    return _check_state(state, path), info


def load_model(path: str | Path) -> tuple[EnhanceNet, ModelInfo]:
    state, info = load_checkpoint(path)
    net = EnhanceNet(padding=info.padding)
    net.load_state_dict(state, strict=True)
    return net.eval(), info


def save_model(net: EnhanceNet, path: str | Path, info: ModelInfo) -> None:
    """Write a safetensors checkpoint with metadata, atomically."""
    from safetensors.torch import save

    from ..io.atomic import atomic_write

    info.padding = net.padding
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    data = save(state, metadata=info.to_metadata())
    atomic_write(Path(path), lambda f: f.write(data))
