"""RAVE's residual guidance in an embedding that needs no downloaded weights.

RAVE (Gaintseva et al., ECCV 2024) guides the network with one vector: r = n(mean well-lit embedding -
mean backlit embedding), and drives each enhanced image's normalised embedding to the well-lit side:
L_res = mean_b (<n(phi(E_b)), r> - <v_wl, r>)^2 (reference §4.1-4.2). Only an image encoder is needed.
CLIP or ImageNet weights cannot be had here, so phi is a fixed, differentiable description of how a
photo is exposed, which is what separates backlit from well-lit photos:

- a soft histogram of luma (10 Gaussian bins): the tonal distribution;
- the 4 x 4 grid of regional mean luma, *sorted*: how exposure is spread over regions, independent of
  where they are (a dark subject in the middle or at the bottom is the same problem);
- the sorted regional standard deviations of luma: local contrast per region;
- soft shares of crushed (Y < 0.04) and clipped (Y > 0.96) pixels;
- mean saturation and the mean chromaticity offsets (r - g, b - g): colour.

Each feature is standardised by the mean and standard deviation over the reference photos (backlit and
well-lit together), so no feature dominates by its units and the cosine is taken about their centre.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .zero_reference import EPS, luma

HIST_CENTRES = torch.linspace(0.05, 0.95, 10)
HIST_SIGMA = 0.06
GRID = 4


def features(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, D) raw exposure, tone and colour statistics; differentiable."""
    y = luma(x)
    B = x.shape[0]
    c = HIST_CENTRES.to(x)
    w = torch.exp(-0.5 * ((y.reshape(B, -1, 1) - c) / HIST_SIGMA) ** 2)
    hist = w.mean(1)
    hist = hist / (hist.sum(1, keepdim=True) + EPS)
    m = F.adaptive_avg_pool2d(y, GRID).reshape(B, -1)
    sq = F.adaptive_avg_pool2d(y * y, GRID).reshape(B, -1)
    sd = (sq - m * m).clamp_min(1e-6).sqrt()
    regions = torch.sort(m, dim=1).values
    contrast = torch.sort(sd, dim=1).values
    crushed = torch.sigmoid((0.04 - y) / 0.01).mean(dim=(1, 2, 3))
    clipped = torch.sigmoid((y - 0.96) / 0.01).mean(dim=(1, 2, 3))
    mx, mn = x.amax(1), x.amin(1)
    sat = ((mx - mn) / (mx + 0.05)).mean(dim=(1, 2))
    mean = x.mean(dim=(2, 3))
    chroma = mean / (mean.sum(1, keepdim=True) + EPS)
    colour = torch.stack([sat, chroma[:, 0] - chroma[:, 1], chroma[:, 2] - chroma[:, 1]], 1)
    return torch.cat([hist, regions, contrast, crushed[:, None], clipped[:, None], colour], 1)


def normalise(v: torch.Tensor) -> torch.Tensor:
    return v / (v.norm(dim=-1, keepdim=True) + 1e-12)


class StatsResidual(nn.Module):
    """The embedding's centre and scale, the residual r and the threshold <v_wl, r>, fixed once from photos."""

    def __init__(self, centre: torch.Tensor, scale: torch.Tensor, residual: torch.Tensor, threshold: float):
        super().__init__()
        self.register_buffer("centre", centre)
        self.register_buffer("scale", scale)
        self.register_buffer("residual", residual)
        self.threshold = float(threshold)

    @classmethod
    def fit(cls, backlit: torch.Tensor, welllit: torch.Tensor) -> StatsResidual:
        """From raw features (N, D) of backlit and well-lit photos: RAVE's Eq. 10 in the standardised space.

        The threshold differs from RAVE's (see the comment below)."""
        both = torch.cat([backlit, welllit])
        centre, scale = both.mean(0), both.std(0).clamp_min(1e-3)
        z = lambda f: normalise((f - centre) / scale)
        v_bl, v_wl = normalise(z(backlit).mean(0)), normalise(z(welllit).mean(0))
        r = normalise(v_wl - v_bl)
        # RAVE's threshold is <v_wl, r>, v_wl the normalised mean. CLIP embeddings share a large common
        # component, so there the mean keeps almost unit norm; in this centred space the mean of diverse
        # photos is short, and n(mean) would set a target (~1) no single photo reaches. The mean
        # projection of the well-lit photos themselves is the level a well-lit photo actually has.
        return cls(centre, scale, r, float((z(welllit) @ r).mean()))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """n(standardised phi(x)): the unit embedding of images (B, 3, H, W)."""
        return normalise((features(x) - self.centre) / self.scale)

    def projection(self, x: torch.Tensor) -> torch.Tensor:
        """<n(phi(x)), r> per image: low for backlit-looking photos, about ``threshold`` for well-lit ones."""
        return self.embed(x) @ self.residual

    def loss(self, enhanced: torch.Tensor) -> torch.Tensor:
        """RAVE's residual loss: mean over the batch of (<n(phi(E)), r> - threshold)^2."""
        return (self.projection(enhanced) - self.threshold).pow(2).mean()

    def to_json(self) -> dict:
        return {"centre": self.centre.tolist(), "scale": self.scale.tolist(), "residual": self.residual.tolist(),
                "threshold": self.threshold}
