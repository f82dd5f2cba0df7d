"""Atomic file replacement: a reader sees the old file or the complete new one, never a partial one.

The data goes to a hidden temporary file in the destination folder (same filesystem, so the final
rename is atomic), is fsync'ed, then renamed over the destination. On any failure the temporary
file is removed and the destination is untouched.

Temporary names are ``.<name>.<8 random chars>.tmp`` (:func:`temp_prefix` shortens the middle of a
long ``<name>`` so the whole stays within the filesystem's name limit). The writer holds an
``flock`` on its temporary file until the rename, so a later run can tell a file left by a killed
process (lock free) from one being written right now (lock held): :func:`remove_stale_temps`.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from ..photo import PhotoError

try:
    import fcntl
except ImportError:  # Windows: no flock; temporary files are then never judged stale
    fcntl = None  # type: ignore[assignment]

_RANDOM = 8  # tempfile's random part: 8 characters of [a-z0-9_]
_TAIL = re.compile(rf"[a-z0-9_]{{{_RANDOM}}}\.tmp")
_OVERHEAD = len(b"..") + _RANDOM + len(b".tmp")  # what a temporary name adds to the destination's


def _umask() -> int:
    # The only portable way to read the umask is to set it; done once, at import
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def name_max(folder: Path | str) -> int:
    """The longest file name (in bytes) the filesystem of ``folder`` takes; 255 when it cannot say."""
    try:
        n = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255
    return n if n and n > 0 else 255


def temp_prefix(name: str, limit: int = 255) -> str:
    """``.<name>.``, with the middle of ``name`` replaced by ``~`` when ``.<name>.<random>.tmp`` would
    be longer than ``limit`` bytes. The start and the end (the extension) stay, so it is recognisable;
    deterministic, so a later run can recompute it from the destination's name."""
    raw = os.fsencode(name)
    room = limit - _OVERHEAD
    if len(raw) <= room:
        return f".{name}."
    keep = room - 1  # one byte for the "~"
    head, tail = raw[: keep - keep // 3], raw[len(raw) - keep // 3:]
    # cut at UTF-8 character boundaries so the shortened name stays readable text
    while head and (head[-1] & 0xC0) == 0x80:
        head = head[:-1]
    if head and head[-1] >= 0xC0:
        head = head[:-1]
    while tail and (tail[0] & 0xC0) == 0x80:
        tail = tail[1:]
    return f".{os.fsdecode(head)}~{os.fsdecode(tail)}."


def _make_temp(dest: Path) -> tuple[int, str]:
    """Create and lock the temporary file. The lock is taken right after creation; if a cleaner removed
    the file in between (it saw no lock), the name no longer leads to our file: make another."""
    prefix = temp_prefix(dest.name, name_max(dest.parent))
    while True:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=prefix, suffix=".tmp")
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except OSError:
            pass
        os.close(fd)


def atomic_write(dest: Path | str, write: Callable[[BinaryIO], None]) -> None:
    """Create or replace `dest` with what `write(f)` writes to the binary file `f` (seekable; its
    path is ``f.name``). Failures raise PhotoError(dest, "cannot write output: ...")."""
    dest = Path(dest)
    try:
        fd, tmp = _make_temp(dest)
    except OSError as e:
        raise PhotoError(dest, f"cannot write output: {_describe(e)}") from None
    try:  # `fd` stays open, holding the lock; the data goes through a second descriptor opened by name
        with open(tmp, "r+b") as f:  # (so that f.name is the path, for writers that want one)
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
    finally:
        os.close(fd)
    _fsync_dir(dest.parent)


def atomic_write_bytes(dest: Path | str, data: bytes) -> None:
    atomic_write(dest, lambda f: f.write(data))


def is_temp_of(temp_name: str, dest_name: str, limit: int = 255) -> bool:
    """Whether ``temp_name`` is a name :func:`atomic_write` gives a temporary file for ``dest_name``."""
    prefix = temp_prefix(dest_name, limit)
    return temp_name.startswith(prefix) and _TAIL.fullmatch(temp_name, len(prefix)) is not None


def remove_stale_temps(destinations: Iterable[Path | str]) -> list[Path]:
    """Delete temporary files that a killed writer left for any of ``destinations`` (or their ``.xmp``
    sidecars): names of our pattern for that destination whose lock nobody holds. A temporary file
    being written right now is locked and stays; other programs' files never match. Returns the
    removed paths. Cheap: one listing per folder."""
    if fcntl is None:
        return []
    wanted: dict[Path, set[str]] = {}
    for d in destinations:
        d = Path(d)
        wanted.setdefault(d.parent, set()).update((d.name, d.with_suffix(".xmp").name))
    removed = []
    for folder, names in wanted.items():
        try:
            temps = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
        except OSError:
            continue
        if not temps:
            continue
        limit = name_max(folder)
        for t in temps:
            if any(is_temp_of(t, n, limit) for n in names) and _remove_if_unlocked(folder / t):
                removed.append(folder / t)
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: BlockingIOError
        if not os.path.samestat(os.fstat(fd), os.lstat(path)):
            return False
        os.unlink(path)  # under our lock: the writer cannot have taken it meanwhile
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


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
