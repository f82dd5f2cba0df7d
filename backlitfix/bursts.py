"""Bursts: frames of one camera shot moments apart get one auto strength, so a sequence keeps one look.

A frame's capture info comes from its EXIF: the camera (Make, Model, BodySerialNumber where present)
and the capture time (DateTimeOriginal + SubSecTimeOriginal, in UTC when OffsetTimeOriginal is
there). A frame joins a burst when the same camera recorded a frame of that burst within
``burst.gap_seconds`` of it; frames without a capture time or a camera name stand alone.

The first frame of a burst to be corrected fixes the strength; later frames look it up in a
`BurstStore`: `MemoryBurstStore` for one `run`, `SqliteBurstStore` (a ``bursts`` table) for the watch
daemon, whose journal database keeps burst strengths across restarts.
"""
from __future__ import annotations

import calendar
import hashlib
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from .io.metadata import EXIF_IFD, strip_prefix
from .io.tiff_ifd import ASCII, UNDEFINED, TiffFormatError, TiffReader

MAKE, MODEL = 0x010F, 0x0110
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
SUBSEC_TIME_ORIGINAL, BODY_SERIAL = 0x9291, 0xA431
_OFFSET = re.compile(r"^([+-])(\d\d):(\d\d)$")


@dataclass(frozen=True)
class Capture:
    """Who shot a frame and when. ``time`` is seconds since the epoch: UTC when the camera wrote a
    time-zone offset, else the camera's clock read as if it were UTC (bursts only compare times)."""

    camera: str = ""  # "Make|Model|serial"; "" when the EXIF names no camera
    time: float | None = None

    @property
    def burstable(self) -> bool:
        return self.time is not None and bool(self.camera)


@dataclass(frozen=True)
class Burst:
    id: str
    strength: float


def capture_of(exif: bytes | None) -> Capture:
    """Capture info from a TIFF-structured EXIF block (Photo.meta.exif); damaged or absent -> stands alone."""
    if not exif:
        return Capture()
    try:
        r = TiffReader(strip_prefix(exif))
        problems: list[str] = []
        ifd0, _ = r.read_ifd(r.first_ifd, problems, "IFD0")
        off = r.pointer(ifd0, EXIF_IFD, problems, "Exif IFD")
        sub = r.read_ifd(off, problems, "Exif IFD")[0] if off else {}
    except (TiffFormatError, ValueError, IndexError, OverflowError):  # struct.error is a ValueError
        return Capture()

    def text(entries, tag) -> str:
        e = entries.get(tag)
        if e is None or e.type not in (ASCII, UNDEFINED):  # some writers store text as UNDEFINED
            return ""
        return e.data.split(b"\0", 1)[0].decode("utf-8", "replace").strip()

    camera = [text(ifd0, MAKE), text(ifd0, MODEL), text(sub, BODY_SERIAL)]
    return Capture("|".join(camera) if any(camera[:2]) else "",
                   capture_time(text(sub, DATETIME_ORIGINAL), text(sub, SUBSEC_TIME_ORIGINAL),
                                text(sub, OFFSET_TIME_ORIGINAL)))


def capture_time(stamp: str, subsec: str = "", offset: str = "") -> float | None:
    """'YYYY:MM:DD HH:MM:SS' (+ '25' hundredths, + '+02:00') -> seconds; None when absent or blank."""
    try:
        t = datetime.strptime(stamp.strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # absent, or "    :  :     :  :  " as cameras write an unset clock
        return None
    seconds = float(calendar.timegm(t.timetuple()))
    digits = subsec.strip()
    if digits.isdigit():
        seconds += int(digits) / 10 ** len(digits)
    m = _OFFSET.match(offset.strip())
    if m:
        sign = 1 if m.group(1) == "+" else -1
        seconds -= sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)
    return seconds


def burst_id(c: Capture) -> str:
    """A readable, stable id: the first frame's capture time and a short hash of the camera."""
    when = "none"
    if c.time is not None:
        centis = round(c.time * 100)
        when = datetime.fromtimestamp(centis // 100, timezone.utc).strftime("%Y%m%d-%H%M%S") + f".{centis % 100:02d}"
    return f"{when}-{hashlib.sha1(c.camera.encode()).hexdigest()[:6]}"


class BurstStore(Protocol):
    """Where the bursts of a run (or of a watched folder, across restarts) are remembered."""

    def lookup(self, c: Capture) -> Burst | None:
        """The burst that ``c`` belongs to: the same camera shot one of its frames within the gap."""

    def assign(self, c: Capture, key: str, strength: float, burst: Burst | None = None) -> Burst:
        """Record frame ``key`` (its path) in ``burst``, or open a new burst with ``strength``."""


class MemoryBurstStore:
    """For one `run`: frames by camera, in memory."""

    def __init__(self, gap_seconds: float):
        self.gap = gap_seconds
        self._frames: dict[str, list[tuple[float, str]]] = {}  # camera -> [(time, burst id)]
        self._bursts: dict[str, Burst] = {}
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def lookup(self, c: Capture) -> Burst | None:
        if not c.burstable:
            return None
        with self._lock:
            near = [(abs(t - c.time), b) for t, b in self._frames.get(c.camera, ()) if abs(t - c.time) <= self.gap]
            return self._bursts[min(near)[1]] if near else None

    def assign(self, c: Capture, key: str, strength: float, burst: Burst | None = None) -> Burst:
        burst = burst or Burst(burst_id(c), strength)
        with self._lock:
            self._bursts.setdefault(burst.id, burst)
            if c.burstable and (key, burst.id) not in self._seen:
                self._seen.add((key, burst.id))
                self._frames.setdefault(c.camera, []).append((c.time, burst.id))
        return self._bursts[burst.id]


class SqliteBurstStore:
    """The same in a SQLite database (the watch daemon's journal file): survives restarts.

    Two tables: ``bursts`` (id, strength, camera, first capture time) and ``burst_frames`` (one row per
    frame: its key, camera, capture time and burst). Each call is its own short transaction.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS bursts (
        id TEXT PRIMARY KEY, strength REAL NOT NULL, camera TEXT NOT NULL, first_time REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS burst_frames (
        key TEXT NOT NULL, camera TEXT NOT NULL, time REAL NOT NULL,
        burst TEXT NOT NULL REFERENCES bursts(id), PRIMARY KEY (key, burst));
    CREATE INDEX IF NOT EXISTS burst_frames_by_time ON burst_frames (camera, time);
    """

    def __init__(self, db: Path | str | sqlite3.Connection, gap_seconds: float):
        """``db``: a database file (opened here), or an open connection to share (the journal's)."""
        self.gap = gap_seconds
        self._own = not isinstance(db, sqlite3.Connection)
        self._db = sqlite3.connect(str(db), timeout=30, check_same_thread=False) if self._own else db
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(self.SCHEMA)

    def lookup(self, c: Capture) -> Burst | None:
        if not c.burstable:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT b.id, b.strength FROM burst_frames f JOIN bursts b ON b.id = f.burst "
                "WHERE f.camera = ? AND f.time BETWEEN ? AND ? ORDER BY abs(f.time - ?) LIMIT 1",
                (c.camera, c.time - self.gap, c.time + self.gap, c.time)).fetchone()
        return Burst(row[0], row[1]) if row else None

    def assign(self, c: Capture, key: str, strength: float, burst: Burst | None = None) -> Burst:
        burst = burst or Burst(burst_id(c), strength)
        with self._lock, self._db:
            self._db.execute("INSERT OR IGNORE INTO bursts (id, strength, camera, first_time) VALUES (?, ?, ?, ?)",
                             (burst.id, burst.strength, c.camera, c.time if c.time is not None else 0.0))
            if c.burstable:
                self._db.execute("INSERT OR IGNORE INTO burst_frames (key, camera, time, burst) VALUES (?, ?, ?, ?)",
                                 (key, c.camera, c.time, burst.id))
            row = self._db.execute("SELECT id, strength FROM bursts WHERE id = ?", (burst.id,)).fetchone()
        return Burst(row[0], row[1])

    def close(self) -> None:
        if self._own:
            self._db.close()
