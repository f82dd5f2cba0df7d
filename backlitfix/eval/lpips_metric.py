"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) without downloading anything.

The calibrated linear layers ship inside the ``lpips`` package. The AlexNet backbone is ImageNet
weights that backlitfix never fetches: the user names a local file in config (``eval.lpips_backbone``).
``lpips.LPIPS`` is built with ``pretrained=False, pnet_rand=True`` so neither it nor torchvision
reaches for the network; both sets of weights are then loaded here with ``weights_only=True``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

BACKBONE_HINT = (
    "LPIPS needs ImageNet AlexNet weights, which backlitfix never downloads: on a machine with internet run "
    "python -c \"import torch, torchvision; torch.save(torchvision.models.alexnet(weights='IMAGENET1K_V1')"
    ".state_dict(), 'alexnet.pth')\" and set eval.lpips_backbone: /path/to/alexnet.pth in your config")
CONV_INDICES = (0, 3, 6, 8, 10)  # the convolutions of torchvision's alexnet().features


class LpipsUnavailable(Exception):
    """LPIPS cannot be computed; ``str()`` says why and what to do."""


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LpipsUnavailable(f"no LPIPS: AlexNet weights {path} not found; {BACKBONE_HINT}") from None
    except Exception as e:  # noqa: BLE001 - a pickle with code in it, a truncated file, not a checkpoint at all
        raise LpipsUnavailable(f"no LPIPS: cannot read AlexNet weights {path}: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LpipsUnavailable(f"no LPIPS: {path} is not a state dict of AlexNet weights")
    return state


def backbone_state(path: Path) -> dict[str, torch.Tensor]:
    """``{"0.weight": ..., "10.bias": ...}`` from a torchvision AlexNet state dict (whole, or its
    ``features`` only)."""
    state = _read_state(path)
    out = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    need = [f"{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")]
    missing = [k for k in need if k not in out]
    if missing:
        raise LpipsUnavailable(f"no LPIPS: {path} is not torchvision AlexNet weights (lacks features."
                               f"{missing[0]}); {BACKBONE_HINT}")
    return {k: out[k] for k in need}


class Lpips:
    """``Lpips(backbone_file)(a, b)``: LPIPS distance of two same-size H x W x 3 uint8/uint16 images."""

    def __init__(self, backbone: Path | str | None, device: str | torch.device = "cpu"):
        if backbone is None:
            raise LpipsUnavailable(f"no LPIPS: eval.lpips_backbone is not set; {BACKBONE_HINT}")
        backbone = Path(backbone).expanduser()
        state = backbone_state(backbone)
        try:
            import lpips
        except ImportError:
            raise LpipsUnavailable("no LPIPS: the lpips package is missing (pip install 'backlitfix[eval]')") from None
        with warnings.catch_warnings():  # torchvision's notice about the old `pretrained=` argument
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False)
        lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        lin = torch.load(lin_file, map_location="cpu", weights_only=True)
        net = {}
        for name, p in model.net.named_parameters():  # "slice2.3.weight" <- "3.weight"
            key = name.split(".", 1)[1]
            if state[key].shape != p.shape:
                raise LpipsUnavailable(f"no LPIPS: {backbone}: features.{key} has shape {tuple(state[key].shape)}, "
                                       f"AlexNet's is {tuple(p.shape)}")
            net[f"net.{name}"] = state[key]
        missing, unexpected = model.load_state_dict({**lin, **net}, strict=False)
        left = [k for k in missing if not k.startswith(("lins.", "scaling_layer."))]
        if left or unexpected:  # every weight must come from a file, none may stay random
            raise LpipsUnavailable(f"no LPIPS: weights did not fit the model (missing {left}, unexpected {unexpected})")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backbone = backbone

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            raise ValueError(f"sizes differ: {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")
        x, y = (self._tensor(v) for v in (a, b))
        return float(self.model(x, y, normalize=True).item())

    def _tensor(self, pixels: np.ndarray) -> torch.Tensor:
        scale = 1.0 / np.iinfo(pixels.dtype).max
        t = torch.from_numpy(np.require(pixels, requirements=("C", "W"))).to(self.device).float().mul_(scale)
        return t.permute(2, 0, 1)[None]
