"""The watch journal: one SQLite row per input photo, so a restart neither repeats nor misses work.

Each row holds the input's absolute path, the size, mtime and content hash (BLAKE2b) of the version
last taken up, its state and output, the reason of a failure, and timestamps. States::

    pending     seen, waiting to be complete (never processed yet)
    processing  taken up by the worker; a row left in this state was interrupted and is redone
    done        the output is atomically in place (or existed already and was kept: see reason)
    failed      could not be processed; not retried until the file changes

The database is in WAL mode and every change is one transaction, so a ``kill -9`` (or a power cut)
loses at most the last transactions, never the file's consistency; ``--status`` can read it while
the daemon writes. ``synchronous=NORMAL`` is enough for that: a lost "done" only means the photo
is processed again, and outputs are replaced atomically. SQLite's WAL needs shared memory, so the
journal must be on a local disk: with an output folder on a network share use ``journal: state``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1
JOURNAL_NAME = ".backlitfix-watch.sqlite"
STATES = ("pending", "processing", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path       TEXT PRIMARY KEY,          -- absolute path of the input
    size       INTEGER,                   -- bytes, of the version last taken up
    mtime_ns   INTEGER,                   -- its modification time
    hash       TEXT,                      -- BLAKE2b-128 of its content (null until taken up)
    state      TEXT NOT NULL CHECK (state IN ('pending', 'processing', 'done', 'failed')),
    output     TEXT,                      -- where its output goes / went
    reason     TEXT NOT NULL DEFAULT '',  -- why it failed (or why an existing output was kept)
    attempts   INTEGER NOT NULL DEFAULT 0,-- how often it was taken up
    seconds    REAL,                      -- processing time of the last attempt
    seen_at    REAL NOT NULL,             -- first seen (Unix time)
    updated_at REAL NOT NULL              -- last state change (Unix time)
);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
"""


class JournalError(Exception):
    """The journal cannot be opened or used; ``str()`` is a complete, user-facing message."""


@dataclass(frozen=True)
class Entry:
    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None
    state: str
    output: str | None
    reason: str
    attempts: int
    seconds: float | None
    seen_at: float
    updated_at: float

    @property
    def signature(self) -> tuple[int | None, int | None]:
        return self.size, self.mtime_ns


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of the file's bytes, hex (hashlib releases the GIL on large chunks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_dir(env: dict | None = None, platform: str | None = None) -> Path:
    """Per-user state folder: ``$XDG_STATE_HOME/backlitfix`` or ``~/.local/state/backlitfix``
    (macOS: ``~/Library/Application Support/backlitfix/state``; Windows: ``%LOCALAPPDATA%``)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform.startswith("win"):
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "backlitfix" / "state"
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "backlitfix"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "backlitfix" / "state"
    return home / ".local" / "state" / "backlitfix"


def journal_path(setting: str, out_dir: Path) -> Path:
    """Where the journal for ``out_dir`` lives, from the ``watch.journal`` setting."""
    if setting == "output":
        return Path(out_dir) / JOURNAL_NAME
    if setting == "state":
        key = hashlib.blake2b(os.fsencode(os.path.abspath(out_dir)), digest_size=8).hexdigest()
        return state_dir() / f"watch-{key}.sqlite"
    return Path(setting).expanduser().absolute()


class Journal:
    """Thread-safe access to one journal file (one connection, one lock)."""

    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            if readonly:
                self._db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True,
                                           isolation_level=None, check_same_thread=False, timeout=10)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.row_factory = sqlite3.Row
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise JournalError(f"journal {self.path} was written by a newer backlitfix (schema {version})")
                self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            else:
                self._db.execute("SELECT 1 FROM files LIMIT 1")
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from None
        except OSError as e:
            raise JournalError(f"cannot create journal folder {self.path.parent}: {e.strerror or e}") from None

    # ---- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ---- reads ---------------------------------------------------------------------------------

    def get(self, path: str) -> Entry | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE path = ?", (path,)).fetchone()
        return Entry(**dict(row)) if row else None

    def entries(self, state: str | None = None) -> list[Entry]:
        with self._lock:
            if state is None:
                rows = self._db.execute("SELECT * FROM files ORDER BY path").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM files WHERE state = ? ORDER BY path", (state,)).fetchall()
        return [Entry(**dict(r)) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: n for state, n in rows})
        return counts

    def outputs(self) -> set[str]:
        """Every output path the journal knows of (ours to replace, and whose temporary files are ours)."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT output FROM files WHERE output IS NOT NULL")}

    # ---- writes --------------------------------------------------------------------------------

    def add_pending(self, path: str, size: int, mtime_ns: int) -> None:
        """A newly seen input; a path the journal already knows keeps its row."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO files (path, size, mtime_ns, state, seen_at, updated_at) "
                "VALUES (?, ?, ?, 'pending', ?, ?)", (path, size, mtime_ns, now, now))

    def start(self, items: Iterable[tuple[str, int, int, str, str]]) -> None:
        """Mark (path, size, mtime_ns, hash, output) as processing, all in one transaction."""
        now = time.time()
        with self._tx() as db:
            for path, size, mtime_ns, digest, output in items:
                db.execute(
                    "INSERT INTO files (path, size, mtime_ns, hash, state, output, reason, attempts, seen_at, updated_at) "
                    "VALUES (?, ?, ?, ?, 'processing', ?, '', 1, ?, ?) "
                    "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
                    "hash = excluded.hash, state = 'processing', output = excluded.output, reason = '', "
                    "attempts = attempts + 1, updated_at = excluded.updated_at",
                    (path, size, mtime_ns, digest, output, now, now))

    def finish(self, path: str, state: str, *, size: int | None = None, mtime_ns: int | None = None,
               digest: str | None = None, output: str | None = None, reason: str = "",
               seconds: float | None = None) -> None:
        """Record the outcome (done | failed | pending) of ``path``; None values keep the stored ones."""
        if state not in STATES:
            raise ValueError(state)
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO files (path, size, mtime_ns, hash, state, output, reason, seconds, seen_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size = COALESCE(excluded.size, size), "
                "mtime_ns = COALESCE(excluded.mtime_ns, mtime_ns), hash = COALESCE(excluded.hash, hash), "
                "state = excluded.state, output = COALESCE(excluded.output, output), reason = excluded.reason, "
                "seconds = COALESCE(excluded.seconds, seconds), updated_at = excluded.updated_at",
                (path, size, mtime_ns, digest, state, output, reason, seconds, now, now))

    def same_content(self, path: str, size: int, mtime_ns: int) -> None:
        """The file was touched but its content hash is unchanged: remember the new size/mtime."""
        with self._tx() as db:
            db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def forget_pending(self, path: str) -> None:
        """A file that vanished before it was ever processed leaves no trace."""
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE path = ? AND state = 'pending' AND hash IS NULL", (path,))

    def forget_pending_under(self, folder: str) -> None:
        """A folder went away: forget the never-processed files that were in it."""
        prefix = folder.rstrip(os.sep) + os.sep
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE state = 'pending' AND hash IS NULL AND substr(path, 1, ?) = ?",
                       (len(prefix), prefix))

    def forget_vanished(self) -> int:
        """Drop pending/processing rows whose input no longer exists (at start-up)."""
        with self._lock:
            rows = self._db.execute("SELECT path FROM files WHERE state IN ('pending', 'processing')").fetchall()
        gone = [r[0] for r in rows if not os.path.lexists(r[0])]
        if gone:
            with self._tx() as db:
                db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
        return len(gone)


class JournalLock:
    """An exclusive lock beside the journal, so two daemons never share one journal.

    ``flock`` on a separate file (not the database, whose byte-range locks are SQLite's). Released
    by the kernel when the process dies, so a ``kill -9`` leaves no stale lock.
    """

    def __init__(self, journal: Path):
        self.path = journal.with_name(journal.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; one daemon per journal is up to the user
            self._fd = fd
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
