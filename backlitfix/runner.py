"""A batch: decode, enhance and encode overlap so the slowest stage sets the pace, not their sum.

Decoding and encoding run in a thread pool (Pillow and rawpy release the GIL); the single
model instance runs on the calling thread. Photos in flight (decoding, waiting for the model, being
written) are bounded twice: at most ``workers`` wait for the model and ``workers`` to be written,
and their decoded pixels together stay within ``memory_budget`` bytes (estimated from the file
header before decoding, corrected once decoded). One photo is always admitted, however large, so a
photo over the budget still runs, alone. Memory does not grow with the batch or with -j.

A photo's reported time is its own: decode + enhance + encode, without time spent queued.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .discover import Job
from .pipeline import Pipeline, Result, failure


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def few_malloc_arenas() -> None:
    """glibc gives each new thread its own malloc arena, and memory freed in one goes back to the
    system late: -j 12 held ~260 MB more than -j 1 for the same photos (24 MP, measured). Two arenas
    keep that down; the I/O threads spend their time in Pillow and libjpeg, not in malloc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX; musl and others lack mallopt: AttributeError
    except (OSError, AttributeError):
        pass


class Interrupted(Exception):
    """Ctrl-C during a batch: the photos in hand were finished or abandoned cleanly; ``results``
    holds a Result for each finished job and None for the rest."""

    def __init__(self, results: list[Result | None]):
        super().__init__("interrupted")
        self.results = results


def estimate_bytes(job: Job) -> int | None:
    """Decoded size of ``job``'s photo from its header (no pixels decoded), or None when unknown."""
    if job.source_format == "raw":
        return None  # the embedded preview's size says nothing about the sensor's
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(job.input) as im:
                w, h = im.size
                deep = "16" in im.mode or im.mode in ("I", "F")
    except Exception:  # noqa: BLE001 - decode will report it properly
        return None
    return w * h * 3 * (2 if deep else 1)


def run_batch(
    jobs: Sequence[Job],
    pipeline: Pipeline,
    *,
    workers: int = 0,
    dry_run: bool = False,
    on_result: Callable[[Result], None] | None = None,
    memory_budget: int = 0,
) -> list[Result]:
    """Process ``jobs`` in order; returns one Result per job, in the same order. ``memory_budget``:
    bytes of decoded pixels in flight (0 = no limit). Ctrl-C raises :class:`Interrupted`."""
    workers = workers or default_workers()
    results: list[Result | None] = [None] * len(jobs)

    def finish(i: int, r: Result) -> None:
        results[i] = r
        if on_result:
            on_result(r)

    todo = []
    for i, job in enumerate(jobs):
        if pipeline.should_skip(job):
            finish(i, Result(str(job.input), str(job.output), "skipped", "output exists"))
        elif dry_run:
            finish(i, Result(str(job.input), str(job.output), "planned"))
        else:
            todo.append(i)
    if not todo:
        return results  # type: ignore[return-value]

    own: dict[int, float] = {}  # seconds each photo spent in its own stages

    def timed(i: int, stage: Callable):
        t = time.perf_counter()
        try:
            return stage()
        finally:
            own[i] = own.get(i, 0.0) + time.perf_counter() - t

    def load(i: int):
        return timed(i, lambda: pipeline.load(jobs[i]))

    def save(i: int, photo) -> Result:
        timed(i, lambda: pipeline.save(photo, jobs[i]))
        return Result(str(jobs[i].input), str(jobs[i].output), "done", warnings=list(photo.meta.warnings),
                      seconds=own.get(i, 0.0))

    def failed(i: int, e: Exception) -> Result:
        return failure(jobs[i], e, own.get(i, 0.0))

    held: dict[int, int] = {}  # job -> bytes reserved for its pixels while in flight
    typical = 0  # the last decoded size: the guess for a photo whose header says nothing

    def release(i: int) -> None:
        held.pop(i, None)

    few_malloc_arenas()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backlitfix-io")
    decoding: deque[tuple[int, Future]] = deque()
    writing: deque[tuple[int, Future]] = deque()
    nxt = 0  # index into todo of the next photo to start

    def top_up():
        nonlocal nxt
        while len(decoding) < workers and nxt < len(todo):
            i = todo[nxt]
            need = estimate_bytes(jobs[i]) if memory_budget else 0
            need = typical if need is None else need
            if memory_budget and held and sum(held.values()) + need > memory_budget:
                return  # wait until a photo in flight is written
            held[i] = need
            decoding.append((i, pool.submit(load, i)))
            nxt += 1

    def drain(limit: int):
        while writing and (len(writing) > limit or (memory_budget and sum(held.values()) > memory_budget)):
            i, fut = writing.popleft()
            try:
                r = fut.result()
            except Exception as e:
                r = failed(i, e)
            finish(i, r)  # outside the try: an error in on_result is the caller's, not a failed photo
            release(i)

    try:
        top_up()
        while decoding or nxt < len(todo):
            if not decoding:  # the budget held the next photo back: let the writes finish
                drain(0)
                top_up()
                continue
            i, fut = decoding.popleft()
            top_up()
            try:
                photo = fut.result()
                if memory_budget:
                    held[i] = photo.pixels.nbytes
                    typical = photo.pixels.nbytes
                photo = timed(i, lambda: pipeline.correct(photo))  # noqa: B023 - called at once
            except Exception as e:
                finish(i, failed(i, e))
                release(i)
                top_up()
                continue
            writing.append((i, pool.submit(save, i, photo)))
            del photo
            drain(workers)
            top_up()
        drain(0)
    except KeyboardInterrupt:
        # Photos not started are dropped; those being decoded or written finish (writes are atomic,
        # so there is no half-written output either way), and what completed is reported.
        pool.shutdown(wait=True, cancel_futures=True)
        for i, fut in writing:
            if not fut.cancelled():
                e = fut.exception()
                finish(i, failed(i, e) if e else fut.result())
        raise Interrupted(results) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]
