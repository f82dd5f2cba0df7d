"""The watch daemon: events -> completeness -> a queue of paths -> one model worker -> the journal.

Every decision (track, queue, hash, process, skip, record, retry, forget, rename) is made by
:func:`backlitfix.watch.decide.decide` from facts about one file; the threads here only gather
those facts and carry the actions out:

* watchdog's observer thread(s) report arrivals (created, modified, closed, moved in) and
  departures; an arrival is tracked by the :class:`StabilityTracker` (and, when new, entered in
  the journal as ``pending``), a departure releases the file's row and output;
* the main thread (the caller of :meth:`Daemon.run`) moves files whose quiet period is over from the
  tracker to the ready queue, rescans the folder now and then, and notices stop requests;
* one worker thread owns the model: it takes a batch of ready *paths*, gathers the rest of the
  facts (content hash, output name from `backlitfix.discover`, who owns that output), marks the
  batch ``processing`` and runs it through `backlitfix.runner.run_batch` (decode and encode overlap
  the model, as in ``backlitfix run``). Each result is recorded when it is known: ``done`` only
  after the output has been renamed into place.

Only paths wait in the queue; at most ``jobs`` decoded photos exist at a time (run_batch's bounded
queues), so a burst of thousands of files costs a few hundred bytes per waiting file.

A stop (SIGTERM, Ctrl-C) finishes the photo being enhanced (and the writes of those enhanced
already); photos decoded but not started, and paths still queued, stay ``pending`` for the next
start. The signal handler only sets a flag (:class:`StopFlag`): taking a lock in a handler that
interrupted the lock's holder would deadlock.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from ..bursts import SqliteBurstStore
from ..config import Config
from ..discover import Job, plan
from ..display import shown
from ..io.formats import IMAGE_EXTENSIONS
from ..io.sidecars import find_sidecars
from ..photo import PhotoError
from ..pipeline import Pipeline, Result
from ..runner import default_workers, run_batch
from .decide import ADOPTED, KEPT_EXISTING, TERMINAL, Action, Facts, decide
from .journal import Journal, file_hash
from .scope import Scope
from .stability import Signature, StabilityTracker, signature

__all__ = ["KEPT_EXISTING", "TERMINAL", "Counts", "Daemon", "Log", "ReadyQueue", "StopFlag"]


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if os.path.isdir(path) else None


def _rename_no_replace(old: str, new: str) -> None:
    """Rename ``old`` to ``new``; FileExistsError if ``new`` exists (a hard link does not replace;
    where links are not supported, a check, then a rename)."""
    try:
        os.link(old, new)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:
        if os.path.lexists(new):
            raise FileExistsError(new) from None
        os.rename(old, new)
        return
    os.unlink(old)


class StopFlag:
    """A stop request that a signal handler may set: plain attributes, no lock, no I/O."""

    def __init__(self):
        self._set = False
        self.signum: int | None = None

    def set(self, signum: int | None = None) -> None:
        if signum is not None and self.signum is None:
            self.signum = signum
        self._set = True

    def is_set(self) -> bool:
        return self._set


class Log:
    """One line per event on stderr (or ``stream``): ``error: PATH: reason`` for failures."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        line = shown(line)  # a newline in a file name must not split an event's line (as in `run`)
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
    which outputs to replace, and once a stop is requested, photos not yet enhanced are cancelled
    (decoding or decoded: they stay pending); the one being enhanced is finished."""

    def __init__(self, cfg: Config, enhancer, stop: StopFlag, **kwargs):
        super().__init__(cfg, enhancer, **kwargs)
        self.stop = stop
        self.cancelled: set[str] = set()

    def should_skip(self, job: Job) -> bool:
        return False

    def _check(self, path) -> None:
        if self.stop.is_set():
            self.cancelled.add(str(path))
            raise PhotoError(path, "cancelled: the daemon is stopping")

    def load(self, job: Job, *args, **kwargs):
        self._check(job.input)
        return super().load(job, *args, **kwargs)

    def correct(self, photo, *args, **kwargs):
        self._check(photo.path)
        return super().correct(photo, *args, **kwargs)


@dataclass
class _Taken:
    job: Job
    sig: Signature
    digest: str


@dataclass
class Counts:
    """This session's outcomes, from the journal (rows changed since the start): what the stop line says."""

    done: int = 0
    kept: int = 0
    failed: int = 0
    pending: int = 0

    @property
    def skipped(self) -> int:  # the old name of ``kept``
        return self.kept


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
        self.stop = StopFlag()  # stop requested: finish the photo in hand, then exit
        self.workers = cfg.jobs or default_workers()
        self.max_batch = max(8, 8 * self.workers)
        # bursts live in the journal's database file: a burst begun before a restart keeps its look
        self.bursts = SqliteBurstStore(journal.path, cfg.burst.gap_seconds)
        self.pipeline = _WatchPipeline(cfg, enhancer, self.stop, bursts=self.bursts)
        self.started_at = time.time()
        self._kick = threading.Event()  # wakes the main loop: a new candidate
        self._targets: set[str] | None = None  # --once: the paths found at start
        self._outcomes: dict[str, str] = {}  # --once: path -> done | failed | gone
        self._busy: set[str] = set()  # paths the worker has in hand
        self._plans: dict[str, tuple] = {}  # folder -> ((mtime, names version), its plan): the worker's
        self._names_version = 0  # changes whenever an output is released, adopted or renamed
        self._lock = threading.Lock()
        self._observer = None
        self._worker: threading.Thread | None = None

    @property
    def stopping(self) -> StopFlag:
        return self.stop

    @property
    def counts(self) -> Counts:
        return Counts(**self.journal.session_counts(self.started_at))

    def _facts(self, phase: str, path: str, sig: Signature | None, **more) -> Facts:
        with self._lock:
            busy = path in self._busy
        return Facts(phase, self.journal.get(path), sig, path=path, busy=busy,
                     overwrite=self.cfg.output.overwrite, **more)

    # ---- arrivals and departures (observer threads, main thread) --------------------------------

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
            prefix = path.rstrip(os.sep) + os.sep
            self.tracker.forget_under(path)
            self.journal.release_under(path)  # rows being processed are released with their result
            self._names_version += 1
            with self._lock:
                gone = [p for p in (self._targets or ()) if p.startswith(prefix) and p not in self._busy]
            for p in gone:
                self._resolve(p, "gone")
            return
        if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            return
        self._carry_out(path, decide(self._facts("departed", path, None)), None)

    def consider(self, path: str) -> None:
        """A candidate photo (an event or a scan): track it until complete, unless the journal has this version."""
        if path in self.tracker:
            self.tracker.touch(path)  # one more write to a file already waiting: cheap
            return
        sig = signature(path)
        facts = self._facts("seen", path, sig)
        self._carry_out(path, decide(facts), sig, entry=facts.entry)

    def rescan(self, found: list[str] | None = None) -> None:
        """Consider every candidate in the folder (start-up, and a safety net for missed events)."""
        for p in self.scope.walk() if found is None else found:
            self.consider(p)

    def _ready(self, path: str, sig: Signature | None) -> None:
        """Its quiet period is over (``sig`` None: it vanished meanwhile)."""
        self._carry_out(path, decide(self._facts("ready", path, sig)), sig)

    def _carry_out(self, path: str, a: Action, sig: Signature | None, entry=None) -> None:
        """The actions of the seen, ready and departed phases."""
        if a.kind == "wait":
            if self.tracker.touch(path, sig) and entry is None:
                self.journal.add_pending(path, *sig)
            self._kick.set()
        elif a.kind == "queue":
            self.ready.put(path)
        elif a.kind == "skip":
            self._resolve(path, a.state)
        elif a.kind == "forget":
            self._forget(path)
        elif a.kind != "hold":
            raise AssertionError(f"unexpected action {a.kind} for {path}")

    def _forget(self, path: str) -> None:
        self.tracker.forget(path)
        self.journal.release(path)
        self._names_version += 1
        self._resolve(path, "gone")

    # ---- outcomes ------------------------------------------------------------------------------

    def _resolve(self, path: str, state: str | None) -> None:
        if self._targets is not None and path in self._targets:
            with self._lock:
                self._outcomes[path] = state or "gone"
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
            with self._lock:
                self._busy.update(paths)
            try:
                self._process(paths)
            except Exception as e:  # a bug here must not silently stop the daemon, nor strand a path
                for p in paths:
                    entry = self.journal.get(p)
                    if entry is not None and entry.state in ("processing", "pending"):
                        self._fail(p, None, None, f"unexpected error: {type(e).__name__}: {e}")
            finally:
                with self._lock:
                    self._busy.difference_update(paths)
                self._kick.set()

    def _process(self, paths: list[str]) -> None:
        plans: dict[str, tuple[dict, dict]] = {}
        taken: list[_Taken] = []
        for path in paths:
            if self.stop.is_set():
                break  # the rest stay pending in the journal, for the next start
            try:
                item = self._take(path, plans)
            except Exception as e:  # recorded, never stranded out of the tracker and the queue
                self._fail(path, None, None, f"unexpected error: {type(e).__name__}: {e}")
                continue
            if item is not None:
                taken.append(item)
        if not taken:
            return
        try:
            self.journal.start((str(t.job.input), *t.sig, t.digest, str(t.job.output)) for t in taken)
        except Exception as e:  # the journal cannot be written: nothing is processed; try again later
            self.log.error(self.journal.path, f"cannot record the photos taken up: {type(e).__name__}: {e}")
            for t in taken:
                self.tracker.touch(str(t.job.input))
            return
        by_input = {str(t.job.input): t for t in taken}

        def on_result(r: Result) -> None:
            self._record(r, by_input[r.input])

        run_batch([t.job for t in taken], self.pipeline, workers=self.workers, on_result=on_result)

    def _take(self, path: str, plans: dict) -> _Taken | None:
        """Gather the facts ``decide`` asks for, one at a time; returns the job to run, if any."""
        sig = signature(path)
        facts = self._facts("taken", path, sig)
        own = facts.entry.output if facts.entry is not None else None
        facts = replace(facts, own_output_exists=bool(own) and os.path.lexists(own))
        while True:
            a = decide(facts)
            if a.kind == "hash":
                try:
                    digest = file_hash(path)
                except OSError as e:
                    if signature(path) is None:
                        facts = replace(facts, sig=None)
                        continue
                    self._fail(path, sig, None, f"cannot read file ({e.strerror or e})")
                    return None
                facts = replace(facts, digest=digest, taken_sig=facts.sig, sig=signature(path))
            elif a.kind == "plan":
                facts = replace(facts, **self._output_facts(path, plans))
            elif a.kind == "release":
                self.journal.release_output(path)
                self._names_version += 1
                self.log.info(f"new content: {path}: the output of the earlier one stays, {a.output}")
                plans.pop(os.path.dirname(path), None)  # its name is taken now: plan again
                facts = replace(facts, entry=self.journal.get(path), own_output_exists=False)
            else:
                break
        sig, digest = facts.sig, facts.digest
        if a.kind == "process":
            job = plans[os.path.dirname(path)][0][path]
            return _Taken(job, sig, digest)
        if a.kind == "wait":  # changed while hashed: not complete after all
            self.tracker.touch(path)
            self._kick.set()
        elif a.kind == "forget":
            self._forget(path)
        elif a.kind == "skip":
            self._resolve(path, a.state)
        elif a.kind == "record":
            self._record_decision(path, a, sig, digest)
        else:
            raise AssertionError(f"unexpected action {a.kind} for {path}")
        return None

    def _record_decision(self, path: str, a: Action, sig: Signature, digest: str) -> None:
        if a.same_content:
            self.journal.same_content(path, *sig)  # touched, or copied again: same bytes, same outcome
            self._resolve(path, a.state)
        elif a.state == "failed":
            self._fail(path, sig, digest, a.reason)
        elif a.reason == ADOPTED:
            self.journal.adopt(path, *sig, digest, a.output, a.reason)
            self._names_version += 1
            self.log.info(f"kept: {path} -> {a.output} ({ADOPTED})")
            self._resolve(path, "done")
        else:
            self.journal.finish(path, a.state, size=sig[0], mtime_ns=sig[1], digest=digest, output=a.output,
                                reason=a.reason)
            self.log.info(f"skipped: {path}: {a.reason}")
            self._resolve(path, a.state)

    def _output_facts(self, path: str, plans: dict) -> dict:
        """The output facts for ``path``: its name (discover's, as `run` would give it), whether it
        exists, whose it is, and an earlier output of the natural name (for a photo moved back)."""
        folder = os.path.dirname(path)
        if folder not in plans or path not in plans[folder][0]:
            plans[folder] = self._folder_plan(folder, path)
        jobs, natural = plans[folder]
        job = jobs.get(path)
        if job is None:
            return {"plan_error": "not planned (a duplicate of another input)"}
        if isinstance(job, PhotoError):
            return {"plan_error": job.reason}
        out = str(job.output)
        facts = {"planned": out, "output_exists": os.path.lexists(out), "owner": self.journal.owner(out, prefer=path)}
        first = natural.get(path)
        if first is not None and first != out and os.path.lexists(first):
            earlier = self.journal.released(first)
            if earlier is not None:
                facts.update(earlier=first, earlier_hash=earlier[1])
        return facts

    def _folder_plan(self, folder: str, path: str) -> tuple[dict, dict]:
        """The folder's plan, made again only when the folder or the reserved names changed (or it
        lacks ``path``: a coarse folder mtime, as on FAT or a share, can hide an arrival): after a
        burst has landed, its batches share one plan instead of listing the folder once each."""
        try:
            key = (os.stat(folder).st_mtime_ns, self._names_version)  # before planning: a change meanwhile shows
        except OSError:
            key = None
        hit = self._plans.get(folder)
        if key is not None and hit is not None and hit[0] == key and path in hit[1][0]:
            return hit[1]
        made = self._plan_folder(folder)
        self._plans[folder] = (key, made)
        return made

    def _plan_folder(self, folder: str) -> tuple[dict, dict]:
        """Plan ``folder`` as `backlitfix run` would, with the outputs of photos that left it kept
        out of reach; move our outputs whose names changed with an arrival (a.jpg -> a_jpg.tif once
        a.png is there too, with --format tiff): names are run's, whatever the arrival order."""
        rel = os.path.relpath(folder, self.in_dir)
        out_dir = self.out_dir if rel == os.curdir else self.out_dir / rel
        opts = dict(recursive=False, output_dir=out_dir, suffix=self.cfg.output.suffix, fmt=self.cfg.output.format)

        def mapping(p) -> dict:
            m: dict = {str(j.input): j for j in p.jobs}
            m.update({str(e.path): e for e in p.errors if str(e.path) not in m})
            return m

        try:
            first = mapping(plan([Path(folder)], **opts))
            reserved = self.journal.reserved(str(out_dir), set(first))
            jobs = mapping(plan([Path(folder)], **opts, reserved=reserved)) if reserved else first
        except ValueError as e:
            raise PhotoError(folder, str(e)) from None
        natural = {p: str(j.output) for p, j in first.items() if isinstance(j, Job)}
        for entry in self.journal.in_folder(folder):
            job = jobs.get(entry.path)
            if not isinstance(job, Job):
                continue
            new = str(job.output)
            facts = Facts("sibling", entry, signature(entry.path), path=entry.path, planned=new,
                          output_exists=os.path.lexists(new),
                          own_output_exists=bool(entry.output) and os.path.lexists(entry.output))
            if decide(facts).kind == "rename":
                self._rename_output(entry, new)
        return jobs, natural

    def _rename_output(self, entry, new: str) -> None:
        """Move ``entry``'s output (and the sidecar copied with it) to ``new``, never over a file."""
        old = entry.output
        try:
            _rename_no_replace(old, new)
        except OSError as e:
            self.log.warning(f"{old}: cannot rename to {os.path.basename(new)} ({e.strerror or e}); kept")
            return
        if find_sidecars(Path(entry.path)):
            xmp_old, xmp_new = os.path.splitext(old)[0] + ".xmp", os.path.splitext(new)[0] + ".xmp"
            try:
                _rename_no_replace(xmp_old, xmp_new)
            except OSError:
                pass  # the sidecar copy stays under the old name; the photo itself is what counts
        self.journal.moved_output(entry.path, new)
        self._names_version += 1
        self.log.info(f"renamed: {old} -> {new} (a photo with the same name arrived)")

    def _record(self, r: Result, t: _Taken) -> None:
        """One result from run_batch. Must not raise: run_batch would report the photo again."""
        path = r.input
        try:
            status = "cancelled" if path in self.pipeline.cancelled else r.status
            facts = Facts("result", None, signature(path), path=path, taken_sig=t.sig, result=status,
                          reason=r.reason, planned=r.output)
            a = decide(facts)
            strength, group = self.pipeline.applied.pop(path, (None, None))
            if a.kind == "record" and a.state == "done":
                self.journal.finish(path, "done", output=r.output, seconds=round(r.seconds, 4))
                how = "" if strength is None else f", strength {strength:.2f}" + (f", burst {group}" if group else "")
                self.log.info(f"done: {path} -> {r.output} ({r.seconds:.2f} s{how})")
                for w in r.warnings:
                    self.log.warning(w)
                self._resolve(path, "done")
                if a.release:  # it left while it was processed: its output is released
                    self._forget(path)
            elif a.kind == "record":
                self._fail(path, None, None, a.reason, seconds=round(r.seconds, 4))
            elif a.kind == "retry":
                self.journal.finish(path, "pending")
                if not self.stop.is_set():
                    self.tracker.touch(path, facts.sig)
                    self._kick.set()
            elif a.kind == "forget":
                self._forget(path)
            else:
                raise AssertionError(f"unexpected action {a.kind} for {path}")
        except Exception as e:  # the journal could not record it; the photo itself is what it is
            if r.status == "done":
                self.log.error(path, f"written to {r.output}, but the journal could not record it "
                                     f"({type(e).__name__}: {e}); it is processed again at the next start")
                self._resolve(path, "done")
            else:
                self.log.error(path, f"{r.reason} (and the journal could not record it: {type(e).__name__}: {e})")
                self._resolve(path, "failed")

    def _fail(self, path: str, sig: Signature | None, digest: str | None, reason: str,
              seconds: float | None = None) -> None:
        size, mtime = sig if sig else (None, None)
        try:
            self.journal.finish(path, "failed", size=size, mtime_ns=mtime, digest=digest, reason=reason,
                                seconds=seconds)
        except Exception as e:
            reason = f"{reason} (and the journal could not record it: {type(e).__name__}: {e})"
        self.log.error(path, reason)
        self._resolve(path, "failed")

    # ---- running -------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        """Finish the photo in hand, then return from :meth:`run`. Safe in a signal handler: it
        only sets a flag (the main loop looks at it at least every 0.2 s)."""
        self.stop.set(signum)

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
        self.started_at = time.time()
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
            while not self.stop.is_set():
                if not self.once and time.monotonic() >= next_check:
                    folder_id = self._check_folder(folder_id)
                    next_check = time.monotonic() + 1.0
                for path, sig in self.tracker.pop_ready():
                    self._ready(path, sig)
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
                self._kick.wait(max(0.005, min(timeout, 0.2)))  # 0.2: how soon a stop flag is seen
                self._kick.clear()
        finally:
            if self.stop.signum is not None:
                self.log.note(f"{signal.Signals(self.stop.signum).name}: finishing the photo in hand, then stopping")
            self.stop.set()
            self.ready.close()
            if self._observer is not None:
                self._observer.stop()
                self._observer.join()
            self._worker.join()  # the photo in hand is finished, the rest cancelled (pending)
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

    def once_outcomes(self) -> dict[str, str]:
        with self._lock:
            return dict(self._outcomes)
