"""Regression tests for the seven faults of issue 14, end to end: the real daemon in a subprocess,
real watchdog, the real checkpoint, a real SQLite journal (its failures provoked with real SQLite
triggers), real signals. Each of these failed on the daemon before `watch/decide.py`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from backlitfix.watch.journal import Journal
from conftest import CLI, model, photo
from test_watch_daemon import (  # noqa: F401 - env, inbox and watcher are fixtures
    JOURNAL,
    SMALL,
    decodes,
    done_lines,
    env,
    inbox,
    outputs,
    rows,
    tiny_jpegs,
    wait_for,
    watcher,
)

pytestmark = pytest.mark.slow  # each test drives the real daemon in a subprocess


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def once_proc(in_dir: Path, *args: str, env: dict) -> subprocess.Popen:
    cmd = [*CLI, "watch", str(in_dir), "--once", "--model", model(), "--mode", "fast", "-j", "2", *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"watch --once did not finish within {timeout} s\n{err}")
    return proc.returncode, err


def journal_with_trigger(out: Path, trigger: str) -> None:
    """Create the journal (as the daemon would) and add a trigger that makes some writes fail."""
    out.mkdir(parents=True, exist_ok=True)
    Journal(out / JOURNAL).close()
    db = sqlite3.connect(out / JOURNAL)
    db.executescript(trigger)
    db.close()


# ---- fault 1: a reused name overwrote the earlier photo's output -----------------------------------------


def test_a_reused_name_gets_its_own_output_and_the_earlier_one_stays(tmp_path, inbox, watcher):
    out, away = tmp_path / "out", tmp_path / "away"
    away.mkdir()
    first, second = tiny_jpegs(2)
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3")
    w.wait_ready()
    (inbox / "IMG_0001.jpg").write_bytes(first)
    w.wait(lambda: len(done_lines(w.log())) == 1, 60, "the first photo")
    before = sha(out / "IMG_0001.jpg")

    os.rename(inbox / "IMG_0001.jpg", away / "IMG_0001.jpg")  # taken off the card...
    time.sleep(0.3)
    (inbox / "IMG_0001.jpg").write_bytes(second)  # ...and the camera's counter starts again
    w.wait(lambda: len(done_lines(w.log())) == 2, 60, "the second photo")
    assert sha(out / "IMG_0001.jpg") == before, "the earlier photo's output was overwritten"
    assert outputs(out) == ["IMG_0001.jpg", "IMG_0001_2.jpg"]  # run's collision rule: a counter
    assert decodes(out / "IMG_0001_2.jpg") == (64, 48)

    # The second leaves, the first comes back: it is the same photo, its output is there already.
    os.rename(inbox / "IMG_0001.jpg", tmp_path / "second.jpg")
    time.sleep(0.3)
    os.rename(away / "IMG_0001.jpg", inbox / "IMG_0001.jpg")
    w.wait(lambda: "kept: " in w.log(), 30, "the first photo to be recognised")
    log = w.stop()
    assert len(done_lines(log)) == 2, log
    assert outputs(out) == ["IMG_0001.jpg", "IMG_0001_2.jpg"] and sha(out / "IMG_0001.jpg") == before
    row = rows(out / JOURNAL)[str(inbox / "IMG_0001.jpg")]
    assert (row["state"], row["output"]) == ("done", str(out / "IMG_0001.jpg"))


# ---- fault 2: --once never finished when a file vanished in its quiet period ------------------------------


def test_once_finishes_when_a_file_vanishes_in_its_quiet_period(tmp_path, inbox, env):
    out = tmp_path / "out"
    a, b = tiny_jpegs(2)
    (inbox / "a.jpg").write_bytes(a)
    (inbox / "b.jpg").write_bytes(b)
    proc = once_proc(inbox, "-o", str(out), "--quiet-seconds", "4", env=env)
    # --once lists the folder at start, then waits a quiet period for each file: remove one meanwhile
    def seen() -> bool:
        try:
            return len(rows(out / JOURNAL)) == 2
        except sqlite3.Error:  # not created yet
            return False

    wait_for(seen, 90, "the files to be seen", proc)
    (inbox / "b.jpg").unlink()
    rc, err = finish(proc, 60)
    assert rc == 0, err
    assert outputs(out) == ["a.jpg"]
    assert list(rows(out / JOURNAL)) == [str(inbox / "a.jpg")]


# ---- fault 3: a failure while recording a result marked the written photo failed -------------------------


def test_a_journal_failure_while_recording_does_not_mark_the_written_photo_failed(tmp_path, inbox, env):
    out = tmp_path / "out"
    journal_with_trigger(out, """
        CREATE TRIGGER no_done BEFORE UPDATE OF state ON files
        WHEN NEW.state = 'done' AND NEW.path LIKE '%boom%'
        BEGIN SELECT RAISE(ABORT, 'simulated: disk I/O error'); END;""")
    a, b = tiny_jpegs(2)
    (inbox / "boom.jpg").write_bytes(a)
    (inbox / "fine.jpg").write_bytes(b)
    rc, err = finish(once_proc(inbox, "-o", str(out), "--quiet-seconds", "0.3", env=env), 120)
    journal = rows(out / JOURNAL)
    assert journal[str(inbox / "boom.jpg")]["state"] != "failed", err
    assert journal[str(inbox / "fine.jpg")]["state"] == "done"
    assert decodes(out / "boom.jpg") == (64, 48)  # it was written, completely
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could not record" in errors[0] and "boom.jpg" in errors[0], err
    assert rc == 0, err


def test_run_batch_reports_a_photo_once_when_on_result_raises(tmp_path):
    """The runner part of fault 3: an error in on_result is the caller's, not a second, failed result."""
    from types import SimpleNamespace

    import numpy as np

    from backlitfix.discover import Job
    from backlitfix.runner import run_batch

    class Stages:  # the runner's view of a pipeline; the real one is exercised above
        def should_skip(self, job):
            return False

        def load(self, job):
            return SimpleNamespace(pixels=np.zeros((2, 2, 3), np.uint8), meta=SimpleNamespace(warnings=[]))

        def correct(self, photo):
            return photo

        def save(self, photo, job):
            pass

    reported = []

    def on_result(r):
        reported.append((r.input, r.status))
        raise RuntimeError("the journal is full")

    jobs = [Job(tmp_path / f"{i}.png", tmp_path / "out" / f"{i}.png", "png", "png") for i in range(3)]
    with pytest.raises(RuntimeError, match="the journal is full"):
        run_batch(jobs, Stages(), workers=1, on_result=on_result)
    assert reported == [(str(jobs[0].input), "done")]


# ---- fault 4: output names depended on arrival order --------------------------------------------------------


def test_names_are_runs_whatever_the_arrival_order(tmp_path, inbox, watcher):
    out = tmp_path / "out"
    jpeg = tiny_jpegs(4)

    def png(i):
        buf = tmp_path / f"p{i}.png"
        Image.open(__import__("io").BytesIO(jpeg[i])).save(buf)
        return buf.read_bytes()

    w = watcher(inbox, "-o", str(out), "--format", "tiff", "--quiet-seconds", "0.3")
    w.wait_ready()
    (inbox / "A.jpg").write_bytes(jpeg[0])  # A: the JPEG first, B: the PNG first
    (inbox / "B.png").write_bytes(png(1))
    w.wait(lambda: len(done_lines(w.log())) == 2, 60, "the first two photos")
    assert outputs(out) == ["A.tif", "B.tif"]  # alone, as `run` names them
    (inbox / "A.png").write_bytes(png(2))
    (inbox / "B.jpg").write_bytes(jpeg[3])
    w.wait(lambda: len(done_lines(w.log())) == 4, 60, "the second two")
    log = w.stop()
    dry = CliRunner().invoke(main, ["run", str(inbox), "-o", str(out), "--format", "tiff", "--dry-run", "--json",
                                    "--model", model()], env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    planned = sorted(str(Path(f["output"]).relative_to(out)) for f in json.loads(dry.stdout)["files"])
    assert planned == ["A_jpg.tif", "A_png.tif", "B_jpg.tif", "B_png.tif"]
    assert outputs(out) == planned, log
    journal = rows(out / JOURNAL)
    assert {Path(p).name: Path(r["output"]).name for p, r in journal.items()} == {
        "A.jpg": "A_jpg.tif", "A.png": "A_png.tif", "B.jpg": "B_jpg.tif", "B.png": "B_png.tif"}
    assert decodes(out / "A_jpg.tif") == (64, 48)


# ---- fault 5: paths were stranded when taking a job raised --------------------------------------------------


def test_an_error_while_taking_a_photo_strands_no_path(tmp_path, inbox, env):
    out = tmp_path / "out"
    kept = "output exists (not overwritten)"
    journal_with_trigger(out, f"""
        CREATE TRIGGER no_kept BEFORE UPDATE ON files WHEN NEW.reason = '{kept}'
        BEGIN SELECT RAISE(ABORT, 'simulated: database or disk is full'); END;""")
    for name, data in zip(("a.jpg", "b.jpg", "c.jpg"), tiny_jpegs(3)):
        (inbox / name).write_bytes(data)
    (out / "a.jpg").write_bytes(b"someone else's file")  # a is to be kept: recording that fails
    rc, err = finish(once_proc(inbox, "-o", str(out), "--quiet-seconds", "0.3", env=env), 120)
    assert rc == 1, err
    assert (out / "a.jpg").read_bytes() == b"someone else's file"
    assert outputs(out) == ["a.jpg", "b.jpg", "c.jpg"]
    states = {Path(p).name: r["state"] for p, r in rows(out / JOURNAL).items()}
    assert states == {"a.jpg": "failed", "b.jpg": "done", "c.jpg": "done"}, err
    assert [line.split(": ")[1] for line in err.splitlines() if line.startswith("error: ")] == [str(inbox / "a.jpg")]


# ---- fault 6: SIGTERM finished the whole in-flight queue ------------------------------------------------------


def test_sigterm_finishes_only_the_photo_being_enhanced(tmp_path, inbox, watcher, env):
    out = tmp_path / "out"
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3", "-j", "6", "-q")
    w.wait_ready()
    names = [f"t{i:02d}.jpg" for i in range(30)]
    staging = tmp_path / "staging"
    staging.mkdir()
    for i, name in enumerate(names):
        shutil.copyfile(photo(SMALL[i % 3]), staging / name)
    for name in names:
        os.rename(staging / name, inbox / name)
    w.wait(lambda: len(outputs(out)) >= 2, 120, "the first outputs")
    at_signal = len(outputs(out))
    t0 = time.monotonic()
    log = w.stop(signal.SIGTERM)
    stop_s = time.monotonic() - t0
    after = len(outputs(out)) - at_signal
    print(f"SIGTERM -> exit {stop_s:.2f} s; {after} photo(s) completed after the signal (-j 6)")
    assert "SIGTERM: finishing the photo in hand" in log
    # the photo being enhanced, and one whose write had begun; not the six decoded and waiting
    assert after <= 2, log
    journal = rows(out / JOURNAL)
    states = [r["state"] for r in journal.values()]
    assert "processing" not in states and "failed" not in states
    assert states.count("done") == len(outputs(out)) and len(journal) == len(names)
    assert states.count("pending") >= 6  # decoded or queued, not started: back to pending
    p = once_proc(inbox, "-o", str(out), "--quiet-seconds", "0.3", env=env)
    rc, err = finish(p, 300)
    assert rc == 0, err
    assert outputs(out) == names


# ---- fault 7: the stop summary disagreed with the journal -----------------------------------------------------


def test_the_stop_summary_counts_are_the_journals(tmp_path, inbox, watcher, env):
    out = tmp_path / "out"
    good = tiny_jpegs(1)[0]
    w = watcher(inbox, "-o", str(out), "--quiet-seconds", "0.3")
    w.wait_ready()
    (inbox / "bad.jpg").write_text("not a photo\n")
    (inbox / "fixed.jpg").write_bytes(good[: len(good) // 2])
    w.wait(lambda: w.log().count("error: ") == 2, 60, "two failures")
    (inbox / "bad.jpg").write_text("still not a photo, but longer\n")  # changed: tried again, fails again
    (inbox / "fixed.jpg").write_bytes(good)  # the rest of the copy: done
    w.wait(lambda: w.log().count("error: ") == 3 and len(done_lines(w.log())) == 1, 60, "the retries")
    log = w.stop()
    line = next(x for x in log.splitlines() if x.startswith("backlitfix: stopped: "))
    m = re.search(r"stopped: (\d+) done, (\d+) kept existing, (\d+) failed in .*"
                  r"journal: (\d+) done, (\d+) failed", line)
    assert m, line
    assert tuple(map(int, m.groups())) == (1, 0, 1, 1, 1), line
