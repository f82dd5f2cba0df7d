#!/usr/bin/env python
"""No-reference quality of every method on the test photos: the table the default model is judged by.

For each photo set (``backlit``: ../shared/data/backlit, ``dicm``: ../shared/data/lowlight/DICM) and each
method (the input itself, gamma 0.6, CLAHE, each official checkpoint in ../shared/models/official run
through backlitfix's own pipeline, and any ``--model PATH``), the mean over the photos of: NIQE (the
MATLAB release's way, on gray; also on Y as BasicSR/pyiqa compute it), crushed %, clipped %, dark30 %
(mean luma of the darkest 30 %) and local contrast %, as ``backlitfix.eval`` defines them. Models run
exactly as ``backlitfix run`` runs them (``load_enhancer`` of a config with that model and ``--mode``);
outputs are 8-bit like the JPEGs/PNGs run would write, scored from memory (PNG is lossless, so
the same pixels).

Markdown on stdout and in ``<out>/quality.md``; every per-photo figure in ``<out>/quality.json``.

    nice -n 10 python bench/quality.py                                   # everything (long on 2 cores)
    python bench/quality.py --sets dicm --methods input clip_lit_original --working-mp 1 --precision fp32 \
        --tag _niqe_validation       # NIQE validation: DICM (< 0.7 MP) in one full-resolution fp32 pass
    python bench/quality.py --sets backlit --methods input gamma clahe --model my.safetensors --limit 5
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backlitfix.config import load_config
from backlitfix.eval import metrics
from backlitfix.eval.niqe import load_pristine, niqe
from backlitfix.io import decode, format_of
from backlitfix.pipeline import load_enhancer

SHARED = Path(os.environ["BACKLITFIX_SHARED"]) if os.environ.get("BACKLITFIX_SHARED") else REPO.parent / "shared"
SETS = {"backlit": SHARED / "data" / "backlit", "dicm": SHARED / "data" / "lowlight" / "DICM"}
OFFICIAL = SHARED / "models" / "official"
BASELINES = ("input", "gamma", "clahe")
COLUMNS = [("niqe", "NIQE", 3), ("niqe_y", "NIQE (Y)", 3), ("crushed", "crushed %", 2), ("clipped", "clipped %", 2),
           ("dark30", "dark30 %", 2), ("local_contrast", "local contrast %", 2)]


def gamma(px: np.ndarray, g: float = 0.6) -> np.ndarray:
    """out = in ** 0.6 on the encoded values, per channel (brightens shadows most)."""
    top = np.iinfo(px.dtype).max
    return np.floor((px / top) ** g * top + 0.5).astype(px.dtype)


def clahe(px: np.ndarray) -> np.ndarray:
    """OpenCV CLAHE on the L of CIELAB (clip limit 2, 8 x 8 tiles), the usual baseline setting."""
    import cv2

    px8 = px if px.dtype == np.uint8 else (px // 257).astype(np.uint8)
    lab = cv2.cvtColor(px8, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def score(px: np.ndarray, pristine) -> dict:
    return {"niqe": niqe(px, pristine), "niqe_y": niqe(px, pristine, "y"), **metrics.exposure(px)}


def md_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["backlit", "dicm"])
    ap.add_argument("--methods", nargs="+", default=None,
                    help="any of input, gamma, clahe and official checkpoint names (e.g. rave_unpaired); "
                         "default: all of them")
    ap.add_argument("--model", action="append", type=Path, default=[], help="another checkpoint (repeatable)")
    ap.add_argument("--mode", choices=["fast", "exact"], default="fast", help="enhancer mode (default: fast)")
    ap.add_argument("--working-mp", type=float, default=None,
                    help="fast.working_megapixels; photos no larger run in one full-resolution pass (= exact)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos of each set")
    ap.add_argument("--niqe-params", type=Path, default=SHARED / "metrics" / "niqe_image_params.mat")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--tag", default="", help="added to the output file names (quality<tag>.md/json)")
    args = ap.parse_args(argv)

    official = sorted(p.stem for p in OFFICIAL.glob("*.pth"))
    methods = args.methods or [*BASELINES, *official]
    unknown = [m for m in methods if m not in BASELINES and m not in official]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join([*BASELINES, *official])}")
    models = {m: OFFICIAL / f"{m}.pth" for m in methods if m not in BASELINES}
    models.update({p.stem: p for p in args.model})
    methods = [m for m in methods if m in BASELINES] + list(models)
    pristine = load_pristine(args.niqe_params)

    enhancers = {}
    for name, path in models.items():
        cfg = load_config(None, {"model": str(path), "mode": args.mode, "precision": args.precision,
                                 "fast.working_megapixels": args.working_mp}, user_config=None)
        enhancers[name] = load_enhancer(cfg)[0]

    results = {"mode": args.mode, "precision": args.precision, "working_mp": args.working_mp,
               "command": " ".join(sys.argv), "sets": {}}
    how = f"mode `{args.mode}`, precision `{args.precision}`" + (
        f", working size {args.working_mp} MP" if args.working_mp else "")
    report = [f"# Quality of each method ({how} for models; mean over the photos)\n"]
    for set_name in args.sets:
        photos = sorted(p for p in SETS[set_name].iterdir() if format_of(p))
        photos = photos[: args.limit] if args.limit else photos
        per = {m: {} for m in methods}
        secs = {m: 0.0 for m in methods}
        for i, photo in enumerate(photos):
            px = decode(photo, max_pixels=400_000_000).pixels
            for m in methods:
                t0 = time.perf_counter()
                out = (px if m == "input" else gamma(px) if m == "gamma" else clahe(px) if m == "clahe"
                       else enhancers[m].enhance(px))
                secs[m] += time.perf_counter() - t0
                per[m][photo.name] = score(out, pristine)
            print(f"{set_name} {i + 1}/{len(photos)} {photo.name}", file=sys.stderr, flush=True)
        means = {m: {k: float(np.mean([v[k] for v in per[m].values()])) for k, _, _ in COLUMNS} for m in methods}
        results["sets"][set_name] = {"folder": str(SETS[set_name]), "photos": len(photos), "mean": means,
                                     "seconds": secs, "per_photo": per}
        report.append(f"\n## {set_name}: {len(photos)} photos from `{SETS[set_name]}`\n")
        rows = [[m] + [f"{means[m][k]:.{d}f}" for k, _, d in COLUMNS] + [f"{secs[m] / max(1, len(photos)):.2f}"]
                for m in methods]
        report.append(md_table(["method"] + [h for _, h, _ in COLUMNS] + ["s/photo"], rows))
        text = "\n".join(report) + "\n"
        args.out.mkdir(parents=True, exist_ok=True)  # written after each set: a long run keeps what it did
        (args.out / f"quality{args.tag}.md").write_text(text)
        (args.out / f"quality{args.tag}.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
