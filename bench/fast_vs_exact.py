#!/usr/bin/env python
"""How far is ``fast`` mode from ``exact`` mode, and how should fast mode upsample L?

For every photo of the data folder and every model given:

1. the exact result (``Enhancer(mode="exact", tile=512)``, float32) once, and the fast result at each working
   resolution (float32, so only the resolution changes), plus a bfloat16 fast run at the ``--bf16-mp`` working
   resolutions (the precision effect). Both modes run through ``Enhancer.enhance`` itself; L is captured on the way
   (exact: by wrapping ``backlitfix.enhance.exact_L``; fast: by wrapping the instance's ``illumination``), so the
   figures are those of the real code path. Per photo and aggregated over the photos that fast mode actually
   downscales: PSNR (dB) of fast vs exact on the 8-bit outputs, max abs error and 99.9th percentile abs error
   (0-255, over all pixel-channel values), mean abs error in bands at a distance from strong edges of the exact L
   (halo width), mean signed error (brightness shift), and wall time.
2. Halo crops: side-by-side PNGs (input | exact | fast at each working resolution; second row: exact L and
   |fast - exact| x 4) around the strongest silhouette edge of the worst photos, in ``<out>/crops/``.
3. A small grid of guided-filter radius / eps and of upsampling variants, fitted on the captured working-resolution L
   and applied at full resolution, scored against exact. The shipped variant (``bounded``) and its unclamped form
   (``detail``) are backlitfix.enhance.GuidedUpsampler itself; the others are research alternatives, here only.

Nothing in backlitfix is changed. Results: a markdown report on stdout and in ``<out>/fast_vs_exact_<model>.md``,
all figures in ``<out>/fast_vs_exact_<model>.json``; network results are cached in ``<out>/cache/`` (``--reuse``).

    PYTHONPATH=. python bench/fast_vs_exact.py                       # rave_unpaired, all steps
    PYTHONPATH=. python bench/fast_vs_exact.py --with-clip-lit --reuse
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import backlitfix.enhance as enh  # noqa: E402
from backlitfix.constants import LUMA_REC601, MAX_PIXELS  # noqa: E402
from backlitfix.enhance import (  # noqa: E402
    L_FLOOR,
    Enhancer,
    GuidedUpsampler,
    apply_gain,
    box,
    downscale,
    guided_coefficients,
    luminance,
    to_float,
    working_size,
)
from backlitfix.io import decode  # noqa: E402
from backlitfix.io.walk import Policy, find_images  # noqa: E402
from backlitfix.model.checkpoint import load_model  # noqa: E402

SHIPPED_VARIANT = "bounded"  # the upsampler backlitfix.enhance uses; the bench checks the path reproduces Enhancer

SHARED = Path(os.environ["BACKLITFIX_SHARED"]) if os.environ.get("BACKLITFIX_SHARED") else REPO.parent / "shared"
BANDS = ((0, 2), (2, 8), (8, 32), (32, math.inf))  # full-resolution px from the strong edges of exact L
EDGE_TOP = 0.005  # strong edges: the top 0.5 % of |grad L_exact|


# ----------------------------------------------------------------------------------------------- metrics


def load_photo(path: Path) -> np.ndarray:
    """The 8-bit pixels `run` hands the Enhancer: the product's decoder (orientation, ICC, pixel limit)."""
    px = decode(path, max_pixels=MAX_PIXELS).pixels
    return px if px.dtype == np.uint8 else np.rint(px / 257.0).astype(np.uint8)


def edge_bands(L: np.ndarray) -> np.ndarray:
    """Band index (0..3, see BANDS) of every pixel by its distance to the strongest |grad L| pixels."""
    gy, gx = np.gradient(L)
    g = np.hypot(gx, gy).ravel()
    k = max(1, int(EDGE_TOP * g.size))
    thr = np.partition(g, g.size - k)[g.size - k]
    edges = (np.hypot(gx, gy) >= thr) & (thr > 0)
    if not edges.any():
        return np.full(L.shape, len(BANDS) - 1, np.uint8)
    d = ndimage.distance_transform_edt(~edges)
    return np.digitize(d, [hi for _, hi in BANDS[:-1]], right=True).astype(np.uint8)


def compare(out: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor, bands: torch.Tensor | None = None) -> dict:
    """8-bit fast vs exact: PSNR, max, p99.9, mean signed, and mean abs error per edge band."""
    a = torch.as_tensor(out).to(torch.int16)
    b = torch.as_tensor(ref).to(torch.int16)
    d = a - b
    ad = d.abs().to(torch.uint8)
    hist = torch.bincount(ad.flatten(), minlength=256).double()
    n = hist.sum().item()
    mse = (hist * torch.arange(hist.numel(), dtype=torch.float64) ** 2).sum().item() / n
    cum = torch.cumsum(hist, 0)
    p999 = int(torch.searchsorted(cum, torch.tensor([0.999 * n], dtype=torch.float64)).item())
    res = {
        "psnr": (10 * math.log10(255.0**2 / mse)) if mse > 0 else None,
        "max": int(torch.nonzero(hist).max().item()),
        "p999": p999,
        "mean_signed": d.sum(dtype=torch.int64).item() / n,
        "mae": (hist * torch.arange(hist.numel(), dtype=torch.float64)).sum().item() / n,
    }
    if bands is not None:
        # per-pixel sum over the 3 channels (0..765), histogrammed per band in one bincount
        per_px = ad.sum(dim=-1, dtype=torch.int32).flatten()
        lab = bands.flatten().to(torch.int32)
        h2 = torch.bincount(lab * 766 + per_px, minlength=len(BANDS) * 766).view(len(BANDS), 766).double()
        sums = (h2 * torch.arange(766, dtype=torch.float64)).sum(1) / 3
        cnt = h2.sum(1)
        res["band_mae"] = [float(s / c) if c > 0 else None for s, c in zip(sums.tolist(), cnt.tolist())]
    return res


def fmt_psnr(p) -> str:
    return "inf" if p is None else f"{p:.2f}"


# ------------------------------------------------------------------------------- running the real modes


def run_exact(net, pixels: np.ndarray, tile: int):
    """Enhancer(mode='exact') output, its full-resolution L, and the wall time."""
    H, W = pixels.shape[:2]
    L = np.empty((H, W), np.float32)
    real = enh.exact_L

    def recording(*args, **kw):
        for t, Lt in real(*args, **kw):
            y0, y1, x0, x1 = t
            L[y0:y1, x0:x1] = Lt[0, 0].cpu().numpy()
            yield t, Lt

    enh.exact_L = recording
    try:
        e = Enhancer(net, mode="exact", tile=tile)
        t0 = time.perf_counter()
        out = e.enhance(pixels)
        dt = time.perf_counter() - t0
    finally:
        enh.exact_L = real
    return out, L, dt


def run_fast(net, pixels: np.ndarray, mp: float, dtype: torch.dtype, radius: int, eps: float):
    """Enhancer(mode='fast') output, the working-resolution L it computed, and the wall time."""
    e = Enhancer(net, mode="fast", dtype=dtype, working_megapixels=mp, guide_radius=radius, guide_eps=eps)
    captured = {}
    real = e.illumination

    def recording(x):
        L = real(x)
        captured["L"] = L[0, 0].cpu().numpy().copy()
        return L

    e.illumination = recording  # instance attribute shadows the method: the real code path, L kept
    t0 = time.perf_counter()
    out = e.enhance(pixels)
    dt = time.perf_counter() - t0
    return out, captured["L"], dt


def warm_up(net):
    x = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    run_exact(net, x, 64)
    for dt in (torch.float32, torch.bfloat16):
        run_fast(net, x, 0.005, dt, 8, 1e-3)


# ------------------------------------------------------------------------- candidate upsampling variants
#
# Each variant: fit(small (1,3,h,w), L (1,1,h,w), r, eps) -> coefficient maps (1,k,h,w) at working resolution;
# apply(img (1,3,H,W), Y (1,1,H,W), coef (1,k,H,W) bilinearly upsampled) -> full-resolution L.

LOG_DELTA = 1e-2  # log(Y + delta): keeps black pixels from dominating the log-domain fit


def _radius(x: torch.Tensor, r: int) -> int:
    return max(1, min(r, (min(x.shape[-2:]) - 1) // 2))


def fit_grey(small, L, r, eps):  # (a) the current backlitfix filter: L ~ a Y + b
    a, b = guided_coefficients(luminance(small), L, r, eps)
    return torch.cat([a, b], 1)


def apply_grey(img, Y, c):
    return c[:, 0:1] * Y + c[:, 1:2]


def fit_log(small, L, r, eps):  # log L ~ a log(Y + d) + b
    a, b = guided_coefficients(torch.log(luminance(small) + LOG_DELTA), torch.log(L.clamp(min=L_FLOOR)), r, eps)
    return torch.cat([a, b], 1)


def apply_log(img, Y, c):
    return torch.exp(c[:, 0:1] * torch.log(Y + LOG_DELTA) + c[:, 1:2])


def fit_logL_Y(small, L, r, eps):  # log L ~ a Y + b
    a, b = guided_coefficients(luminance(small), torch.log(L.clamp(min=L_FLOOR)), r, eps)
    return torch.cat([a, b], 1)


def apply_logL_Y(img, Y, c):
    return torch.exp(c[:, 0:1] * Y + c[:, 1:2])


def fit_inv(small, L, r, eps):  # gain 1/L ~ a Y + b
    a, b = guided_coefficients(luminance(small), 1.0 / L.clamp(min=L_FLOOR), r, eps)
    return torch.cat([a, b], 1)


def apply_inv(img, Y, c):
    return 1.0 / (c[:, 0:1] * Y + c[:, 1:2]).clamp(min=0.1)


def rgb_guided_coefficients(I: torch.Tensor, p: torch.Tensor, r: int, eps: float):
    """He et al.'s colour guided filter: p ~ a . I + b with a 3-vector a per window; mean a (1,3,h,w), b (1,1,h,w)."""
    r = _radius(I, r)
    mI, mp = box(I, r), box(p, r)
    cov = box(I * p, r) - mI * mp  # (1,3,h,w)
    idx = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    prods = torch.cat([I[:, i : i + 1] * I[:, j : j + 1] for i, j in idx], 1)
    m = box(prods, r)
    h, w = I.shape[-2:]
    S = torch.empty(h, w, 3, 3, dtype=torch.float64)
    for k, (i, j) in enumerate(idx):
        v = (m[0, k] - mI[0, i] * mI[0, j]).double()
        S[..., i, j] = v
        S[..., j, i] = v
    S += eps * torch.eye(3, dtype=torch.float64)
    a = torch.linalg.solve(S, cov[0].permute(1, 2, 0).double()[..., None])[..., 0]  # (h,w,3)
    a = a.permute(2, 0, 1)[None].float()
    b = mp - (a * mI).sum(1, keepdim=True)
    return box(a, r), box(b, r)


def fit_rgb(small, L, r, eps):  # L ~ a . RGB + b
    a, b = rgb_guided_coefficients(small, L, r, eps)
    return torch.cat([a, b], 1)


def apply_rgb(img, Y, c):
    return (c[:, 0:3] * img).sum(1, keepdim=True) + c[:, 3:4]


def product_upsampler(bounded: bool):
    """The product's own upsampler (backlitfix.enhance.GuidedUpsampler, as Enhancer._fast builds it), not a
    copy: L = up(L_s) + up(a) * (Y - up(Y_s)), with ``bounded`` clamped to up(min/max of L_s over 3x3)."""

    def upsample(small, L_small, img, Y, r, eps):
        Ys = luminance(small)
        a, _ = guided_coefficients(Ys, L_small, r, eps)
        H, W = img.shape[-2:]
        up = GuidedUpsampler(L_small, Ys, a, W, bounded=bounded)
        return up.rows(Y[0, 0].clone(), H, 0, H)[None, None]  # rows() consumes its Y

    return upsample


# The variants backlitfix ships (``bounded``) or can build (``detail``): run through backlitfix.enhance itself
PRODUCT_VARIANTS = {
    "detail": (product_upsampler(False), "L = up(L_s) + up(a)*(Y - up(Y_s)), a from the grey fit (backlitfix's "
                                         "GuidedUpsampler, bounded=False)"),
    "bounded": (product_upsampler(True), "detail, clamped to up(min/max of L_s over 3x3) (backlitfix's "
                                         "GuidedUpsampler, as shipped)"),
}


def fit_logdetail(small, L, r, eps):  # the same in the log domain: log L = up(log L_s) + a * (log Y - up(log Y_s))
    lY = torch.log(luminance(small) + LOG_DELTA)
    lL = torch.log(L.clamp(min=L_FLOOR))
    a, _ = guided_coefficients(lY, lL, r, eps)
    return torch.cat([a, lL, lY], 1)


def apply_logdetail(img, Y, c):
    return torch.exp(c[:, 1:2] + c[:, 0:1] * (torch.log(Y + LOG_DELTA) - c[:, 2:3]))


def fit_bilinear(small, L, r, eps):  # no guide at all: L upsampled bilinearly (baseline)
    return L


def apply_bilinear(img, Y, c):
    return c


VARIANTS = {
    "grey": (fit_grey, apply_grey, "current: L ~ a*Y + b (grey luminance guide)"),
    "rgb": (fit_rgb, apply_rgb, "L ~ a.RGB + b (He's colour guided filter)"),
    "log": (fit_log, apply_log, f"log L ~ a*log(Y+{LOG_DELTA}) + b"),
    "logL_Y": (fit_logL_Y, apply_logL_Y, "log L ~ a*Y + b"),
    "inv": (fit_inv, apply_inv, "1/L ~ a*Y + b (gain guided by Y)"),
    **{k: (None, None, desc) for k, (_, desc) in PRODUCT_VARIANTS.items()},
    "logdetail": (fit_logdetail, apply_logdetail,
                  f"log L = up(log L_s) + up(a)*(log(Y+{LOG_DELTA}) - up(log(Y_s+{LOG_DELTA}))), a from the log fit"),
    "bilinear": (fit_bilinear, apply_bilinear, "no guide: L bilinearly upsampled"),
}


def upsample_L(variant: str, small, L_small, img, Y, r: int, eps: float) -> torch.Tensor:
    if variant in PRODUCT_VARIANTS:
        return PRODUCT_VARIANTS[variant][0](small, L_small, img, Y, r, eps)
    fit, apply, _ = VARIANTS[variant]
    c = fit(small, L_small, r, eps)
    c = F.interpolate(c, size=img.shape[-2:], mode="bilinear", align_corners=False)
    return apply(img, Y, c)


def quantise(img, L) -> torch.Tensor:
    """What Enhancer stores: floor(clamp(I / max(L, 1e-3), 0, 1) * 255 + 0.5) as uint8, H x W x 3."""
    E = apply_gain(img[0].permute(1, 2, 0).clone(), L[0, 0], 1.0)  # H x W x 3; apply_gain works in place
    return E.mul_(255.0).add_(0.5).floor_().to(torch.uint8)


# ------------------------------------------------------------------------------------------- pictures


def label(im: Image.Image, text: str) -> Image.Image:
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, 7 * len(text) + 6, 14], fill=(0, 0, 0))
    d.text((3, 2), text, fill=(255, 255, 0))
    return im


def grid_image(rows: list[list[tuple[str, np.ndarray]]], gap: int = 4) -> Image.Image:
    h = max(p.shape[0] for row in rows for _, p in row)
    w = max(p.shape[1] for row in rows for _, p in row)
    ncol = max(len(r) for r in rows)
    canvas = Image.new("RGB", (ncol * (w + gap) - gap, len(rows) * (h + gap) - gap), (40, 40, 40))
    for i, row in enumerate(rows):
        for j, (text, p) in enumerate(row):
            if p.ndim == 2:
                p = np.repeat(p[..., None], 3, axis=2)
            canvas.paste(label(Image.fromarray(p), text), (j * (w + gap), i * (h + gap)))
    return canvas


def diff_x4(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) * 4
    return np.clip(d, 0, 255).astype(np.uint8)


def crop_centre(err: np.ndarray, bands: np.ndarray, size: int) -> tuple[int, int]:
    """Where the locally averaged error is largest within 8 px of a strong edge of exact L."""
    sm = ndimage.uniform_filter(err.astype(np.float32), size=33)
    sm[bands > 1] = -1
    y, x = np.unravel_index(int(np.argmax(sm)), sm.shape)
    H, W = err.shape
    y0 = int(np.clip(y - size // 2, 0, max(0, H - size)))
    x0 = int(np.clip(x - size // 2, 0, max(0, W - size)))
    return y0, x0


def thumb(p: np.ndarray, long_side: int = 420) -> np.ndarray:
    im = Image.fromarray(p)
    s = long_side / max(im.size)
    return np.asarray(im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS))


# ------------------------------------------------------------------------------------------- the bench


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def aggregate(entries: list[dict], secs: list[float], mps: list[float]) -> dict:
    ps = [e["psnr"] for e in entries if e["psnr"] is not None]
    bands = [e.get("band_mae") for e in entries if e.get("band_mae")]
    return {
        "n": len(entries),
        "psnr_mean": float(np.mean(ps)) if ps else None,
        "psnr_worst": float(np.min(ps)) if ps else None,
        "max_worst": max(e["max"] for e in entries) if entries else None,
        "p999_mean": float(np.mean([e["p999"] for e in entries])) if entries else None,
        "p999_worst": max(e["p999"] for e in entries) if entries else None,
        "mae_mean": float(np.mean([e["mae"] for e in entries])) if entries else None,
        "mean_signed": float(np.mean([e["mean_signed"] for e in entries])) if entries else None,
        "band_mae_mean": [float(np.mean([b[k] for b in bands if b[k] is not None])) for k in range(len(BANDS))]
        if bands
        else None,
        "seconds": float(sum(secs)),
        "s_per_mp": float(sum(secs) / sum(mps)) if mps and sum(mps) > 0 else None,
    }


def bench_model(model_path: Path, photos: list[Path], args, report: list[str]) -> dict:
    name = model_path.stem
    net, _ = load_model(model_path)
    cache_dir = args.out / "cache" / name
    cache_dir.mkdir(parents=True, exist_ok=True)
    warmed = False
    fast_keys = [("fp32", mp) for mp in args.working_mp] + [("bf16", mp) for mp in args.bf16_mp]
    per_photo: dict[str, dict] = {}
    data: dict[str, dict] = {}  # stem -> cached arrays (kept in memory for the crops and the grid)

    print(f"\n## Model {name}\n", file=sys.stderr)
    for path in photos:
        stem = path.stem
        cfile = cache_dir / f"{stem}.npz"
        pixels = load_photo(path)
        H, W = pixels.shape[:2]
        if args.reuse and cfile.is_file():
            z = np.load(cfile)
            arrs = {k: z[k] for k in z.files}
            times = json.loads(str(arrs.pop("times")))
        else:
            if not warmed:
                warm_up(net)
                warmed = True
            arrs, times = {}, {}
            arrs["out_exact"], arrs["L_exact"], times["exact"] = run_exact(net, pixels, args.tile)
            for prec, mp in fast_keys:
                dt = torch.float32 if prec == "fp32" else torch.bfloat16
                o, Ls, t = run_fast(net, pixels, mp, dt, args.radius, args.eps)
                arrs[f"out_{prec}_{mp}"], arrs[f"L_{prec}_{mp}"], times[f"{prec}_{mp}"] = o, Ls, t
            np.savez(cfile, times=np.array(json.dumps(times)), **arrs)
        bands = edge_bands(arrs["L_exact"])
        arrs["bands"] = bands
        tb = torch.from_numpy(bands)
        row = {"size": [W, H], "mp": H * W / 1e6, "exact_s": times["exact"], "fast": {}}
        for prec, mp in fast_keys:
            k = f"{prec}_{mp}"
            m = compare(arrs[f"out_{k}"], arrs["out_exact"], tb)
            m["seconds"] = times[k]
            m["working_size"] = list(working_size(H, W, mp))[::-1]
            m["downscaled"] = working_size(H, W, mp) != (H, W)
            row["fast"][k] = m
        per_photo[stem] = row
        data[stem] = arrs
        msg = "  ".join(f"{k}:{fmt_psnr(v['psnr'])}dB/{v['max']}" for k, v in row["fast"].items())
        print(f"{stem} {W}x{H} exact {times['exact']:.1f}s  {msg}", file=sys.stderr, flush=True)

    # ---- aggregates
    agg = {}
    for prec, mp in fast_keys:
        k = f"{prec}_{mp}"
        down = [s for s in per_photo if per_photo[s]["fast"][k]["downscaled"]]
        native = [s for s in per_photo if not per_photo[s]["fast"][k]["downscaled"]]
        agg[k] = {
            "downscaled": aggregate(
                [per_photo[s]["fast"][k] for s in down],
                [per_photo[s]["fast"][k]["seconds"] for s in down],
                [per_photo[s]["mp"] for s in down],
            ),
            "native": aggregate(
                [per_photo[s]["fast"][k] for s in native],
                [per_photo[s]["fast"][k]["seconds"] for s in native],
                [per_photo[s]["mp"] for s in native],
            ),
        }
        agg[k]["downscaled"]["exact_s_per_mp"] = (
            sum(per_photo[s]["exact_s"] for s in down) / sum(per_photo[s]["mp"] for s in down) if down else None
        )

    report.append(f"\n## Model `{name}` — fast vs exact (tile 512, fp32), "
                  f"guide_radius {args.radius}, guide_eps {args.eps}\n")
    report.append(
        "Aggregates over the photos that fast mode **downscales** at that working resolution (photos no larger "
        "than it run at native size and are listed separately). PSNR/max/p99.9 on the 8-bit outputs; "
        "band MAE = mean abs error (8-bit levels) at 0-2 / 2-8 / 8-32 / >32 full-res px from the strongest 0.5 % "
        "of |grad L_exact|; s/MP = wall seconds per photo megapixel (exact s/MP on the same photos).\n"
    )
    hdr = ["mode", "n", "mean PSNR", "worst PSNR", "worst max", "mean p99.9", "worst p99.9", "mean signed",
           "band MAE 0-2/2-8/8-32/>32", "fast s/MP", "exact s/MP"]
    rows = []
    for k, a in agg.items():
        d = a["downscaled"]
        if d["n"] == 0:
            rows.append([k, 0] + ["-"] * (len(hdr) - 2))
            continue
        rows.append([
            k, d["n"], f"{d['psnr_mean']:.2f}", f"{d['psnr_worst']:.2f}", d["max_worst"], f"{d['p999_mean']:.1f}",
            d["p999_worst"], f"{d['mean_signed']:+.2f}", "/".join(f"{b:.2f}" for b in d["band_mae_mean"]),
            f"{d['s_per_mp']:.2f}", f"{d['exact_s_per_mp']:.2f}",
        ])
    report.append(md_table(hdr, rows))
    rows = []
    for k, a in agg.items():
        n = a["native"]
        rows.append([k, n["n"], fmt_psnr(n["psnr_worst"]) if n["n"] else "-", n["max_worst"] if n["n"] else "-",
                     n["p999_worst"] if n["n"] else "-"])
    report.append("\nPhotos run at native size in fast mode (no larger than the working resolution): "
                  "float noise only.\n")
    report.append(md_table(["mode", "n native", "worst PSNR", "worst max", "worst p99.9"], rows))

    report.append("\nPer photo: PSNR dB / max / p99.9 (`*` = native size, not downscaled); exact and fast seconds.\n")
    hdr = ["photo", "size", "MP", "exact s"] + [k for k in agg] + [f"{k} s" for k in agg]
    rows = []
    for s, r in sorted(per_photo.items(), key=lambda kv: -kv[1]["mp"]):
        cells = []
        for k in agg:
            m = r["fast"][k]
            cells.append(f"{fmt_psnr(m['psnr'])} / {m['max']} / {m['p999']}" + ("" if m["downscaled"] else " *"))
        rows.append([s, f"{r['size'][0]}x{r['size'][1]}", f"{r['mp']:.2f}", f"{r['exact_s']:.1f}"] + cells
                    + [f"{r['fast'][k]['seconds']:.1f}" for k in agg])
    report.append(md_table(hdr, rows))

    # ---- bf16 vs fp32 at the same working resolution (the precision effect alone)
    prec_rows = []
    for mp in args.bf16_mp:
        if mp not in args.working_mp:
            continue
        ents = []
        for s in per_photo:
            m = compare(data[s][f"out_bf16_{mp}"], data[s][f"out_fp32_{mp}"])
            ents.append(m)
        worst_psnr = min(e["psnr"] for e in ents if e["psnr"]) if any(e["psnr"] for e in ents) else None
        prec_rows.append([f"{mp}", fmt_psnr(worst_psnr),
                          f"{np.mean([e['psnr'] for e in ents if e['psnr']]):.2f}", max(e["max"] for e in ents),
                          max(e["p999"] for e in ents)])
    if prec_rows:
        report.append("\nbf16 vs fp32 fast at the same working resolution (all photos):\n")
        report.append(md_table(["working MP", "worst PSNR", "mean PSNR", "worst max", "worst p99.9"], prec_rows))

    result = {"model": str(model_path), "per_photo": per_photo, "aggregate": agg}

    # ---- check that the bench's path (captured L, the product's upsampler, quantise) reproduces Enhancer's output
    chk_max, chk_n, chk_tot = 0, 0, 0
    for s in per_photo:
        pixels = load_photo(next(p for p in photos if p.stem == s))
        H, W = pixels.shape[:2]
        for mp in args.working_mp:
            if not per_photo[s]["fast"][f"fp32_{mp}"]["downscaled"]:
                continue
            h, w = working_size(H, W, mp)
            small = downscale(pixels, h, w)
            img = to_float(pixels)
            L_small = torch.from_numpy(data[s][f"L_fp32_{mp}"])[None, None]
            L = upsample_L(SHIPPED_VARIANT, small, L_small, img, luminance(img), args.radius, args.eps)
            q = quantise(img, L).numpy()
            d = np.abs(q.astype(np.int16) - data[s][f"out_fp32_{mp}"])
            chk_max, chk_n, chk_tot = max(chk_max, int(d.max())), chk_n + int((d > 0).sum()), chk_tot + d.size
    result["reimplementation_check"] = {"max": chk_max, "values_differing": chk_n, "values": chk_tot}
    report.append("\nBench path (captured L through backlitfix's GuidedUpsampler) vs Enhancer fast output "
                  f"(all downscaled runs): "
                  f"max |diff| {chk_max} levels, {chk_n} of {chk_tot} values differ.\n")

    # ---- crops of the worst photos
    crop_key = f"fp32_{args.crop_mp}"
    cands = [s for s in per_photo if per_photo[s]["fast"][crop_key]["downscaled"]]
    worst = sorted(cands, key=lambda s: per_photo[s]["fast"][crop_key]["psnr"])[: args.crops]
    result["crops"] = {}
    crops_dir = args.out / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    for s in worst:
        pixels = load_photo(next(p for p in photos if p.stem == s))
        arr = data[s]
        H, W = pixels.shape[:2]
        size = min(args.crop_size, H, W)
        err = np.abs(arr[f"out_{crop_key}"].astype(np.int16) - arr["out_exact"]).max(axis=-1)
        y0, x0 = crop_centre(err, arr["bands"], size)
        sl = (slice(y0, y0 + size), slice(x0, x0 + size))
        Lc = arr["L_exact"][sl]
        Limg = (np.clip(Lc, 0, 1) * 255 + 0.5).astype(np.uint8)
        row1 = [("input", pixels[sl]), ("exact", arr["out_exact"][sl])]
        row2 = [("exact L", Limg), ("strong edges", ((arr["bands"][sl] == 0) * 255).astype(np.uint8))]
        for mp in args.working_mp:
            o = arr[f"out_fp32_{mp}"]
            m = per_photo[s]["fast"][f"fp32_{mp}"]
            row1.append((f"fast {mp} MP", o[sl]))
            row2.append((f"|diff|x4 {mp} MP", diff_x4(o[sl], arr["out_exact"][sl])))
        f = crops_dir / f"{name}_{s}_crop.png"
        grid_image([row1, row2]).save(f)
        look = [("input", thumb(pixels)), ("exact", thumb(arr["out_exact"]))] + [
            (f"fast {mp} MP", thumb(arr[f"out_fp32_{mp}"])) for mp in args.working_mp]
        fl = crops_dir / f"{name}_{s}_whole.png"
        grid_image([look[:3], look[3:]]).save(fl)
        result["crops"][s] = {"file": str(f), "whole": str(fl), "y0": y0, "x0": x0, "size": size,
                              "psnr": per_photo[s]["fast"][crop_key]["psnr"]}
    report.append(f"\nCrops (worst {len(worst)} at {args.crop_mp} MP by PSNR): "
                  + ", ".join(f"`{Path(v['file']).name}` at y={v['y0']}, x={v['x0']}"
                              for v in result["crops"].values()))

    shipped = (SHIPPED_VARIANT, args.radius, args.eps)
    configs = [shipped] + [c for c in map(parse_config, args.configs) if c != shipped]
    result["configs"] = eval_configs(name, photos, per_photo, data, args, report, configs)
    result["silhouettes"] = silhouette_panels(name, photos, per_photo, data, args, report, worst, configs)
    if args.grid:
        result["grid"] = run_grid(name, photos, per_photo, data, args, report, worst)
    return result


def parse_config(text: str) -> tuple[str, int, float]:
    """'detail:2:1e-3' -> ('detail', 2, 0.001); 'bilinear' -> ('bilinear', 0, 0.0)."""
    parts = text.split(":")
    if parts[0] not in VARIANTS:
        raise SystemExit(f"unknown variant {parts[0]!r} in --configs (known: {', '.join(VARIANTS)})")
    if parts[0] == "bilinear":
        return ("bilinear", 0, 0.0)
    return (parts[0], int(parts[1]), float(parts[2]))


def clab(c) -> str:
    return f"{c[0]} r={c[1]} eps={c[2]:g}"


def fast_output(pixels: np.ndarray, L_small: np.ndarray, config) -> np.ndarray:
    """Fast-mode 8-bit output for a captured working-resolution L and an upsampling config."""
    h, w = L_small.shape
    small = downscale(pixels, h, w)
    img = to_float(pixels)
    L = upsample_L(config[0], small, torch.from_numpy(L_small)[None, None], img, luminance(img), config[1], config[2])
    return quantise(img, L).numpy()


def highpass_std(img: np.ndarray, mask: np.ndarray) -> float:
    Y = img.astype(np.float32) @ np.array(LUMA_REC601, np.float32)
    return float((Y - ndimage.gaussian_filter(Y, 2.0))[mask].std())


def eval_configs(name, photos, per_photo, data, args, report, configs) -> dict:
    """The chosen upsampling configs at every working resolution (fp32 L; bf16 L for the bf16 resolutions)."""
    t0 = time.perf_counter()
    keys = [f"fp32_{mp}" for mp in args.working_mp] + [f"bf16_{mp}" for mp in args.bf16_mp]
    out = {}
    for key in keys:
        stems = [s for s in per_photo if per_photo[s]["fast"][key]["downscaled"]]
        acc = {clab(c): [] for c in configs}
        for s in stems:
            pixels = load_photo(next(p for p in photos if p.stem == s))
            ref, tb = data[s]["out_exact"], torch.from_numpy(data[s]["bands"])
            away = data[s]["bands"] >= 2  # more than 8 px from the strong edges of exact L
            hp_ref = highpass_std(ref, away)
            H, W = pixels.shape[:2]
            for c in configs:
                o = fast_output(pixels, data[s][f"L_{key}"], c)
                m = compare(o, ref, tb)
                m["detail_ratio"] = highpass_std(o, away) / hp_ref
                m["factor"] = math.sqrt(H * W / math.prod(data[s][f"L_{key}"].shape))
                acc[clab(c)].append(m)
        out[key] = {k: {**aggregate(v, [], []), "detail_ratio_mean": float(np.mean([e["detail_ratio"] for e in v])),
                        "detail_ratio_min": float(np.min([e["detail_ratio"] for e in v])),
                        "per_photo": dict(zip(stems, v))} for k, v in acc.items()}
    report.append(f"\n### Upsampling configs at every working resolution (model `{name}`; photos downscaled there)\n")
    report.append("Same network L as above (captured), only the upsampling differs; the first config is the "
                  "current default. bf16 rows: L from the bf16 network run.\n")
    report.append("`detail` = std of the high-pass luminance (minus a Gaussian of sigma 2 px) of fast over that "
                  "of exact, more than 8 px from strong L edges: below 1 = local contrast flattened (mean / min).\n")
    hdr = ["working res", "config", "n", "mean PSNR", "worst PSNR", "worst max", "mean p99.9", "worst p99.9",
           "band MAE 0-2/2-8/8-32/>32", "detail"]
    rows = []
    for key, table in out.items():
        for k, a in table.items():
            rows.append([key, k, a["n"], f"{a['psnr_mean']:.2f}", f"{a['psnr_worst']:.2f}", a["max_worst"],
                         f"{a['p999_mean']:.1f}", a["p999_worst"], "/".join(f"{b:.2f}" for b in a["band_mae_mean"]),
                         f"{a['detail_ratio_mean']:.3f} / {a['detail_ratio_min']:.3f}"])
    report.append(md_table(hdr, rows))
    # ---- by downscale factor (linear), pooling all fp32 working resolutions: what a bigger photo will see
    edges = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    report.append("\nBy linear downscale factor (photo side / working side), all fp32 working resolutions pooled: "
                  "mean PSNR / worst max / mean detail ratio (n). A 24 MP photo at 1 MP is a factor 4.9.\n")
    hdr = ["config"] + [f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])]
    rows = []
    for c in configs:
        cells = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            ents = [e for key, table in out.items() if key.startswith("fp32")
                    for e in table[clab(c)]["per_photo"].values() if lo <= e["factor"] < hi]
            cells.append(f"{np.mean([e['psnr'] for e in ents]):.2f} / {max(e['max'] for e in ents)} / "
                         f"{np.mean([e['detail_ratio'] for e in ents]):.3f} ({len(ents)})" if ents else "-")
        rows.append([clab(c)] + cells)
    report.append(md_table(hdr, rows))
    print(f"configs evaluated in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return out


PROFILE_BINS = (-40, -24, -12, -6, -2, 2, 6, 12, 24, 40)  # signed distance (px) to the silhouette, + = bright side


def silhouette_window(pixels: np.ndarray, size: int) -> tuple[int, int]:
    """The crop with the most large-scale dark/bright step edge (gradient of the blurred luminance)."""
    Y = pixels.astype(np.float32) @ np.array(LUMA_REC601, np.float32)
    sigma = max(2.0, math.hypot(*Y.shape) / 150)  # large-scale steps: a subject against the sky, not ripples
    g = ndimage.gaussian_gradient_magnitude(Y, sigma)
    sm = ndimage.uniform_filter(g, size=size // 2)
    H, W = Y.shape
    m = size // 2
    sm[:m // 2, :], sm[H - m // 2:, :], sm[:, :m // 2], sm[:, W - m // 2:] = 0, 0, 0, 0
    y, x = np.unravel_index(int(np.argmax(sm)), sm.shape)
    return int(np.clip(y - m, 0, max(0, H - size))), int(np.clip(x - m, 0, max(0, W - size)))


def edge_profile(inp: np.ndarray, outs: dict[str, np.ndarray]) -> dict:
    """Mean 8-bit luminance per signed-distance bin from the strongest edges of the (crop of the) input."""
    w = np.array(LUMA_REC601, np.float32)
    Y = inp.astype(np.float32) @ w
    Yb = ndimage.gaussian_filter(Y, 1.5)
    g = ndimage.gaussian_gradient_magnitude(Y, 1.5)
    edges = g >= np.quantile(g, 0.97)
    d = ndimage.distance_transform_edt(~edges)
    bright = Yb >= ndimage.uniform_filter(Yb, 41)
    sd = np.where(bright, d, -d)
    lab = np.digitize(sd, PROFILE_BINS[1:-1])
    keep = np.abs(sd) <= PROFILE_BINS[-1]
    prof = {}
    for k, img in {"input": inp, **outs}.items():
        Yk = img.astype(np.float32) @ w
        prof[k] = [float(Yk[keep & (lab == i)].mean()) if (keep & (lab == i)).any() else None
                   for i in range(len(PROFILE_BINS) - 1)]
    return prof


def silhouette_panels(name, photos, per_photo, data, args, report, worst, configs) -> dict:
    """Per worst photo: a crop on its strongest silhouette edge, every config (rows) at every working res."""
    res = {}
    crops_dir = args.out / "crops"
    bins = [f"{a}..{b}" for a, b in zip(PROFILE_BINS[:-1], PROFILE_BINS[1:])]
    report.append("\n### Silhouette crops: luminance profile across the strongest edges\n")
    report.append("Mean 8-bit luminance by signed distance (full-res px) from the strongest 3 % input edges of the "
                  "crop; negative = dark side, positive = bright side. Rows after `exact` are fast minus exact.\n")
    for s in worst:
        pixels = load_photo(next(p for p in photos if p.stem == s))
        arr = data[s]
        H, W = pixels.shape[:2]
        size = min(args.crop_size, H, W)
        y0, x0 = silhouette_window(pixels, size)
        sl = (slice(y0, y0 + size), slice(x0, x0 + size))
        ex = arr["out_exact"]
        Limg = (np.clip(arr["L_exact"][sl], 0, 1) * 255 + 0.5).astype(np.uint8)
        rows, drows, outs = [], [], {}
        for i, c in enumerate(configs):
            row = [("input", pixels[sl]), ("exact", ex[sl])] if i == 0 else \
                  [("exact L", Limg), ("", np.zeros_like(pixels[sl]))] if i == 1 else \
                  [("", np.zeros_like(pixels[sl]))] * 2
            drow = [("", np.zeros_like(pixels[sl]))] * 2
            for mp in args.working_mp:
                key = f"fp32_{mp}"
                down = per_photo[s]["fast"][key]["downscaled"]
                o = fast_output(pixels, arr[f"L_{key}"], c) if down else arr[f"out_{key}"]
                row.append((f"{mp} MP {clab(c)}" if down else f"{mp} MP: native size", o[sl]))
                drow.append((f"|diff|x4 {mp} MP {clab(c)}", diff_x4(o[sl], ex[sl])))
                outs[f"{clab(c)} @{mp}"] = o[sl]
            rows.append(row)
            drows.append(drow)
        f1 = crops_dir / f"{name}_{s}_silhouette.png"
        f2 = crops_dir / f"{name}_{s}_silhouette_diff.png"
        grid_image(rows).save(f1)
        grid_image(drows).save(f2)
        prof = edge_profile(pixels[sl], {"exact": ex[sl], **outs})
        res[s] = {"file": str(f1), "diff_file": str(f2), "y0": y0, "x0": x0, "size": size, "profile": prof}
        report.append(f"\n`{f1.name}` (crop y={y0}, x={x0}, {size} px; diffs in `{f2.name}`)\n")
        ex_p = prof["exact"]
        tr = [["input"] + [f"{v:.0f}" for v in prof["input"]], ["exact"] + [f"{v:.0f}" for v in ex_p]]
        for k, v in prof.items():
            if k in ("input", "exact"):
                continue
            tr.append([k] + [f"{a - b:+.1f}" if a is not None else "-" for a, b in zip(v, ex_p)])
        report.append(md_table(["signed distance (px)"] + bins, tr))
    return res


def oracle_small_L(L_exact: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Exact L brought down to working size the way `downscale` brings the photo down."""
    small = Image.fromarray(L_exact.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.asarray(small, dtype=np.float32).copy())[None, None]


def run_grid(name, photos, per_photo, data, args, report, worst) -> dict:
    """Variants x radius x eps, fitted on the captured fp32 working-resolution L, scored against exact.

    Then, for each variant's best setting and the current default, the same with an *oracle* L (exact L
    downscaled to working size): the error of the upsampler alone, without the network's change of look with scale.
    """
    configs = [("bilinear", 0, 0.0)]
    for v in args.variants:
        if v == "bilinear":
            continue
        configs += [(v, r, e) for r in args.radii for e in args.eps_grid]
    lab = lambda c: f"{c[0]} r={c[1]} eps={c[2]:g}"  # noqa: E731
    results, oracle, best_by_variant = {}, {}, {}
    t_start = time.perf_counter()
    for mp in args.grid_mp:
        key = f"fp32_{mp}"
        stems = [s for s in per_photo if per_photo[s]["fast"][key]["downscaled"]]
        acc = {c: [] for c in configs}

        def inputs(s, mp=mp):
            """Working-size and full-size images of photo ``s``, and its exact result and edge bands."""
            pixels = load_photo(next(p for p in photos if p.stem == s))
            h, w = working_size(*pixels.shape[:2], mp)
            img = to_float(pixels)
            ref, tb = torch.from_numpy(data[s]["out_exact"]), torch.from_numpy(data[s]["bands"])
            return h, w, downscale(pixels, h, w), img, luminance(img), ref, tb

        for s in stems:
            h, w, small, img, Y, ref, tb = inputs(s)
            Ls = torch.from_numpy(data[s][f"L_{key}"])[None, None]
            for c in configs:
                L = upsample_L(c[0], small, Ls, img, Y, c[1], c[2])
                acc[c].append(compare(quantise(img, L), ref, tb))
            del img, Y
        table = {lab(c): aggregate(ents, [], []) for c, ents in acc.items()}
        results[key] = table
        best = {}
        for c in sorted(configs, key=lambda c: -table[lab(c)]["psnr_mean"]):
            best.setdefault(c[0], c)
        best_by_variant[key] = {v: lab(c) for v, c in best.items()}
        print(f"grid {key}: {len(stems)} photos x {len(configs)} configs, {time.perf_counter() - t_start:.0f}s so far",
              file=sys.stderr, flush=True)
        # ---- oracle: the upsampler alone
        ocfg = list(best.values())
        cur = (SHIPPED_VARIANT, args.radius, args.eps)
        if cur not in ocfg:
            ocfg.append(cur)
        oacc = {c: [] for c in ocfg}
        for s in stems:
            h, w, small, img, Y, ref, tb = inputs(s)
            Lo = oracle_small_L(data[s]["L_exact"], h, w)
            for c in ocfg:
                oacc[c].append(compare(quantise(img, upsample_L(c[0], small, Lo, img, Y, c[1], c[2])), ref, tb))
            del img, Y
        oracle[key] = {lab(c): aggregate(e, [], []) for c, e in oacc.items()}
    report.append(f"\n### Upsampling grid (model `{name}`, fp32 working-resolution L, all downscaled photos)\n")
    report.append("Variants: "
                  + "; ".join(f"`{k}` = {VARIANTS[k][2]}" for k in ["bilinear", *args.variants] if k in VARIANTS)
                  + ". Radius in working px.\n")
    hdr = ["config", "mean PSNR", "worst PSNR", "worst max", "mean p99.9", "worst p99.9", "band MAE 0-2/2-8/8-32/>32"]
    fmt = lambda k, a: [k, f"{a['psnr_mean']:.2f}", f"{a['psnr_worst']:.2f}", a["max_worst"],  # noqa: E731
                        f"{a['p999_mean']:.1f}", a["p999_worst"], "/".join(f"{b:.2f}" for b in a["band_mae_mean"])]
    for key, table in results.items():
        n = table[next(iter(table))]["n"]
        report.append(f"\n#### {key}: best setting of each variant ({n} photos)\n")
        report.append(md_table(hdr, [fmt(k, table[k]) for k in best_by_variant[key].values()]))
        report.append(f"\n{key}, upsampler alone (oracle: exact L downscaled to working size, then upsampled):\n")
        by_psnr = sorted(oracle[key].items(), key=lambda kv: -kv[1]["psnr_mean"])
        report.append(md_table(hdr, [fmt(k, a) for k, a in by_psnr]))
    for key, table in results.items():
        report.append(f"\n#### {key}: full grid, sorted by mean PSNR\n")
        report.append(md_table(hdr, [fmt(k, a) for k, a in sorted(table.items(), key=lambda kv: -kv[1]["psnr_mean"])]))
    print(f"grid done in {time.perf_counter() - t_start:.0f}s", file=sys.stderr, flush=True)
    return {"results": results, "oracle": oracle, "best_by_variant": best_by_variant,
            "seconds": time.perf_counter() - t_start}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", type=Path,
                    help="checkpoint path (repeatable); default <shared>/models/official/rave_unpaired.pth")
    ap.add_argument("--with-clip-lit", action="store_true",
                    help="also bench <shared>/models/official/clip_lit_original.pth (the strongest model)")
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "backlit",
                    help="folder of photos (default $BACKLITFIX_SHARED/data/backlit or ../shared/data/backlit)")
    ap.add_argument("--working-mp", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--bf16-mp", type=float, nargs="*", default=[0.5, 1.0],
                    help="working resolutions also run in bfloat16 (precision effect)")
    ap.add_argument("--radius", type=int, default=2, help="guide_radius of the Enhancer runs")
    ap.add_argument("--eps", type=float, default=1e-3, help="guide_eps of the Enhancer runs")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--reuse", action="store_true", help="reuse cached network results from <out>/cache")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (smoke test)")
    ap.add_argument("--crops", type=int, default=4, help="halo crops for the N worst photos")
    ap.add_argument("--crop-mp", type=float, default=0.5, help="working resolution that ranks the worst photos")
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--configs", nargs="+",
                    default=["grey:1:1e-4", "detail:2:1e-3", "bounded:2:1e-3", "rgb:1:1e-4", "bilinear"],
                    help="upsampling configs VARIANT:RADIUS:EPS evaluated at every working resolution and shown in "
                         "the silhouette crops, besides the current one (grey:--radius:--eps)")
    ap.add_argument("--no-grid", dest="grid", action="store_false")
    ap.add_argument("--grid-mp", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--radii", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--eps-grid", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    ap.add_argument("--variants", nargs="+", default=["grey", "rgb", "log", "detail", "bounded"],
                    choices=[k for k in VARIANTS if k != "bilinear"])
    args = ap.parse_args(argv)
    for mp in args.grid_mp + [args.crop_mp]:
        if mp not in args.working_mp:
            ap.error(f"--grid-mp/--crop-mp {mp} must be one of --working-mp")
    models = args.model or [SHARED / "models" / "official" / "rave_unpaired.pth"]
    if args.with_clip_lit:
        models.append(SHARED / "models" / "official" / "clip_lit_original.pth")
    photos = list(find_images(args.data, Policy(recursive=False, extensions=(".jpg", ".jpeg", ".jpe"))))
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        ap.error(f"no JPEGs in {args.data}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(photos)} photos from {args.data}",
          file=sys.stderr)
    for m in models:
        report = [f"# fast vs exact: `{m.name}`, {len(photos)} photos from `{args.data}`",
                  f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; command: "
                  f"`{' '.join(sys.argv)}`"]
        res = bench_model(m, photos, args, report)
        res["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                       if k not in ("model",)}
        text = "\n".join(report) + "\n"
        print(text)
        (args.out / f"fast_vs_exact_{m.stem}.md").write_text(text)
        (args.out / f"fast_vs_exact_{m.stem}.json").write_text(
            json.dumps(res, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


if __name__ == "__main__":
    main()
