"""The one way through: decode -> enhance -> encode -> write, for one photo.

`run`, `watch` and the plugins (through the CLI) all use `Pipeline`. Each stage is a method so the
batch runner can overlap them across photos; `process` runs them in sequence for a single photo.
Every per-photo problem becomes a `Result` with a one-line reason; nothing here stops a batch.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import click

from . import __version__
from .bursts import BurstStore, Capture, MemoryBurstStore, capture_of
from .config import Config
from .discover import Job
from .enhance import Enhancer, StrengthRule
from .io import copy_sidecars, decode, encode
from .model.checkpoint import ModelInfo
from .photo import Photo, PhotoError
from .strength import auto_strength

SOFTWARE = f"backlitfix {__version__}"


@dataclass
class Result:
    input: str
    output: str | None
    status: str  # done | failed | skipped | planned
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    strength: float | None = None  # the strength applied (or, in a dry run, that would be)
    group: str | None = None  # the burst that shared its auto strength, or None

    def to_json(self) -> dict:
        return asdict(self)


def load_enhancer(cfg: Config) -> tuple[Enhancer, ModelInfo]:
    """Resolve and load the configured model once; raises CheckpointError / ValueError for the CLI to report.
    The same loading as the Python API's `backlitfix.load` (backlitfix/api.py)."""
    from .api import from_config

    enh = from_config(cfg, warn=lambda w: click.echo(f"backlitfix: warning: {w}", err=True))
    return enh._engine, enh.model_info


class Pipeline:
    def __init__(self, cfg: Config, enhancer: Enhancer | None, report=None, bursts: BurstStore | None = None):
        self.cfg = cfg
        self.enhancer = enhancer
        self.report = report  # optional backlitfix.eval.report.Report: takes thumbnails along the way
        # watch passes its journal's SqliteBurstStore, so bursts outlive a restart; a run keeps them in memory
        self.bursts = bursts if bursts is not None else MemoryBurstStore(cfg.burst.gap_seconds)
        self.applied: dict[str, tuple[float, str | None]] = {}  # input path -> (strength, burst id)

    def should_skip(self, job: Job) -> bool:
        return not self.cfg.output.overwrite and os.path.lexists(job.output)

    def load(self, job: Job) -> Photo:
        photo = decode(job.input, max_pixels=self.cfg.input.max_pixels)
        if self.report is not None:
            self.report.before(photo)  # now: `correct` overwrites these pixels in place
        return photo

    def strength_for(self, photo: Photo) -> float | StrengthRule:
        """A fixed strength, a burst's strength, or (auto, first frame) a rule the enhancer asks once it
        has the photo's illumination map. Whatever is applied is recorded in ``applied``."""
        key = str(photo.path)
        if self.cfg.strength != "auto":
            self.applied[key] = (float(self.cfg.strength), None)
            return float(self.cfg.strength)
        capture = capture_of(photo.meta.exif) if self.cfg.burst.gap_seconds > 0 else Capture()
        burst = self.bursts.lookup(capture)
        if burst is not None:  # a later frame: the burst's look, and no decision to make
            self.bursts.assign(capture, key, burst.strength, burst)
            self.applied[key] = (burst.strength, burst.id)
            return burst.strength

        def rule(small, L) -> float:
            s = round(auto_strength(small, L, self.cfg.auto.bias), 3)
            group = self.bursts.assign(capture, key, s).id if capture.burstable else None
            self.applied[key] = (s, group)
            return s

        return rule

    def annotate(self, results) -> None:
        """Give each Result the strength applied and its burst; a burst of one frame is no group."""
        frames: dict[str, int] = {}
        for _s, g in self.applied.values():
            frames[g] = frames.get(g, 0) + 1
        for r in results:
            if r is not None and r.input in self.applied and r.status in ("done", "planned"):
                r.strength, g = self.applied[r.input]
                r.group = g if g is not None and frames[g] > 1 else None

    def preview(self, job: Job) -> float:
        """--dry-run: the strength the photo would get (auto: decode + one working-resolution network pass)."""
        if self.cfg.strength != "auto":
            self.applied[str(job.input)] = (float(self.cfg.strength), None)
            return float(self.cfg.strength)
        photo = decode(job.input, max_pixels=self.cfg.input.max_pixels)
        s = self.strength_for(photo)
        if callable(s):
            s = s(*self.enhancer.working_pass(photo.pixels))  # the (small, L) the real run decides from
        return s

    def previews(self, jobs, results, on_result=None) -> None:
        """--dry-run: fill in the strength each planned photo would get; one it cannot read fails here
        as it would in the real run (``on_result`` hears of it)."""
        by_input = {str(j.input): j for j in jobs}
        for k, r in enumerate(results):
            if r is None or r.status != "planned" or r.input not in by_input:
                continue
            try:
                self.preview(by_input[r.input])
            except Exception as e:  # noqa: BLE001 - one photo's problem, as in the real run
                results[k] = failure(by_input[r.input], e)
                if on_result:
                    on_result(results[k])

    def correct(self, photo: Photo) -> Photo:
        on_L = self.report.illumination(photo) if self.report is not None else None
        try:
            strength = self.strength_for(photo)
            photo.pixels = self.enhancer.enhance(photo.pixels, strength, out=_writable(photo), on_L=on_L,
                                                 warn=lambda m: photo.meta.warnings.append(f"{photo.path.name}: {m}"))
        except (ValueError, RuntimeError) as e:  # too small, out of memory, ...
            raise PhotoError(photo.path, f"enhancement failed: {e}") from None
        return photo

    def save(self, photo: Photo, job: Job) -> None:
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PhotoError(job.input, f"cannot create output folder {job.output.parent}: {e.strerror or e}") from None
        encode(photo, job.output, fmt=job.format, quality=self.cfg.output.jpeg_quality, software=SOFTWARE)
        copy_sidecars(photo, job.output)
        if self.report is not None:
            self.report.after(photo)

    def process(self, job: Job) -> Result:
        """All stages for one photo, for callers that do not overlap them (watch, single files)."""
        t0 = time.perf_counter()
        if self.should_skip(job):
            return Result(str(job.input), str(job.output), "skipped", "output exists")
        try:
            photo = self.correct(self.load(job))
            self.save(photo, job)
        except Exception as e:  # one photo's problem, never the caller's
            return failure(job, e, time.perf_counter() - t0)
        s, group = self.applied.pop(str(job.input), (None, None))
        return Result(str(job.input), str(job.output), "done", warnings=list(photo.meta.warnings),
                      seconds=time.perf_counter() - t0, strength=s, group=group)


def failure(job: Job, e: Exception, seconds: float = 0.0) -> Result:
    """A failed photo as a Result. Even a bug or a resource error with one photo must not end a batch."""
    reason = e.reason if isinstance(e, PhotoError) else f"unexpected error: {type(e).__name__}: {e}"
    return Result(str(job.input), str(job.output), "failed", reason, seconds=seconds)


def _writable(photo: Photo):
    """Correct in place when the decoded array is ours to change: saves a full-size copy."""
    return photo.pixels if photo.pixels.flags.writeable else None
