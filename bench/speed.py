"""Wall time and peak RSS of the enhancer on a 24 MP photo, against the I/O floor, measured side by side.

    python bench/speed.py --model ../shared/models/official/rave_unpaired.pth [--skip-exact] [--repeat 2]

Each case runs in its own process, so its peak RSS (ru_maxrss) is its own. Cases:
- floor: decode + encode JPEG -> JPEG, no enhancement (the I/O floor);
- fast / fast-1mp / fast-fp32 / exact: decode -> enhance -> encode through `backlitfix.pipeline`,
  JPEG -> JPEG (fast at the default working resolution, at 1 MP, and in float32);
- cli-fast: `backlitfix run` on the same file, including start-up (import torch, load the model);
- reference-3mp: one full-resolution fp32 pass of the bare network on a 3 MP photo, as the reference
  scripts do (no tiling, no working resolution).
The ratios printed at the end compare cases from this one run: these machines are noisy.
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

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")
SIZE_24MP = (6000, 4000)
CASES = {  # config overrides of the pipeline cases
    "fast": {"mode": "fast"},
    "fast-1mp": {"mode": "fast", "fast.working_megapixels": 1.0},
    "fast-fp32": {"mode": "fast", "precision": "fp32"},
    "exact": {"mode": "exact"},
}


def make_photo(dest: Path, size: tuple[int, int]) -> Path:
    """A photo-like JPEG of ``size``: a real backlit photo upscaled if ../shared is there, else a synthetic scene."""
    import numpy as np
    from PIL import Image, ImageOps

    src = SHARED / "data" / "backlit" / "akai-impl_img1.jpg"
    if src.is_file():
        img = ImageOps.exif_transpose(Image.open(src)).convert("RGB").resize(size, Image.LANCZOS)
    else:
        w, h = size
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        sky = 200 + 55 * (1 - y / h)
        subject = ((x - w / 2) ** 2 / (w / 5) ** 2 + (y - h) ** 2 / (h / 1.5) ** 2) < 1
        lum = np.where(subject, 25 + 10 * np.sin(x / 37) * np.cos(y / 23), sky)
        arr = np.stack([lum, lum * 0.95, lum * 0.9], -1) + np.random.default_rng(0).normal(0, 3, (h, w, 3))
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    # Film-like grain so the JPEG costs what a real photo costs to decode and encode.
    grain = np.random.default_rng(1).integers(-3, 4, (size[1], size[0], 1), dtype=np.int16)
    arr = np.asarray(img, dtype=np.int16) + grain
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(dest, quality=92)
    return dest


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_case(case: str, src: Path, model: str, out_dir: Path) -> dict:
    """Runs inside the child process."""
    import numpy as np
    import torch

    from backlitfix.config import load_config
    from backlitfix.discover import Job
    from backlitfix.io import decode, encode
    from backlitfix.pipeline import SOFTWARE, Pipeline, load_enhancer

    dest = out_dir / f"{case}.jpg"
    if case == "reference-3mp":
        from PIL import Image

        from backlitfix.model.checkpoint import load_model

        net, _ = load_model(model)
        img = np.asarray(Image.open(src).convert("RGB").resize((2121, 1414), Image.LANCZOS), dtype=np.float32) / 255
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        t = time.perf_counter()
        with torch.no_grad():
            net(x)
        return {"seconds": time.perf_counter() - t, "megapixels": 2121 * 1414 / 1e6}
    if case == "floor":
        t = time.perf_counter()
        photo = decode(src, max_pixels=10**9)
        t_dec = time.perf_counter() - t
        encode(photo, dest, fmt="jpeg", quality=95, software=SOFTWARE)
        return {"seconds": time.perf_counter() - t, "decode_s": t_dec}
    overrides = {"model": model, "device": os.environ.get("BENCH_DEVICE", "cpu"), **CASES[case]}
    cfg = load_config(None, overrides, user_config=None)
    enhancer, _ = load_enhancer(cfg)
    pipe = Pipeline(cfg, enhancer)
    job = Job(src, dest, "jpeg", "jpeg")
    t = time.perf_counter()
    photo = pipe.load(job)
    t1 = time.perf_counter()
    pipe.correct(photo)
    t2 = time.perf_counter()
    pipe.save(photo, job)
    t3 = time.perf_counter()
    return {"seconds": t3 - t, "decode_s": t1 - t, "enhance_s": t2 - t1, "encode_s": t3 - t2}


def child(case: str, src: Path, model: str, out_dir: Path) -> dict:
    if case == "cli-fast":
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "backlitfix.cli", "run", "--model", model,
               "--device", os.environ.get("BENCH_DEVICE", "cpu"),
               "-o", str(out_dir / "cli"), "--overwrite", "--", str(src)]
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return {"case": case, "seconds": wall, "peak_rss_mb": rss}
    code = (  # !r: each value as a Python literal in the child's source
        f"import json,sys; sys.path.insert(0, {str(REPO)!r}); from bench.speed import run_case, peak_rss_mb;"
        f"from pathlib import Path; r = run_case({case!r}, Path({str(src)!r}), {model!r}, Path({str(out_dir)!r}));"
        " r['peak_rss_mb'] = peak_rss_mb(); print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    return {"case": case, **json.loads(out.stdout.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "models" / "official" / "rave_unpaired.pth"))
    ap.add_argument("--skip-exact", action="store_true", help="exact 24 MP on 2 CPU cores takes minutes")
    ap.add_argument("--cases", nargs="+", help="run only these cases (floor is always run: it is the baseline)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best time is kept")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps: where the pipeline cases run the network")
    args = ap.parse_args()
    os.environ["BENCH_DEVICE"] = args.device  # the child processes read it

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        tmp = Path(tmp)
        src = make_photo(tmp / "photo_24mp.jpg", SIZE_24MP)
        cases = ["floor", "fast", "fast-1mp", "fast-fp32", "cli-fast", "reference-3mp"]
        cases += [] if args.skip_exact else ["exact"]
        if args.cases:
            cases = ["floor"] + [c for c in args.cases if c != "floor"]
        results = {}
        for case in cases:
            runs = [child(case, src, args.model, tmp) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
            results[case] = best
            print(json.dumps(best), flush=True)

    floor = results["floor"]["seconds"]
    print(f"\n24 MP JPEG -> JPEG on {os.cpu_count()} CPU cores ({SIZE_24MP[0]}x{SIZE_24MP[1]})")
    print("| case | wall s | x floor | peak RSS MB | detail |")
    print("|---|---|---|---|---|")
    for case, r in results.items():
        detail = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.endswith("_s") or k == "megapixels")
        ratio = f"{r['seconds'] / floor:.2f}" if case != "reference-3mp" else "-"
        print(f"| {case} | {r['seconds']:.2f} | {ratio} | {r['peak_rss_mb']:.0f} | {detail} |")
    if "reference-3mp" in results and "fast" in results:
        ref = results["reference-3mp"]
        per_mp = ref["seconds"] / ref["megapixels"]
        print(f"\nreference single pass: {per_mp:.2f} s/MP -> 24 MP would take ~{per_mp * 24:.0f} s in one pass; "
              f"fast is {per_mp * 24 / results['fast']['seconds']:.0f}x quicker than that extrapolation")
    (args.out / "speed.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
