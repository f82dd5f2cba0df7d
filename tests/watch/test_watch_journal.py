"""The watch journal (backlitfix.watch.journal): a real SQLite database, its migrations, locks, locations."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from backlitfix.watch.journal import (
    Journal,
    JournalError,
    JournalLock,
    file_hash,
    journal_path,
    state_dir,
)

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
