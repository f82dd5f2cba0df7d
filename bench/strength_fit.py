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
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backlitfix.constants import LUMA_REC709 as REC709  # noqa: E402
from backlitfix.constants import MAX_PIXELS  # noqa: E402
from backlitfix.strength import SHADOWS, decide, score  # noqa: E402

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
    change, lift = [], []
    for s in GRID:
        y = apply_gain(x.clone(), L.clone(), float(s)).numpy() @ np.asarray(REC709, np.float32)
        change.append(y.mean() / max(y0.mean(), 1e-6) - 1)
        lift.append((y[dark] - y0[dark]).mean())
    gain = -np.log2(np.clip(L.numpy(), 1 / 64, 1.0))
    with torch.no_grad():
        rgb = x.numpy()
    return {"shadow_gain": d.shadow_gain, "top_light": d.top_light,
            **candidates(y0, gain, rgb, change[-1], lift[-1]),
            "change": np.array(change), "lift": np.array(lift)}


def candidates(y: np.ndarray, gain: np.ndarray, rgb: np.ndarray, change1: float, lift1: float) -> dict:
    """Other global measurements a rule could use: exposure statistics of the photo at the working size,
    its layout, its colour, the network's gain map, and what the full correction would do to it."""
    H, W = y.shape
    q = np.quantile(y, [0.1, 0.3, 0.5, 0.7, 0.9, 0.98])
    d30, b20 = y <= q[1], y >= np.quantile(y, 0.8)
    bh, bw = H // 8, W // 8
    blocks = np.sort(y[:bh * 8, :bw * 8].reshape(8, bh, 8, bw).mean((1, 3)).ravel())
    mx, mn = rgb.max(-1), rgb.min(-1)
    t = max(1, H // 3)
    return {
        "p10": q[0], "p30": q[1], "p50": q[2], "p70": q[3], "p90": q[4], "p98": q[5], "mean": y.mean(),
        "clipped": float((mx >= 0.98).mean()), "bright": float((y > 0.8).mean()), "dark": float((y < 0.1).mean()),
        "stops": np.log2((y[b20].mean() + 1e-3) / (y[d30].mean() + 1e-3)),  # brightest 20 % over darkest 30 %
        "log_spread": np.log2(y + 1 / 255).std(), "saturation": ((mx - mn) / (mx + 1e-3)).mean(),
        "block_range": np.log2((blocks[-6:].mean() + 1e-3) / (blocks[:19].mean() + 1e-3)),  # 8 x 8 blocks
        "block_spread": np.log2(blocks + 1e-3).std(),
        "bottom_light": y[2 * t:].mean() - y[:2 * t].mean(),
        "centre": y[H // 4:3 * H // 4, W // 4:3 * W // 4].mean() - y.mean(),  # centre-weighted metering
        "gain_mean": gain.mean(), "gain_bright": gain[b20].mean(), "gain_spread": gain.std(),
        "gain_p90": np.quantile(gain, 0.9), "gain_p10": np.quantile(gain, 0.1),
        "change1": change1, "lift1": lift1, "lift1_rel": lift1 / max(q[1], 0.02),
        "selectivity": lift1 / max(change1 * y.mean(), 1e-4),  # shadow lift per unit of overall change
    }


CANDIDATES = ["shadow_gain", "top_light", *candidates(np.linspace(0, 1, 64).reshape(8, 8),
                                                        np.zeros((8, 8)), np.zeros((8, 8, 3)), 0.0, 0.0)]


def photos() -> dict[tuple[str, str], Path]:
    """Every photo of the six sets by (set, file stem), in set order and then by name."""
    return {(name, p.stem): p for name, (_, pattern) in SETS.items() for p in sorted(DATA.glob(pattern))}


def collect(cache: Path) -> list[tuple[str, str, dict]]:
    import hashlib

    from backlitfix.config import load_config
    from backlitfix.pipeline import load_enhancer

    # One cache per default model: another model's L gives other measurements.
    model = REPO / "backlitfix" / "models" / "default.safetensors"
    cache = cache / f"{hashlib.sha256(model.read_bytes()).hexdigest()[:12]}-v2"  # v2: the candidates
    cache.mkdir(parents=True, exist_ok=True)
    enhancer = None
    rows = []
    for (name, stem), p in photos().items():
        f = cache / f"{name}-{stem}.npz"
        if not f.exists():
            if enhancer is None:
                enhancer, _ = load_enhancer(load_config(user_config=None))
            m = measure(p, enhancer)
            np.savez(f.with_suffix(".tmp.npz"), **m)
            os.replace(f.with_suffix(".tmp.npz"), f)
        z = np.load(f)
        rows.append((name, stem, {k: z[k] for k in z.files}))
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
    ch, li = (np.array([r[2][k] for r in rows]) for k in ("change", "lift"))
    pos = np.clip(np.asarray(strengths, float), 0, 1) * (len(GRID) - 1)
    lo = np.minimum(np.floor(pos).astype(int), len(GRID) - 2)
    t, i = pos - lo, np.arange(len(rows))
    at = lambda m: m[i, lo] * (1 - t) + m[i, lo + 1] * t  # noqa: E731 - linear in s between grid points
    names = np.array([r[0] for r in rows])
    out = {}
    for name, (kind, _) in SETS.items():
        m = names == name
        if kind == "leave":
            c = at(ch)[m] * 100
            out[name] = (c.mean(), np.abs(c).max())
        else:
            out[name] = (at(li)[m].sum() / li[m, -1].sum(),)
    return out


def leave_ok(e: dict, worst: float) -> bool:
    return all(abs(e[k][0]) <= 2 and e[k][1] <= worst for k, (kind, _) in SETS.items() if kind == "leave")


def kept(e: dict) -> float:
    """How close to the floors the sets to correct come (1 = all met; DICM apart, see the conflicts)."""
    return min(e["backlit"][0] / 0.9, e["under"][0] / 0.8, e["lime"][0] / 0.8)


def operating_point(rows, z, worst: float) -> dict | None:
    """The largest shift of the score at which the sets to leave stay within their floors."""
    lo, hi = -12.0, 4.0
    if not leave_ok(effects(rows, smoothstep(z + lo)), worst):
        return None
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if leave_ok(effects(rows, smoothstep(z + mid)), worst) else (lo, mid)
    return effects(rows, smoothstep(z + lo))


def show(e: dict) -> str:
    return "  ".join(f"{k} {v[0]:+.1f}/{v[1]:.0f} %" if len(v) == 2 else f"{k} {v[0]:.0%}" for k, v in e.items())


def conflicts(rows, sheet: Path) -> None:
    """Photos the issue asks to leave alone whose nearest photo, by exposure and layout, is one it asks to
    correct: no rule on these measurements can treat the two differently. A contact sheet shows the pairs."""
    feats = ["shadow_gain", "top_light", "p30", "mean", "p90", "centre", "stops"]
    Xf = np.array([[float(r[2][f]) for f in feats] for r in rows])
    Z = (Xf - Xf.mean(0)) / Xf.std(0)
    leave = np.array([SETS[r[0]][0] == "leave" for r in rows])
    pairs = []
    for i in np.flatnonzero(leave):
        d = np.linalg.norm(Z - Z[i], axis=1)
        d[i] = np.inf
        j = int(np.argmin(d))
        if not leave[j] and rows[i][2]["change"][-1] > 0.05:
            pairs.append((d[j], i, j))
    pairs.sort()
    print(f"\nConflicts: {len(pairs)} photos to leave alone (changed > 5 % at strength 1) whose nearest photo by "
          f"{', '.join(feats)}\n(standardized) is one to correct:")
    for d, i, j in pairs:
        print(f"  {rows[i][0]}/{rows[i][1]} (strength 1: {rows[i][2]['change'][-1]:+.0%} mean)  ~  "
              f"{rows[j][0]}/{rows[j][1]} (lift {rows[j][2]['lift'][-1]:.3f})  distance {d:.2f}")
    if pairs:
        from PIL import Image, ImageDraw

        files = photos()
        side = 240
        canvas = Image.new("RGB", (2 * side, side * len(pairs)), "black")
        for k, (_, i, j) in enumerate(pairs):
            for col, r in enumerate((rows[i], rows[j])):
                im = Image.open(files[(r[0], r[1])]).convert("RGB")
                im.thumbnail((side, side - 14))
                canvas.paste(im, (col * side, k * side + 14))
                ImageDraw.Draw(canvas).text((col * side + 2, k * side), f"{'leave' if col == 0 else 'correct'}: "
                                            f"{r[0]}/{r[1]}", fill=(255, 255, 0))
        sheet.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(sheet, quality=88)
        print(f"  contact sheet: {sheet}")


def per_region(rows) -> None:
    """A direction measured, not shipped: decide per pixel instead of per photo. Each pixel's score puts its own
    gain g(x) in place of part of the photo's shadow gain: z(x) = score + 2.3 * (1 - lam) * (g(x) - shadow_gain),
    strength(x) = smoothstep(z(x)); lam = 1 is the shipped per-photo rule. Needs the working passes again."""
    from backlitfix.config import load_config
    from backlitfix.constants import L_FLOOR
    from backlitfix.io.decode import decode
    from backlitfix.pipeline import load_enhancer

    enhancer, _ = load_enhancer(load_config(user_config=None))
    rec = np.asarray(REC709, np.float32)
    maps, files = [], photos()
    for name, stem, _ in rows:
        small, L = enhancer.working_pass(decode(files[(name, stem)], max_pixels=MAX_PIXELS).pixels)
        x = small[0].permute(1, 2, 0).numpy()
        g = -np.log2(np.clip(L.numpy(), L_FLOOR, 1.0))
        y0 = x @ rec
        maps.append((x, g, y0, y0 <= np.quantile(y0, SHADOWS)))
    print("\nPer region (measured, not shipped): z(x) = score + 2.3 (1 - lam) (g(x) - shadow_gain) + bias;"
          "\n'reversed': large-scale tone reversal, the share of pixel pairs 3 % of the diagonal apart whose"
          "\nlog-luma order (blurred over 1 % of the diagonal, pairs differing by > 0.15 stops) the output flips:"
          "\nmean / 90th percentile over the backlit and the well-lit photos")
    for lam in (1.0, 0.5, 0.0):
        for b in (-0.5, 0.0, 0.5):
            out, flips, untouched = {}, {}, []
            for r, (x, g, y0, dark) in zip(rows, maps):
                sg, top = float(r[2]["shadow_gain"]), float(r[2]["top_light"])
                s = smoothstep(score(lam * sg + (1 - lam) * g, top, b))  # per pixel
                corrected = np.clip(x * (2.0 ** (g * s))[..., None], 0, 1)
                y = corrected @ rec
                out.setdefault(r[0], []).append((y.mean() / max(y0.mean(), 1e-6) - 1, (y[dark] - y0[dark]).mean(),
                                                 r[2]["lift"][-1]))
                if b == 0.0 and r[0] in ("backlit", "welllit"):
                    flips.setdefault(r[0], []).append(reversed_share(y0, y))
                if b == 0.0 and r[0] == "welllit":  # untouched: under 0.1 % of the pixels change by a level
                    untouched.append(float((np.abs(corrected - x) * 255 > 0.5).any(-1).mean() < 0.001))
            e = {}
            for name, (kind, _) in SETS.items():
                v = np.array(out[name])
                e[name] = (v[:, 0].mean() * 100, np.abs(v[:, 0]).max() * 100) if kind == "leave" else \
                    (v[:, 1].sum() / v[:, 2].sum(),)
            rev = "".join(f"  reversed {k} {np.mean(v):.1%} / {np.percentile(v, 90):.1%}" for k, v in flips.items())
            rev += f"  well-lit untouched {int(sum(untouched))}/{len(untouched)}" if untouched else ""
            print(f"  lam {lam:.1f} bias {b:+.1f}: {show(e)}{rev}")
    for fixed in (1.0, 2.0):
        flips = {}
        for r, (x, g, y0, _) in zip(rows, maps):
            if r[0] in ("backlit", "welllit"):
                y = np.clip(x * (2.0 ** (g * fixed))[..., None], 0, 1) @ rec  # (no roll-off above 1: an upper bound)
                flips.setdefault(r[0], []).append(reversed_share(y0, y))
        print(f"  fixed strength {fixed:g}:" + "".join(f"  reversed {k} {np.mean(v):.1%} / {np.percentile(v, 90):.1%}"
                                                     for k, v in flips.items()))


def reversed_share(y0: np.ndarray, y: np.ndarray) -> float:
    """Large-scale tone reversal: pairs of pixels 3 % of the diagonal apart (across and down) whose order of
    log luma, blurred over 1 % of the diagonal, the output flips; only pairs > 0.15 stops apart count."""
    import torch

    H, W = y0.shape
    k = 2 * max(1, round(0.005 * np.hypot(H, W))) + 1
    d = max(2, round(0.03 * np.hypot(H, W)))

    def blur(a):
        t = torch.from_numpy(np.log2(a + 1 / 255).astype(np.float32))[None, None]
        return torch.nn.functional.avg_pool2d(t, k, 1, k // 2, count_include_pad=False)[0, 0].numpy()

    i, o = blur(y0), blur(y)
    flipped = counted = 0
    for a, b in (((slice(None), slice(d, None)), (slice(None), slice(None, -d))),
                 ((slice(d, None), slice(None)), (slice(None, -d), slice(None)))):
        di, do = i[a] - i[b], o[a] - o[b]
        m = np.abs(di) > 0.15
        flipped += int((m & (np.sign(di) != np.sign(do))).sum())
        counted += int(m.sum())
    return flipped / max(counted, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=REPO / "bench" / "out" / "strength_fit")
    ap.add_argument("--per-region", action="store_true", help="also measure per-pixel decisions (1 more min)")
    ap.add_argument("--sheet", type=Path, default=REPO / "bench" / "out" / "strength_fit" / "conflicts.jpg",
                    help="where to write the contact sheet of the conflicting pairs")
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

    print("\nauto.bias (added to the score; strength.py's rule as shipped, fitted on these photos; then held out:"
          "\nthe same two measurements refitted under 5-fold CV, 3 shuffles)")
    shipped = np.array([score(float(r[2]["shadow_gain"]), float(r[2]["top_light"])) for r in rows])
    zs = [held_out(chosen, kfold(s)) for s in range(3)]
    for b in (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0):
        es = [effects(rows, smoothstep(z + b)) for z in zs]
        e = {k: tuple(np.mean([x[k][i] for x in es]) for i in range(len(es[0][k]))) for k in SETS}
        print(f"  bias {b:+.1f}  shipped: {show(effects(rows, smoothstep(shipped + b)))}\n"
              f"             held out: {show(e)}")

    print(f"\nAn upper bound: the best rules on 2 or 3 of {len(CANDIDATES)} measurements, each fitted AND scored on "
          "all\nphotos (nothing held out), at the largest shift that keeps the sets to leave within their floors")
    for worst, label in ((1e9, "mean change within +-2 %"), (5.0, "mean within +-2 % and worst within +-5 %")):
        for k in (2, 3):
            best = []
            for feats in itertools.combinations(CANDIDATES, k):
                Xf = X(list(feats))
                c, b0 = fit(Xf, y, w)
                e = operating_point(rows, Xf @ c + b0, worst)
                if e is not None:
                    best.append((kept(e), feats, e))
            best.sort(key=lambda t: -t[0])
            print(f"  {label}, {k} measurements:")
            for _, feats, e in best[:3]:
                print(f"    {'+'.join(feats):45s} {show(e)}")

    conflicts(rows, args.sheet)
    if args.per_region:
        per_region(rows)
    print(f"[{time.perf_counter() - t0:.0f} s]")


if __name__ == "__main__":
    main()
