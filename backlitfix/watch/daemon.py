"""The watch daemon: events -> completeness -> a queue of paths -> one model worker -> the journal.

Threads:

* watchdog's observer thread(s) report arrivals (created, modified, closed, moved in) and
  departures; each candidate photo enters the :class:`StabilityTracker` and, when new, the
  journal as ``pending``;
* the main thread (the caller of :meth:`Daemon.run`) moves files whose quiet period is over from the
  tracker to the ready queue, rescans the folder now and then, and handles stop requests;
* one worker thread owns the model: it takes a batch of ready *paths*, decides with the journal
  what needs doing (hashing the content), marks the batch ``processing`` and runs it through
  `backlitfix.runner.run_batch` (decode and encode overlap the model, as in ``backlitfix run``).
  Each result is recorded when it is known: ``done`` only after the output has been renamed into
  place.

Only paths wait in the queue; at most ``jobs`` decoded photos exist at a time (run_batch's bounded
queues), so a burst of thousands of files costs a few hundred bytes per waiting file.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..discover import Job, plan
from ..io.formats import IMAGE_EXTENSIONS
from ..photo import PhotoError
from ..pipeline import Pipeline, Result
from ..runner import default_workers, run_batch
from .journal import Journal, file_hash
from .scope import Scope
from .stability import Signature, StabilityTracker, signature

TERMINAL = ("done", "failed")
KEPT_EXISTING = "output exists (not overwritten)"


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(path) else None


class Log:
    """One line per event on stderr (or ``stream``): ``error: PATH: reason`` for failures."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed log must not kill the daemon
                pass

    def note(self, msg: str) -> None:
        self._write(f"backlitfix: {msg}")

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._write(msg)

    def warning(self, msg: str) -> None:
        self._write(f"warning: {msg}")

    def error(self, path, reason: str) -> None:
        self._write(f"error: {path}: {' '.join(str(reason).split())}")


class ReadyQueue:
    """Paths that are complete and wait for the worker: FIFO, no duplicates, closable."""

    def __init__(self):
        self._items: deque[str] = deque()
        self._set: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, path: str) -> None:
        with self._cond:
            if path not in self._set:
                self._set.add(path)
                self._items.append(path)
                self._cond.notify()

    def take(self, limit: int) -> list[str]:
        """Up to ``limit`` paths; blocks while empty; [] once closed."""
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            out = []
            while self._items and len(out) < limit:
                p = self._items.popleft()
                self._set.discard(p)
                out.append(p)
            return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _WatchPipeline(Pipeline):
    """The shared pipeline, with two changes: the daemon has already decided (with the journal)
    which outputs to replace, and photos not yet started are cancelled when the daemon stops."""

    def __init__(self, cfg: Config, enhancer, stopping: threading.Event):
        super().__init__(cfg, enhancer)
        self.stopping = stopping
        self.cancelled: set[str] = set()

    def should_skip(self, job: Job) -> bool:
        return False

    def load(self, job: Job):
        if self.stopping.is_set():
            self.cancelled.add(str(job.input))
            raise PhotoError(job.input, "cancelled: the daemon is stopping")
        return super().load(job)


@dataclass
class _Taken:
    job: Job
    sig: Signature
    digest: str


@dataclass
class Counts:
    done: int = 0
    failed: int = 0
    skipped: int = 0


class Daemon:
    """Watch ``in_dir`` and write outputs where ``backlitfix run in_dir`` would.

    ``enhancer`` is the loaded model (loaded once, by the caller). With ``once``, the daemon
    processes what is in the folder when it starts (waiting for files still being written) and
    :meth:`run` returns the exit code of ``backlitfix run``.
    """

    def __init__(self, cfg: Config, in_dir: Path, out_dir: Path, journal: Journal, enhancer, *,
                 once: bool = False, polling: bool = False, log: Log | None = None):
        self.cfg = cfg
        self.in_dir = Path(os.path.abspath(in_dir))
        self.out_dir = Path(os.path.abspath(out_dir))
        self.journal = journal
        self.once = once
        self.polling = polling
        self.log = log or Log()
        self.scope = Scope(self.in_dir, self.out_dir, cfg.input.recursive)
        self.tracker = StabilityTracker(cfg.watch.quiet_seconds)
        self.ready = ReadyQueue()
        self.stopping = threading.Event()  # stop requested: finish the current photos, then exit
        self.counts = Counts()
        self.workers = cfg.jobs or default_workers()
        self.max_batch = max(8, 8 * self.workers)
        self.pipeline = _WatchPipeline(cfg, enhancer, self.stopping)
        self._kick = threading.Event()  # wakes the main loop: a new candidate, or stop
        self._targets: set[str] | None = None  # --once: the paths found at start
        self._outcomes: dict[str, str] = {}  # --once: path -> done | failed | gone
        self._lock = threading.Lock()
        self._observer = None
        self._worker: threading.Thread | None = None

    # ---- arrivals ------------------------------------------------------------------------------

    def arrived(self, path: str, is_dir: bool = False) -> None:
        """An event says ``path`` was created, written, closed or moved in."""
        if is_dir:
            if self.scope.folder_ok(path):
                for p in self.scope.walk(path):
                    self.consider(p)
        elif self.scope.is_candidate(path):
            self.consider(path)

    def departed(self, path: str, is_dir: bool = False) -> None:
        """``path`` was deleted or moved away."""
        if is_dir:
            self.tracker.forget_under(path)
            self.journal.forget_pending_under(path)
            return
        if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            return
        self.tracker.forget(path)
        self.journal.forget_pending(path)
        self._resolve(path, "gone")

    def consider(self, path: str) -> None:
        """A candidate photo: track it until complete, unless the journal has this version."""
        if path in self.tracker:
            self.tracker.touch(path)  # one more write to a file already waiting: cheap
            return
        sig = signature(path)
        if sig is None:
            return
        entry = self.journal.get(path)
        if entry is not None and entry.state in TERMINAL and entry.signature == sig:
            self._resolve(path, entry.state)
            return
        if self.tracker.touch(path, sig) and entry is None:
            self.journal.add_pending(path, *sig)
        self._kick.set()

    def rescan(self, found: list[str] | None = None) -> None:
        """Consider every candidate in the folder (start-up, and a safety net for missed events)."""
        for p in self.scope.walk() if found is None else found:
            self.consider(p)

    # ---- outcomes ------------------------------------------------------------------------------

    def _resolve(self, path: str, state: str) -> None:
        if self._targets is not None and path in self._targets:
            with self._lock:
                self._outcomes[path] = state
            self._kick.set()

    def _finished(self) -> bool:
        with self._lock:
            return self._targets is not None and self._targets.issubset(self._outcomes)

    # ---- the worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            paths = self.ready.take(self.max_batch)
            if not paths:
                return
            try:
                self._process(paths)
            except Exception as e:  # a bug here must not silently stop the daemon
                for p in paths:
                    entry = self.journal.get(p)
                    if entry is not None and entry.state == "processing":
                        self._record_failure(p, None, None, f"unexpected error: {type(e).__name__}: {e}")
            finally:
                self._kick.set()

    def _process(self, paths: list[str]) -> None:
        listing: dict[str, dict[str, list[str]]] = {}
        taken: list[_Taken] = []
        for path in paths:
            if self.stopping.is_set():
                return  # the rest stay pending in the journal
            item = self._take(path, listing)
            if item is not None:
                taken.append(item)
        if not taken:
            return
        self.journal.start((str(t.job.input), *t.sig, t.digest, str(t.job.output)) for t in taken)
        by_input = {str(t.job.input): t for t in taken}

        def on_result(r: Result) -> None:
            self._record(r, by_input[r.input])

        run_batch([t.job for t in taken], self.pipeline, workers=self.workers, on_result=on_result)

    def _take(self, path: str, listing: dict) -> _Taken | None:
        """Decide what a ready path needs; returns the job to run, or None when nothing is to do."""
        sig = signature(path)
        if sig is None:
            self.journal.forget_pending(path)
            self._resolve(path, "gone")
            return None
        entry = self.journal.get(path)
        if entry is not None and entry.state in TERMINAL and entry.signature == sig:
            self._resolve(path, entry.state)  # this version was done (or failed) already
            return None
        try:
            digest = file_hash(path)
        except OSError as e:
            self._record_failure(path, sig, None, f"cannot read file ({e.strerror or e})")
            return None
        if signature(path) != sig:  # written to while we read it: not complete after all
            self.tracker.touch(path)
            self._kick.set()
            return None
        if entry is not None and entry.state in TERMINAL and entry.hash == digest:
            self.journal.same_content(path, *sig)  # touched, or copied again: same bytes, same outcome
            self._resolve(path, entry.state)
            return None
        job = self._job_for(path, listing)
        if isinstance(job, PhotoError):
            self._record_failure(path, sig, digest, job.reason)
            return None
        ours = entry is not None and entry.output == str(job.output)
        if not self.cfg.output.overwrite and not ours and os.path.lexists(job.output):
            self.journal.finish(path, "done", size=sig[0], mtime_ns=sig[1], digest=digest,
                                output=str(job.output), reason=KEPT_EXISTING)
            self.counts.skipped += 1
            self.log.info(f"skipped: {path}: {KEPT_EXISTING}")
            self._resolve(path, "done")
            return None
        return _Taken(job, sig, digest)

    def _job_for(self, path: str, listing: dict) -> Job | PhotoError:
        """The job `backlitfix run IN_DIR` would make for ``path``: same output folder, name, format.

        Names collide only between photos of one stem in one folder (a.jpg, a.png -> a.jpg with
        --format jpeg), so planning those together reproduces run's choice (a_jpg.jpg, a_png.jpg).
        """
        folder = os.path.dirname(path)
        groups = listing.get(folder)
        if groups is None:
            groups = listing[folder] = {}
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        if self.scope.is_candidate(e.path):
                            groups.setdefault(os.path.splitext(e.name)[0].casefold(), []).append(e.path)
            except OSError:
                pass
        same_stem = set(groups.get(os.path.splitext(os.path.basename(path))[0].casefold(), ()))
        same_stem.add(path)
        rel = os.path.relpath(folder, self.in_dir)
        out_dir = self.out_dir if rel == os.curdir else self.out_dir / rel
        try:
            p = plan([Path(s) for s in sorted(same_stem)], recursive=False, output_dir=out_dir,
                     suffix=self.cfg.output.suffix, fmt=self.cfg.output.format)
        except ValueError as e:
            return PhotoError(path, str(e))
        for job in p.jobs:
            if str(job.input) == path:
                return job
        for err in p.errors:
            if str(err.path) == path:
                return err
        return PhotoError(path, "not planned (a duplicate of another input)")

    def _record(self, r: Result, t: _Taken) -> None:
        path = r.input
        if r.status == "done":
            self.journal.finish(path, "done", output=r.output, seconds=round(r.seconds, 4))
            self.counts.done += 1
            self.log.info(f"done: {path} -> {r.output} ({r.seconds:.2f} s)")
            for w in r.warnings:
                self.log.warning(w)
            self._resolve(path, "done")
        elif path in self.pipeline.cancelled:
            self.journal.finish(path, "pending")  # the next start takes it up again
        else:
            now = signature(path)
            if now is not None and now != t.sig:  # did not decode because it was still being written
                self.journal.finish(path, "pending")
                self.tracker.touch(path, now)
                self._kick.set()
            else:
                self._record_failure(path, None, None, r.reason, seconds=round(r.seconds, 4))

    def _record_failure(self, path: str, sig: Signature | None, digest: str | None, reason: str,
                        seconds: float | None = None) -> None:
        size, mtime = sig if sig else (None, None)
        self.journal.finish(path, "failed", size=size, mtime_ns=mtime, digest=digest, reason=reason, seconds=seconds)
        self.counts.failed += 1
        self.log.error(path, reason)
        self._resolve(path, "failed")

    # ---- running -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the photos in hand, then return from :meth:`run` (safe from a signal handler)."""
        self.stopping.set()
        self._kick.set()

    def _start_observer(self) -> None:
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEventHandler,
        )

        # watchdog warns on stderr about events that arrive while it stops; they are not ours to log
        logging.getLogger("watchdog").setLevel(logging.ERROR)

        if self.polling:
            from watchdog.observers.polling import PollingObserver

            observer = PollingObserver(timeout=self.cfg.watch.polling_interval)
        else:
            from watchdog.observers import Observer

            observer = Observer()
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_created(self, event):
                daemon.arrived(os.fsdecode(event.src_path), event.is_directory)

            def on_modified(self, event):
                if not event.is_directory:
                    daemon.arrived(os.fsdecode(event.src_path))

            def on_closed(self, event):  # closed after writing
                daemon.arrived(os.fsdecode(event.src_path))

            def on_moved(self, event):
                daemon.departed(os.fsdecode(event.src_path), event.is_directory)
                daemon.arrived(os.fsdecode(event.dest_path), event.is_directory)

            def on_deleted(self, event):
                daemon.departed(os.fsdecode(event.src_path), event.is_directory)

        # Only these: our own reads (opens, closes without writing) must not wake the daemon.
        wanted = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
                  DirCreatedEvent, DirMovedEvent, DirDeletedEvent]
        try:
            observer.schedule(Handler(), str(self.in_dir), recursive=self.cfg.input.recursive, event_filter=wanted)
        except TypeError:  # watchdog < 4 has no event_filter
            observer.schedule(Handler(), str(self.in_dir), recursive=self.cfg.input.recursive)
        observer.start()  # raises OSError, e.g. when the inotify watch limit is reached
        self._observer = observer

    def run(self, on_ready=None) -> int:
        """Watch until stopped (or, with ``once``, until the current content is done); returns the
        exit code: 0, or with ``once`` 1 if a photo failed and 130 if stopped before the end.
        ``on_ready(n)`` is called once events are watched and the ``n`` photos found are queued."""
        self._worker = threading.Thread(target=self._work, name="backlitfix-model", daemon=True)
        self._worker.start()
        try:
            if not self.once:
                self._start_observer()  # before the scan, so nothing arrives unseen in between
            found = list(self.scope.walk())
            if self.once:
                with self._lock:
                    self._targets = set(found)
            self.rescan(found)
            if on_ready is not None:
                on_ready(len(found))
            rescan_every = self.cfg.watch.rescan_seconds
            next_rescan = time.monotonic() + rescan_every if rescan_every and not self.once else None
            folder_id = _identity(self.in_dir)
            next_check = time.monotonic() + 1.0
            while not self.stopping.is_set():
                if not self.once and time.monotonic() >= next_check:
                    folder_id = self._check_folder(folder_id)
                    next_check = time.monotonic() + 1.0
                for path, _sig in self.tracker.pop_ready():
                    self._ready(path)
                if self.once and self._finished():
                    break
                now = time.monotonic()
                if next_rescan is not None and now >= next_rescan:
                    self.rescan()
                    next_rescan = now + rescan_every
                due = self.tracker.next_due()
                timeout = 1.0 if due is None else due - now
                if next_rescan is not None:
                    timeout = min(timeout, next_rescan - now)
                self._kick.wait(max(0.005, min(timeout, 1.0)))
                self._kick.clear()
        finally:
            self.stopping.set()
            self.ready.close()
            if self._observer is not None:
                self._observer.stop()
                self._observer.join()
            self._worker.join()  # the photos in hand are finished, the rest cancelled
        if self.once:
            if not self._finished():
                return 130
            with self._lock:
                return 1 if "failed" in self._outcomes.values() else 0
        return 0

    def _check_folder(self, known):
        """The watched folder can go away (an unmounted share, a removed card) and come back, maybe
        as a new folder at the same path: then events stop, so watch it afresh and rescan."""
        now = _identity(self.in_dir)
        if now == known:
            return known
        if now is None:
            self.log.error(self.in_dir, "the watched folder is gone; waiting for it to come back")
        else:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join()
                self._observer = None
            try:
                self._start_observer()
            except OSError as e:
                self.log.error(self.in_dir, f"cannot watch the folder: {e.strerror or e}")
                return known  # try again at the next check
            self.log.note(f"{self.in_dir} is back: watching it again")
            self.rescan()
        return now

    def _ready(self, path: str) -> None:
        sig = signature(path)
        if sig is None:
            self.journal.forget_pending(path)
            self._resolve(path, "gone")
            return
        entry = self.journal.get(path)
        if entry is not None and entry.state in TERMINAL and entry.signature == sig:
            self._resolve(path, entry.state)
            return
        self.ready.put(path)

    def once_outcomes(self) -> dict[str, str]:
        with self._lock:
            return dict(self._outcomes)
