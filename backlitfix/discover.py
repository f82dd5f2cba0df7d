"""Turn command-line arguments (files and folders) into a plan: which photo is written where.

Nothing here opens an image or writes a file; paths are plain :class:`~pathlib.Path` objects (no
shell), so names with spaces, quotes, ``$(...)``, newlines, a leading ``-`` or non-ASCII are ordinary.

Guarantees of :func:`plan`:

* every input appears at most once (compared by file identity: symlinks, ``..``, hard links and
  case-insensitive spellings of one file are one input);
* no two jobs share an output path (compared case-insensitively, so plans are the same on every
  filesystem); colliding names get the source extension (``a_nef.tif``), then a counter;
* no output path is an input path: a job whose output would be an input is an error entry instead.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from .constants import OUTPUT_DIRNAME as DEFAULT_OUTPUT_DIRNAME
from .constants import OUTPUT_FORMAT_CHOICES as OUTPUT_FORMATS
from .io.formats import IMAGE_EXTENSIONS, RAW_EXTENSIONS, SIDECAR_EXTENSIONS, format_of, output_extension
from .io.walk import Policy, find_images
from .photo import PhotoError

__all__ = [
    "DEFAULT_OUTPUT_DIRNAME",
    "IMAGE_EXTENSIONS",
    "OUTPUT_FORMATS",
    "RAW_EXTENSIONS",
    "SIDECAR_EXTENSIONS",
    "Job",
    "Plan",
    "output_format",
    "plan",
    "source_format",
]

_AUTO_OUTPUT = {"jpeg": "jpeg", "png": "png", "tiff": "tiff", "webp": "webp", "heif": "heif", "raw": "tiff"}


source_format = format_of  # the format implied by the file name's extension, or None


def output_format(src_format: str, fmt: str) -> str:
    """Output format for a source format given ``fmt`` (auto | jpeg | png | tiff)."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    return _AUTO_OUTPUT[src_format] if fmt == "auto" else fmt


@dataclass(frozen=True)
class Job:
    input: Path  # as given / as found (not resolved), for messages
    output: Path
    format: str  # output format: jpeg | png | tiff | webp | heif
    source_format: str  # jpeg | png | tiff | webp | heif | raw


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    errors: list[PhotoError] = field(default_factory=list)
    ignored: int = 0  # non-image files, sidecars and our own outputs found in folders and skipped
    duplicates: int = 0  # inputs reached more than once and processed once
    ignored_files: list[tuple[Path, str]] = field(default_factory=list)  # (path, why) of each ignored file
    # Sub-folders of a folder argument that a walk without -r did not enter: named in the summary, so that a
    # shoot split into card folders is not half-processed without a word.
    subfolders: list[Path] = field(default_factory=list)

    def ignore(self, path: Path, why: str) -> None:
        self.ignored += 1
        self.ignored_files.append((path, why))


# --------------------------------------------------------------------------------------------


def _identity(path: Path) -> tuple | None:
    """(device, inode) of an existing file, following symlinks; None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


def _key(path: Path, cache: dict | None = None) -> str:
    """Case-insensitive spelling of a path (which need not exist) with its folder's symlinks resolved.

    The last component is not resolved (identity via ``os.stat`` covers a symlinked file); ``cache``
    memoises resolved folders within one plan.
    """
    parent, name = os.path.split(os.path.abspath(path))
    if cache is None:
        real = os.path.realpath(parent)
    else:
        real = cache.get(parent)
        if real is None:
            real = cache[parent] = os.path.realpath(parent)
    return os.path.normcase(os.path.join(real, name)).casefold()


@dataclass
class _Candidate:
    src: Path
    out_dir: Path
    src_format: str
    out_format: str
    order: int
    tag: str = ""  # disambiguator added to the stem

    def output(self, suffix: str) -> Path:
        ext = output_extension(self.out_format, self.src)
        return self.out_dir / f"{self.src.stem}{self.tag}{suffix}{ext}"


def _walk(root: Path, recursive: bool, skip_dirs: set, plan_: Plan, found: list[Path]) -> None:
    """Append the images under ``root`` to ``found`` (sorted by name, folders after files); other
    files are counted as ignored, unreadable folders and broken links to images are errors."""
    skip = (lambda path, entry: _skip_dir(path, entry, skip_dirs)) if skip_dirs else None
    found.extend(find_images(root, Policy(recursive=recursive, skip_folder=skip), on_ignored=plan_.ignore,
                             on_error=lambda path, why: plan_.errors.append(PhotoError(path, why)),
                             on_not_entered=plan_.subfolders.append))


def _skip_dir(path: str, entry: os.DirEntry, skip_dirs: set) -> bool:
    """The -o folder is never searched for inputs (folders named 'backlitfix' the walker skips itself)."""
    try:
        st = entry.stat(follow_symlinks=False)
        ident = (st.st_dev, st.st_ino)
    except OSError:
        ident = None
    return ident in skip_dirs or _key(Path(path)) in skip_dirs


def _without_own_outputs(candidates: list[_Candidate], output_dir: Path, suffix: str, plan_: Plan) -> list[_Candidate]:
    """Drop (as ignored) candidates in ``output_dir`` or below that an earlier run wrote; only those
    files' headers are read."""
    from .provenance import made_by_us

    out = os.path.realpath(output_dir)
    inside = [os.path.realpath(c.src.parent) for c in candidates]
    stems: dict[str, set[str]] = {}
    for c, folder in zip(candidates, inside):
        stems.setdefault(folder, set()).add(c.src.stem)
    kept = []
    for c, folder in zip(candidates, inside):
        why = None
        if folder == out or folder.startswith(out.rstrip(os.sep) + os.sep):
            why = made_by_us(c.src, suffix, stems[folder] - {c.src.stem})
        if why:
            plan_.ignore(c.src, f"an output of backlitfix: {why}")
        else:
            kept.append(c)
    return kept


def plan(
    paths: list[Path],
    *,
    recursive: bool,
    output_dir: Path | None,
    suffix: str,
    fmt: str,
    reserved: Collection[str | Path] = (),
) -> Plan:
    """Discover the input photos under ``paths`` and decide each one's output path and format.

    Folder arguments list their images (sorted; sub-folders only with ``recursive``; dot-names and
    output folders skipped). File arguments are taken as given, but must have an image extension.
    Outputs go to ``output_dir`` if given (keeping sub-folders of folder arguments), else to a
    ``backlitfix`` folder beside the inputs: ``shoot/`` -> ``shoot/backlitfix/``, ``shoot/x.jpg``
    -> ``shoot/backlitfix/x.jpg``. Problems with single paths become :attr:`Plan.errors`.

    ``reserved``: outputs of earlier photos that are no longer inputs (the watch journal keeps
    them); a name among them is treated as taken and gets a counter, like any collision. `run` and
    `watch` both name outputs here, so a folder gets the same names whichever command (and
    whichever arrival order) made them.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    if any(sep in suffix for sep in ("/", "\\", "\0")):
        raise ValueError(f"output suffix {suffix!r} must not contain a path separator")
    result = Plan()
    cache: dict[str, str] = {}

    def key(path: Path) -> str:
        return _key(path, cache)

    skip_dirs: set = set()
    if output_dir is not None:
        output_dir = Path(output_dir)
        skip_dirs.add(key(output_dir))
        ident = _identity(output_dir)
        if ident:
            skip_dirs.add(ident)

    # 1. Discover (src, out_dir) pairs, de-duplicated by file identity; first occurrence wins.
    candidates: list[_Candidate] = []
    seen: set = set()

    def add(src: Path, out_dir: Path) -> None:
        ident = _identity(src) or key(src)
        if ident in seen:
            result.duplicates += 1
            return
        seen.add(ident)
        fmt_in = source_format(src)
        assert fmt_in is not None
        candidates.append(_Candidate(src, out_dir, fmt_in, output_format(fmt_in, fmt), len(candidates)))

    for arg in paths:
        arg = Path(arg)
        try:
            st = os.stat(arg)
        except FileNotFoundError:
            reason = "broken symbolic link" if os.path.islink(arg) else "no such file or folder"
            result.errors.append(PhotoError(arg, reason))
            continue
        except (OSError, ValueError) as exc:
            result.errors.append(PhotoError(arg, f"cannot access: {getattr(exc, 'strerror', None) or exc}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            found: list[Path] = []
            _walk(arg, recursive, skip_dirs, result, found)
            base = output_dir if output_dir is not None else arg / DEFAULT_OUTPUT_DIRNAME
            for src in found:
                add(src, base / src.parent.relative_to(arg))
        elif stat.S_ISREG(st.st_mode):
            ext = arg.suffix.lower()
            if ext not in IMAGE_EXTENSIONS:
                why = "not a supported image type"
                if ext in SIDECAR_EXTENSIONS:
                    why += " (a sidecar file; give the photo it belongs to)"
                result.errors.append(PhotoError(arg, why))
                continue
            add(arg, output_dir if output_dir is not None else arg.parent / DEFAULT_OUTPUT_DIRNAME)
        else:
            result.errors.append(PhotoError(arg, "not a regular file or folder"))

    # 1b. Our own outputs sitting in the output folder (-o = the input folder) are never inputs.
    if output_dir is not None:
        kept = _without_own_outputs(candidates, output_dir, suffix, result)
        dropped = {id(c) for c in candidates} - {id(c) for c in kept}
        seen -= {_identity(c.src) or key(c.src) for c in candidates if id(c) in dropped}  # outputs, not inputs
        candidates = kept

    # 2. Inputs are never outputs.
    input_ids = {c for c in seen if isinstance(c, tuple)}
    input_keys = {key(c.src) for c in candidates}
    input_keys |= {key(Path(os.path.realpath(c.src))) for c in candidates if os.path.islink(c.src)}

    def is_input(path: Path) -> bool:
        if key(path) in input_keys:
            return True
        ident = _identity(path)  # exists: same file under another spelling (case, hard link)?
        return ident is not None and ident in input_ids

    ok: list[_Candidate] = []
    errors_at: dict[int, PhotoError] = {}
    for c in candidates:
        out = c.output(suffix)
        if is_input(out):
            out_id = _identity(out)
            same = (out_id is not None and out_id == _identity(c.src)) or key(out) == key(c.src)
            why = "the output would overwrite the input itself" if same else f"the output {out} is an input file"
            errors_at[c.order] = PhotoError(c.src, f"{why}; choose another output folder or a suffix")
        else:
            ok.append(c)

    # 3. No two outputs share a path: tag colliding names with the source extension, then counters.
    groups: dict[str, list[_Candidate]] = {}
    for c in ok:
        groups.setdefault(key(c.output(suffix)), []).append(c)
    for group in groups.values():
        exts = {c.src.suffix.casefold() for c in group}
        if len(group) > 1 and len(exts) > 1:
            for c in group:
                c.tag = "_" + c.src.suffix[1:].lower()
    taken: set[str] = {key(Path(r)) for r in reserved}
    renamed: list[_Candidate] = []
    for c in ok:  # untagged outputs keep their natural names first
        k = key(c.output(suffix))
        if c.tag or k in taken:
            renamed.append(c)
        else:
            taken.add(k)
    for c in sorted(renamed, key=lambda c: (str(c.src), c.order)):
        base_tag, n = c.tag, 1
        while key(c.output(suffix)) in taken or is_input(c.output(suffix)):
            n += 1
            c.tag = f"{base_tag}_{n}"
        taken.add(key(c.output(suffix)))

    for c in candidates:  # keep discovery order for jobs and their errors
        if c.order in errors_at:
            result.errors.append(errors_at[c.order])
        else:
            result.jobs.append(Job(c.src, c.output(suffix), c.out_format, c.src_format))
    return result
