#!/usr/bin/env python
"""Fast mode's look at smaller working sizes against a reference working size, on real photos.

For every photo of ``--data`` with at least ``--min-mp`` megapixels, at its own size and upscaled ``--upscale``
times (Lanczos; where the upsampler's ratio is that of a 20-30 MP photo), fast mode (PyTorch, fp32, strength 1,
so only the working size changes) at each ``--mp`` against ``--ref``: PSNR on the 8-bit outputs, the darkest-30 %
lift (Rec. 709 luma) kept, and the mean luma shift. Crops 256 px square around each photo's strongest
silhouette edge (native size): input | reference | each size | |size - reference| x 8, to
``<out>/working_size_crops.png``.

    python bench/working_size.py                      # ../shared/data/backlit, 0.35 0.3 0.25 against 0.5
    python bench/working_size.py --engine-check       # what auto runs (backend, precision) against PyTorch fp32

``--engine-check``: every photo of ``--data`` through fast mode at the configured working size, as `run` runs it
(backend and precision auto: OpenVINO bf16 on a CPU with native bf16) against PyTorch fp32: PSNR, max and 99.9th
percentile difference in 8-bit levels.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")

from backlitfix.config import load_config  # noqa: E402
from backlitfix.constants import LUMA_REC709  # noqa: E402
from backlitfix.io import decode  # noqa: E402
from backlitfix.io.walk import Policy, find_images  # noqa: E402
from backlitfix.pipeline import load_enhancer  # noqa: E402


def luma(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) @ np.asarray(LUMA_REC709, np.float32) / 255


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float32) - b) ** 2).mean())
    return 10 * np.log10(255 ** 2 / max(mse, 1e-9))


def edge_crop(px: np.ndarray, size: int = 256) -> tuple[slice, slice]:
    """The square around the strongest dark/bright edge (smoothed luma gradient), away from the border."""
    from scipy import ndimage

    g = ndimage.gaussian_gradient_magnitude(ndimage.uniform_filter(luma(px), 9), 3)
    r = size // 2
    g[:r], g[-r:], g[:, :r], g[:, -r:] = 0, 0, 0, 0
    y, x = np.unravel_index(np.argmax(g), g.shape)
    return slice(y - r, y + r), slice(x - r, x + r)


def main():
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "backlit")
    ap.add_argument("--ref", type=float, default=0.5)
    ap.add_argument("--mp", type=float, nargs="+", default=[0.35, 0.3, 0.25])
    ap.add_argument("--min-mp", type=float, default=0.9, help="photos smaller than this are skipped")
    ap.add_argument("--upscale", type=int, default=3, help="also run each photo upscaled this many times (1: not)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--engine-check", action="store_true", help="compare what auto runs with PyTorch fp32 instead")
    args = ap.parse_args()
    if args.engine_check:
        return engine_check(args.data)
    sizes = [args.ref, *args.mp]
    enh = {mp: load_enhancer(load_config(None, {"fast.working_megapixels": mp, "precision": "fp32", "backend": "torch"},
                                         user_config=None))[0] for mp in sizes}
    rows, crops = [], []
    for path in find_images(args.data, Policy(recursive=False)):
        px = decode(path, max_pixels=10**9).pixels
        if px.dtype != np.uint8 or px.shape[0] * px.shape[1] < args.min_mp * 1e6:
            continue
        for k in sorted({1, args.upscale}):
            big = (px.shape[1] * k, px.shape[0] * k)
            p = px if k == 1 else np.asarray(Image.fromarray(px).resize(big, Image.LANCZOS))
            outs = {mp: enh[mp].enhance(p, 1.0) for mp in sizes}
            Y0 = luma(p)
            dark = Y0 <= np.percentile(Y0, 30)
            lift = {mp: float((luma(o) - Y0)[dark].mean()) for mp, o in outs.items()}
            row = {"photo": path.name, "megapixels": round(p.shape[0] * p.shape[1] / 1e6, 1)}
            for mp in args.mp:
                row[str(mp)] = {"psnr": psnr(outs[mp], outs[args.ref]), "lift_kept": lift[mp] / lift[args.ref],
                                "mean_shift": float(luma(outs[mp]).mean() - luma(outs[args.ref]).mean())}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if k == 1:
                sl = edge_crop(p)
                diffs = [np.clip(np.abs(outs[mp][sl].astype(np.int16) - outs[args.ref][sl]) * 8, 0, 255)
                         .astype(np.uint8) for mp in args.mp]
                crops.append(np.concatenate([p[sl]] + [outs[mp][sl] for mp in sizes] + diffs, 1))
    if not rows:
        raise SystemExit(f"no 8-bit photo of at least {args.min_mp} MP in {args.data}")
    print(f"\nagainst {args.ref} MP, {len(rows)} runs ({len(crops)} photos, native and x{args.upscale}):")
    print("| working size | mean PSNR | worst PSNR | dark-30 lift kept (mean / worst) | mean luma shift |")
    print("|---|---|---|---|---|")
    for mp in args.mp:
        r = [row[str(mp)] for row in rows]
        print(f"| {mp} MP | {np.mean([x['psnr'] for x in r]):.1f} dB | {min(x['psnr'] for x in r):.1f} dB | "
              f"{np.mean([x['lift_kept'] for x in r]):.3f} / {min(x['lift_kept'] for x in r):.3f} | "
              f"{np.mean([x['mean_shift'] for x in r]):+.4f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(crops, 0)).save(args.out / "working_size_crops.png")
    (args.out / "working_size.json").write_text(json.dumps(rows, indent=1))
    print(f"crops (input | {' | '.join(f'{mp} MP' for mp in sizes)} | differences x 8): "
          f"{args.out / 'working_size_crops.png'}")


def engine_check(data: Path) -> None:
    def enhancer(**o):
        return load_enhancer(load_config(None, o, user_config=None))[0]

    ref, auto = enhancer(precision="fp32", backend="torch"), enhancer()
    rows = []
    for path in find_images(data, Policy(recursive=False)):
        px = decode(path, max_pixels=10**9).pixels
        a, b = ref.enhance(px, 1.0), auto.enhance(px, 1.0)
        d = np.abs(a.astype(np.int32) - b)
        rows.append((psnr(a, b), int(d.max()), float(np.percentile(d, 99.9))))
    used = f"{getattr(auto.backend, 'name', 'torch')} {str(auto.dtype)[6:]}"
    print(f"{used} against torch float32 at {auto.working_megapixels} MP, {len(rows)} photos: PSNR mean "
          f"{np.mean([r[0] for r in rows]):.1f} dB, worst {min(r[0] for r in rows):.1f} dB; max difference "
          f"{max(r[1] for r in rows)} levels; worst 99.9th percentile {max(r[2] for r in rows):.0f}")


if __name__ == "__main__":
    main()
