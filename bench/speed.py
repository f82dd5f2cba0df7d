"""Wall time and peak RSS of the enhancer on a 24 MP photo, against the I/O floor, measured side by side.

    python bench/speed.py --model ../shared/models/official/rave_unpaired.pth [--skip-exact] [--repeat 2]

Each case runs in its own process, so its peak RSS (ru_maxrss) is its own. Cases:
- floor: decode + encode JPEG -> JPEG, no enhancement (the I/O floor);
- fast / fast-1mp / fast-fp32 / exact: decode -> enhance -> encode through `backlitfix.pipeline`,
  JPEG -> JPEG (fast at the default working resolution, at 1 MP, and in float32);
- cli-fast: `backlitfix run` on the same file, including start-up (import torch, load the model);
- reference-3mp: one full-resolution fp32 pass of the bare network on a 3 MP photo, as the reference
  scripts do (no tiling, no working resolution);
- fast@BACKEND (torch, onnxruntime, openvino): fast mode with that backend forced (`--backends`); exact@BACKEND
  likewise for exact mode (its interior tiles run on the backend; `--cases exact@torch exact@openvino`);
- net@CANDIDATE: the network alone at the 24 MP photo's working size, best of 3 calls after a warm-up,
  with its set-up time (export, compile): torch-fp32/-bf16 (eager, channels-last), compile-fp32/-bf16
  (torch.compile, dynamic shapes), onnxruntime-fp32, openvino-fp32/-bf16 (`--net`);
- batch: `backlitfix run --backend BATCH_BACKEND` on `--batch-count` copies of a 12 MP JPEG, start-up
  included: photos per minute and core use (the process's CPU time / (wall x cores)).
- batch24: what one 24 MP photo costs in a batch (the issue's measure): `backlitfix run --strength 1` on
  `--batch24-count` copies less `run` on one copy, per extra photo, so start-up and the first photo's decode
  (which nothing can hide) cancel out; batch24-floor: the same with --strength 0 (decode and encode only,
  overlapped the same way). Its "x floor" is against the one-photo floor; the ratio to batch24-floor is printed too.
`--isa avx2` (or `both`) runs every case again as on an AVX2-only CPU: ATEN_CPU_CAPABILITY=avx2 and
ONEDNN_MAX_CPU_ISA=AVX2 (PyTorch's kernels, oneDNN, and OpenVINO's CPU plugin, which obeys the oneDNN cap;
backlitfix's auto precision then sees no native bf16). ONNX Runtime has no run-time ISA cap: its
"avx2" rows still run AVX-512 and are marked so. bf16 candidates are skipped there (not native).
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
SIZE_12MP = (4243, 2828)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
BACKENDS = ("torch", "onnxruntime", "openvino")
BATCH24 = ("batch24", "batch24-floor")  # a 24 MP photo's cost in a batch, and the batch's own I/O floor
NET_CANDIDATES = ("torch-fp32", "torch-bf16", "compile-fp32", "compile-bf16", "onnxruntime-fp32", "openvino-fp32",
                  "openvino-bf16")
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
    if case.startswith("net@"):
        return run_net(case[4:], model)
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
    overrides = {"model": model, "device": os.environ.get("BENCH_DEVICE", "cpu")}
    if os.environ.get("BENCH_WORKING_MP"):
        overrides["fast.working_megapixels"] = float(os.environ["BENCH_WORKING_MP"])
    mode, _, backend = case.partition("@")  # fast@BACKEND, exact@BACKEND
    overrides.update(CASES[case] if case in CASES else {"mode": mode, "backend": backend})
    cfg = load_config(None, overrides, user_config=None)
    t = time.perf_counter()
    enhancer, _ = load_enhancer(cfg)
    setup = time.perf_counter() - t
    net_s = []  # the network's own time: Enhancer.illumination, timed in place
    illumination = enhancer.illumination

    def timed(x):
        t = time.perf_counter()
        L = illumination(x)
        net_s.append(time.perf_counter() - t)
        return L

    enhancer.illumination = timed
    pipe = Pipeline(cfg, enhancer)
    job = Job(src, dest, "jpeg", "jpeg")
    t = time.perf_counter()
    photo = pipe.load(job)
    t1 = time.perf_counter()
    pipe.correct(photo)
    t2 = time.perf_counter()
    pipe.save(photo, job)
    t3 = time.perf_counter()
    used = getattr(enhancer.backend, "name", "torch")  # what really ran (a backend may have given way)
    return {"seconds": t3 - t, "decode_s": t1 - t, "enhance_s": t2 - t1, "encode_s": t3 - t2,
            "network_s": sum(net_s), "setup_s": setup, "backend": used, "precision": str(enhancer.dtype)[6:]}


def run_net(candidate: str, model: str) -> dict:
    """The network alone at the 24 MP photo's working size: set-up time and the best of 3 calls."""
    import torch

    from backlitfix.backends import make_backend
    from backlitfix.enhance import working_size
    from backlitfix.model.checkpoint import load_model

    kind, _, precision = candidate.partition("-")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    net, _ = load_model(model)
    h, w = working_size(SIZE_24MP[1], SIZE_24MP[0], float(os.environ.get("BENCH_WORKING_MP") or 0.5))
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    if kind in ("torch", "compile"):
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        fn = torch.compile(net, dynamic=True) if kind == "compile" else net

        def call():
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                return fn(x).float()
    else:
        run = make_backend(kind, net, dtype, torch.device("cpu"), warn=lambda m: sys.exit(m))
        call = lambda: run(x)  # noqa: E731
    L = call()  # the warm-up: torch.compile compiles here
    setup = time.perf_counter() - t
    calls = []
    cpu = time.process_time()
    for _ in range(3):
        t = time.perf_counter()
        call()
        calls.append(time.perf_counter() - t)
    # CPU seconds per call, all threads: the work, less sensitive than wall time to a shared machine's load
    # (but a runtime's spinning threads count too).
    return {"seconds": min(calls), "setup_s": setup, "network_s": min(calls), "megapixels": h * w / 1e6,
            "cpu_per_call_s": (time.process_time() - cpu) / 3, "L_mean": float(L.mean())}


def run_cli_case(src: Path, model: str, out_dir: Path) -> dict:
    """`backlitfix run` on the one photo, start-up included."""
    cmd = [sys.executable, "-m", "backlitfix.cli", "run", "--model", model,
           "--device", os.environ.get("BENCH_DEVICE", "cpu"), *working_mp_config(out_dir), "-o", str(out_dir / "cli"),
           "--overwrite", "--", str(src)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t
    return {"seconds": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def run_batch_case(src: Path, count: int, model: str, out_dir: Path, *extra: str) -> dict:
    """`backlitfix run` on ``count`` copies of ``src`` (copies: run takes hard links to one file as one), start-up
    included; ``extra``: more `run` options."""
    import shutil

    folder, dest = out_dir / f"batch_in_{src.stem}_{count}", out_dir / "batch_out"
    folder.mkdir(exist_ok=True)
    for i in range(count):
        copy = folder / f"p{i:03d}.jpg"
        if not copy.exists():
            shutil.copyfile(src, copy)
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, "-m", "backlitfix.cli", "run", "--model", model,
           "--device", os.environ.get("BENCH_DEVICE", "cpu"), "--backend", os.environ.get("BENCH_BACKEND", "auto"),
           *extra, *working_mp_config(out_dir), "-o", str(dest), "--overwrite", "--", str(folder)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    written = len(list(dest.glob("*.jpg")))
    if written != count:  # a batch that skipped photos would time nothing
        raise SystemExit(f"batch: {written} of {count} photos written; {done.stderr.strip()[-300:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": wall, "photos": count, "photos_per_min": 60 * count / wall, "cpu_s": cpu,
            "core_use": cpu / (wall * (os.cpu_count() or 1)), "peak_rss_mb": after.ru_maxrss / 1024,
            "load_avg": os.getloadavg()[0]}


def working_mp_config(out_dir: Path) -> list[str]:
    """`run` options that set --working-mp's working size (a config file: run has no flag for it)."""
    mp = os.environ.get("BENCH_WORKING_MP")
    if not mp:
        return []
    path = out_dir / "working_mp.yaml"
    path.write_text(f"fast:\n  working_megapixels: {float(mp)}\n")
    return ["--config", str(path)]


def run_batch24_case(src: Path, model: str, out_dir: Path, count: int, strength: str) -> dict:
    """A 24 MP photo's cost in a batch: `run` on ``count`` copies less `run` on one (start-up, model load and the
    first photo's unhidden decode cancel out), per extra photo. Strength 0 is the batch's own I/O floor: the same
    decode and encode, overlapped the same way, with no correction."""
    one = run_batch_case(src, 1, model, out_dir, "--strength", strength)
    many = run_batch_case(src, count, model, out_dir, "--strength", strength)
    per = (many["seconds"] - one["seconds"]) / (count - 1)
    return {"seconds": per, "photos": count, "batch_s": many["seconds"], "one_s": one["seconds"],
            "core_use": many["core_use"], "peak_rss_mb": max(one["peak_rss_mb"], many["peak_rss_mb"])}


def child(case: str, src: Path, model: str, out_dir: Path, env: dict | None = None, batch: int = 0) -> dict:
    """One case in a fresh interpreter, so that its peak RSS is its own; its JSON result."""
    env = {**os.environ, **(env or {})}
    args = f"Path({str(src)!r}), {model!r}, Path({str(out_dir)!r})"  # !r: each value as a Python literal
    if case == "batch":
        call, strict = f"run_batch_case(Path({str(src)!r}), {batch}, {model!r}, Path({str(out_dir)!r}))", True
    elif case in BATCH24:
        strength = "0" if case == "batch24-floor" else "1"
        call, strict = f"run_batch24_case({args}, {max(batch, 3)}, {strength!r})", True
    elif case == "cli-fast":  # through a fresh wrapper process: RUSAGE_CHILDREN's peak is then the CLI's own
        call, strict = f"run_cli_case({args})", True
    else:
        call, strict = f"dict(run_case({case!r}, {args}), peak_rss_mb=peak_rss_mb())", False
    code = (f"import json,sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
            "from bench.speed import peak_rss_mb, run_batch24_case, run_batch_case, run_case, run_cli_case; "
            f"print(json.dumps({call}))")
    out = subprocess.run([sys.executable, "-c", code], check=strict, capture_output=True, text=True, cwd=REPO,
                         env=env)
    if out.returncode:  # one case that cannot run (a missing backend) must not end the comparison
        return {"case": case, "error": " ".join((out.stderr or out.stdout).strip().splitlines()[-1:]),
                "seconds": float("nan"), "peak_rss_mb": float("nan")}
    return {"case": case, **json.loads(out.stdout.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "models" / "official" / "rave_unpaired.pth"))
    ap.add_argument("--skip-exact", action="store_true", help="exact 24 MP on 2 CPU cores takes minutes")
    ap.add_argument("--cases", nargs="+", help="run only these cases (floor is always run: it is the baseline)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the best time is kept")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps: where the pipeline cases run the network")
    ap.add_argument("--isa", choices=["native", "avx2", "both"], default="native",
                    help="avx2: run the cases as on an AVX2-only CPU too (oneDNN/ATen caps; see above)")
    ap.add_argument("--backends", nargs="*", default=list(BACKENDS), help="fast@BACKEND cases to run")
    ap.add_argument("--net", nargs="*", default=list(NET_CANDIDATES), help="net@CANDIDATE cases to run")
    ap.add_argument("--batch-count", type=int, default=0, help="12 MP photos in the batch case (0: no batch case)")
    ap.add_argument("--batch-backend", default="auto", help="the batch cases' --backend")
    ap.add_argument("--working-mp", type=float, help="fast mode's working size in MP for every case that does not "
                                                     "set its own (default: the config's)")
    ap.add_argument("--batch24-count", type=int, default=6, help="24 MP photos in the batch24 cases (at least 3)")
    args = ap.parse_args()
    os.environ["BENCH_DEVICE"] = args.device  # the child processes read it
    os.environ["BENCH_BACKEND"] = args.batch_backend
    if args.working_mp:
        os.environ["BENCH_WORKING_MP"] = str(args.working_mp)

    args.out.mkdir(parents=True, exist_ok=True)
    isas = ["native", "avx2"] if args.isa == "both" else [args.isa]
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        tmp = Path(tmp)
        src = make_photo(tmp / "photo_24mp.jpg", SIZE_24MP)
        cases = ["floor", "fast", "fast-1mp", "fast-fp32", "cli-fast", "reference-3mp"]
        cases += [] if args.skip_exact else ["exact"]
        cases += [f"fast@{b}" for b in args.backends] + [f"net@{c}" for c in args.net]
        cases += ["batch"] if args.batch_count else []
        if args.cases:
            cases = ["floor"] + [c for c in args.cases if c != "floor"]
        src12 = make_photo(tmp / "photo_12mp.jpg", SIZE_12MP) if "batch" in cases else None
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeat):  # repeats interleaved, so a shared machine's load drifts over every case alike
            for isa in isas:
                env = AVX2_ENV if isa == "avx2" else {}
                for case in cases:
                    if isa == "avx2" and case.endswith("-bf16"):
                        continue  # not native there: auto never picks it
                    n = args.batch24_count if case in BATCH24 else args.batch_count
                    r = child(case, src12 if case == "batch" else src, args.model, tmp, env, n)
                    r.update(isa=isa, load_avg=round(os.getloadavg()[0], 2))
                    runs.setdefault(f"{case} [{isa}]" if len(isas) > 1 else case, []).append(r)
                    print(json.dumps(r), flush=True)
        results = {}
        for key, rs in runs.items():
            best = min(rs, key=lambda r: r["seconds"] if r["seconds"] == r["seconds"] else float("inf"))
            results[key] = {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}

    print(f"\nCPU flags: {cpu_flags_line()}; load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    for isa in isas:
        rows = {k: r for k, r in results.items() if r["isa"] == isa}
        floor = next(r["seconds"] for k, r in rows.items() if r["case"] == "floor")
        how = " (emulated: " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()) + ")" if isa == "avx2" else ""
        print(f"\n{isa}{how}: 24 MP JPEG -> JPEG on {os.cpu_count()} CPU cores ({SIZE_24MP[0]}x{SIZE_24MP[1]}), "
              f"floor {floor:.2f} s")
        print("| case | wall s | x floor | network s | set-up s | peak RSS MB | detail |")
        print("|---|---|---|---|---|---|---|")
        for r in rows.values():
            case = r["case"]
            if "error" in r:
                print(f"| {case} | - | - | - | - | - | {r['error'][:120]} |")
                continue
            plain = case in ("reference-3mp", "batch") or case.startswith("net@")
            ratio = "-" if plain else f"{r['seconds'] / floor:.2f}"
            net = f"{r['network_s']:.2f}" if "network_s" in r else "-"
            setup = f"{r['setup_s']:.2f}" if "setup_s" in r else "-"
            skip = ("seconds", "network_s", "setup_s", "peak_rss_mb", "case", "isa")
            detail = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                               if k not in skip)
            if isa == "avx2" and "onnxruntime" in case:
                detail += " (ONNX Runtime has no ISA cap: ran AVX-512)"
            print(f"| {case} | {r['seconds']:.2f} | {ratio} | {net} | {setup} | {r['peak_rss_mb']:.0f} | {detail} |")
    for isa in isas:
        b, f = (next((r for r in results.values() if r["case"] == c and r["isa"] == isa and "error" not in r), None)
                for c in BATCH24)
        if b and f:
            print(f"\n{isa}: a 24 MP photo in a batch {b['seconds']:.2f} s, the batch's own I/O floor "
                  f"{f['seconds']:.2f} s: {b['seconds'] / f['seconds']:.2f}x")
    ref, fast = results.get("reference-3mp"), results.get("fast")
    if ref and fast and "error" not in ref:
        per_mp = ref["seconds"] / ref["megapixels"]
        print(f"\nreference single pass: {per_mp:.2f} s/MP -> 24 MP would take ~{per_mp * 24:.0f} s in one pass; "
              f"fast is {per_mp * 24 / fast['seconds']:.0f}x quicker than that extrapolation")
    (args.out / "speed.json").write_text(json.dumps(results, indent=2))


def cpu_flags_line() -> str:
    from backlitfix.enhance import cpu_flags

    wanted = ("avx", "avx2", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "avx_vnni")
    flags = cpu_flags()
    return " ".join(f for f in wanted if f in flags) or "unknown"


if __name__ == "__main__":
    main()
