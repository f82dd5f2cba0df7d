"""A persistent cache of per-photo vectors (CLIP embeddings, exposure statistics) in SQLite.

Keyed by (sha256 of the file's bytes, embedding space, preprocessing): a renamed or moved photo still hits,
an edited one does not, and embeddings of another model or another decode size never mix. The file lives in
the XDG cache folder (``$XDG_CACHE_HOME/backlitfix/embeddings.sqlite``). Writes are transactions (WAL mode,
so a reader never sees half a batch). A cache that cannot be opened or read is moved aside with a warning
and rebuilt: losing a cache only costs time, so it must never stop a run.
"""
from __future__ import annotations

import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from backlitfix.userdirs import cache_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    sha256 TEXT NOT NULL,
    space TEXT NOT NULL,        -- e.g. 'ViT-B-32/openai#3f2a...' or 'exposure'
    prep TEXT NOT NULL,         -- preprocessing version and decode size
    dim INTEGER NOT NULL,
    data BLOB NOT NULL,         -- float32, little-endian
    created REAL NOT NULL,
    PRIMARY KEY (sha256, space, prep)
) WITHOUT ROWID;
"""
_ERRORS = (sqlite3.DatabaseError, OSError)


def default_cache_path() -> Path:
    return cache_dir() / "embeddings.sqlite"


class EmbeddingCache:
    """``get_many``/``put_many`` of float32 vectors by content hash. Use from one thread."""

    def __init__(self, path: Path | str | None = None, *, log=None):
        self.path = Path(path) if path is not None else default_cache_path()
        self._log = log or (lambda msg: warnings.warn(msg, stacklevel=3))
        self._db: sqlite3.Connection | None = None
        self._open()

    def _open(self) -> None:
        try:
            self._db = self._connect()
        except _ERRORS as e:
            self._set_aside(e)
            try:
                self._db = self._connect()
            except _ERRORS as e2:  # e.g. a read-only cache folder: run without a cache
                self._log(f"embedding cache {self.path} unusable ({e2}); continuing without a cache")
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM vectors LIMIT 1").fetchone()  # a corrupt file fails here at the latest
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, err: Exception) -> None:
        """Move a broken cache (and its WAL/SHM files) out of the way, keeping it for inspection."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                try:
                    os.replace(p, p.with_name(f"{p.name}.corrupt-{stamp}"))
                except OSError:
                    pass
        self._log(f"embedding cache {self.path} is damaged ({err}); moved aside and rebuilt")

    def _recover(self, err: Exception) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except _ERRORS:
                pass
        self._db = None
        self._set_aside(err)
        self._open()

    @property
    def available(self) -> bool:
        return self._db is not None

    def keys(self, space: str, prep: str) -> frozenset[str]:
        """The hashes cached for (space, prep): lets decode threads skip cached photos without a query."""
        if self._db is None:
            return frozenset()
        try:
            rows = self._db.execute("SELECT sha256 FROM vectors WHERE space=? AND prep=?", (space, prep))
            return frozenset(r[0] for r in rows)
        except _ERRORS as e:
            self._recover(e)
            return frozenset()

    def get_many(self, hashes: Iterable[str], space: str, prep: str) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes``, by hash."""
        hashes = list(dict.fromkeys(hashes))
        if self._db is None or not hashes:
            return {}
        out: dict[str, np.ndarray] = {}
        try:
            for i in range(0, len(hashes), 500):  # SQLite's bound-parameter limit
                chunk = hashes[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT sha256, dim, data FROM vectors WHERE space=? AND prep=? AND sha256 IN ({marks})",
                    (space, prep, *chunk))
                for h, dim, data in rows:
                    v = np.frombuffer(data, dtype="<f4")
                    if v.size == dim:  # a short blob would be a damaged row: embed again
                        out[h] = v.astype(np.float32)
        except _ERRORS as e:
            self._recover(e)
            return {}
        return out

    def put_many(self, items: Mapping[str, np.ndarray], space: str, prep: str) -> None:
        """Store vectors in one transaction (all or none)."""
        if self._db is None or not items:
            return
        now = time.time()
        rows = [(h, space, prep, int(v.size), np.ascontiguousarray(v, dtype="<f4").tobytes(), now)
                for h, v in items.items()]
        try:
            with self._db:  # a transaction, despite isolation_level=None
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?, ?)", rows)
        except _ERRORS as e:
            self._recover(e)

    def count(self, space: str | None = None) -> int:
        if self._db is None:
            return 0
        q, args = ("SELECT count(*) FROM vectors", ()) if space is None else \
            ("SELECT count(*) FROM vectors WHERE space=?", (space,))
        return int(self._db.execute(q, args).fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
