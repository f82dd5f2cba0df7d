"""Soak: the real daemon (real watchdog, real processes, the embedded model) under a rough day.

500 photos (32x24 JPEGs, each with its own id in EXIF ImageDescription, which backlitfix keeps)
arrive in bursts, by rename or by chunked writes; names are reused (a photo moved out, a new one
under its name), photos are renamed, some vanish during their quiet period; the daemon is killed
with SIGKILL and stopped with SIGTERM at random moments and started again; a final
``watch --once`` finishes the rest. Afterwards:

* every photo that stayed has exactly one output, complete, made from it (the ids match);
* no output belongs to two inputs, and every output file is one the journal knows;
* no output was ever overwritten (each output's bytes are the ones first seen under its name);
* no temporary file remains.

The counts and the SIGTERM-to-exit times are printed. Seeded: BACKLITFIX_SOAK_SEED changes it.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLI

pytestmark = pytest.mark.slow

JOURNAL = ".backlitfix-watch.sqlite"
N = 500
QUIET = 0.3
DESCRIPTION = 0x010E  # EXIF ImageDescription: carries each photo's id into its output


def jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    base = rng.integers(0, 255, 3)
    px = np.clip(base + rng.normal(0, 30, (24, 32, 3)), 0, 255).astype(np.uint8)
    exif = Image.Exif()
    exif[DESCRIPTION] = f"soak-{i:05d}"
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=85, exif=exif)
    return buf.getvalue()


def photo_id(path: Path) -> str | None:
    with Image.open(path) as im:
        im.load()  # raises on a truncated file
        assert im.size == (32, 24)
        return im.getexif().get(DESCRIPTION)


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Watch:
    """One daemon process after another, on the same folders and journal."""

    def __init__(self, tmp: Path, inbox: Path, out: Path, env: dict):
        self.tmp, self.inbox, self.out, self.env = tmp, inbox, out, env
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.stop_seconds: list[float] = []

    def start(self) -> None:
        log = self.tmp / f"watch-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as f:
            self.proc = subprocess.Popen(
                [*CLI, "watch", str(self.inbox), "-o", str(self.out), "--mode", "fast", "-j", "2", "-q",
                 "--quiet-seconds", str(QUIET)], stdout=subprocess.DEVNULL, stderr=f, env=self.env)

    def ready(self) -> bool:
        return "backlitfix: watching" in self.logs[-1].read_text()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def term(self) -> None:
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"no exit within 120 s of SIGTERM\n{self.logs[-1].read_text()}")
        if self.ready():  # a SIGTERM before the handler is installed is a plain kill
            self.stop_seconds.append(time.monotonic() - t)

    def log_text(self) -> str:
        return "".join(p.read_text() for p in self.logs)


class Monitor(threading.Thread):
    """Watches the output folder: the bytes first seen under each name, and any change after."""

    def __init__(self, out: Path):
        super().__init__(daemon=True)
        self.out = out
        self.first: dict[str, str] = {}
        self.stat: dict[str, tuple] = {}
        self.changed: list[str] = []
        self.halt = threading.Event()

    def scan(self) -> None:
        try:
            names = [n for n in os.listdir(self.out) if not n.startswith(".")]
        except FileNotFoundError:
            return
        for n in names:
            p = self.out / n
            try:
                st = os.stat(p)
                key = (st.st_ino, st.st_size, st.st_mtime_ns)
                if self.stat.get(n) == key:
                    continue
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            except FileNotFoundError:
                continue
            self.stat[n] = key
            if n not in self.first:
                self.first[n] = digest
            elif self.first[n] != digest:
                self.changed.append(n)

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.scan()


def test_soak(tmp_path, capsys):
    seed = int(os.environ.get("BACKLITFIX_SOAK_SEED", "14"))
    rng = random.Random(seed)
    inbox, out, away, staging = (tmp_path / d for d in ("in", "out", "away", "staging"))
    for d in (inbox, away, staging):
        d.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    ids_by_hash: dict[str, str] = {}
    counts = dict.fromkeys(("arrived", "by_rename", "chunked", "reused", "renamed", "vanished", "kill_9",
                            "sigterm"), 0)
    live: list[str] = []  # names in the inbox
    made = 0

    def new_photo() -> bytes:
        nonlocal made
        data = jpeg(made)
        ids_by_hash[blake(data)] = f"soak-{made:05d}"
        made += 1
        return data

    def arrive(name: str, data: bytes) -> None:
        counts["arrived"] += 1
        if rng.random() < 0.5:  # copied elsewhere, renamed in: complete at once
            (staging / name).write_bytes(data)
            os.rename(staging / name, inbox / name)
            counts["by_rename"] += 1
        else:  # written in place in two chunks, with a pause shorter than the quiet period
            with open(inbox / name, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(0.02)
                f.write(data[len(data) // 2:])
            counts["chunked"] += 1
        live.append(name)

    watch = Watch(tmp_path, inbox, out, env)
    monitor = Monitor(out)
    monitor.start()
    t_start = time.monotonic()
    watch.start()
    deadline = time.monotonic() + 120
    while not watch.ready():
        assert time.monotonic() < deadline and watch.proc.poll() is None, watch.log_text()
        time.sleep(0.05)

    # Stops at random moments, spread over the run: (photos made when it happens, how)
    stops = sorted([(rng.randint(40, N - 40), "kill") for _ in range(3)] +
                   [(rng.randint(40, N - 40), "term") for _ in range(3)])
    serial = 0
    while made < N:
        op = rng.choices(["burst", "reuse", "rename", "vanish"], weights=[5, 4, 3, 3])[0]
        if op == "burst":
            for _ in range(min(rng.randint(3, 30), N - made)):
                serial += 1
                arrive(f"p{serial:04d}.jpg", new_photo())
        elif op == "reuse" and live:
            name = rng.choice(live)
            live.remove(name)
            os.rename(inbox / name, away / f"{serial}-{name}")  # off the card; the counter starts again
            serial += 1
            time.sleep(rng.uniform(0, 0.4))
            arrive(name, new_photo())
            counts["reused"] += 1
        elif op == "rename" and live:
            name = rng.choice(live)
            live.remove(name)
            serial += 1
            os.rename(inbox / name, inbox / f"r{serial:04d}.jpg")
            live.append(f"r{serial:04d}.jpg")
            counts["renamed"] += 1
        elif op == "vanish":
            serial += 1
            name = f"v{serial:04d}.jpg"
            (inbox / name).write_bytes(new_photo())
            time.sleep(rng.uniform(0, QUIET * 0.7))
            os.unlink(inbox / name)
            counts["vanished"] += 1
        while stops and made >= stops[0][0]:
            _, how = stops.pop(0)
            if how == "kill":
                watch.kill()
                counts["kill_9"] += 1
            else:
                end = time.monotonic() + 60  # a SIGTERM for the handler, not for start-up
                while not watch.ready() and time.monotonic() < end:
                    time.sleep(0.05)
                watch.term()
                counts["sigterm"] += 1
            time.sleep(rng.uniform(0, 0.5))  # photos keep arriving while it is down
            watch.start()
        time.sleep(rng.uniform(0, 0.25))

    time.sleep(1.0)
    watch.term()
    final = subprocess.run([*CLI, "watch", str(inbox), "-o", str(out), "--once", "--mode", "fast", "-j", "2", "-q",
                            "--quiet-seconds", str(QUIET)], capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.monotonic() - t_start
    monitor.halt.set()
    monitor.join()
    monitor.scan()
    logs = watch.log_text() + final.stderr
    assert final.returncode == 0, logs
    assert [line for line in logs.splitlines() if line.startswith("error:")] == []

    db = sqlite3.connect(f"file:{out / JOURNAL}?mode=ro", uri=True)
    journal = {p: (state, output) for p, state, output in db.execute("SELECT path, state, output FROM files")}
    released = {o: h for o, h in db.execute("SELECT output, hash FROM released")}
    db.close()

    stayed = sorted(n for n in os.listdir(inbox) if not n.startswith("."))
    assert sorted(stayed) == sorted(live)
    # every photo that stayed: exactly one output, complete, made from it
    assert sorted(journal) == sorted(str(inbox / n) for n in stayed)
    for n in stayed:
        state, output = journal[str(inbox / n)]
        assert state == "done", (n, state)
        assert photo_id(Path(output)) == photo_id(inbox / n), n
    live_outputs = [o for _, o in journal.values()]
    assert len(set(live_outputs)) == len(live_outputs), "an output belongs to two inputs"
    assert not set(live_outputs) & set(released), "an output belongs to a photo here and to one that left"
    for output, digest in released.items():  # outputs of photos that left stay, and are theirs
        assert photo_id(Path(output)) == ids_by_hash[digest], output
    files = sorted(str(out / n) for n in os.listdir(out) if not n.startswith("."))
    assert files == sorted(live_outputs + list(released)), "an output the journal does not know"
    assert monitor.changed == [], f"outputs overwritten: {monitor.changed}"
    assert all(hashlib.sha256((out / n).read_bytes()).hexdigest() == h for n, h in monitor.first.items())
    assert sorted(monitor.first) == sorted(n for n in os.listdir(out) if not n.startswith("."))  # none went away
    temps = [p for p in (*out.rglob("*.tmp"), *inbox.rglob("*.tmp"))]
    assert temps == []

    stop = watch.stop_seconds
    with capsys.disabled():
        print(f"\nsoak (seed {seed}): {made} photos made, " + ", ".join(f"{k} {v}" for k, v in counts.items())
              + f"; {len(stayed)} stayed -> {len(live_outputs)} outputs, {len(released)} outputs of photos that"
              f" left kept, {len(monitor.first)} output names watched, {len(monitor.changed)} overwritten,"
              f" {len(temps)} temporary files; {len(watch.logs)} daemon starts + 1 --once;"
              f" SIGTERM -> exit {', '.join(f'{s:.2f}' for s in stop)} s; {elapsed:.0f} s in all")
