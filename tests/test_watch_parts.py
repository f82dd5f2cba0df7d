"""The watch daemon's parts, on real files and a real SQLite journal (no model, so quick)."""
from __future__ import annotations

import os
import plistlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from backlitfix.io.atomic import is_temp_of, remove_stale_temps
from backlitfix.watch.journal import (
    Journal,
    JournalError,
    JournalLock,
    file_hash,
    journal_path,
    state_dir,
)
from backlitfix.watch.scope import Scope, is_partial_name
from backlitfix.watch.stability import StabilityTracker, signature

REPO = Path(__file__).resolve().parent.parent


# ---- which paths are inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [".x.jpg", "x.jpg.part", "x.JPG.crdownload", "x.jpg.tmp", "x.jpg~",
                                  ".x.jpg.ab12cd34.tmp"])
def test_names_in_transit_are_not_photos(name, tmp_path):
    assert is_partial_name(name)
    assert not Scope(tmp_path, tmp_path / "out", recursive=True).is_candidate(str(tmp_path / name))


def test_scope_follows_run_and_never_looks_inside_the_output_folder(tmp_path):
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "fixed" / "nested").mkdir(parents=True)
    (src / "backlitfix").mkdir()
    (src / ".hidden").mkdir()
    for rel in ("a.jpg", "b.PNG", "notes.txt", "a.xmp", "sub/c.tif", "sub/deeper/d.jpeg", "fixed/o.jpg",
                "fixed/nested/o2.jpg", "backlitfix/o3.jpg", ".hidden/h.jpg", ".e.jpg", "f.jpg.part"):
        (src / rel).write_bytes(b"x")
    flat = Scope(src, src / "fixed", recursive=False)
    assert [os.path.relpath(p, src) for p in flat.walk()] == ["a.jpg", "b.PNG"]
    deep = Scope(src, src / "fixed", recursive=True)
    assert sorted(os.path.relpath(p, src) for p in deep.walk()) == ["a.jpg", "b.PNG", "sub/c.tif", "sub/deeper/d.jpeg"]
    assert not deep.is_candidate(str(src / "fixed" / "new.jpg"))
    assert not deep.is_candidate(str(src / "fixed" / "nested" / "new.jpg"))
    assert deep.is_candidate(str(src / "sub" / "new.jpg"))
    assert not flat.is_candidate(str(src / "sub" / "new.jpg"))  # not recursive
    assert not deep.is_candidate(str(tmp_path / "elsewhere.jpg"))


def test_output_folder_reached_through_a_symlink_is_still_excluded(tmp_path):
    real = tmp_path / "real"
    (real / "out").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    scope = Scope(link, real / "out", recursive=True)
    assert not scope.is_candidate(str(link / "out" / "x.jpg"))
    assert scope.is_candidate(str(link / "x.jpg"))


# ---- completeness ------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_file_is_ready_only_after_a_quiet_period_without_change(tmp_path):
    clock = Clock()
    tracker = StabilityTracker(2.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"1" * 100)
    assert tracker.touch(str(f)) is True
    assert tracker.touch(str(f)) is False  # no change: an event without a write
    clock.t += 1.9
    assert tracker.pop_ready() == []
    with open(f, "ab") as fh:  # more data arrives (the event is delivered)
        fh.write(b"2" * 100)
    tracker.touch(str(f))
    clock.t += 1.5  # 3.4 s after the first write, but only 1.5 s after the last
    assert tracker.pop_ready() == []
    assert tracker.next_due() == pytest.approx(clock.t + 0.5)
    clock.t += 0.5
    assert tracker.pop_ready() == [(str(f), signature(str(f)))]
    assert len(tracker) == 0


def test_a_change_without_an_event_restarts_the_quiet_period(tmp_path):
    """A polling observer (or a lost event) may not report a write: the due check stats the file."""
    clock = Clock()
    tracker = StabilityTracker(1.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"1" * 10)
    tracker.touch(str(f))
    f.write_bytes(b"1" * 20)  # no touch()
    clock.t += 1.0
    assert tracker.pop_ready() == []
    clock.t += 1.0
    assert [p for p, _ in tracker.pop_ready()] == [str(f)]


def test_a_file_that_vanishes_is_dropped_and_reported_gone(tmp_path):
    """Reported, not dropped silently: `watch --once` waits for every file it found (fault 2)."""
    clock = Clock()
    tracker = StabilityTracker(1.0, clock=clock)
    f = tmp_path / "a.jpg"
    f.write_bytes(b"1")
    tracker.touch(str(f))
    f.unlink()
    clock.t += 2
    assert tracker.pop_ready() == [(str(f), None)] and len(tracker) == 0
    assert tracker.pop_ready() == []


# ---- the journal ---------------------------------------------------------------------------------------


def test_journal_is_wal_and_records_the_whole_life_of_a_file(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.add_pending("/in/a.jpg", 10, 111)
    j.add_pending("/in/a.jpg", 99, 999)  # a known path keeps its row
    assert j.get("/in/a.jpg").signature == (10, 111) and j.get("/in/a.jpg").state == "pending"
    j.start([("/in/a.jpg", 12, 222, "h1", "/out/a.jpg")])
    e = j.get("/in/a.jpg")
    assert (e.state, e.hash, e.output, e.attempts, e.signature) == ("processing", "h1", "/out/a.jpg", 1, (12, 222))
    j.finish("/in/a.jpg", "done", output="/out/a.jpg", seconds=0.5)
    e = j.get("/in/a.jpg")
    assert (e.state, e.hash, e.seconds, e.reason) == ("done", "h1", 0.5, "")
    assert e.updated_at >= e.seen_at
    j.finish("/in/b.jpg", "failed", size=0, mtime_ns=1, reason="not an image (file is empty)")
    assert j.counts() == {"pending": 0, "processing": 0, "done": 1, "failed": 1}
    assert j.outputs() == {"/out/a.jpg"}
    j.close()
    # a second reader sees the same (--status opens it read-only, even while the daemon writes)
    r = Journal(tmp_path / "j.sqlite", readonly=True)
    assert r.get("/in/b.jpg").reason == "not an image (file is empty)"
    with pytest.raises(sqlite3.OperationalError):
        r._db.execute("DELETE FROM files")
    r.close()


def test_vanished_inputs_are_released_and_their_outputs_stay_reserved(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    kept = tmp_path / "kept.jpg"
    kept.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "d.jpg").write_bytes(b"done output")
    (out / "p.jpg").write_bytes(b"written before a kill")
    j.add_pending(str(kept), 1, 1)
    j.add_pending("/gone/pending.jpg", 1, 1)
    j.start([("/gone/processing.jpg", 1, 1, "h", str(out / "p.jpg")),
             ("/gone/interrupted.jpg", 1, 1, "h2", str(out / "never-written.jpg"))])
    j.finish("/gone/done.jpg", "done", output=str(out / "d.jpg"), digest="hd")
    j.finish("/gone/kept.jpg", "done", output=str(out / "d.jpg"), reason="output exists (not overwritten)")
    assert j.forget_vanished() == 3  # the ones that had not been done
    assert {e.path for e in j.entries()} == {str(kept)}
    assert j.released(str(out / "d.jpg")) == ("/gone/done.jpg", "hd")  # not the row that merely kept it
    assert j.released(str(out / "p.jpg")) == ("/gone/processing.jpg", "h")
    assert j.released(str(out / "never-written.jpg")) is None
    assert j.reserved(str(out), set()) == {str(out / "d.jpg"), str(out / "p.jpg")}
    assert j.owner(str(out / "d.jpg")) == "\0released"


def test_journal_schema_1_is_migrated_in_place(tmp_path):
    path = tmp_path / "j.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT, state TEXT NOT NULL, "
        "output TEXT, reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, seconds REAL, "
        "seen_at REAL NOT NULL, updated_at REAL NOT NULL); "
        "INSERT INTO files VALUES ('/in/a.jpg', 1, 2, 'h', 'done', '/out/a.jpg', '', 1, 0.5, 1.0, 1.0); "
        "PRAGMA user_version=1;")
    db.close()
    j = Journal(path)
    assert j._db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert j.get("/in/a.jpg").state == "done" and j.outputs() == {"/out/a.jpg"}
    j.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="newer backlitfix"):
        Journal(path)


def test_journal_survives_kill_9_in_the_middle_of_a_transaction(tmp_path):
    db = tmp_path / "j.sqlite"
    Journal(db).close()
    code = (
        "import os, sys; from backlitfix.watch.journal import Journal\n"
        f"j = Journal({str(db)!r})\n"
        "for i in range(300): j.finish(f'/in/{i}.jpg', 'done', output=f'/out/{i}.jpg')\n"
        "j._db.execute('BEGIN IMMEDIATE')\n"
        "for i in range(300): j._db.execute(\"UPDATE files SET state='failed' WHERE path=?\", (f'/in/{i}.jpg',))\n"
        "os.kill(os.getpid(), 9)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert p.returncode == -9
    j = Journal(db)
    assert j.integrity_ok()
    assert j.counts()["done"] == 300 and j.counts()["failed"] == 0  # the open transaction is gone, all of it


def test_only_one_daemon_per_journal(tmp_path):
    first, second = JournalLock(tmp_path / "j.sqlite"), JournalLock(tmp_path / "j.sqlite")
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_journal_locations(tmp_path, monkeypatch):
    assert journal_path("output", tmp_path) == tmp_path / ".backlitfix-watch.sqlite"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    p = journal_path("state", tmp_path / "out")
    assert p.parent == tmp_path / "state" / "backlitfix" and p.name.startswith("watch-")
    assert journal_path("state", tmp_path / "other") != p  # one journal per output folder
    assert journal_path(str(tmp_path / "j.db"), tmp_path) == tmp_path / "j.db"
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", "/h")
    assert state_dir(platform="linux") == Path("/h/.local/state/backlitfix")


def test_file_hash_follows_content_not_mtime(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    os.utime(b, (1, 1))
    assert file_hash(a) == file_hash(b)
    b.write_bytes(b"different")
    assert file_hash(a) != file_hash(b)


# ---- temporary files after a kill -----------------------------------------------------------------------


def test_only_our_stale_temporary_files_are_removed(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    ours = [out / ".a.jpg.x1y2z3_4.tmp", out / "sub" / ".b.tif.abcdefgh.tmp", out / ".a.xmp.k2k2k2k2.tmp"]
    theirs = [out / ".other.jpg.abcdefgh.tmp", out / "a.jpg.tmp", out / ".a.jpg.tmp", out / "notes.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"partial")
    assert is_temp_of(ours[0].name, "a.jpg") and not is_temp_of(theirs[0].name, "a.jpg")
    removed = remove_stale_temps([out / "a.jpg", out / "sub" / "b.tif"])
    assert sorted(map(str, removed)) == sorted(map(str, ours))
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)


# ---- running it as a service -----------------------------------------------------------------------------


def test_service_files_are_valid_and_run_watch():
    docs = REPO / "docs" / "service"
    unit = (docs / "backlitfix-watch.service").read_text()
    assert "ExecStart=" in unit and " watch " in unit and "KillSignal=SIGTERM" in unit
    plist = plistlib.loads((docs / "com.backlitfix.watch.plist").read_bytes())
    assert plist["ProgramArguments"][1] == "watch" and plist["KeepAlive"]
    readme = (docs / "README.md").read_text()
    assert "backlitfix-watch.service" in readme and "com.backlitfix.watch.plist" in readme


# ---- stopping from a signal handler ------------------------------------------------------------------------


class _Forbidden:
    """A lock that must not be taken: a signal handler that waits for a lock the code it interrupted
    holds never returns."""

    def __enter__(self):
        raise AssertionError("a lock was taken")

    def __exit__(self, *exc):
        return False

    acquire = __enter__


def test_request_stop_takes_no_lock_so_a_signal_handler_can_call_it(tmp_path):
    from backlitfix.config import load_config
    from backlitfix.watch.daemon import Daemon

    journal = Journal(tmp_path / "j.sqlite")
    d = Daemon(load_config(user_config=None), tmp_path, tmp_path / "out", journal, None)
    d.log._lock = d._lock = journal._lock = _Forbidden()
    d.ready._cond = d._kick = _Forbidden()
    d.request_stop(15)
    assert d.stop.is_set() and d.stop.signum == 15
    d.request_stop(2)  # a second one keeps the first's name for the log
    assert d.stop.signum == 15


def test_log_lines_stay_one_line_with_hostile_names():
    import io

    from backlitfix.watch.daemon import Log

    buf = io.StringIO()
    log = Log(stream=buf)
    log.error("/in/a\nerror: forged.jpg", "truncated\nfile")
    log.info("done: /in/b\r.jpg -> /out/b\r.jpg")
    lines = buf.getvalue().splitlines()
    assert lines == ["error: /in/a\\nerror: forged.jpg: truncated file", "done: /in/b\\r.jpg -> /out/b\\r.jpg"]

