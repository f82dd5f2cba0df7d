#!/usr/bin/env python
"""Does ``--strength 2`` blow highlights? Clipped pixels and shadow lift at strengths 1 and 2.

For every photo of a folder (default ../shared/data/backlit), through ``Enhancer.enhance`` in fast mode with the
embedded default model (as ``backlitfix run`` does, at the default working resolution):

- clipped: share of pixels with any channel at full scale, in percent, for the input and for strengths 1 and 2;
  ``+pp`` is the increase over the input in percentage points (issue 12's target: at most +1 pp at strength 2);
- dark30 lift: percentage points of mean luma gained over the input's darkest 30 % of pixels
  (``backlitfix.eval.metrics.exposure_change``), at strengths 1 and 2;
- wall time of each enhance call.

    PYTHONPATH=. python bench/strength_highlights.py [FOLDER] [--strengths 1 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backlitfix.enhance import Enhancer  # noqa: E402
from backlitfix.eval.metrics import exposure_change  # noqa: E402
from backlitfix.io import decode  # noqa: E402
from backlitfix.model.checkpoint import load_model  # noqa: E402
from backlitfix.model.registry import resolve  # noqa: E402


def clipped(px: np.ndarray) -> float:
    """Percent of pixels with any channel at the type's maximum."""
    return float((px == np.iinfo(px.dtype).max).any(axis=-1).mean() * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "backlit")
    ap.add_argument("--strengths", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--mode", default="fast", choices=["fast", "exact"])
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net, _ = load_model(resolve("default").path)
    enh = Enhancer(net, mode=args.mode)
    photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    ss = args.strengths
    head = " ".join(f"{'+pp s=' + str(s):>9s} {'lift s=' + str(s):>9s}" for s in ss)
    print(f"{'photo':36s} {'MP':>5s} {'in %':>6s} {head} " + " ".join(f"{'t s=' + str(s):>7s}" for s in ss))
    rows = []
    for p in photos:
        px = decode(p, max_pixels=10**9).pixels
        base = clipped(px)
        row = {"name": p.name, "mp": px.shape[0] * px.shape[1] / 1e6, "in": base}
        for s in ss:
            t0 = time.perf_counter()
            out = enh.enhance(px, s)
            row[f"t{s}"] = time.perf_counter() - t0
            row[f"pp{s}"] = clipped(out) - base
            row[f"lift{s}"] = exposure_change(px, out)["dark30_gain"]
        rows.append(row)
        print(f"{p.name[:36]:36s} {row['mp']:5.2f} {base:6.2f} "
              + " ".join(f"{row[f'pp{s}']:+9.2f} {row[f'lift{s}']:9.2f}" for s in ss)
              + " " + " ".join(f"{row[f't{s}']:7.2f}" for s in ss), flush=True)
    print(f"\n{len(rows)} photos, mode {args.mode}, {torch.get_num_threads()} threads")
    for s in ss:
        pp = np.array([r[f"pp{s}"] for r in rows])
        lift = np.array([r[f"lift{s}"] for r in rows])
        t = sum(r[f"t{s}"] for r in rows)
        worst = rows[int(pp.argmax())]["name"]
        print(f"strength {s}: clipped +pp mean {pp.mean():+.2f}, worst {pp.max():+.2f} ({worst}), "
              f"photos over +1 pp: {int((pp > 1).sum())}; dark30 lift mean {lift.mean():.2f} pp "
              f"(min {lift.min():.2f}); wall {t:.1f} s")
    if len(ss) >= 2:
        ratio = np.array([r[f"lift{ss[-1]}"] / max(r[f"lift{ss[0]}"], 1e-9) for r in rows])
        print(f"dark30 lift, strength {ss[-1]} / strength {ss[0]}: mean {ratio.mean():.2f}x, min {ratio.min():.2f}x")


if __name__ == "__main__":
    main()
