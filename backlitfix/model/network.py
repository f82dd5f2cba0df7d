"""The CLIP-LIT / RAVE enhancement network (reference §1).

A plain fully convolutional ``nn.Module``: RGB in [0, 1] -> one-channel illumination map L >= 0.
It knows nothing of tiling, working resolution or files; `backlitfix.enhance` does that.
State-dict names match the authors' checkpoints exactly (after stripping ``module.``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PPM_BINS = (1, 2, 3, 6)
N_PARAMETERS = 278_790


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def conv3(cin: int, cout: int, padding: str, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding, bias=bias)


class ResidualBlock(nn.Module):
    """y = lrelu(conv2(lrelu(conv1(x))) + x); both convs bias-free and reflect-padded."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = conv3(ch, ch, "reflect", bias=False)
        self.conv2 = conv3(ch, ch, "reflect", bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on fresh conv outputs: saves two full-size allocations per block.
        y = self.conv2(F.leaky_relu(self.conv1(x), 0.2, inplace=True))
        return F.leaky_relu(y.add_(x), 0.2, inplace=True)


class PyramidPooling(nn.Module):
    """Global context: adaptive pools at 1, 2, 3, 6 bins, 1x1 conv + PReLU, upsampled back (§1.3)."""

    def __init__(self, ch: int = 32, reduced: int = 8, bins=PPM_BINS):
        super().__init__()
        self.bins = tuple(bins)
        self.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(ch, reduced, 1, bias=False), nn.PReLU())
            for b in self.bins
        )
        # The fuse conv is zero-padded in every reference variant.
        self.fuse = nn.Sequential(
            nn.Conv2d(ch + reduced * len(self.bins), ch, 3, padding=1, bias=False), nn.PReLU()
        )

    def pooled(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four tiny (N, 8, b, b) maps; exact tiling computes these from accumulated sums instead."""
        return [f(x) for f in self.features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ups = [F.interpolate(p, size=(h, w), mode="bilinear", align_corners=True) for p in self.pooled(x)]
        return self.fuse(torch.cat([x, *ups], dim=1))


class EnhanceNet(nn.Module):
    """Predicts the illumination map L; the enhanced image is I / L (§1.1).

    ``padding`` is the mode of the four outer convolutions: ``reflect`` reproduces the reference
    inference scripts; the RAVE trainers used ``zeros`` (§1.5). The residual blocks are always
    reflect-padded and the PPM fuse conv always zero-padded, as in the reference.
    """

    def __init__(self, padding: str = "reflect"):
        super().__init__()
        if padding not in ("reflect", "zeros"):
            raise ValueError(f"padding must be 'reflect' or 'zeros', not {padding!r}")
        self.padding = padding

        def outer(cin, cout):
            return conv3(cin, cout, padding, bias=True)

        self.cond1 = outer(3, 32)
        self.ResidualBlock1 = ResidualBlock(32)
        self.ResidualBlock2 = ResidualBlock(32)
        self.PPM1 = PyramidPooling(32, 8)
        self.condx = outer(32, 64)
        self.ResidualBlock3 = ResidualBlock(64)
        self.ResidualBlock4 = ResidualBlock(64)
        self.condy = outer(64, 32)
        self.ResidualBlock5 = ResidualBlock(32)
        self.ResidualBlock6 = ResidualBlock(32)
        self.cond_add1 = outer(32, 1)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """cond1 + two residual blocks: the part before the global pooling (5 convs, radius 5)."""
        return self.ResidualBlock2(self.ResidualBlock1(lrelu(self.cond1(x))))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Everything after the PPM: 12 convs."""
        x = self.ResidualBlock4(self.ResidualBlock3(self.condx(x)))
        x = self.ResidualBlock6(self.ResidualBlock5(self.condy(x)))
        return F.relu(self.cond_add1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.PPM1(self.stem(x)))


def form_image(img: torch.Tensor, L: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """E = clamp(I / L, 0, 1), never NaN or inf: L is floored at ``eps`` (the reference leaves L = 0 unguarded)."""
    return (img / L.clamp_min(eps)).clamp_(0.0, 1.0)
