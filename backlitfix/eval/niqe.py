"""NIQE (Mittal, Soundararajan & Bovik 2013), computed the way the authors' MATLAB release does.

This follows ``computequality.m`` of niqe_release.zip step by step, so that scores compare with
published tables made with that code:

1. ``rgb2gray`` of the 8-bit image, rounded back to 8 bits (MATLAB does this for uint8 input), as doubles
   in 0..255; cropped to whole 96 x 96 patches from the top left.
2. At two scales: MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7 x 7 Gaussian (sigma 7/6,
   ``imfilter(..., 'replicate')``); per non-overlapping patch (96 px, then 48 px), 18 features: the
   generalised-Gaussian fit (alpha, mean of the two betas) of the coefficients and, for the products with
   the four neighbours (right, down, down-right, down-left, ``circshift`` inside the patch), the asymmetric
   fit (alpha, mean, beta_l, beta_r). Alpha is the grid value in 0.2:0.001:10 closest to the moment ratio.
3. Between scales: ``imresize(I, 0.5)``: bicubic with antialiasing, symmetric borders, no rounding.
4. No sharpness threshold for the test image (the release computes one but does not use it); the patch
   features' mean (``nanmean``) and covariance (``nancov``: patches with any NaN dropped) against the
   pristine model's: ``sqrt((mu_p - mu)' pinv((C_p + C) / 2) (mu_p - mu))``. Lower is better.

The pristine model (``mu_prisparam``, ``cov_prisparam``) is read from the release's
``niqe_image_params.mat`` (or an ``.npz`` with ``mu_pris_param`` / ``cov_pris_param``, as BasicSR
ships it); see :func:`load_pristine`. ``channel="y"`` scores the Y of MATLAB's ``rgb2ycbcr`` instead
of gray, as BasicSR and pyiqa do by default: their published numbers differ from the MATLAB release's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import gamma as G

PATCH = 96
N_FEATURES = 36
# MATLAB rgb2gray: the luma row of inv(NTSC->RGB), to full double precision
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
# MATLAB rgb2ycbcr, Y row, for 8-bit input
YCBCR_Y = (65.481, 128.553, 24.966)
PARAMS_ENV = "BACKLITFIX_NIQE_PARAMS"
PARAMS_NAME = "niqe_image_params.mat"
PARAMS_HINT = (
    "NIQE needs the pristine model of the NIQE authors' MATLAB release: download niqe_release.zip from "
    "https://live.ece.utexas.edu/research/quality/niqe_release.zip and pass its niqe_image_params.mat with "
    f"--niqe-params FILE (or set ${PARAMS_ENV})")

_GAM = 0.2 + 0.001 * np.arange(9801)  # 0.2:0.001:10 without float drift in the count
_R_GAM = G(2 / _GAM) ** 2 / (G(1 / _GAM) * G(3 / _GAM))


class NiqeUnavailable(Exception):
    """No pristine model to compare against; ``str()`` says how to get one."""


@dataclass(frozen=True)
class Pristine:
    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    source: str


def find_pristine(path: Path | str | None = None) -> Path:
    """The pristine-model file: ``path``, else ``$BACKLITFIX_NIQE_PARAMS``, else one shipped in the package."""
    if path is None and os.environ.get(PARAMS_ENV):
        path = os.environ[PARAMS_ENV]
    if path is None:
        ref = resources.files("backlitfix.eval") / PARAMS_NAME
        if not ref.is_file():
            raise NiqeUnavailable(f"no NIQE: {PARAMS_HINT}")
        return Path(str(ref))
    path = Path(path).expanduser()
    if not path.is_file():
        raise NiqeUnavailable(f"no NIQE: pristine model {path} not found; {PARAMS_HINT}")
    return path


def load_pristine(path: Path | str | None = None) -> Pristine:
    """Read ``mu``/``cov`` from a MATLAB ``.mat`` (niqe_release) or an ``.npz`` (BasicSR's copy)."""
    path = find_pristine(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as d:
                mu, cov = d["mu_pris_param"], d["cov_pris_param"]
        else:
            from scipy.io import loadmat

            d = loadmat(path)
            mu, cov = d["mu_prisparam"], d["cov_prisparam"]
    except (OSError, ValueError, KeyError) as e:
        raise NiqeUnavailable(f"no NIQE: cannot read pristine model {path}: {e}") from None
    mu, cov = np.asarray(mu, np.float64).reshape(-1), np.asarray(cov, np.float64)
    if mu.shape != (N_FEATURES,) or cov.shape != (N_FEATURES, N_FEATURES):
        raise NiqeUnavailable(f"no NIQE: {path} holds a {mu.shape} mean and {cov.shape} covariance, "
                              f"not {N_FEATURES} features")
    return Pristine(mu, cov, str(path))


def gray_8bit(pixels: np.ndarray, channel: str = "gray") -> np.ndarray:
    """H x W x 3 uint8/uint16 -> the 8-bit gray (or Y) image MATLAB would score, as float64 in 0..255.

    16-bit pixels are scored as their 8-bit rendering (round(v / 257)): the pristine model was fitted on
    8-bit images, and MSCN's ``sigma + 1`` makes the score depend on the scale.
    """
    px = pixels.astype(np.float64)
    if pixels.dtype == np.uint16:
        px = np.floor(px / 257.0 + 0.5)
    elif pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    if px.ndim == 2:
        return px
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    if channel == "gray":
        v = RGB2GRAY[0] * r + RGB2GRAY[1] * g + RGB2GRAY[2] * b
    elif channel == "y":
        v = (YCBCR_Y[0] * r + YCBCR_Y[1] * g + YCBCR_Y[2] * b) / 255.0 + 16.0
    else:
        raise ValueError(f"channel must be 'gray' or 'y', not {channel!r}")
    return np.clip(np.floor(v + 0.5), 0, 255)  # MATLAB rounds half away from zero and saturates


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return w / w.sum()


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1)
            + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


# imresize(., 0.5): output i takes inputs 2i-3 .. 2i+4 (0-based) with the cubic widened to 8 taps
_HALF_TAPS = 0.5 * _cubic((np.arange(-3, 5) - 0.5) / 2)


def half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` for a 2-D double image with even sides (bicubic, antialiased)."""
    for axis in (0, 1):  # MATLAB resizes rows first when both scales are equal
        n = img.shape[axis]
        pad = [(0, 0), (0, 0)]
        pad[axis] = (3, 4)
        p = np.pad(img, pad, mode="symmetric")  # MATLAB mirrors the edge pixel too
        out = 0.0
        for k, w in enumerate(_HALF_TAPS):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(k, k + n - 1, 2)
            out = out + w * p[tuple(sl)]
        img = out
    return img


def mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients, as in computequality.m."""
    w = gaussian_window()
    mu = ndimage.correlate(img, w, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(img * img, w, mode="nearest") - mu * mu))
    return (img - mu) / (sigma + 1)


def aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``estimateaggdparam`` for each row of ``x`` (N x n): alpha, beta_l, beta_r.

    Empty sides give NaN betas and, as MATLAB's ``min`` over NaNs does, alpha = 0.2.
    """
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((np.where(neg, x * x, 0).sum(1)) / neg.sum(1))
        right = np.sqrt((np.where(pos, x * x, 0).sum(1)) / pos.sum(1))
        gh = left / right
        rhat = np.abs(x).mean(1) ** 2 / (x * x).mean(1)
        rnorm = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    idx = np.zeros(len(x), np.int64)
    ok = np.isfinite(rnorm)
    for s in range(0, int(ok.sum()), 512):  # bounded memory: 512 x 9801 at a time
        sel = np.flatnonzero(ok)[s:s + 512]
        idx[sel] = np.argmin((_R_GAM[None, :] - rnorm[sel, None]) ** 2, axis=1)
    alpha = _GAM[idx]
    k = np.sqrt(G(1 / alpha) / G(3 / alpha))
    return alpha, left * k, right * k


def patch_features(coef: np.ndarray, size: int) -> np.ndarray:
    """The 18 features of every size x size patch of ``coef`` (whose sides are multiples of size)."""
    nh, nw = coef.shape[0] // size, coef.shape[1] // size
    p = coef.reshape(nh, size, nw, size).transpose(0, 2, 1, 3).reshape(nh * nw, size, size)
    a, bl, br = aggd(p.reshape(len(p), -1))
    feats = [a, (bl + br) / 2]
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        pair = p * np.roll(p, (dy, dx), axis=(1, 2))
        a, bl, br = aggd(pair.reshape(len(p), -1))
        feats += [a, (br - bl) * G(2 / a) / G(1 / a), bl, br]
    return np.stack(feats, axis=1)


def features(gray: np.ndarray) -> np.ndarray:
    """Per-patch NIQE features (N x 36) of a 0..255 double image."""
    h, w = (gray.shape[0] // PATCH) * PATCH, (gray.shape[1] // PATCH) * PATCH
    if h == 0 or w == 0:
        raise ValueError(f"image of {gray.shape[1]}x{gray.shape[0]} pixels is smaller than one "
                         f"{PATCH} x {PATCH} NIQE patch")
    img = gray[:h, :w]
    f1 = patch_features(mscn(img), PATCH)
    f2 = patch_features(mscn(half(img)), PATCH // 2)
    return np.concatenate([f1, f2], axis=1)


def score_features(feat: np.ndarray, pristine: Pristine) -> float:
    """Distance of the patches' Gaussian from the pristine one."""
    if len(feat) < 2:
        raise ValueError(f"NIQE needs at least 2 patches of {PATCH} x {PATCH} pixels, the image has {len(feat)}")
    mu = np.nanmean(feat, axis=0)
    full = feat[~np.isnan(feat).any(axis=1)]
    if len(full) < 2:
        raise ValueError("NIQE is undefined: fewer than 2 patches have any texture (flat image)")
    cov = np.cov(full, rowvar=False)
    d = pristine.mu - mu
    # MATLAB pinv: singular values below max(size) * norm * eps are dropped
    inv = np.linalg.pinv((pristine.cov + cov) / 2, rcond=N_FEATURES * np.finfo(np.float64).eps)
    return float(np.sqrt(d @ inv @ d))


def niqe(pixels: np.ndarray, pristine: Pristine, channel: str = "gray") -> float:
    """NIQE of H x W x 3 uint8/uint16 pixels (lower is more natural). Needs at least 192 x 96 pixels."""
    return score_features(features(gray_8bit(pixels, channel)), pristine)
