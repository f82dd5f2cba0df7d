"""When is a file complete? When its size and mtime have not changed for a quiet period.

Copies, downloads and camera imports write a file over seconds or minutes, with pauses. Events say
*that* something happened, not that it is over, so each candidate is re-checked (``stat``) when
its quiet period would end: unchanged since the last change seen means ready; changed means the
quiet period starts again. A heap ordered by due time keeps this to about one ``stat`` per file per
quiet period, however many files wait. (The second half of "complete", that the file opens and
decodes, is checked by the worker, which has to decode it anyway.)
"""
from __future__ import annotations

import heapq
import os
import stat
import threading
import time
from collections.abc import Callable

Signature = tuple[int, int]  # (size, mtime_ns)


def signature(path: str) -> Signature | None:
    """(size, mtime in ns) of a regular file, or None if it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


class StabilityTracker:
    """Candidates waiting to be complete. Thread-safe: events arrive on watchdog's thread."""

    def __init__(self, quiet_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.quiet = float(quiet_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, tuple[Signature, float]] = {}  # path -> (signature, when it last changed)
        self._heap: list[tuple[float, str]] = []  # (due, path); stale entries are skipped

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._files

    def touch(self, path: str, sig: Signature | None = None) -> bool:
        """Something happened to ``path``: (re)start its quiet period if it changed. Returns True if
        the path was not tracked before. A path that is not a regular file is forgotten."""
        sig = signature(path) if sig is None else sig
        now = self.clock()
        with self._lock:
            if sig is None:
                self._files.pop(path, None)
                return False
            old = self._files.get(path)
            if old is not None and old[0] == sig:
                return False  # no change (an event without a write, e.g. close after read)
            self._files[path] = (sig, now)
            heapq.heappush(self._heap, (now + self.quiet, path))
            return old is None

    def forget(self, path: str) -> None:
        with self._lock:
            self._files.pop(path, None)

    def forget_under(self, folder: str) -> None:
        prefix = folder.rstrip(os.sep) + os.sep
        with self._lock:
            for path in [p for p in self._files if p.startswith(prefix)]:
                del self._files[path]

    def next_due(self) -> float | None:
        """Clock time at which the next candidate may be ready, or None when nothing waits."""
        with self._lock:
            while self._heap:
                due, path = self._heap[0]
                entry = self._files.get(path)
                if entry is not None and entry[1] + self.quiet == due:
                    return due
                heapq.heappop(self._heap)  # stale: forgotten, or changed since
            return None

    def pop_ready(self) -> list[tuple[str, Signature | None]]:
        """Candidates whose quiet period is over and that are unchanged: removed and returned. A
        candidate that vanished meanwhile is returned too, with None: someone has to say it is gone
        (``watch --once`` waits for every file it found)."""
        ready = []
        while True:
            now = self.clock()
            with self._lock:
                if not self._heap or self._heap[0][0] > now:
                    break
                due, path = heapq.heappop(self._heap)
                entry = self._files.get(path)
                if entry is None or entry[1] + self.quiet != due:
                    continue  # stale heap entry
                sig = entry[0]
            current = signature(path)  # outside the lock: stat may be slow on a network share
            with self._lock:
                if self._files.get(path) != entry:
                    continue  # an event changed it meanwhile; its new heap entry decides
                if current is None:
                    del self._files[path]
                    ready.append((path, None))
                elif current != sig:
                    self._files[path] = (current, now)  # changed without an event: wait again
                    heapq.heappush(self._heap, (now + self.quiet, path))
                else:
                    del self._files[path]
                    ready.append((path, sig))
        return ready
