"""Correct photos into named destination files: Lightroom's edit in place and digiKam's $OUTPUT.

`backlitfix run` never writes over an input, and picks its own output names. These hosts want
exactly one named file: Lightroom hands over its own copy (``-Edit.tif``, or a fresh export) and
watches that very file; digiKam waits for ``$OUTPUT``. Each photo therefore goes through the
usual pipeline into a temporary folder beside its destination (same filesystem), then
``os.replace`` moves it into place: the destination is the old file or the finished one, never
a partial one, and it is untouched when the photo fails.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..io.formats import format_of

_WRITABLE = {"jpeg", "png", "tiff"}  # formats whose extension decides the output format


def output_format(src: Path, dest: Path) -> str:
    """The --format that makes ``src``'s result fit ``dest``'s extension; ValueError if none does."""
    want, have = format_of(dest), format_of(src)
    if want in _WRITABLE:
        return want
    if want is not None and want == have and want != "raw":
        return "auto"  # WebP -> WebP, HEIC -> HEIC
    raise ValueError(f"cannot write {dest.name}: backlitfix writes JPEG, PNG or TIFF "
                     "(or the input's own WebP/HEIC)")


def correct_into(pairs: list[tuple[Path, Path]], cfg, *, say: Callable[[str], None],
                 done: Callable[[Path], None]) -> int:
    """Correct each (input, destination) pair with ``cfg`` (a loaded Config); returns the failures.

    ``say`` gets one line per problem (``error: FILE: reason``); ``done`` each destination written.
    """
    from ..discover import plan
    from ..pipeline import Pipeline, load_enhancer
    from ..runner import run_batch

    failed = 0
    groups: dict[tuple[Path, str], list[tuple[Path, Path]]] = {}
    for src, dest in pairs:
        try:
            fmt = output_format(src, dest)
        except ValueError as e:
            say(f"error: {src}: {e}")
            failed += 1
            continue
        groups.setdefault((dest.parent, fmt), []).append((src, dest))

    enhancer = None
    for (folder, fmt), items in groups.items():
        try:
            tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".backlitfix-"))
        except OSError as e:
            for src, _ in items:
                say(f"error: {src}: cannot write in {folder}: {e.strerror or e}")
            failed += len(items)
            continue
        try:
            work = plan([src for src, _ in items], recursive=False, output_dir=tmp, suffix="", fmt=fmt)
            for e in work.errors:
                say(f"error: {e}")
            failed += len(work.errors)
            if work.jobs and enhancer is None:
                enhancer = load_enhancer(cfg)[0]  # once, for every group
            dest_of = {str(src): dest for src, dest in items}
            for r in run_batch(work.jobs, Pipeline(cfg, enhancer), workers=cfg.jobs):
                if r.status != "done":
                    say(f"error: {r.input}: {r.reason}")
                    failed += 1
                    continue
                for w in r.warnings:
                    say(f"warning: {w}")
                dest = dest_of[r.input]
                os.replace(r.output, dest)
                done(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # also a RAW's copied .xmp sidecar
    return failed


def parse_bqm_paths(data: bytes) -> tuple[Path, Path]:
    """The two paths digiKam's User Shell Script hands over through a quoted here-document.

    digiKam replaces ``$INPUT`` and ``$OUTPUT`` by the path inside double quotes, nothing escaped,
    so stdin is ``"IN"\\n"OUT"\\n``. A name may itself hold newlines and quotes: the split is taken
    at a ``"\\n"`` boundary whose left side is an existing file.
    """
    text = os.fsdecode(data)
    text = text.removesuffix("\n")
    if len(text) < 5 or not (text.startswith('"') and text.endswith('"')):
        raise ValueError('expected two lines on stdin, "INPUT" and "OUTPUT" (digiKam\'s $INPUT and $OUTPUT)')
    inner = text[1:-1]
    splits = [i for i in range(len(inner)) if inner.startswith('"\n"', i)]
    if not splits:
        raise ValueError('expected two lines on stdin, "INPUT" and "OUTPUT" (digiKam\'s $INPUT and $OUTPUT)')
    for i in splits:
        if os.path.isfile(inner[:i]):
            return Path(inner[:i]), Path(inner[i + 3:])
    return Path(inner[:splits[0]]), Path(inner[splits[0] + 3:])  # the input is missing: run says so
