"""Atomic file replacement: a reader sees the old file or the complete new one, never a partial one.

The data goes to a hidden temporary file in the destination folder (same filesystem, so the final
rename is atomic), is fsync'ed, then renamed over the destination. On any failure the temporary
file is removed and the destination is untouched.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..photo import PhotoError


def _umask() -> int:
    # The only portable way to read the umask is to set it; done once, at import
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(dest: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace `dest` with what `write(f)` writes to the binary file `f` (seekable; its
    path is ``f.name``). Failures raise PhotoError(dest, "cannot write output: ...")."""
    dest = Path(dest)
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as e:
        raise PhotoError(dest, f"cannot write output: {_describe(e)}") from None
    os.close(fd)  # reopened by name, so that f.name is the path (for writers that want one)
    try:
        with open(tmp, "r+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _chmod(tmp, dest)
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, PhotoError) or not isinstance(e, Exception):
            raise
        raise PhotoError(dest, f"cannot write output: {_describe(e)}") from e
    _fsync_dir(dest.parent)


def atomic_write_bytes(dest: Path | str, data: bytes) -> None:
    atomic_write(dest, lambda f: f.write(data))


def _chmod(tmp: str, dest: Path) -> None:
    """mkstemp makes the file private (0600): give it the existing file's mode, or the mode a
    normal new file would get. Some filesystems (FAT, SMB) ignore or refuse this; that is fine."""
    try:
        mode = dest.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno is not None:
        return f"[Errno {e.errno}] {e.strerror}"  # without the temporary file's name
    return f"{type(e).__name__}: {e}"


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable. Not possible on every platform/filesystem; best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
