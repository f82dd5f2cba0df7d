"""`backlitfix watch` end to end: the real daemon in a subprocess, real watchdog (inotify and polling),
real photos from ../shared, the real checkpoint, a real SQLite journal, real signals.

The daemon runs with OMP_NUM_THREADS=1: on a small machine shared with other work, PyTorch's
intra-op threads spin against the other processes and a 64x48 photo takes a second instead of 10 ms.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from conftest import CLI, model, photo

pytestmark = pytest.mark.slow  # each test drives the real daemon in a subprocess

SMALL = ["ovd0312_4.jpg", "ovd0312_21.jpg", "ovd0312_32.jpg"]  # 0.1 MP each
JOURNAL = ".backlitfix-watch.sqlite"


@functools.cache
def tiny_jpegs(n: int) -> tuple[bytes, ...]:
    """``n`` different 64x48 crops of a real backlit photo, as JPEG files' bytes."""
    im = Image.open(photo(SMALL[0])).convert("RGB")
    out = []
    for i in range(n):
        x, y = (i * 7) % (im.width - 64), (i * 5) % (im.height - 48)
        buf = io.BytesIO()
        im.crop((x, y, x + 64, y + 48)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return tuple(out)


def wait_for(predicate, timeout: float, what: str = "", proc: subprocess.Popen | None = None, log=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the daemon exited ({proc.returncode}) while waiting for {what}\n{log() if log else ''}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}\n{log() if log else ''}")


def outputs(out: Path) -> list[str]:
    """Output files (relative), without the journal and other dot-files."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts))


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.tmp")]


def decodes(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # raises on a truncated file
        return im.size


def rows(journal: Path) -> dict[str, sqlite3.Row]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return {r["path"]: r for r in db.execute("SELECT * FROM files")}
    finally:
        db.close()


def done_lines(log: str) -> list[str]:
    """Inputs of the `done: IN -> OUT (s)` lines."""
    return [line[len("done: "):].split(" -> ")[0] for line in log.splitlines() if line.startswith("done: ")]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
             XDG_STATE_HOME=str(tmp_path / "state"))
    return e


class Watcher:
    """`backlitfix watch` in a subprocess, its stderr in a file."""

    def __init__(self, tmp_path: Path, in_dir: Path, *args: str, env: dict):
        self.log_path = tmp_path / f"watch-{time.monotonic_ns()}.log"
        self._log_file = open(self.log_path, "w")
        cmd = [*CLI, "watch", str(in_dir), "--model", model(), "--mode", "fast", "-j", "2", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log_file, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 90):
        wait_for(lambda: "backlitfix: watching" in self.log(), timeout, "the daemon to start", self.proc, self.log)

    def wait(self, predicate, timeout: float, what: str):
        wait_for(predicate, timeout, what, self.proc, self.log)

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the daemon did not stop within {timeout} s of {sig!r}\n{self.log()}")
        self._log_file.close()
        assert rc == 0, self.log()
        return self.log()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


@pytest.fixture
def watcher(tmp_path, env):
    started = []

    def start(in_dir: Path, *args: str) -> Watcher:
        w = Watcher(tmp_path, in_dir, *args, env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def once(in_dir: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [*CLI, "watch", str(in_dir), "--once", "--model", model(), "--mode", "fast", "-j", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def status(in_dir: Path, *args: str, env: dict) -> dict:
    r = subprocess.run([*CLI, "watch", str(in_dir), *args, "--status", "--json"], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def inbox(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    return d


# ---- completeness -------------------------------------------------------------------------------------


@pytest.mark.parametrize("observer", ["events", "polling"])
def test_slow_chunked_copy_is_processed_once_and_only_when_complete(tmp_path, inbox, watcher, env, observer):
    data = photo(SMALL[0]).read_bytes()
    out = tmp_path / "out"
    args = ["-o", str(out), "--quiet-seconds", "1.5"]
    if observer == "polling":
        (tmp_path / "poll.yaml").write_text("watch:\n  polling_interval: 0.2\n")
        args += ["--polling", "--config", str(tmp_path / "poll.yaml")]
    w = watcher(inbox, *args)
    w.wait_ready()
    dest, result = inbox / "slow.jpg", out / "slow.jpg"
    chunks = 6
    step = math.ceil(len(data) / chunks)
    for i in range(chunks):
        with open(dest, "ab") as f:  # each chunk opens, writes and closes: a close is not the end
            f.write(data[i * step:(i + 1) * step])
        last_write = time.time()
        time.sleep(0.5)  # longer than the observer's latency (inotify: ms; polling: 0.2 s), shorter than quiet
        assert not result.exists(), f"processed early, after chunk {i + 1} of {chunks}"
    w.wait(result.exists, 60, "the output")
    assert os.stat(result).st_mtime >= last_write + 1.4  # written only after a full quiet period
    assert decodes(result) == decodes(photo(SMALL[0]))
    time.sleep(2.0)  # more than the quiet period: a second processing would show now
    log = w.stop()
    assert done_lines(log) == [str(dest)], log
    assert "error:" not in log
    row = rows(out / JOURNAL)[str(dest)]
    assert (row["state"], row["attempts"], row["size"]) == ("done", 1, len(data))


# ---- bursts, kills, signals ----------------------------------------------------------------------------


def test_burst_of_200_files_each_output_exactly_once(tmp_path, inbox, watcher):
    out = tmp_path / "out"
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3", "-q")
    w.wait_ready()
    names = [f"b{i:03d}.jpg" for i in range(200)]
    for name, data in zip(names, tiny_jpegs(200)):
        (inbox / name).write_bytes(data)
    w.wait(lambda: len(outputs(out)) >= 200, 180, "200 outputs")
    time.sleep(1.0)  # three quiet periods: a duplicate would show now
    log = w.stop()
    assert outputs(out) == names
    assert "error:" not in log
    journal = rows(out / JOURNAL)
    assert sorted(journal) == sorted(str(inbox / n) for n in names)
    assert {(r["state"], r["attempts"]) for r in journal.values()} == {("done", 1)}
    assert all(decodes(out / n) == (64, 48) for n in names)
    assert temp_files(out) == []


def test_kill_9_during_a_burst_then_restart_leaves_one_complete_output_each(tmp_path, inbox, watcher, env):
    out = tmp_path / "out"
    names = [f"k{i:03d}.jpg" for i in range(150)]
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3", "-q")
    w.wait_ready()
    for name, data in zip(names, tiny_jpegs(150)):
        (inbox / name).write_bytes(data)
    w.wait(lambda: len(outputs(out)) >= 20, 120, "the first outputs")
    w.kill()  # SIGKILL, mid-burst

    written = outputs(out)
    assert 20 <= len(written) < len(names), "the kill was meant to land mid-burst"
    for name in written:  # whatever exists is complete: writes are atomic
        assert decodes(out / name) == (64, 48)
    db = sqlite3.connect(out / JOURNAL)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    before = rows(out / JOURNAL)
    done_before = {p: os.stat(r["output"]).st_mtime_ns for p, r in before.items() if r["state"] == "done"}
    assert done_before
    # A temporary file as a kill mid-write leaves it (for an output the journal knows), and a stranger's.
    owned = Path(next(r["output"] for r in before.values() if r["output"]))
    stale = owned.parent / f".{owned.name}.k1ll3d_x.tmp"
    stale.write_bytes(b"half a jpeg")
    foreign = out / ".someone-else.jpg.abcdefgh.tmp"
    foreign.write_bytes(b"not ours")

    r = once(inbox, "-o", str(out), "--quiet-seconds", "0.3", env=env)
    assert r.returncode == 0, r.stderr
    assert outputs(out) == names  # every input, exactly one output
    assert all(decodes(out / n) == (64, 48) for n in names)
    assert temp_files(out) == [foreign]  # ours are gone, the stranger's is left alone
    after = rows(out / JOURNAL)
    assert {row["state"] for row in after.values()} == {"done"} and len(after) == len(names)
    redone = set(done_lines(r.stderr))
    assert redone == set(map(str, (inbox / n for n in names))) - set(done_before)  # nothing twice, nothing skipped
    for p, mtime in done_before.items():
        assert os.stat(after[p]["output"]).st_mtime_ns == mtime and after[p]["attempts"] == 1


def test_sigterm_finishes_the_photo_in_hand_then_exits_cleanly(tmp_path, inbox, watcher, env):
    out = tmp_path / "out"
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3", "-j", "1")
    w.wait_ready()
    names = [f"s{i:02d}.jpg" for i in range(12)]
    for i, name in enumerate(names):
        (inbox / name).write_bytes(photo(SMALL[i % 3]).read_bytes())
    w.wait(lambda: len(outputs(out)) >= 1, 120, "the first output")
    log = w.stop(signal.SIGTERM)
    assert "SIGTERM: finishing the photo in hand" in log
    for line in log.splitlines():  # the log is ours, one line per event: nothing else leaks into it
        assert line.startswith(("backlitfix: ", "done: ", "error: ", "warning: ")), line
    assert temp_files(out) == []
    written = outputs(out)
    for name in written:
        decodes(out / name)
    journal = rows(out / JOURNAL)
    states = [r["state"] for r in journal.values()]
    assert "processing" not in states and "failed" not in states
    assert states.count("done") == len(written) and len(journal) == len(names)  # nothing lost
    assert states.count("pending") >= 1, "SIGTERM was meant to land mid-burst"
    r = once(inbox, "-o", str(out), "--quiet-seconds", "0.3", env=env)
    assert r.returncode == 0, r.stderr
    assert outputs(out) == names
    assert not set(done_lines(r.stderr)) & {str(inbox / n) for n in written}


# ---- failures -----------------------------------------------------------------------------------------


def test_corrupt_and_empty_files_are_recorded_failed_and_the_daemon_goes_on(tmp_path, inbox, watcher, env):
    out = tmp_path / "out"
    good = photo(SMALL[1]).read_bytes()
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3")
    w.wait_ready()
    (inbox / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (inbox / "empty.jpg").write_bytes(b"")
    (inbox / "text.jpg").write_text("a shopping list, not a photo\n")
    time.sleep(0.2)
    (inbox / "good.jpg").write_bytes(good)
    w.wait(lambda: (out / "good.jpg").exists() and w.log().count("error: ") >= 3, 60, "the good output and 3 errors")
    s = status(inbox, "-o", str(out), env=env)
    assert (s["done"], s["failed"], s["pending"]) == (1, 3, 0)
    reasons = {Path(f["input"]).name: f["reason"] for f in s["failures"]}
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["text.jpg"]
    for name in reasons:  # one line each, in the log
        assert w.log().count(f"error: {inbox / name}: ") == 1
    assert outputs(out) == ["good.jpg"]

    time.sleep(1.0)  # failed files are not retried while they do not change
    assert w.log().count("error: ") == 3
    (inbox / "truncated.jpg").write_bytes(good)  # the rest of the copy arrives: processed again
    w.wait(lambda: (out / "truncated.jpg").exists(), 60, "the repaired file's output")
    s = status(inbox, "-o", str(out), env=env)
    assert (s["done"], s["failed"]) == (2, 2)
    text = subprocess.run([*CLI, "watch", str(inbox), "-o", str(out), "--status"], capture_output=True,
                          text=True, env=env, check=False)
    assert text.stdout.splitlines()[0] == "done 2, failed 2, pending 0"
    log = w.stop()
    assert log.count("error: ") == 3


# ---- arrivals by rename and move, and an output folder inside the watched one ----------------------------------


def test_renamed_and_moved_in_files_are_picked_up_and_the_output_inside_is_not(tmp_path, inbox, watcher):
    out = inbox / "fixed"  # inside the watched folder, watched recursively
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    jpeg = tiny_jpegs(6)
    w = watcher(inbox, "-o", str(out), "-r", "--quiet-seconds", "0.3")
    w.wait_ready()
    in_transit = ["a.jpg.part", ".b.jpg", "c.jpg.crdownload", "d.jpg~", "e.jpg.tmp"]
    for name, data in zip(in_transit, jpeg):
        (inbox / name).write_bytes(data)
    time.sleep(1.2)  # four quiet periods
    assert outputs(out) == [], "a file still in transit was processed"

    os.rename(inbox / "a.jpg.part", inbox / "a.jpg")  # renamed in the folder
    os.rename(inbox / ".b.jpg", inbox / "b.jpg")
    (outside / "c.jpg").write_bytes(jpeg[2])
    os.rename(outside / "c.jpg", inbox / "c.jpg")  # moved into the folder
    (outside / "sub" / "s.jpg").write_bytes(jpeg[5])
    os.rename(outside / "sub", inbox / "sub")  # a folder moved in
    expected = ["a.jpg", "b.jpg", "c.jpg", "sub/s.jpg"]
    w.wait(lambda: outputs(out) == expected, 60, f"outputs {expected}")
    time.sleep(1.0)  # the outputs, inside the watched folder, must not come back as inputs
    log = w.stop()
    assert outputs(out) == expected
    assert sorted(done_lines(log)) == sorted(str(inbox / e) for e in expected)
    assert not [p for p in rows(out / JOURNAL) if p.startswith(str(out))]


def test_a_watched_folder_that_goes_away_and_comes_back_is_watched_again(tmp_path, inbox, watcher):
    out = tmp_path / "out"
    tiny = tiny_jpegs(2)
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3")
    w.wait_ready()
    inbox.rename(tmp_path / "away")  # an unmounted share, a removed card
    w.wait(lambda: "the watched folder is gone" in w.log(), 10, "the daemon to notice")
    inbox.mkdir()  # a new folder at the same path: the old watch is dead
    w.wait(lambda: "is back: watching it again" in w.log(), 10, "the daemon to watch again")
    (inbox / "new.jpg").write_bytes(tiny[0])
    w.wait(lambda: (out / "new.jpg").exists(), 30, "the output of a file in the new folder")
    log = w.stop()
    assert done_lines(log) == [str(inbox / "new.jpg")]
    assert log.count("error: ") == 1


# ---- --once, restarts and changes ------------------------------------------------------------------------


def test_once_writes_where_run_would_and_exits_with_runs_codes(tmp_path, inbox, env):
    out = tmp_path / "out"
    (inbox / "sub").mkdir()
    tiny = tiny_jpegs(3)
    (inbox / "a.jpg").write_bytes(tiny[0])
    Image.open(io.BytesIO(tiny[1])).save(inbox / "a.png")  # a.jpg + a.png -> a_jpg.jpg + a_png.jpg with --format jpeg
    (inbox / "sub" / "c.jpg").write_bytes(tiny[2])
    (inbox / "notes.txt").write_text("not a photo")
    opts = ["-o", str(out), "-r", "--format", "jpeg", "--suffix", "_fixed"]
    dry = CliRunner().invoke(main, ["run", str(inbox), *opts, "--dry-run", "--json", "--model", model()],
                             env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    planned = sorted(str(Path(f["output"]).relative_to(out)) for f in json.loads(dry.stdout)["files"])
    assert planned == ["a_jpg_fixed.jpg", "a_png_fixed.jpg", "sub/c_fixed.jpg"]

    r = once(inbox, *opts, "--quiet-seconds", "0.3", env=env)
    assert r.returncode == 0, r.stderr
    assert outputs(out) == planned

    good = photo(SMALL[0]).read_bytes()
    (inbox / "broken.jpg").write_bytes(good[:2000])
    r = once(inbox, *opts, "--quiet-seconds", "0.3", env=env)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {inbox / 'broken.jpg'}: ") and "truncated" in errors[0]
    assert done_lines(r.stderr) == []  # the others were done already


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such folder"),
    (["{in}", "-o", "{in}"], "is the watched folder"),
    (["{in}", "-o", "{parent}"], "contains it"),
    (["{in}", "--json"], "--json goes with --status"),
    (["{in}", "--quality", "0"], "output.jpeg_quality"),
    (["{in}", "--quiet-seconds", "0"], "--quiet-seconds"),
])
def test_usage_errors_exit_2(tmp_path, inbox, args, message):
    subs = {"missing": tmp_path / "missing", "in": inbox, "parent": tmp_path}
    r = CliRunner().invoke(main, ["watch", *[a.format(**subs) for a in args]],
                           env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (inbox / "backlitfix").exists()


def test_status_before_any_journal(tmp_path, inbox):
    r = CliRunner().invoke(main, ["watch", str(inbox), "--status"], env={"XDG_CONFIG_HOME": str(tmp_path / "x")})
    assert r.exit_code == 0 and "done 0, failed 0, pending 0" in r.stdout
    assert not (inbox / "backlitfix").exists()  # a status query creates nothing


def test_restart_repeats_nothing_and_a_changed_file_is_processed_again(tmp_path, inbox, env):
    out = tmp_path / "out"
    (inbox / "x.jpg").write_bytes(photo(SMALL[0]).read_bytes())
    (inbox / "y.jpg").write_bytes(photo(SMALL[1]).read_bytes())
    args = ["-o", str(out), "--quiet-seconds", "0.3"]

    def stamp(name):
        p = out / name
        return os.stat(p).st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()

    r = once(inbox, *args, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(done_lines(r.stderr)) == [str(inbox / "x.jpg"), str(inbox / "y.jpg")]
    first = {n: stamp(n) for n in ("x.jpg", "y.jpg")}

    r = once(inbox, *args, env=env)  # a restart: nothing to do
    assert r.returncode == 0, r.stderr
    assert done_lines(r.stderr) == []
    assert {n: stamp(n) for n in ("x.jpg", "y.jpg")} == first

    os.utime(inbox / "x.jpg", (time.time() + 5, time.time() + 5))  # touched: same bytes, new mtime
    (inbox / "y.jpg").write_bytes(photo(SMALL[2]).read_bytes())  # new content under the name y
    r = once(inbox, *args, env=env)
    assert r.returncode == 0, r.stderr
    assert done_lines(r.stderr) == [str(inbox / "y.jpg")]
    assert stamp("x.jpg") == first["x.jpg"]
    # An edit or another photo under a reused name? Not knowable: the earlier output stays.
    assert stamp("y.jpg") == first["y.jpg"]
    assert decodes(out / "y_2.jpg") == decodes(photo(SMALL[2]))
    journal = rows(out / JOURNAL)
    assert journal[str(inbox / "x.jpg")]["attempts"] == 1 and journal[str(inbox / "y.jpg")]["attempts"] == 2
    assert journal[str(inbox / "y.jpg")]["output"] == str(out / "y_2.jpg")
    outs = ["x.jpg", "y.jpg", "y_2.jpg"]
    assert outputs(out) == outs

    (inbox / "y.jpg").write_bytes(tiny_jpegs(1)[0])  # with --overwrite it replaces its own
    r = once(inbox, *args, "--overwrite", env=env)
    assert r.returncode == 0, r.stderr
    assert outputs(out) == outs and stamp("y.jpg") == first["y.jpg"]
    assert decodes(out / "y_2.jpg") == (64, 48)

    # Killed after x's output was renamed into place but before "done" was recorded: x is redone.
    db = sqlite3.connect(out / JOURNAL)
    with db:
        db.execute("UPDATE files SET state = 'processing' WHERE path = ?", (str(inbox / "x.jpg"),))
    db.close()
    r = once(inbox, *args, env=env)
    assert r.returncode == 0, r.stderr
    assert "1 photo(s) interrupted last time will be processed again" in r.stderr
    assert done_lines(r.stderr) == [str(inbox / "x.jpg")]
    assert outputs(out) == outs
    assert rows(out / JOURNAL)[str(inbox / "x.jpg")]["state"] == "done"
