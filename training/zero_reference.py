"""Zero-reference training signal: losses computed from the input photo alone, no reference image or model.

Everything here works on batches: images (B, 3, H, W) in [0, 1], illumination maps L (B, 1, H, W),
and the enhanced image E = clamp(I / L, 0, 1). The losses follow Zero-DCE (Guo et al., CVPR 2020):
exposure control, colour constancy, spatial consistency and illumination smoothness, adapted to a
one-channel gain and to backlit scenes (bright regions must not be pushed further: the exposure term
only lifts, and a highlight term penalises driving unclipped pixels into clipping).

`illumination_target` is a classical estimate of the map a backlit photo needs (LIME-style: smoothed,
edge-aware max-RGB illumination T and a tone curve that lifts dark illumination and leaves bright
illumination alone). It is used to distil a warm start into the network; it needs only the input.
All radii are in pixels, so the same operator is learned at every scale the network sees.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from backlitfix.constants import LUMA_REC601 as LUMA

EPS = 1e-4


def luma(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0:1] * LUMA[0] + x[:, 1:2] * LUMA[1] + x[:, 2:3] * LUMA[2]


def box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, borders averaged over the pixels inside; separable (O(r), not O(r^2))."""
    x = F.avg_pool2d(x, (1, 2 * r + 1), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (2 * r + 1, 1), stride=1, padding=(r, 0), count_include_pad=False)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: ``src`` smoothed but following the edges of ``guide``."""
    r = max(1, min(r, (min(guide.shape[-2:]) - 1) // 2))
    mI, mp = box(guide, r), box(src, r)
    a = (box(guide * src, r) - mI * mp) / (box(guide * guide, r) - mI * mI + eps)
    b = mp - a * mI
    return box(a, r) * guide + box(b, r)


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def lift_gain(T: torch.Tensor, max_gain: float, knee: float, black: float = 0.0) -> torch.Tensor:
    """Gain for an illumination level T: about ``max_gain`` for dark T, falling smoothly to 1 at T >= ``knee``.

    log g = log(max_gain) * (1 - T/knee)^2. The output illumination T * g stays monotonic in T for
    max_gain < e^2 (its log-slope is 1 - log(max_gain)/2 at worst), so the tone order of regions is kept.
    Below ``black`` the gain rolls off (smoothstep in T) towards 1: illumination that dark holds no detail
    the camera kept, only noise and JPEG blocks, and lifting a night sky into grey mush is worse than
    leaving it black. T * g is still increasing there, since both factors are.
    """
    s = (1.0 - T / knee).clamp(min=0.0) ** 2
    if black > 0:
        s = s * smoothstep(T / black)
    return torch.exp(math.log(max_gain) * s)


@torch.no_grad()
def illumination_target(
    img: torch.Tensor, *, max_gain: float = 6.0, knee: float = 0.8, dilate: int = 3, radius: int = 12,
    eps: float = 1e-2, black: float = 0.0,
) -> torch.Tensor:
    """The L a zero-reference retinex correction would use: L = 1 / g(T), T the local illumination.

    T = guided filter (guide: luma) of the max-filtered max-RGB: max-filtering first keeps T at or above
    each pixel's brightest channel, so E = I / L rarely clips; the edge-aware smoothing keeps T from
    bleeding across silhouettes (a dark ring on the subject is the classic retinex halo).
    """
    m = img.amax(1, keepdim=True)
    md = F.max_pool2d(m, 2 * dilate + 1, stride=1, padding=dilate)
    T = guided_filter(luma(img), md, radius, eps).clamp(1 / 255, 1.0)
    T = torch.maximum(T, box(m, 1))  # never below the local brightest channel: no new clipping
    return 1.0 / lift_gain(T, max_gain, knee, black)


def distillation(L: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Charbonnier distance of log L to log L*: exposure ratios matter, not absolute differences."""
    d = torch.log(L.clamp_min(EPS)) - torch.log(target.clamp_min(EPS))
    return torch.sqrt(d * d + 1e-6).mean()


def exposure(enhanced: torch.Tensor, level: float = 0.45, patch: int = 16,
             original: torch.Tensor | None = None, black: float = 0.0) -> torch.Tensor:
    """Zero-DCE exposure control, one-sided: patches darker than ``level`` are pulled up; brighter ones are free.

    Backlit photos have correctly exposed (or clipped) bright parts; pulling them toward a mid level,
    as Zero-DCE's two-sided form does, would darken skies. With ``original`` and ``black``, patches whose
    input brightest channel averages below ``black`` count less (smoothstep): they are noise, not shadow.
    """
    m = F.avg_pool2d(luma(enhanced), patch, stride=patch, ceil_mode=True)
    d = F.relu(level - m).pow(2)
    if original is not None and black > 0:
        mi = F.avg_pool2d(original.amax(1, keepdim=True), patch, stride=patch, ceil_mode=True)
        d = d * smoothstep(mi / black)
    return d.mean()


def colour_constancy(enhanced: torch.Tensor, original: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-DCE's grey-world term on the channel means; relative to the input's when ``original`` is given.

    A one-channel gain cannot change a pixel's hue, but a spatially varying gain can change the image's
    colour balance (lifting a blue-shadowed subject turns the photo blue). Relative to the input, only
    that change is penalised, and a scene's own colour (a sunset) is left alone.
    """
    def chroma(x):
        mean = x.mean(dim=(2, 3))  # (B, 3)
        return mean / (mean.sum(1, keepdim=True) + EPS)

    c = chroma(enhanced)
    if original is not None:
        c = c - chroma(original) + 1.0 / 3.0
    r, g, b = c[:, 0], c[:, 1], c[:, 2]
    return ((r - g) ** 2 + (r - b) ** 2 + (g - b) ** 2).mean() * 9.0


def spatial_consistency(enhanced: torch.Tensor, original: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """Zero-DCE's spatial term in the log domain: local contrast between neighbouring 4x4 regions is kept.

    Log differences are invariant to a smooth gain, so brightening itself costs nothing; flattening an
    edge (a halo) or inventing one does.
    """
    def grads(x):
        y = torch.log(F.avg_pool2d(luma(x), pool) + 1e-2)
        return y[..., :, 1:] - y[..., :, :-1], y[..., 1:, :] - y[..., :-1, :]

    (ex, ey), (ox, oy) = grads(enhanced), grads(original)
    return ((ex - ox) ** 2).mean() + ((ey - oy) ** 2).mean()


def illumination_smoothness(L: torch.Tensor, original: torch.Tensor, edge: float = 10.0) -> torch.Tensor:
    """Edge-aware total variation of log L: L may change across the photo's edges, not inside flat areas."""
    lL = torch.log(L.clamp_min(EPS))
    y = luma(original)
    wx = torch.exp(-edge * (y[..., :, 1:] - y[..., :, :-1]).abs())
    wy = torch.exp(-edge * (y[..., 1:, :] - y[..., :-1, :]).abs())
    return ((wx * (lL[..., :, 1:] - lL[..., :, :-1]).abs()).mean()
            + (wy * (lL[..., 1:, :] - lL[..., :-1, :]).abs()).mean())


def highlight_protection(L: torch.Tensor, original: torch.Tensor, ceiling: float = 0.97) -> torch.Tensor:
    """Penalise pushing a pixel's brightest channel past ``ceiling`` where the input was below it.

    Computed before the clamp, so the gradient does not vanish once a pixel is already clipped.
    Pixels the camera already clipped are not counted: nothing can be done for them.
    """
    m = original.amax(1, keepdim=True)
    pushed = m / L.clamp_min(EPS)
    return (F.relu(pushed - ceiling) * (m < ceiling)).mean()


def no_darkening(L: torch.Tensor) -> torch.Tensor:
    """L > 1 darkens; a backlit correction only lifts, and darkening a clipped sky turns it grey."""
    return F.relu(L - 1.0).pow(2).mean()
