"""`backlitfix watch`: latency, burst throughput against `backlitfix run`, and memory over 1,000 files.

    python bench/watch.py [--model PATH] [--threads 1] [--quiet 2.0] [--jobs 2] [--rss-files 1000]
                          [--only latency|throughput|stop|rss]

All cases use ``--mode fast`` on the CPU, each daemon or run in its own process:

- latency: with the daemon idle, one photo at a time becomes complete (renamed into the folder,
  fully written); the time until its output exists, minus the processing time the journal records
  for it. Most of it is the quiet period (``--quiet``), which is shown separately;
- burst throughput: the same photos (the real ones in ../shared, 0.1-3 MP, ``--copies`` times)
  through `backlitfix run` and through the running daemon, side by side. For run, photos/s is
  N / (t(N photos) - t(one 64x48 photo)), which removes start-up (imports, model load); for watch,
  N / (time from the burst landing to the last output - the quiet period), which removes the one
  quiet period every file waits (that is latency, above);
- stop: a burst of the ../shared photos lands; at the third output the daemon gets SIGTERM: the
  time until it has exited, and how many photos were completed after the signal (the photo being
  enhanced, and any whose write had begun; the decoded ones wait for the next start);
- memory: 1,000 tiny photos (64x48, so it takes minutes, not hours) arrive in waves of 100 while
  the daemon's RSS is sampled; reported: RSS after the first wave, at the end, the peak (VmHWM)
  and the least-squares slope of RSS against files processed.

``--threads`` sets OMP_NUM_THREADS for every child (both run and watch): on a small machine shared
with other work, PyTorch's spinning intra-op threads cost more than they give.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")
CLI = [sys.executable, "-c", "import sys; from backlitfix.cli import main; sys.exit(main())"]
JOURNAL = ".backlitfix-watch.sqlite"


def photos() -> list[Path]:
    folder = SHARED / "data" / "backlit"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def tiny_jpegs(n: int) -> list[bytes]:
    from PIL import Image

    im = Image.open(SHARED / "data" / "backlit" / "ovd0312_4.jpg").convert("RGB")
    out = []
    for i in range(n):
        x, y = (i * 7) % (im.width - 64), (i * 5) % (im.height - 48)
        buf = io.BytesIO()
        im.crop((x, y, x + 64, y + 48)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def count_outputs(out: Path) -> int:
    try:
        return sum(1 for n in os.listdir(out) if not n.startswith("."))
    except FileNotFoundError:
        return 0


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Daemon:
    def __init__(self, root: Path, name: str, args: argparse.Namespace, env: dict):
        self.inbox, self.out = root / f"{name}-in", root / f"{name}-out"
        self.inbox.mkdir()
        self.log = root / f"{name}.log"
        self._log = open(self.log, "w")
        cmd = [*CLI, "watch", str(self.inbox), "-o", str(self.out), "--model", args.model, "--mode", "fast",
               "--device", "cpu", "-j", str(args.jobs), "--quiet-seconds", str(args.quiet), "-q"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        while "backlitfix: watching" not in self.log.read_text():
            if self.proc.poll() is not None:
                sys.exit(f"watch exited: {self.log.read_text()}")
            time.sleep(0.05)

    def wait_outputs(self, n: int, poll: float = 0.005) -> float:
        while count_outputs(self.out) < n:
            if self.proc.poll() is not None:
                sys.exit(f"watch exited: {self.log.read_text()}")
            time.sleep(poll)
        return time.perf_counter()

    def seconds(self) -> dict[str, float]:
        db = sqlite3.connect(f"file:{self.out / JOURNAL}?mode=ro", uri=True)
        try:
            return {Path(p).name: s for p, s in db.execute("SELECT path, seconds FROM files")}
        finally:
            db.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)
        self._log.close()
        errors = [line for line in self.log.read_text().splitlines() if line.startswith("error:")]
        if errors:
            print("\n".join(errors), file=sys.stderr)


def run_cli(src: Path, out: Path, args, env) -> float:
    t = time.perf_counter()
    subprocess.run([*CLI, "run", str(src), "-o", str(out), "--model", args.model, "--mode", "fast", "--device", "cpu",
                    "-j", str(args.jobs)], check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def stage(files: list[Path], dest: Path, copies: int) -> list[str]:
    dest.mkdir()
    names = []
    for c in range(copies):
        for p in files:
            name = f"{c}_{p.name}"
            shutil.copyfile(p, dest / name)
            names.append(name)
    return names


def bench_latency(root, args, env) -> dict:
    d = Daemon(root, "latency", args, env)
    staging = root / "latency-staging"
    names = stage([SHARED / "data" / "backlit" / "ovd0312_4.jpg", SHARED / "data" / "backlit" / "ovd0312_21.jpg"],
                  staging, (args.latency_files + 1) // 2)[: args.latency_files]
    times = {}
    for i, name in enumerate(names):
        time.sleep(0.3)
        os.rename(staging / name, d.inbox / name)  # complete from this moment
        t_complete = time.perf_counter()
        times[name] = d.wait_outputs(i + 1) - t_complete
    time.sleep(0.2)
    secs = d.seconds()
    d.stop()
    over = [times[n] - secs[n] for n in names]
    beyond = [o - args.quiet for o in over]
    return {"files": len(names), "latency_s": statistics.mean(times.values()),
            "minus_processing_mean_s": statistics.mean(over), "minus_processing_max_s": max(over),
            "beyond_quiet_mean_s": statistics.mean(beyond), "beyond_quiet_max_s": max(beyond),
            "processing_mean_s": statistics.mean(secs[n] for n in names)}


def bench_throughput(root, args, env) -> dict:
    """Run and watch alternately ``--repeat`` times; the figures of the median ratio."""
    runs = []
    for i in range(args.repeat):
        sub = root / f"burst-{i}"
        sub.mkdir()
        runs.append(_throughput_once(sub, args, env))
        print("  throughput run", i + 1, json.dumps(runs[-1]), flush=True)
    return sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]


def _throughput_once(root, args, env) -> dict:
    files = photos()
    src = root / "burst-src"
    names = stage(files, src, args.copies)
    one = root / "burst-one"  # start-up: imports, model load, one 64x48 photo (~10 ms of work)
    one.mkdir()
    (one / "tiny.jpg").write_bytes(tiny_jpegs(1)[0])
    n = len(names)
    megapixels = 0.0
    from PIL import Image

    for name in names:
        with Image.open(src / name) as im:
            megapixels += im.width * im.height / 1e6
    t1 = run_cli(one, root / "run-one-out", args, env)
    tn = run_cli(src, root / "run-out", args, env)
    run_rate = n / (tn - t1)

    d = Daemon(root, "burst", args, env)
    staging = root / "burst-staging"
    stage(files, staging, args.copies)
    t0 = time.perf_counter()
    for name in names:
        os.rename(staging / name, d.inbox / name)
    t_landed = time.perf_counter()
    t_end = d.wait_outputs(n, poll=0.02)
    d.stop()
    watch_wall = t_end - t0
    watch_rate = n / (t_end - t_landed - args.quiet)
    return {"files": n, "megapixels": megapixels, "run_1_s": t1, "run_n_s": tn, "run_photos_per_s": run_rate,
            "watch_wall_s": watch_wall, "watch_photos_per_s": watch_rate,
            "watch_photos_per_s_incl_quiet": n / watch_wall, "ratio": watch_rate / run_rate,
            "ratio_incl_quiet": (n / watch_wall) / run_rate}


def bench_stop(root, args, env) -> dict:
    d = Daemon(root, "stop", args, env)
    staging = root / "stop-staging"
    names = stage(photos(), staging, args.copies)
    for name in names:
        os.rename(staging / name, d.inbox / name)
    d.wait_outputs(3, poll=0.01)  # in the middle of a batch (the first output may end a batch of one)
    before = count_outputs(d.out)
    t = time.perf_counter()
    d.proc.send_signal(signal.SIGTERM)
    d.proc.wait(300)
    stop_s = time.perf_counter() - t
    d._log.close()
    db = sqlite3.connect(f"file:{d.out / JOURNAL}?mode=ro", uri=True)
    try:
        states = dict(db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall())
    finally:
        db.close()
    return {"files": len(names), "sigterm_to_exit_s": stop_s, "completed_after_signal": count_outputs(d.out) - before,
            "journal": states}


def bench_rss(root, args, env) -> dict:
    d = Daemon(root, "rss", args, env)
    jpegs = tiny_jpegs(args.rss_files)
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                samples.append((count_outputs(d.out), rss_mb(d.proc.pid)))
            except (OSError, ValueError):
                pass
            time.sleep(0.2)

    base = rss_mb(d.proc.pid)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    wave = 100
    after_first = None
    for start in range(0, args.rss_files, wave):
        for i in range(start, min(start + wave, args.rss_files)):
            (d.inbox / f"r{i:05d}.jpg").write_bytes(jpegs[i])
        d.wait_outputs(min(start + wave, args.rss_files), poll=0.02)
        if after_first is None:
            after_first = rss_mb(d.proc.pid)
    elapsed = time.perf_counter() - t0
    end = rss_mb(d.proc.pid)
    peak = rss_mb(d.proc.pid, "VmHWM")
    stop.set()
    th.join()
    d.stop()
    pts = [(n, r) for n, r in samples if n >= wave]
    slope = float("nan")
    if len(pts) > 2:
        mx = statistics.mean(p[0] for p in pts)
        my = statistics.mean(p[1] for p in pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        slope = sum((x - mx) * (y - my) for x, y in pts) / sxx * 1000 if sxx else float("nan")
    return {"files": args.rss_files, "seconds": elapsed, "rss_idle_mb": base, "rss_after_100_mb": after_first,
            "rss_end_mb": end, "peak_rss_mb": peak, "slope_mb_per_1000_files": slope, "samples": len(samples)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(SHARED / "models" / "official" / "rave_unpaired.pth"))
    ap.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the children [default: inherit]")
    ap.add_argument("--jobs", type=int, default=2, help="-j for run and watch")
    ap.add_argument("--quiet", type=float, default=2.0, help="watch's quiet period, seconds")
    ap.add_argument("--latency-files", type=int, default=8)
    ap.add_argument("--copies", type=int, default=2, help="burst: each ../shared photo this many times")
    ap.add_argument("--rss-files", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=1, help="burst: run/watch pairs; the median ratio is kept")
    ap.add_argument("--only", choices=["latency", "throughput", "stop", "rss"], help="one part only (no table)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_CONFIG_HOME="/nonexistent")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp)
        if args.only in (None, "throughput"):
            thr = bench_throughput(root, args, env)
            print("throughput", json.dumps(thr), flush=True)
        if args.only in (None, "latency"):
            lat = bench_latency(root, args, env)
            print("latency", json.dumps(lat), flush=True)
        if args.only in (None, "stop"):
            stp = bench_stop(root, args, env)
            print("stop", json.dumps(stp), flush=True)
        if args.only in (None, "rss"):
            rss = bench_rss(root, args, env)
            print("rss", json.dumps(rss), flush=True)
        if args.only:
            return

    print()
    print(f"backlitfix watch, --mode fast, CPU, -j {args.jobs}, "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '(unset)')}, "
          f"quiet {args.quiet:g} s")
    rows = [
        ("latency: complete -> output, minus processing (mean / max)",
         f"{lat['minus_processing_mean_s']:.3f} / {lat['minus_processing_max_s']:.3f} s"),
        ("  of which beyond the quiet period (mean / max)",
         f"{lat['beyond_quiet_mean_s'] * 1000:.0f} / {lat['beyond_quiet_max_s'] * 1000:.0f} ms"),
        ("  processing itself (mean)", f"{lat['processing_mean_s']:.3f} s ({lat['files']} files, 0.1 MP)"),
        (f"burst: backlitfix run ({thr['files']} photos, {thr['megapixels']:.0f} MP)",
         f"{thr['run_photos_per_s']:.2f} photos/s"),
        ("burst: backlitfix watch (quiet period excluded)", f"{thr['watch_photos_per_s']:.2f} photos/s"),
        (f"burst: watch / run (median of {args.repeat})",
         f"{thr['ratio']:.2f}x (incl. the quiet period: {thr['ratio_incl_quiet']:.2f}x)"),
        (f"memory: {rss['files']} files (64x48) in {rss['seconds']:.0f} s",
         (f"RSS idle {rss['rss_idle_mb']:.0f} MB, after 100 {rss['rss_after_100_mb']:.0f} MB, "
          f"end {rss['rss_end_mb']:.0f} MB")),
        (f"stop: SIGTERM during a burst of {stp['files']} -> exit",
         f"{stp['sigterm_to_exit_s']:.2f} s, {stp['completed_after_signal']} photo(s) completed after it"),
        ("memory: peak RSS / slope",
         f"{rss['peak_rss_mb']:.0f} MB / {rss['slope_mb_per_1000_files']:+.1f} MB per 1000 files"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps({"latency": lat, "throughput": thr, "stop": stp, "rss": rss}, indent=2))


if __name__ == "__main__":
    main()
