"""FID (Heusel et al. 2017) with pytorch-fid's Inception, from a local weight file only.

The network is the "FID Inception" of pytorch-fid (TensorFlow's graph ported, with its own pooling
quirks), built from pytorch-fid's blocks on torchvision's Inception3 *without* the download that
``pytorch_fid.inception.fid_inception_v3`` does; the weights come from ``eval.inception_weights``
(pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``). Features: the 2048-d pool3 activations of
each image resized to 299 x 299 (bilinear), as pytorch-fid computes them; the distance is pytorch-fid's
formula, computed in a way that stays exact and fast for small sets (see :func:`frechet`).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

WEIGHTS_HINT = (
    "FID needs the Inception weights of pytorch-fid, which backlitfix never downloads: fetch "
    "pt_inception-2015-12-05-6726825d.pth from https://github.com/mseitzer/pytorch-fid/releases and set "
    "eval.inception_weights: /path/to/it in your config")


class FidUnavailable(Exception):
    """FID cannot be computed; ``str()`` says why and what to do."""


def build_network() -> torch.nn.Module:
    """pytorch-fid's FID Inception architecture with untrained weights (nothing is downloaded)."""
    try:
        from pytorch_fid import inception as pfi
    except ImportError:
        raise FidUnavailable("no FID: the pytorch-fid package is missing (pip install 'backlitfix[eval]')") from None
    from torchvision.models import Inception3

    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net.eval()


class Inception:
    """``Inception(weights_file).features(images)`` -> N x 2048 pool3 activations."""

    LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")

    def __init__(self, weights: Path | str | None, device: str | torch.device = "cpu"):
        if weights is None:
            raise FidUnavailable(f"no FID: eval.inception_weights is not set; {WEIGHTS_HINT}")
        weights = Path(weights).expanduser()
        net = build_network()
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FidUnavailable(f"no FID: Inception weights {weights} not found; {WEIGHTS_HINT}") from None
        except Exception as e:  # noqa: BLE001 - a pickle with code in it, a truncated file, ...
            raise FidUnavailable(f"no FID: cannot read Inception weights {weights}: {e}") from None
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0]
            raise FidUnavailable(
                f"no FID: {weights} is not pytorch-fid's Inception ({first}); {WEIGHTS_HINT}"
            ) from None
        self.device = torch.device(device)
        self.net = net.to(self.device)

    @torch.no_grad()
    def features(self, images: Iterable[np.ndarray], batch: int = 16) -> np.ndarray:
        feats, pending = [], []

        def flush():
            x = torch.cat(pending) * 2 - 1
            for name in self.LAYERS:
                x = getattr(self.net, name)(x)
            feats.append(x.flatten(1).cpu().double().numpy())
            pending.clear()

        for pixels in images:  # each resized on its own (sizes differ), then run in batches
            x = torch.from_numpy(np.require(pixels, requirements=("C", "W"))).to(self.device).float()
            x = x.mul_(1.0 / np.iinfo(pixels.dtype).max).permute(2, 0, 1)[None]
            pending.append(F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))
            if len(pending) == batch:
                flush()
        if pending:
            flush()
        return np.concatenate(feats) if feats else np.zeros((0, 2048))


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of activations (N x d each).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^1/2)``. The last trace is the sum of the square
    roots of the eigenvalues of S_a S_b, which are real and >= 0; rather than ``sqrtm`` of a singular
    2048 x 2048 matrix (minutes on a CPU, and inexact) it is taken from the small side: with centred
    activations X_a, X_b it is the nuclear norm of X_a X_b^T / sqrt((n_a - 1)(n_b - 1)) when a set has
    fewer images than features, else from the eigenvalues of S_a^1/2 S_b S_a^1/2.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs at least 2 images in each set (got {len(a)} and {len(b)})")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    xa, xb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    diff = a.mean(0) - b.mean(0)
    tr_a, tr_b = (xa * xa).sum() / na, (xb * xb).sum() / nb
    if min(len(a), len(b)) < a.shape[1]:
        tr_cross = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    else:
        w, v = np.linalg.eigh(xa.T @ xa / na)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ (xb.T @ xb / nb) @ root), 0, None)).sum()
    return max(0.0, float(diff @ diff + tr_a + tr_b - 2 * tr_cross))  # >= 0 but for rounding
