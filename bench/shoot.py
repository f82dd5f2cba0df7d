#!/usr/bin/env python
"""Issue 12's targets, measured through the real `backlitfix run` (the embedded default model).

- welllit, sice *_over: mean luminance change with auto strength (mean and worst), clipped pixels (pp)
- backlit, sice *_under, lowlight DICM and LIME: darkest-30 % lift with auto against --strength 1's
- bursts made from data/backlit photos (shifted crops, +-1/3 EV jitter, capture times 0.3 s apart, EXIF
  Make/Model/DateTimeOriginal/SubSecTimeOriginal): one strength per burst in `run`, and across a restart
  with the SQLite burst store (Pipeline.process, the watch daemon's path)
- the decision's added cost on a 24 MP photo: `run` with auto against a fixed strength, side by side

Statistics as the issue measured them: both images resized to 640 px on the long side, Rec. 709 luma of
the encoded values; "clipped" = pixels with a channel at 255. Prints wall time and peak RSS (children).

    python bench/shoot.py                                 # everything (~30 min on 2 busy cores)
    python bench/shoot.py --sets welllit backlit --limit 8   # every k-th photo, for iterating
    python bench/shoot.py --sets welllit over backlit --bias -1 0   # auto at two auto.bias settings
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from backlitfix.constants import LUMA_REC709, MAX_PIXELS  # noqa: E402
from backlitfix.io import decode  # noqa: E402

SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")
DATA = SHARED / "data"
SETS = {
    "welllit": ("leave", lambda: sorted((DATA / "welllit").glob("*.jpg"))),
    "over": ("leave", lambda: sorted((DATA / "sice").glob("*_over.jpg"))),
    "backlit": ("lift", lambda: sorted((DATA / "backlit").glob("*.jpg"))),
    "under": ("lift", lambda: sorted((DATA / "sice").glob("*_under.jpg"))),
    "dicm": ("lift", lambda: sorted((DATA / "lowlight" / "DICM").glob("*.jpg"))),
    "lime": ("lift", lambda: sorted((DATA / "lowlight" / "LIME").glob("*.png"))),
}
TARGET_LIFT = {"backlit": 0.90, "under": 0.80, "dicm": 0.80, "lime": 0.80}
REC709 = np.array(LUMA_REC709, np.float32)


def cli(*args: str, env_extra: dict | None = None) -> tuple[dict, float]:
    """`backlitfix run ... --json` in a child process; (summary, wall seconds)."""
    env = {**os.environ, "XDG_CONFIG_HOME": "/nonexistent", **(env_extra or {})}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "backlitfix.cli", "run", "--json", *args], capture_output=True,
                       text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - t
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise SystemExit(f"backlitfix run failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout), wall


def load_rgb8(path: Path) -> np.ndarray:
    """The product's decoder (`run`'s orientation and colour handling), as 8 bits."""
    px = decode(path, max_pixels=MAX_PIXELS).pixels
    return px if px.dtype == np.uint8 else np.rint(px / 257.0).astype(np.uint8)


def at_640(path: Path) -> np.ndarray:
    im = Image.fromarray(load_rgb8(path))
    im.thumbnail((640, 640), Image.LANCZOS)
    return np.asarray(im)


def stats(src: Path, out: Path) -> dict:
    a, b = at_640(src), at_640(out)
    ya, yb = (x.astype(np.float32) / 255 @ REC709 for x in (a, b))
    dark = ya <= np.percentile(ya, 30)
    return {"change": float(yb.mean() / max(ya.mean(), 1e-6) - 1), "lift": float((yb[dark] - ya[dark]).mean()),
            "clipped_pp": float(((b == 255).any(-1).mean() - (a == 255).any(-1).mean()) * 100)}


def run_set(name: str, files: list[Path], work: Path, biases=(0.0,)) -> dict:
    """--strength 1 once, then auto at each ``auto.bias`` (through --config), each line against strength 1."""
    kind = SETS[name][0]

    def rows_of(label: str, *args: str) -> dict:
        summary, _ = cli("-o", str(work / name / label), *args, *map(str, files))
        return {Path(f["input"]).name: {**stats(Path(f["input"]), Path(f["output"])), "strength": f["strength"]}
                for f in summary["files"] if f["status"] == "done"}

    s1 = rows_of("s1", "--strength", "1")
    res = {}
    for bias in biases:
        config = ["--config", str(_config(work, f"auto:\n  bias: {bias}\n"))] if bias else []
        auto = rows_of(f"auto{bias:+g}", "--strength", "auto", *config)
        res[bias] = _report(name, kind, auto, s1, bias)
    return res


def _report(name: str, kind: str, auto: dict, s1: dict, bias: float) -> dict:
    names = sorted(set(auto) & set(s1))
    ch = np.array([auto[n]["change"] for n in names]) * 100
    ch1 = np.array([s1[n]["change"] for n in names]) * 100
    clip = np.array([auto[n]["clipped_pp"] for n in names])
    st = np.array([auto[n]["strength"] for n in names])
    lift_a, lift_1 = np.array([auto[n]["lift"] for n in names]), np.array([s1[n]["lift"] for n in names])
    ratio = lift_a.mean() / max(lift_1.mean(), 1e-9)
    line = (f"{name:8s} n={len(names):3d}{f'  bias {bias:+g}' if bias else ''}  strength mean {st.mean():.2f} "
            f"(=0: {np.mean(st < 0.005):.0%}, =1: {np.mean(st > 0.995):.0%})  mean luminance change auto "
            f"{ch.mean():+.1f} % (worst {ch[np.argmax(np.abs(ch))]:+.1f} %) vs strength 1 {ch1.mean():+.1f} %  "
            f"clipped {clip.mean():+.3f} pp  dark30 lift auto {lift_a.mean():+.3f} vs strength 1 "
            f"{lift_1.mean():+.3f} = {ratio:.0%}")
    if kind == "leave":
        ok = abs(ch.mean()) <= 2 and np.abs(ch).max() <= 5 and clip.mean() <= 0.1
        target = "target: within +-2 % mean, +-5 % worst, clipped <= 0.1 pp"
    else:
        ok = ratio >= TARGET_LIFT[name]
        target = f"target: lift >= {TARGET_LIFT[name]:.0%} of strength 1's"
    worst = sorted(names, key=lambda n: -abs(auto[n]["change"]))[:3] if kind == "leave" else \
        sorted(names, key=lambda n: auto[n]["strength"])[:3]
    print(f"{line}\n         {target}: {'MET' if ok else 'NOT MET'}; "
          + ("largest changes: " if kind == "leave" else "lowest strengths: ")
          + ", ".join(f"{n} ({auto[n]['change'] * 100:+.1f} %, s={auto[n]['strength']:.2f})" for n in worst),
          flush=True)
    return {"names": names, "auto": auto, "s1": s1, "ok": bool(ok), "ratio": float(ratio)}


def make_bursts(sources: list[Path], folder: Path, frames: int = 4) -> dict[str, list[Path]]:
    import piexif

    bursts = {}
    for b, src in enumerate(sources):
        img = load_rgb8(src).astype(np.float32)
        H, W = img.shape[:2]
        ch, cw = int(H * 0.85), int(W * 0.85)
        rng = np.random.default_rng(b)
        paths = []
        for i in range(frames):
            dy, dx = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
            ev = rng.choice([-1 / 3, 0.0, 1 / 3])
            frame = np.clip(img[dy:dy + ch, dx:dx + cw] * 2.0 ** ev, 0, 255).round().astype(np.uint8)
            t = b * 60 + i * 0.3  # bursts a minute apart, frames 0.3 s apart
            centis = round(t * 100)
            sec = centis // 100
            exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"BenchCam", piexif.ImageIFD.Model: b"B1"},
                                "Exif": {piexif.ExifIFD.DateTimeOriginal: (
                                             f"2026:06:01 {10 + sec // 3600:02d}:{sec // 60 % 60:02d}:"
                                             f"{sec % 60:02d}").encode(),
                                         piexif.ExifIFD.SubSecTimeOriginal: f"{centis % 100:02d}".encode()}})
            p = folder / f"burst{b:02d}_{i}_{src.stem}.jpg"
            Image.fromarray(frame).save(p, quality=92, exif=exif)
            paths.append(p)
        bursts[f"burst{b:02d}"] = paths
    return bursts


def bench_bursts(limit: int, work: Path) -> None:
    src = sorted((DATA / "backlit").glob("*.jpg"))
    src = src[:: max(1, len(src) // limit)][:limit]
    folder = work / "bursts"
    folder.mkdir(parents=True)
    bursts = make_bursts(src, folder)
    summary, wall = cli("-o", str(work / "bursts_out"), str(folder))
    by = {Path(f["input"]).name: f for f in summary["files"]}
    one = sum(len({by[p.name]["strength"] for p in ps}) == 1 and len({by[p.name]["group"] for p in ps}) == 1
              and by[ps[0].name]["group"] is not None for ps in bursts.values())
    groups = {by[ps[0].name]["group"] for ps in bursts.values()}
    alone, _ = cli("--dry-run", "--config", str(_config(work, "burst:\n  gap_seconds: 0\n")), str(folder))
    solo = {Path(f["input"]).name: f["strength"] for f in alone["files"]}
    differ = sum(len({solo[p.name] for p in ps}) > 1 for ps in bursts.values())
    spread = max(max(solo[p.name] for p in ps) - min(solo[p.name] for p in ps) for ps in bursts.values())
    print(f"bursts   run: {one}/{len(bursts)} bursts with one strength and one group, {len(groups)} distinct groups; "
          f"strengths {sorted(round(by[ps[0].name]['strength'], 2) for ps in bursts.values())}; "
          f"each frame alone (gap 0) would differ within {differ}/{len(bursts)} bursts (by up to {spread:.2f})  "
          f"[{wall:.0f} s]", flush=True)
    restart(bursts, work)


def _config(work: Path, text: str) -> Path:
    p = work / f"config{abs(hash(text))}.yaml"
    p.write_text(text)
    return p


def restart(bursts: dict[str, list[Path]], work: Path) -> None:
    """Half of each burst, then a new Pipeline with a new SqliteBurstStore on the same database file."""
    sys.path.insert(0, str(REPO))
    from backlitfix.bursts import SqliteBurstStore
    from backlitfix.config import load_config
    from backlitfix.discover import plan
    from backlitfix.pipeline import Pipeline, load_enhancer

    cfg = load_config(overrides={"output.dir": str(work / "restart_out")}, user_config=None)
    enhancer, _ = load_enhancer(cfg)
    db = work / "journal.sqlite"
    results = {}
    for half in (0, 1):
        store = SqliteBurstStore(db, cfg.burst.gap_seconds)  # as after a daemon restart
        pipe = Pipeline(cfg, enhancer, bursts=store)
        for ps in bursts.values():
            n = len(ps) // 2
            for p in (ps[:n] if half == 0 else ps[n:]):
                job = plan([p], recursive=False, output_dir=cfg.output.dir, suffix="", fmt="auto").jobs[0]
                results[p.name] = pipe.process(job)
        store.close()
    same = sum(len({(results[p.name].strength, results[p.name].group) for p in ps}) == 1 for ps in bursts.values())
    print(f"bursts   restart (SQLite store, Pipeline.process as watch uses it): {same}/{len(bursts)} bursts kept "
          "one strength and group across the restart", flush=True)


def bench_cost(work: Path, repeat: int) -> None:
    sys.path.insert(0, str(REPO))
    from bench.speed import SIZE_24MP, make_photo

    photo = make_photo(work / "photo24.jpg", SIZE_24MP)
    times = {"1": [], "auto": []}
    for _ in range(repeat):
        for s in ("1", "auto"):  # alternate, so a busy moment hits both
            out = work / f"cost_{s}"
            summary, _ = cli("-o", str(out), "--overwrite", "--strength", s, "-j", "1", str(photo))
            times[s].append(summary["files"][0]["seconds"])
            strength = summary["files"][0]["strength"]
    t1, ta = min(times["1"]), min(times["auto"])
    # the decision itself, timed alone on the working-resolution inputs of this photo
    from backlitfix.config import load_config
    from backlitfix.enhance import downscale, working_size
    from backlitfix.io import decode
    from backlitfix.pipeline import load_enhancer
    from backlitfix.strength import decide

    enhancer, _ = load_enhancer(load_config(user_config=None))
    px = decode(photo, max_pixels=10**9).pixels
    small = downscale(px, *working_size(*px.shape[:2], enhancer.working_megapixels))
    L = enhancer.illumination(small)[0, 0]
    t = time.perf_counter()
    for _ in range(10):
        decide(small, L)
    dt = (time.perf_counter() - t) / 10
    print(f"cost     24 MP photo (6000 x 4000 JPEG, -j 1, per-photo seconds, best of {repeat}): strength 1 {t1:.2f} s, "
          f"auto {ta:.2f} s (auto chose {strength:.2f}): {100 * (ta - t1) / t1:+.1f} % "
          f"(runs: 1 {[format(x, '.2f') for x in times['1']]}, auto {[format(x, '.2f') for x in times['auto']]}); "
          f"the decision alone {dt * 1000:.1f} ms = {100 * dt / t1:.2f} % of the photo's time; target < 5 %",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=[*SETS, "bursts", "cost"], choices=[*SETS, "bursts", "cost"])
    ap.add_argument("--limit", type=int, default=0, help="at most this many photos per set (every k-th)")
    ap.add_argument("--bursts", type=int, default=8, help="bursts to build from data/backlit (4 frames each)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each case for the cost")
    ap.add_argument("--bias", type=float, nargs="+", default=[0.0],
                    help="auto.bias values to measure the sets at (each against the same --strength 1 run)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cpu = sorted({w for line in open("/proc/cpuinfo") if line.startswith("flags")
                  for w in line.split() if w.startswith("avx")})
    print(f"bench/shoot.py: {os.cpu_count()} CPUs, flags {' '.join(cpu)}; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="backlitfix-shoot-") as tmp:
        work = Path(tmp)
        for name in args.sets:
            if name in SETS:
                files = SETS[name][1]()
                if args.limit:
                    files = files[:: max(1, len(files) // args.limit)][: args.limit]
                run_set(name, files, work, args.bias)
            elif name == "bursts":
                bench_bursts(args.bursts, work)
            else:
                bench_cost(work, args.repeat)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wall {time.perf_counter() - t0:.0f} s; peak RSS {peak:.0f} MB (largest child `backlitfix run`), "
          f"{own:.0f} MB (this process)")


if __name__ == "__main__":
    main()
