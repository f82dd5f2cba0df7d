"""A batch: decode, enhance and encode overlap so the slowest stage sets the pace, not their sum.

Decoding and encoding run in a thread pool (Pillow, rawpy and tifffile release the GIL); the single
model instance runs on the calling thread. Both queues are bounded, so at most ``workers`` decoded
photos wait for the model and at most ``workers`` wait to be written: memory does not grow with the
batch.
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from .discover import Job
from .pipeline import Pipeline, Result, failure


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_batch(
    jobs: Sequence[Job],
    pipeline: Pipeline,
    *,
    workers: int = 0,
    dry_run: bool = False,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Process ``jobs`` in order; returns one Result per job, in the same order."""
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

    started: dict[int, float] = {}

    def load(i: int):
        started[i] = time.perf_counter()
        return pipeline.load(jobs[i])

    def save(i: int, photo) -> Result:
        pipeline.save(photo, jobs[i])
        return Result(str(jobs[i].input), str(jobs[i].output), "done", warnings=list(photo.meta.warnings),
                      seconds=time.perf_counter() - started[i])

    def failed(i: int, e: Exception) -> Result:
        return failure(jobs[i], e, time.perf_counter() - started.get(i, time.perf_counter()))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backlitfix-io") as pool:
        decoding: deque[tuple[int, Future]] = deque()
        writing: deque[tuple[int, Future]] = deque()
        pending = iter(todo)

        def top_up():
            while len(decoding) < workers:
                i = next(pending, None)
                if i is None:
                    return
                decoding.append((i, pool.submit(load, i)))

        def drain(limit: int):
            while len(writing) > limit:
                i, fut = writing.popleft()
                try:
                    finish(i, fut.result())
                except Exception as e:
                    finish(i, failed(i, e))

        top_up()
        while decoding:
            i, fut = decoding.popleft()
            top_up()
            try:
                photo = pipeline.correct(fut.result())
            except Exception as e:
                finish(i, failed(i, e))
                continue
            writing.append((i, pool.submit(save, i, photo)))
            del photo
            drain(workers)
        drain(0)
    return results  # type: ignore[return-value]
