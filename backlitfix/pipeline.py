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
from .config import Config
from .discover import Job
from .enhance import Enhancer, pick_device, pick_dtype, precision_warning
from .io import copy_sidecars, decode, encode
from .model.checkpoint import ModelInfo, load_model
from .model.registry import resolve
from .photo import Photo, PhotoError

SOFTWARE = f"backlitfix {__version__}"


@dataclass
class Result:
    input: str
    output: str | None
    status: str  # done | failed | skipped | planned
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def load_enhancer(cfg: Config) -> tuple[Enhancer, ModelInfo]:
    """Resolve and load the configured model once; raises CheckpointError / ValueError for the CLI to report."""
    entry = resolve(cfg.model)
    net, info = load_model(entry.path)
    info.name = entry.name
    device = pick_device(cfg.device)
    enhancer = Enhancer(
        net,
        mode=cfg.mode,
        device=device,
        dtype=pick_dtype(cfg.precision, device),
        working_megapixels=cfg.fast.working_megapixels,
        guide_radius=cfg.fast.guide_radius,
        guide_eps=cfg.fast.guide_eps,
        tile=cfg.exact.tile,
    )
    if cfg.mode == "fast" and (w := precision_warning(cfg.precision, device)):  # exact mode is always fp32
        click.echo(f"backlitfix: warning: {w}", err=True)
    return enhancer, info


class Pipeline:
    def __init__(self, cfg: Config, enhancer: Enhancer | None, report=None):
        self.cfg = cfg
        self.enhancer = enhancer
        self.report = report  # optional backlitfix.eval.report.Report: takes thumbnails along the way

    def should_skip(self, job: Job) -> bool:
        return not self.cfg.output.overwrite and os.path.lexists(job.output)

    def load(self, job: Job) -> Photo:
        photo = decode(job.input, max_pixels=self.cfg.input.max_pixels)
        if self.report is not None:
            self.report.before(photo)  # now: `correct` overwrites these pixels in place
        return photo

    def correct(self, photo: Photo) -> Photo:
        on_L = self.report.illumination(photo) if self.report is not None else None
        try:
            photo.pixels = self.enhancer.enhance(photo.pixels, self.cfg.strength, out=_writable(photo), on_L=on_L,
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
        return Result(str(job.input), str(job.output), "done", warnings=list(photo.meta.warnings),
                      seconds=time.perf_counter() - t0)


def failure(job: Job, e: Exception, seconds: float = 0.0) -> Result:
    """A failed photo as a Result. Even a bug or a resource error with one photo must not end a batch."""
    reason = e.reason if isinstance(e, PhotoError) else f"unexpected error: {type(e).__name__}: {e}"
    return Result(str(job.input), str(job.output), "failed", reason, seconds=seconds)


def _writable(photo: Photo):
    """Correct in place when the decoded array is ours to change: saves a full-size copy."""
    return photo.pixels if photo.pixels.flags.writeable else None
