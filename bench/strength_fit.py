#!/usr/bin/env python
"""How auto strength's three numbers were fitted, and how far any such rule can go on ../shared data.

For every photo of the six sets: the product's own working pass (`Enhancer.working_pass`: the photo at
the working resolution and the default model's L), the measurements of `backlitfix.strength.decide`,
a few other candidate measurements, and the effect of each strength 0..1 at the working resolution
through the product's `apply_gain`: mean luminance change (well-lit, over-exposed) and darkest-30 %
lift (the sets to correct). Then:

1. the weighted logistic fit of `strength.py` (ridge 1 on standardized features; each photo weighted
   by what a wrong decision costs it): its weights in the features' own units;
2. held-out accuracy: leave one whole set out, and 5-fold cross-validation;
3. the trade-off under 5-fold cross-validation: for several feature sets, the operating point where
   well-lit and over-exposed photos change by at most 2 % on average, and what the sets to correct
   keep there. This is why issue 12's floors cannot all be met by a rule that does not know the
   photos' names (docs/auto-strength.md).

    python bench/strength_fit.py            # ~4 min on 2 cores (the working passes), cached in --cache
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backlitfix.constants import LUMA_REC709 as REC709  # noqa: E402
from backlitfix.constants import MAX_PIXELS  # noqa: E402
from backlitfix.strength import SHADOWS, decide  # noqa: E402

SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")
DATA = SHARED / "data"
SETS = {"welllit": ("leave", "welllit/*.jpg"), "over": ("leave", "sice/*_over.jpg"),
        "backlit": ("lift", "backlit/*.jpg"), "under": ("lift", "sice/*_under.jpg"),
        "dicm": ("lift", "lowlight/DICM/*.jpg"), "lime": ("lift", "lowlight/LIME/*.png")}
GRID = np.linspace(0.0, 1.0, 21)  # strengths at which each photo's effect is measured


def measure(path: Path, enhancer) -> dict:
    import torch

    from backlitfix.enhance import apply_gain
    from backlitfix.io.decode import decode

    small, L = enhancer.working_pass(decode(path, max_pixels=MAX_PIXELS).pixels)
    d = decide(small, L)
    x = small[0].permute(1, 2, 0).contiguous()
    y0 = (x.numpy() @ np.asarray(REC709, np.float32))
    dark = y0 <= np.quantile(y0, SHADOWS)
    H, W = y0.shape
    change, lift = [], []
    for s in GRID:
        y = apply_gain(x.clone(), L.clone(), float(s)).numpy() @ np.asarray(REC709, np.float32)
        change.append(y.mean() / max(y0.mean(), 1e-6) - 1)
        lift.append((y[dark] - y0[dark]).mean())
    centre = y0[H // 4:3 * H // 4, W // 4:3 * W // 4].mean() - y0.mean()
    with torch.no_grad():
        clip = float((small.amax(1) >= 0.98).float().mean())
    return {"shadow_gain": d.shadow_gain, "top_light": d.top_light, "p30": float(np.quantile(y0, 0.3)),
            "p90": float(np.quantile(y0, 0.9)), "clipped": clip, "centre": float(centre),
            "change": np.array(change), "lift": np.array(lift)}


def collect(cache: Path) -> list[tuple[str, str, dict]]:
    import hashlib

    from backlitfix.config import load_config
    from backlitfix.pipeline import load_enhancer

    # One cache per default model: another model's L gives other measurements.
    model = REPO / "backlitfix" / "models" / "default.safetensors"
    cache = cache / hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    cache.mkdir(parents=True, exist_ok=True)
    enhancer = None
    rows = []
    for name, (_, pattern) in SETS.items():
        for p in sorted(DATA.glob(pattern)):
            f = cache / f"{name}-{p.stem}.npz"
            if not f.exists():
                if enhancer is None:
                    enhancer, _ = load_enhancer(load_config(user_config=None))
                m = measure(p, enhancer)
                np.savez(f.with_suffix(".tmp.npz"), **m)
                os.replace(f.with_suffix(".tmp.npz"), f)
            z = np.load(f)
            rows.append((name, p.stem, {k: z[k] for k in z.files}))
    return rows


def fit(X, y, w, ridge=1.0):
    """Weighted logistic regression, ridge on standardized features (Newton): a score function."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    b = np.zeros(Z.shape[1])
    reg = ridge * np.diag(np.r_[np.ones(len(b) - 1), 0.0])
    for _ in range(50):
        p = 1 / (1 + np.exp(-Z @ b))
        b -= np.linalg.solve((Z * (w * p * (1 - p))[:, None]).T @ Z + reg, Z.T @ (w * (p - y)) + reg @ b)
    coef = b[:-1] / sd
    return coef, b[-1] - mu @ coef


def smoothstep(z):
    t = np.clip((z + 1) / 2, 0, 1)
    return t * t * (3 - 2 * t)


def effects(rows, strengths) -> dict:
    """Per set: (mean change %, worst |change| %) for the sets to leave, lift kept for the others."""
    out = {}
    for name, (kind, _) in SETS.items():
        idx = [i for i, r in enumerate(rows) if r[0] == name]
        if kind == "leave":
            ch = np.array([np.interp(strengths[i], GRID, rows[i][2]["change"]) for i in idx]) * 100
            out[name] = (ch.mean(), np.abs(ch).max())
        else:
            kept = sum(np.interp(strengths[i], GRID, rows[i][2]["lift"]) for i in idx)
            out[name] = (kept / sum(rows[i][2]["lift"][-1] for i in idx),)
    return out


def show(e: dict) -> str:
    return "  ".join(f"{k} {v[0]:+.1f}/{v[1]:.0f} %" if len(v) == 2 else f"{k} {v[0]:.0%}" for k, v in e.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=REPO / "bench" / "out" / "strength_fit")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = collect(args.cache)
    y = np.array([SETS[r[0]][0] == "lift" for r in rows], float)
    # What a wrong decision costs: the lift lost, or the change made to a photo that needed none.
    w = np.array([r[2]["lift"][-1] if t else abs(r[2]["change"][-1]) for r, t in zip(rows, y)])
    w = w / w.mean()
    names = np.array([r[0] for r in rows])

    def X(feats):
        return np.array([[float(r[2][f]) for f in feats] for r in rows])

    chosen = ["shadow_gain", "top_light"]
    coef, bias = fit(X(chosen), y, w)
    print(f"{len(rows)} photos; fitted on all: score = {coef[0]:.2f} * shadow_gain + {coef[1]:.2f} * top_light "
          f"{bias:+.2f}  (strength.py ships 2.3, 3.4, -3.3)")

    def held_out(feats, folds):
        Xf, z = X(feats), np.zeros(len(rows))
        for test in folds:
            c, b0 = fit(Xf[~test], y[~test], w[~test])
            z[test] = Xf[test] @ c + b0
        return z

    loso = held_out(chosen, [names == n for n in SETS])
    acc = {n: np.mean((loso[names == n] > 0) == y[names == n]) for n in SETS}
    print(f"held-out accuracy, leave one set out: {np.mean((loso > 0) == y):.1%} ("
          + ", ".join(f"{n} {a:.0%}" for n, a in acc.items()) + ")")
    print("effect with the leave-one-set-out strengths: " + show(effects(rows, smoothstep(loso))))

    def kfold(seed):
        idx = np.random.default_rng(seed).permutation(len(rows))
        return [np.isin(np.arange(len(rows)), idx[i::5]) for i in range(5)]

    cv = np.mean([np.mean((held_out(chosen, kfold(s)) > 0) == y) for s in range(5)])
    print(f"held-out accuracy, 5-fold CV: {cv:.1%}")
    print("\nTrade-off under 5-fold CV (3 shuffles): the shift of the score at which well-lit and over-exposed"
          "\nphotos change by at most 2 % on average, and what the others keep there"
          "\n(floors: backlit 90 %, the others 80 %)")
    for feats in (["shadow_gain"], chosen, chosen + ["p30"], chosen + ["centre"], chosen + ["clipped"],
                  chosen + ["p90"], chosen + ["p30", "p90", "clipped", "centre"]):
        zs = [held_out(feats, kfold(s)) for s in range(3)]
        for shift in np.arange(2.0, -8.0, -0.05):
            es = [effects(rows, smoothstep(z + shift)) for z in zs]
            e = {k: tuple(np.mean([x[k][i] for x in es]) for i in range(len(es[0][k]))) for k in SETS}
            if all(abs(e[k][0]) <= 2 for k, (kind, _) in SETS.items() if kind == "leave"):
                print(f"  {'+'.join(feats):55s} shift {shift:+.2f}: {show(e)}")
                break
    welllit_p30 = min(float(r[2]["p30"]) for r in rows if r[0] == "welllit")
    dicm = [r for r in rows if r[0] == "dicm"]
    share = sum(r[2]["lift"][-1] for r in dicm if r[2]["p30"] >= welllit_p30) / sum(r[2]["lift"][-1] for r in dicm)
    print(f"\nDICM: {share:.0%} of its strength-1 lift is in photos whose darkest 30 % are at least as bright as "
          f"the darkest well-lit photo's (luma {welllit_p30:.3f})")
    print(f"[{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()
