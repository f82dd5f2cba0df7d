"""A RAW's XMP sidecar (ratings, keywords, captions from Lightroom, darktable, exiftool, ...):
found beside the input, copied beside the output."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from ..photo import Photo, PhotoError
from .atomic import atomic_write_bytes
from .metadata import xmp_upright


def find_sidecars(path: Path) -> tuple[Path, ...]:
    """`IMG.xmp` (Adobe's convention) or else `IMG.dng.xmp` (darktable's), in any letter case."""
    names = _listing(str(path.parent), _mtime(path.parent))
    for candidate in (path.stem + ".xmp", path.name + ".xmp"):
        found = names.get(candidate.lower())
        if found:
            return (path.parent / found,)
    return ()


def _mtime(folder: Path) -> int:
    try:
        return folder.stat().st_mtime_ns
    except OSError:
        return 0


@lru_cache(maxsize=16)
def _listing(folder: str, mtime_ns: int) -> dict[str, str]:
    """Lower-case name -> name. Cached per folder version (mtime): a folder of 10 000 RAWs is
    listed once, not once per photo."""
    try:
        return {name.lower(): name for name in os.listdir(folder)}
    except OSError:
        return {}


def copy_sidecars(photo: Photo, dest_image: Path) -> list[Path]:
    """Copy each sidecar to `<dest stem>.xmp`, atomically, with its Orientation set to 1 (the output
    is upright). A sidecar that would replace an input file is not copied (a warning says so).
    Returns the files written."""
    written = []
    for sidecar in photo.meta.sidecars:
        target = Path(dest_image).with_suffix(".xmp")
        if any(_same_file(target, p) for p in (sidecar, photo.path)):
            photo.meta.warnings.append(f"{photo.path.name}: sidecar {sidecar.name} not copied: {target} is an input")
            continue
        try:
            data = sidecar.read_bytes()
        except OSError as e:
            raise PhotoError(photo.path, f"cannot read sidecar {sidecar.name}: {e.strerror}") from None
        atomic_write_bytes(target, xmp_upright(data))
        written.append(target)
    return written


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
