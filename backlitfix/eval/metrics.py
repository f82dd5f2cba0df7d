"""Pixel metrics: full-reference PSNR and SSIM, and the exposure statistics a photographer reads.

All functions take H x W x 3 ``uint8`` or ``uint16`` arrays (as ``backlitfix.io.decode`` gives them) and
work on values scaled to 0..1, so the "standard data range" is the file's full scale (255 for 8-bit,
65535 for 16-bit) and an 8-bit result compares with a 16-bit reference.

Exposure statistics use the luma of the encoded (gamma) values, ``Y' = 0.299 R' + 0.587 G' + 0.114 B'``
(the weights backlitfix's enhancer uses), because that is what a histogram in an editor shows:

- ``crushed``: share of pixels with Y' < 2 % (near black, detail lost), in percent.
- ``clipped``: share of pixels with Y' > 98 % (near white), in percent.
- ``dark30``: mean Y' of the darkest 30 % of the pixels, in percent of full scale: how bright the
  shadows (a backlit subject) are.
- ``local_contrast``: mean over the image of the local standard deviation of Y', in percent, with a
  Gaussian window of sigma = 0.5 % of the shorter side (at least 1 px): texture and micro-contrast at
  a scale that stays the same share of the picture whatever its resolution. Flat regions give 0;
  brightening a dark subject raises it, flattening tones lowers it.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..constants import LUMA_REC601 as LUMA

CRUSHED, CLIPPED, DARK_SHARE = 0.02, 0.98, 0.30
CONTRAST_SIGMA = 0.005  # of the shorter side
SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03


def unit(pixels: np.ndarray, dtype=np.float64) -> np.ndarray:
    """uint8/uint16 pixels -> floats in 0..1 (full scale of the file's bit depth)."""
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    return pixels.astype(dtype) / np.iinfo(pixels.dtype).max


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"sizes differ: {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")
    return unit(a), unit(b)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all RGB values, data range 1 (= the full scale); ``inf`` for identical images."""
    x, y = _pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _gauss1d() -> np.ndarray:
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    w = np.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return w / w.sum()


def _blur(x: np.ndarray) -> np.ndarray:
    """11 x 11 Gaussian (sigma 1.5) weighted mean; only the 'valid' part (no padding) is kept."""
    w = _gauss1d()
    y = ndimage.correlate1d(ndimage.correlate1d(x, w, axis=0, mode="constant"), w, axis=1, mode="constant")
    r = SSIM_RADIUS
    return y[r:-r, r:-r]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) over the three channels.

    The published form: 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1,
    averaged over the 'valid' window positions (like ``filter2(..., 'valid')`` in the authors' code and
    scikit-image's ``gaussian_weights=True``), without the authors' automatic downsampling.
    """
    x, y = _pair(a, b)
    if min(x.shape[:2]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"image of {x.shape[1]}x{x.shape[0]} pixels is smaller than the 11 x 11 SSIM window")
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    vals = []
    for c in range(x.shape[2]):
        p, q = x[..., c], y[..., c]
        mp, mq = _blur(p), _blur(q)
        vp, vq, cov = _blur(p * p) - mp * mp, _blur(q * q) - mq * mq, _blur(p * q) - mp * mq
        s = ((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp * mp + mq * mq + c1) * (vp + vq + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def luma(pixels: np.ndarray) -> np.ndarray:
    """Y' in 0..1 (float32) of H x W x 3 pixels."""
    return unit(pixels, np.float32) @ np.asarray(LUMA, np.float32)


def dark_mask(y: np.ndarray, share: float = DARK_SHARE) -> np.ndarray:
    """The darkest ``share`` of the pixels (exactly ceil(share * N) of them; ties broken by position)."""
    flat = y.ravel()
    k = max(1, math.ceil(share * flat.size))
    mask = np.zeros(flat.size, bool)
    mask[np.argpartition(flat, k - 1)[:k]] = True
    return mask.reshape(y.shape)


def local_contrast(y: np.ndarray) -> float:
    """Mean local standard deviation of Y' (percent), Gaussian sigma = 0.5 % of the shorter side."""
    sigma = max(1.0, CONTRAST_SIGMA * min(y.shape))
    m = ndimage.gaussian_filter(y, sigma, mode="reflect")
    m2 = ndimage.gaussian_filter(y * y, sigma, mode="reflect")
    return float(np.sqrt(np.maximum(m2 - m * m, 0)).mean() * 100)


def exposure(pixels: np.ndarray) -> dict[str, float]:
    """crushed %, clipped %, dark30 (mean Y' of the darkest 30 %, percent) and local contrast (percent)."""
    y = luma(pixels)
    return {
        "crushed": float((y < CRUSHED).mean() * 100),
        "clipped": float((y > CLIPPED).mean() * 100),
        "dark30": float(y[dark_mask(y)].mean() * 100),
        "local_contrast": local_contrast(y),
    }


def exposure_change(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """How the region that was darkest in ``before`` changed in ``after`` (same size).

    ``dark30_gain``: percentage points of mean Y' gained over the input's darkest 30 % of pixels;
    ``dark30_stops``: the same as a ratio, in stops (log2 of after / before mean; both floored at half
    an 8-bit level so a black input gives a finite figure).
    """
    if before.shape != after.shape:
        raise ValueError(f"sizes differ: {before.shape[1]}x{before.shape[0]} and {after.shape[1]}x{after.shape[0]}")
    yb, ya = luma(before), luma(after)
    m = dark_mask(yb)
    b, a = float(yb[m].mean()), float(ya[m].mean())
    floor = 0.5 / 255
    stops = math.log2(max(a, floor) / max(b, floor))
    return {"dark30_gain": (a - b) * 100, "dark30_stops": stops}
