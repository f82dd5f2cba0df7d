"""The CUDA path in one call (issue 15): golden oracle, fast and exact modes on a large photo, a few training steps.

    python bench/gpu_check.py                       # on a CUDA machine: everything, in under 5 minutes
    python bench/gpu_check.py --device cpu --megapixels 2 --checkpoints 1 --inputs 2   # rehearsal anywhere

1. Golden oracle: every official checkpoint on every golden input, in float32 (TF32 off), against
   golden.json's tolerances (tests/test_network.py's own check, imported, not copied).
2. Fast and exact modes on a synthetic photo of --megapixels, at the device's automatic precision (fp16 on
   CUDA): median wall time of --repeats runs after a warm-up, with torch.cuda.synchronize, decode and encode
   excluded (pixels in memory to pixels in memory). Goal on CUDA: fast 24 MP in at most 0.3 s.
3. `backlitfix train` for --steps steps with the tiny CLIP on synthetic photos, as a subprocess.
Prints one line per check and a summary; exits 1 on any failure, 2 without CUDA unless --device cpu.
Needs the shared data (models/official, reference/golden*): --shared, $BACKLITFIX_SHARED or ../shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST_GOAL_S = 0.3  # issue 15: fast mode, 24 MP, CUDA, without decode and encode
TOTAL_GOAL_S = 300.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cuda (default), or cpu for a dry rehearsal with small sizes")
    p.add_argument("--megapixels", type=float, default=24.0, help="synthetic photo size for fast/exact (default 24)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per mode after one warm-up (default 3)")
    p.add_argument("--checkpoints", type=int, default=0, help="only the first N official checkpoints (0: all)")
    p.add_argument("--inputs", type=int, default=0, help="only the first N golden inputs (0: all)")
    p.add_argument("--steps", type=int, default=5, help="training steps (default 5)")
    p.add_argument("--shared", type=Path, default=None, help="the shared data folder (default $BACKLITFIX_SHARED "
                   "or ../shared)")
    p.add_argument("--skip", action="append", default=[], choices=["golden", "modes", "train"],
                   help="leave a part out (repeatable)")
    return p.parse_args(argv)


class Report:
    def __init__(self):
        self.failures: list[str] = []
        self.t0 = time.perf_counter()

    def line(self, ok: bool, what: str, detail: str = "") -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {what}{'  ' + detail if detail else ''}", flush=True)
        if not ok:
            self.failures.append(what)


def synthetic_photo(megapixels: float, seed: int = 0):
    """A 3:2 backlit-looking uint8 photo: bright sky, dark foreground, a silhouette, grain."""
    import numpy as np

    W = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    H = int(round(megapixels * 1e6 / W))
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, H, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, W, dtype=np.float32)[None]
    sky = 235 - 40 * y
    ground = 25 + 20 * x
    body = ((x - 0.5) ** 2 / 0.02 + (y - 0.7) ** 2 / 0.08) < 1
    v = np.where((y > 0.55) | body, ground, sky)
    img = np.empty((H, W, 3), np.uint8)
    for c, tint in enumerate((1.0, 0.95, 0.85)):
        img[..., c] = np.clip(v * tint + rng.integers(-6, 7, (1, W), dtype=np.int16), 0, 255)
    return img


def golden_oracle(args, device, report: Report) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    import test_network as tn  # the oracle's tolerances live in the tests: one copy of them

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # the oracle is float32
    g = tn.golden()
    ckpts = tn.CHECKPOINTS[: args.checkpoints or None]
    names = list(g["inputs"])[: args.inputs or None]
    inputs = {n: tn.golden_input(n) for n in names}
    t0 = time.perf_counter()
    for ckpt in ckpts:
        net = tn.official(ckpt).to(device).eval()
        for name in names:
            x = inputs[name]
            try:
                with torch.no_grad():
                    L = net(x.to(device)).float().cpu()
                tn.check_against_golden(L, x, g["results"][name][ckpt], np.array(g["inputs"][name]["coords"]))
            except AssertionError as e:
                where = traceback.extract_tb(e.__traceback__)[-1].line
                report.line(False, f"golden {ckpt} {name}", where or repr(e))
    took = time.perf_counter() - t0
    bad = [f for f in report.failures if f.startswith("golden ")]
    report.line(not bad, f"golden oracle: {len(ckpts)} checkpoints x {len(names)} inputs", f"{took:.1f} s")


def modes(args, device, report: Report) -> None:
    import torch

    from backlitfix.enhance import Enhancer, pick_dtype
    from backlitfix.model.checkpoint import load_model

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    net = load_model(shared_root(args) / "models" / "official" / "rave_unpaired.pth")[0]
    pixels = synthetic_photo(args.megapixels)
    H, W = pixels.shape[:2]
    dtype = pick_dtype("auto", device)
    for mode in ("fast", "exact"):
        enh = Enhancer(net, mode=mode, device=device, dtype=dtype)
        warned: list[str] = []
        times = []
        try:
            warm_up = int(mode == "fast")  # exact mode runs once: minutes on a CPU, its kernels warm from fast's
            for i in range(warm_up + (args.repeats if mode == "fast" else 1)):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                sync()
                t = time.perf_counter()
                out = enh.enhance(pixels, warn=warned.append)
                sync()
                if i >= warm_up:
                    times.append(time.perf_counter() - t)
        except Exception as e:  # an out-of-memory or a kernel missing on this device is a result too
            report.line(False, f"{mode} {W}x{H}", f"{type(e).__name__}: {e}")
            continue
        med = statistics.median(times)
        mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""
        changed = float((out != pixels).mean())
        detail = (f"{med:.3f} s median of {len(times)} ({', '.join(f'{t:.3f}' for t in times)}), "
                  f"{str(enh.dtype if mode == 'fast' else torch.float32).replace('torch.', '')}{mem}, "
                  f"{100 * changed:.0f} % of values changed")
        ok = not warned and changed > 0.1
        if warned:
            detail += f"; warning: {warned[0]}"
        report.line(ok, f"{mode} {W}x{H} ({H * W / 1e6:.1f} MP)", detail)
        if mode == "fast" and device.type == "cuda" and args.megapixels >= 24:
            report.line(med <= FAST_GOAL_S, f"fast 24 MP goal <= {FAST_GOAL_S} s", f"{med:.3f} s")


def train(args, device, report: Report) -> None:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        for folder, seed in (("backlit", 1), ("welllit", 2)):
            (tmp / folder).mkdir()
            for i in range(4):
                img = synthetic_photo(0.006, seed * 10 + i)
                if folder == "welllit":
                    img = np.clip(img.astype(np.int16) + 70, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(tmp / folder / f"p{i}.jpg", quality=92)
        out = tmp / "tiny.safetensors"
        cmd = [sys.executable, "-c", "import sys; from backlitfix.cli import main; sys.exit(main())", "train",
               "--method", "rave", "--clip-model", "backlitfix-tiny", "--clip-pretrained", "random",
               "--backlit", str(tmp / "backlit"), "--welllit", str(tmp / "welllit"), "--steps", str(args.steps),
               "--batch-size", "2", "--image-size", "64", "--device", device.type, "-o", str(out)]
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"), XDG_DATA_HOME=str(tmp / "data"),
                   HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"))
        t = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            report.line(False, f"train {args.steps} steps (tiny CLIP, {device.type})", "timed out after 240 s")
            return
        took = time.perf_counter() - t
        ok = r.returncode == 0 and out.exists()
        tail = "" if ok else " | ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        report.line(ok, f"train {args.steps} steps (tiny CLIP, {device.type})",
                    f"{took:.1f} s including start-up{'; ' + tail if tail else ''}")


def shared_root(args) -> Path:
    return Path(os.environ["BACKLITFIX_SHARED"])


def main(argv=None) -> int:
    args = parse_args(argv)
    shared = args.shared or Path(os.environ.get("BACKLITFIX_SHARED") or ROOT.parent / "shared")
    os.environ["BACKLITFIX_SHARED"] = str(shared.resolve())  # tests/conftest.py's shared_path reads it
    import torch  # after parsing: --help needs no torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); "
              "--device cpu --megapixels 2 rehearses the script", file=sys.stderr)
        return 2
    if not (shared / "models" / "official").is_dir() or not (shared / "reference" / "golden.json").is_file():
        print(f"gpu_check: {shared}: no models/official or reference/golden.json (give --shared)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_check on {name}, torch {torch.__version__}", flush=True)
    report = Report()
    for part, fn in (("golden", golden_oracle), ("modes", modes), ("train", train)):
        if part in args.skip:
            continue
        try:
            fn(args, device, report)
        except Exception as e:  # one broken part must not hide the others' results
            report.line(False, part, f"{type(e).__name__}: {e}")
    total = time.perf_counter() - report.t0
    if device.type == "cuda":
        report.line(total <= TOTAL_GOAL_S, f"all within {TOTAL_GOAL_S:.0f} s", f"{total:.1f} s")
    print(f"{'FAILED: ' + ', '.join(report.failures) if report.failures else 'all passed'} ({total:.1f} s)")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
