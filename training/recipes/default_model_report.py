"""Check a candidate default model against the quality bar of the default model, with sheets to look at.

    python -m backlitfix.training.recipes.default_model_report --model backlitfix/models/default.safetensors \
        --baseline ../shared/models/official/rave_unpaired.pth --out bench/out/default_model

Every photo runs through the shipped pipeline (`Enhancer`, fast mode, the configured precision), so
the figures are what `backlitfix run` produces. Exposure statistics on luma Y (Rec. 601, [0, 1]):
- dark-30 gain: mean of the output's Y over the input's darkest 30 % of pixels, minus the input's;
- clipped: share of pixels with Y > 0.98; crushed: share with Y < 0.02.
NIQE comes from `backlitfix.eval.niqe` when that module is present (it is written separately).
Baseline outputs are cached as PNG in the output folder, keyed by the checkpoint's name.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from backlitfix.constants import LUMA_REC601, MAX_PIXELS
from backlitfix.enhance import Enhancer, pick_dtype
from backlitfix.io import decode
from backlitfix.io.atomic import atomic_write_bytes
from backlitfix.io.walk import Policy, find_images
from backlitfix.model.checkpoint import load_model

LUMA = np.array(LUMA_REC601, dtype=np.float32)


def luma(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) / 255.0) @ LUMA


def exposure_stats(inp: np.ndarray, out: np.ndarray) -> dict[str, float]:
    yi, yo = luma(inp).ravel(), luma(out).ravel()
    dark = np.argsort(yi, kind="stable")[: max(1, int(0.3 * yi.size))]
    return {
        "dark30_in": float(yi[dark].mean()),
        "dark30_out": float(yo[dark].mean()),
        "dark30_gain": float(yo[dark].mean() - yi[dark].mean()),
        "clipped_in": float((yi > 0.98).mean() * 100),
        "clipped_out": float((yo > 0.98).mean() * 100),
        "crushed_in": float((yi < 0.02).mean() * 100),
        "crushed_out": float((yo < 0.02).mean() * 100),
        "mean_out": float(yo.mean()),
    }


def niqe_fn(shared: Path):
    """NIQE with the MATLAB release's pristine model from ../shared/metrics, or None where it is absent."""
    try:
        from backlitfix.eval.niqe import load_pristine, niqe
    except ImportError:  # written by the eval work
        return None
    params = shared / "metrics" / "niqe_image_params.mat"
    if not params.is_file():
        return None
    pristine = load_pristine(params)
    return lambda pixels: niqe(pixels, pristine)


def enhancer_for(path: Path) -> Enhancer:
    net, _ = load_model(path)
    import torch

    dev = torch.device("cpu")
    return Enhancer(net, mode="fast", device=dev, dtype=pick_dtype("auto", dev))


def photos(folder: Path) -> list[Path]:
    return list(find_images(folder, Policy(recursive=False, extensions=(".jpg", ".jpeg", ".png"))))


def cached_output(enh: Enhancer, cache: Path, photo: Path, pixels: np.ndarray) -> np.ndarray:
    f = cache / (photo.stem + ".png")
    if f.is_file():
        return np.asarray(Image.open(f).convert("RGB"))
    out = enh.enhance(pixels)
    cache.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    Image.fromarray(out).save(buf, format="PNG", compress_level=1)
    atomic_write_bytes(f, buf.getvalue())
    return out


def sheet(rows: list[tuple[str, list[np.ndarray]]], labels: list[str], path: Path, height: int = 240) -> None:
    """One row per photo: input | candidate | baseline, each scaled to ``height``."""
    tiles = []
    for name, imgs in rows:
        scaled = [Image.fromarray(a).resize((max(1, round(a.shape[1] * height / a.shape[0])), height)) for a in imgs]
        tiles.append((name, scaled))
    width = max(sum(t.width for t in s) + 4 * len(s) for _, s in tiles)
    canvas = Image.new("RGB", (width, 18 + len(tiles) * (height + 18)), "white")
    d = ImageDraw.Draw(canvas)
    d.text((4, 2), " | ".join(labels), fill="black")
    y = 18
    for name, s in tiles:
        d.text((4, y), name, fill="black")
        x = 0
        for t in s:
            canvas.paste(t, (x, y + 14))
            x += t.width + 4
        y += height + 18
    path.parent.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def summarise(rows: list[dict], key: str) -> dict[str, float]:
    cols = ["dark30_gain", "clipped_in", "clipped_out", "crushed_out", "mean_out"]
    out = {c: float(np.mean([r[key][c] for r in rows])) for c in cols}
    out["clipped_change_pp"] = out["clipped_out"] - out["clipped_in"]
    if all("niqe" in r[key] for r in rows):
        out["niqe"] = float(np.mean([r[key]["niqe"] for r in rows]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared")
    ap.add_argument("--out", type=Path, default=Path("bench/out/default_model"))
    ap.add_argument("--sets", nargs="+", default=["backlit", "dicm"])
    ap.add_argument("--sheet-every", type=int, default=3, help="put every N-th photo on the sheets")
    args = ap.parse_args(argv)

    folders = {"backlit": args.shared / "data" / "backlit", "dicm": args.shared / "data" / "lowlight" / "DICM"}
    cand, base = enhancer_for(args.model), enhancer_for(args.baseline)
    # the recipe records which backlit photos it trained on: report the held-out ones separately
    files = load_model(args.model)[1].extra.get("data_files", {})
    held = {Path(n).name for n, _ in files.get("backlit_heldout", [])}
    niqe = niqe_fn(args.shared)
    report = {}
    cache_file = args.out / "cache" / "niqe.json"
    niqe_cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    for set_name in args.sets:
        rows, sheet_rows = [], []
        for i, p in enumerate(photos(folders[set_name])):
            pixels = decode(p, max_pixels=MAX_PIXELS).pixels
            if pixels.dtype != np.uint8:
                pixels = (pixels // 257).astype(np.uint8)
            ours = cand.enhance(pixels)
            theirs = cached_output(base, args.out / "cache" / args.baseline.stem / set_name, p, pixels)
            row = {"name": p.name, "input": {}, "ours": exposure_stats(pixels, ours),
                   "baseline": exposure_stats(pixels, theirs)}
            row["input"] = exposure_stats(pixels, pixels)
            if niqe is not None:
                for k, a in (("input", pixels), ("ours", ours), ("baseline", theirs)):
                    key = f"{set_name}/{p.name}/{args.baseline.stem if k == 'baseline' else k}"
                    if k == "ours" or key not in niqe_cache:  # input and baseline scores never change
                        niqe_cache[key] = float(niqe(a))
                    row[k]["niqe"] = niqe_cache[key]
            rows.append(row)
            if i % args.sheet_every == 0:
                sheet_rows.append((p.name, [pixels, ours, theirs]))
            print(p.name, json.dumps({k: row[k] for k in ("ours", "baseline")}), flush=True)
        groups = {"all": rows}
        if set_name == "backlit" and held:
            groups["held_out"] = [r for r in rows if r["name"] in held]
            groups["trained_on"] = [r for r in rows if r["name"] not in held]
        for g, rs in groups.items():
            if rs:
                report[f"{set_name}/{g}"] = ({k: summarise(rs, k) for k in ("input", "ours", "baseline")}
                                             | {"n": len(rs)})
        for j in range(0, len(sheet_rows), 5):
            sheet(sheet_rows[j : j + 5], [f"input | {args.model.stem} | {args.baseline.stem}"],
                  args.out / f"sheet_{set_name}_{j // 5}.png")
        report[f"{set_name}/rows"] = rows
    atomic_write_bytes(cache_file, json.dumps(niqe_cache).encode())
    atomic_write_bytes(args.out / "report.json", json.dumps(report, indent=1).encode())
    for k, v in report.items():
        if not k.endswith("/rows"):
            print(k, json.dumps(v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
