"""Score a folder of results: match files by name, decode each once, collect per-image rows and means.

Results are matched to ``gt`` and ``input`` files by name without extension (``a.png`` <-> ``a.jpg``),
after removing an output ``suffix`` (``a_fixed.jpg`` <-> ``a.jpg``). A missing or ambiguous match, a
size mismatch or an unreadable file is an error for that image that names the files; the other
metrics of the image and the other images go on. Metrics that cannot run (no NIQE model, no LPIPS
backbone, no Inception weights) are left out with a note that says why.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..constants import MAX_PIXELS
from ..io import decode
from ..io.walk import Policy, find_images
from ..photo import PhotoError
from . import metrics
from .fid import FidUnavailable, Inception, frechet
from .lpips_metric import Lpips, LpipsUnavailable
from .niqe import NiqeUnavailable, load_pristine, niqe

EXPOSURE = ("crushed", "clipped", "dark30", "local_contrast")
CHANGE = ("dark30_gain", "dark30_stops")
FULL_REF = ("psnr", "ssim", "lpips")


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (no dot-files, no sidecars), sorted by name."""
    def unreadable(path: Path, why: str) -> None:  # as before the one walker: eval stops on a missing folder
        raise PhotoError(path, why)

    return list(find_images(Path(folder), Policy(recursive=False), on_error=unreadable))


def by_stem(files: list[Path]) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for f in files:
        index.setdefault(f.stem, []).append(f)
    return index


@dataclass
class Row:
    name: str
    result: Path
    gt: Path | None = None
    input: Path | None = None
    values: dict[str, float] = field(default_factory=dict)
    input_values: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    columns: list[str]
    rows: list[Row]
    mean: dict[str, float]
    fid: float | None = None
    fid_sets: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # every error line, also those of rows


class _Matcher:
    def __init__(self, folder: Path, what: str, suffix: str):
        self.folder, self.what, self.suffix = folder, what, suffix
        self.index = by_stem(list_images(folder))

    def find(self, result: Path) -> Path:
        stem = result.stem
        if self.suffix and stem.endswith(self.suffix) and stem != self.suffix:
            stem = stem[: -len(self.suffix)]
        found = self.index.get(stem, [])
        if not found:
            raise PhotoError(result, f"no {self.what} image named {stem}.* in {self.folder}")
        if len(found) > 1:
            raise PhotoError(result, f"{self.what} is ambiguous: " + ", ".join(str(p) for p in found))
        return found[0]


def _load(path: Path, max_pixels: int) -> np.ndarray:
    return decode(path, max_pixels=max_pixels).pixels


def _same_size(result: Path, a: np.ndarray, other: Path, b: np.ndarray) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise PhotoError(result, f"size {a.shape[1]}x{a.shape[0]} differs from {other} "
                                 f"({b.shape[1]}x{b.shape[0]}); images are matched by name and must be the same size")


def evaluate(
    results_dir: Path,
    *,
    gt_dir: Path | None = None,
    input_dir: Path | None = None,
    suffix: str = "",
    niqe_params: Path | None = None,
    lpips_backbone: Path | None = None,
    inception_weights: Path | None = None,
    max_pixels: int = MAX_PIXELS,  # `backlitfix eval` passes the config's input.max_pixels
    on_error: Callable[[str], None] = lambda line: None,
) -> Evaluation:
    """Every metric that can run on the images of ``results_dir``; see the module docstring."""
    notes: list[str] = []
    errors: list[str] = []

    def error(line: str) -> None:
        if line not in errors:  # an unreadable reference is met twice: as a pair and for FID
            errors.append(line)
            on_error(line)

    columns: list[str] = []
    try:
        pristine = load_pristine(niqe_params)
        columns.append("niqe")
    except NiqeUnavailable as e:
        pristine = None
        notes.append(str(e))
    columns += EXPOSURE
    gt = _Matcher(gt_dir, "ground-truth", suffix) if gt_dir is not None else None
    inp = _Matcher(input_dir, "input", suffix) if input_dir is not None else None
    lp = inception = None
    if inp:
        columns += CHANGE
    if gt:
        columns += ["psnr", "ssim"]
        try:
            lp = Lpips(lpips_backbone)
            columns.append("lpips")
        except LpipsUnavailable as e:
            notes.append(str(e))
        try:
            inception = Inception(inception_weights)
        except FidUnavailable as e:
            notes.append(str(e))
    else:
        notes.append("no full-reference metrics (PSNR, SSIM, LPIPS) and no FID: they need --gt DIR")

    rows: list[Row] = []
    fid_results: list[np.ndarray] = []
    for path in list_images(results_dir):
        row = Row(path.name, path)
        rows.append(row)

        def fail(e: Exception, row=row) -> None:
            line = f"{e.path}: {e.reason}" if isinstance(e, PhotoError) else f"{row.result}: {type(e).__name__}: {e}"
            row.errors.append(line)
            error(line)

        try:
            px = _load(path, max_pixels)
        except PhotoError as e:
            fail(e)
            continue
        if pristine is not None:
            try:
                row.values["niqe"] = niqe(px, pristine)
            except ValueError as e:  # smaller than two NIQE patches, or a flat image
                fail(PhotoError(path, f"no NIQE: {e}"))
        row.values.update(metrics.exposure(px))
        if inp:
            try:
                row.input = inp.find(path)
                before = _load(row.input, max_pixels)
                _same_size(path, px, row.input, before)
                row.input_values = metrics.exposure(before)
                row.values.update(metrics.exposure_change(before, px))
            except PhotoError as e:
                fail(e)
        if gt:
            try:
                row.gt = gt.find(path)
                ref = _load(row.gt, max_pixels)
                _same_size(path, px, row.gt, ref)
                row.values["psnr"] = metrics.psnr(px, ref)
                row.values["ssim"] = metrics.ssim(px, ref)
                if lp is not None:
                    row.values["lpips"] = lp(px, ref)
            except (PhotoError, ValueError) as e:
                fail(e)
        if inception is not None:
            fid_results.append(inception.features([px])[0])

    fid = fid_sets = None
    if inception is not None:
        refs = []
        for p in sorted(p for same in gt.index.values() for p in same):  # every reference, matched or not
            try:
                refs.append(inception.features([_load(p, max_pixels)])[0])
            except PhotoError as e:
                error(f"{e.path}: {e.reason}")
        fid_sets = (len(fid_results), len(refs))
        try:
            fid = frechet(np.array(fid_results), np.array(refs))
            if min(fid_sets) < 2048:
                notes.append(f"FID from {fid_sets[0]} results and {fid_sets[1]} references: with fewer than 2048 "
                             "images per set FID is biased upwards; compare only figures from sets of the same size")
        except ValueError as e:
            notes.append(f"no FID: {e}")
    mean = {}
    for c in columns:
        vals = [r.values[c] for r in rows if c in r.values]
        if vals:
            mean[c] = float(np.mean(vals))  # PSNR: one identical pair makes the mean inf, as it should
    return Evaluation(columns, rows, mean, fid, fid_sets, notes, errors)
