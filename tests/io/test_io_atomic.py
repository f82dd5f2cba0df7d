"""Atomic writes: a failure never leaves a temporary file or a partial or damaged destination."""
import errno
import importlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from backlitfix.io import atomic_write, atomic_write_bytes, encode
from backlitfix.photo import Metadata, Photo, PhotoError

atomic_module = importlib.import_module("backlitfix.io.atomic")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_success_replaces_through_a_hidden_temp_file_in_the_same_folder(tmp_path):
    dest = tmp_path / "out.jpg"
    seen = []

    def write(f):
        seen.append(Path(f.name))
        f.write(b"new")

    atomic_write(dest, write)
    assert dest.read_bytes() == b"new"
    tmp = seen[0]
    assert tmp.parent == tmp_path and tmp.name.startswith(".out.jpg.") and tmp.name.endswith(".tmp")
    assert not tmp.exists() and leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_replacing_keeps_the_existing_permissions(tmp_path):
    dest = tmp_path / "out.jpg"
    dest.write_bytes(b"old")
    dest.chmod(0o640)
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and stat.S_IMODE(dest.stat().st_mode) == 0o640


def test_failing_writer_leaves_nothing(tmp_path):
    def write(f):
        f.write(b"partial")
        raise ValueError("encoder broke")

    with pytest.raises(PhotoError) as err:
        atomic_write(tmp_path / "out.jpg", write)
    assert err.value.reason == "cannot write output: ValueError: encoder broke"
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_existing_destination_intact(tmp_path):
    dest = tmp_path / "out.jpg"
    dest.write_bytes(b"the previous, complete output")

    def write(f):
        f.write(b"half of the new")
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(PhotoError, match=r"cannot write output: \[Errno 5\] Input/output error"):
        atomic_write(dest, write)
    assert dest.read_bytes() == b"the previous, complete output"
    assert leftovers(tmp_path) == []


def test_disk_full_during_fsync(tmp_path, monkeypatch):
    # No tiny filesystem is available to fill for real: make fsync report ENOSPC, as it does when
    # delayed allocation finds no room
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_module.os, "fsync", full)
    dest = tmp_path / "out.png"
    photo = Photo(Path("in.png"), np.zeros((8, 8, 3), np.uint8), Metadata())
    with pytest.raises(PhotoError) as err:
        encode(photo, dest, fmt="png", software="t")
    assert err.value.reason == "cannot write output: [Errno 28] No space left on device"
    assert not dest.exists() and leftovers(tmp_path) == []


def test_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
    else:  # root writes anywhere: make creating the temporary file fail as a read-only mount would
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(atomic_module.tempfile, "mkstemp", read_only)
    try:
        denied = r"cannot write output: \[Errno (13|30)\] (Permission denied|Read-only file system)"
        with pytest.raises(PhotoError, match=denied):
            atomic_write_bytes(folder / "out.tif", b"data")
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def test_missing_folder(tmp_path):
    with pytest.raises(PhotoError, match=r"cannot write output: \[Errno 2\]"):
        atomic_write_bytes(tmp_path / "nowhere" / "out.jpg", b"data")


def test_interrupt_cleans_up_and_propagates(tmp_path):
    def write(f):
        f.write(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "out.jpg", write)
    assert list(tmp_path.iterdir()) == []


# -- long names and temporary files a killed run left ---------------------------------------------


@pytest.mark.parametrize("length", [242, 250, 255])
def test_names_up_to_the_filesystem_limit_are_written(tmp_path, length):
    """The temporary name adds 14 bytes: a 242-255 byte name used to fail with 'File name too long'."""
    name = ("é" * 200).encode()[: length - 4].decode("utf-8", "ignore")
    name = name + "x" * (length - 4 - len(name.encode())) + ".jpg"
    assert len(name.encode()) == length
    seen = []

    def write(f):
        seen.append(Path(f.name).name)
        f.write(b"data")

    atomic_write(tmp_path / name, write)
    assert (tmp_path / name).read_bytes() == b"data" and leftovers(tmp_path) == []
    tmp = seen[0]
    assert len(os.fsencode(tmp)) <= 255 and tmp.startswith(".éé") and tmp.endswith(".tmp")
    assert atomic_module.is_temp_of(tmp, name)  # a later run recognises it as ours


def _killed_writer(dest: Path, ready) -> None:
    """A child process that starts an atomic write and is killed in the middle of it."""
    def write(f):
        f.write(b"half")
        f.flush()
        ready.set()
        import time
        time.sleep(60)

    atomic_write(dest, write)


def test_stale_temporary_files_are_removed_but_live_ones_and_strangers_stay(tmp_path):
    import multiprocessing as mp
    import signal

    ctx = mp.get_context("fork")
    dead_dest, live_dest = tmp_path / "a.jpg", tmp_path / ("b" * 250 + ".tif")
    for dest in (dead_dest, live_dest):
        ready = ctx.Event()
        p = ctx.Process(target=_killed_writer, args=(dest, ready))
        p.start()
        assert ready.wait(20)
        if dest is dead_dest:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        else:
            live = p
    try:
        stranger = tmp_path / ".a.jpg.abcdefgh.part"  # not our pattern
        other = tmp_path / ".c.jpg.abcdefgh.tmp"  # our pattern, but not a file this run writes
        for f in (stranger, other):
            f.write_bytes(b"theirs")
        temps = leftovers(tmp_path)
        assert len(temps) == 3  # the killed one, the live one, `other`
        removed = atomic_module.remove_stale_temps([dead_dest, live_dest])
        assert [p.name for p in removed] == [t for t in temps if t.startswith(".a.jpg.")]
        assert sorted(leftovers(tmp_path)) == sorted(t for t in temps if not t.startswith(".a.jpg."))
        assert stranger.exists() and other.exists()
    finally:
        live.kill()
        live.join()
    # once its writer is gone, the long-named one is stale too
    assert [p.name for p in atomic_module.remove_stale_temps([live_dest])] != []
    assert leftovers(tmp_path) == [other.name]
