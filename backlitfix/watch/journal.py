"""The watch journal: one SQLite row per input photo, so a restart neither repeats nor misses work.

Each row holds the input's absolute path, the size, mtime and content hash (BLAKE2b) of the version
last taken up, its state and output, the reason of a failure, and timestamps. States::

    pending     seen, waiting to be complete (never processed yet)
    processing  taken up by the worker; a row left in this state was interrupted and is redone
    done        the output is atomically in place (or existed already and was kept: see reason)
    failed      could not be processed; not retried until the file changes

When an input leaves the folder (deleted, moved away) its row goes and its output is *released*:
kept in the ``released`` table, so a new photo that reuses the name gets a name of its own (the
earlier output is never overwritten) and the same photo moved back in finds its output again.

The schema has a version (``PRAGMA user_version``) and a list of migrations, each applied once,
in order, in the transaction that opens the journal; a newer journal is refused, not damaged.

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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..userdirs import state_dir

SCHEMA_VERSION = 2
JOURNAL_NAME = ".backlitfix-watch.sqlite"
STATES = ("pending", "processing", "done", "failed")

# (version, SQL): migration N brings a journal from version N-1 to N. Append only; never edit one.
_MIGRATIONS: list[tuple[int, str]] = [(1, """
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
"""), (2, """
CREATE TABLE IF NOT EXISTS released (
    output      TEXT PRIMARY KEY,          -- an output whose input left the folder: kept, not reused
    input       TEXT NOT NULL,             -- the input it was made from
    hash        TEXT,                      -- that input's content hash
    released_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_output ON files(output);
""")]


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
                self._migrate()
            else:
                self._db.execute("SELECT 1 FROM files LIMIT 1")
        except sqlite3.Error as e:
            raise JournalError(f"cannot open journal {self.path}: {e}") from None
        except OSError as e:
            raise JournalError(f"cannot create journal folder {self.path.parent}: {e.strerror or e}") from None

    # ---- plumbing ------------------------------------------------------------------------------

    def _migrate(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"journal {self.path} was written by a newer backlitfix (schema {version})")
            for n, sql in _MIGRATIONS:
                if n > version:
                    for statement in sql.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
            live = {r[0] for r in self._db.execute("SELECT output FROM files WHERE output IS NOT NULL")}
            return live | {r[0] for r in self._db.execute("SELECT output FROM released")}

    def owner(self, output: str, prefer: str = "") -> str | None:
        """The input ``output`` is recorded for (``prefer`` if it is one of them); ``decide.RELEASED``
        for a released one; else None."""
        from .decide import RELEASED

        with self._lock:
            row = self._db.execute("SELECT path FROM files WHERE output = ? ORDER BY path = ? DESC, path LIMIT 1",
                                   (output, prefer)).fetchone()
            if row is not None:
                return row[0]
            row = self._db.execute("SELECT 1 FROM released WHERE output = ?", (output,)).fetchone()
        return RELEASED if row else None

    def released(self, output: str) -> tuple[str, str | None] | None:
        """(input, hash) of a released output, or None."""
        with self._lock:
            row = self._db.execute("SELECT input, hash FROM released WHERE output = ?", (output,)).fetchone()
        return (row[0], row[1]) if row else None

    def reserved(self, out_dir: str, inputs: set[str]) -> set[str]:
        """Outputs in ``out_dir`` that belong to photos other than ``inputs`` (released ones, and
        those of rows whose input is not there now): names a new photo must not take."""
        prefix = out_dir.rstrip(os.sep) + os.sep
        n = len(prefix)
        with self._lock:
            rows = self._db.execute("SELECT path, output FROM files WHERE substr(output, 1, ?) = ?",
                                    (n, prefix)).fetchall()
            gone = {r[0] for r in self._db.execute("SELECT output FROM released WHERE substr(output, 1, ?) = ?",
                                                   (n, prefix))}
        return gone | {output for path, output in rows if path not in inputs}

    def in_folder(self, folder: str) -> list[Entry]:
        """Rows of the inputs directly in ``folder``."""
        prefix = folder.rstrip(os.sep) + os.sep
        with self._lock:
            rows = self._db.execute("SELECT * FROM files "
                                    "WHERE substr(path, 1, ?) = ? AND instr(substr(path, ?), ?) = 0",
                                    (len(prefix), prefix, len(prefix) + 1, os.sep)).fetchall()
        return [Entry(**dict(r)) for r in rows]

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
                    "INSERT INTO files "
                    "(path, size, mtime_ns, hash, state, output, reason, attempts, seen_at, updated_at) "
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

    def release(self, path: str) -> None:
        """``path`` left the folder: its row goes; an output it had stays, as released."""
        with self._tx() as db:
            self._release(db, "path = ?", (path,))

    def release_under(self, folder: str) -> None:
        """A folder left: release every row under it (but those being processed: their result does)."""
        prefix = folder.rstrip(os.sep) + os.sep
        with self._tx() as db:
            self._release(db, "substr(path, 1, ?) = ? AND state != 'processing'", (len(prefix), prefix))

    @staticmethod
    def _release(db, where: str, args: tuple) -> None:
        now, kept = time.time(), _kept()
        rows = db.execute(f"SELECT path, output, hash, state, reason FROM files WHERE {where}", args).fetchall()
        for path, output, digest, state, reason in rows:
            # done: the output is ours; processing: it may have been written before a kill
            if output and reason != kept and state in ("done", "processing") and os.path.lexists(output):
                db.execute("INSERT OR REPLACE INTO released (output, input, hash, released_at) VALUES (?, ?, ?, ?)",
                           (output, path, digest, now))
        db.execute(f"DELETE FROM files WHERE {where}", args)

    def release_output(self, path: str) -> None:
        """``path`` has new content: the output of the earlier content is kept, as released."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO released (output, input, hash, released_at) "
                       "SELECT output, path, hash, ? FROM files WHERE path = ? AND output IS NOT NULL",
                       (time.time(), path))
            db.execute("UPDATE files SET output = NULL WHERE path = ?", (path,))

    def adopt(self, path: str, size: int, mtime_ns: int, digest: str, output: str, reason: str) -> None:
        """``path`` is the photo a released output was made from (moved out and back): it is its again."""
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM released WHERE output = ?", (output,))
            db.execute(
                "INSERT INTO files (path, size, mtime_ns, hash, state, output, reason, seen_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'done', ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, hash = excluded.hash, state = 'done', output = excluded.output, "
                "reason = excluded.reason, updated_at = excluded.updated_at",
                (path, size, mtime_ns, digest, output, reason, now, now))

    def moved_output(self, path: str, output: str) -> None:
        """``path``'s output was renamed to ``output`` (its name changed with a new sibling)."""
        with self._tx() as db:
            db.execute("UPDATE files SET output = ? WHERE path = ?", (output, path))

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
        """Release the rows whose input no longer exists (at start-up: it left while we were not
        watching); returns how many of them had not been done yet."""
        with self._lock:
            rows = self._db.execute("SELECT path, state FROM files").fetchall()
        gone = [(p, state) for p, state in rows if not os.path.lexists(p)]
        if gone:
            with self._tx() as db:
                for p, _ in gone:
                    self._release(db, "path = ?", (p,))
        return sum(state in ("pending", "processing") for _, state in gone)

    def session_counts(self, since: float) -> dict[str, int]:
        """States of the rows changed since ``since`` (Unix time): done (processed), kept (an
        existing output kept, or an earlier one adopted), failed, pending. The stop line's figures,
        so they are the journal's, whatever happened to a file on the way."""
        from .decide import ADOPTED, KEPT_EXISTING

        with self._lock:
            rows = self._db.execute("SELECT state, reason FROM files WHERE updated_at >= ?", (since,)).fetchall()
        counts = {"done": 0, "kept": 0, "failed": 0, "pending": 0}
        for state, reason in rows:
            if state == "done":
                counts["kept" if reason in (KEPT_EXISTING, ADOPTED) else "done"] += 1
            elif state == "failed":
                counts["failed"] += 1
            else:
                counts["pending"] += 1
        return counts


def _kept() -> str:
    from .decide import KEPT_EXISTING

    return KEPT_EXISTING  # such an output was never ours: nothing to release


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
