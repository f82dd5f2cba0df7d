"""The watch daemon's parts without a model: stale temporary files, the service files,
stopping from a signal handler, one-line logs."""
from __future__ import annotations

import plistlib
from pathlib import Path

from backlitfix.io.atomic import is_temp_of, remove_stale_temps
from backlitfix.watch.journal import (
    Journal,
)

REPO = Path(__file__).resolve().parents[2]


# ---- temporary files after a kill -----------------------------------------------------------------------


def test_only_our_stale_temporary_files_are_removed(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    ours = [out / ".a.jpg.x1y2z3_4.tmp", out / "sub" / ".b.tif.abcdefgh.tmp", out / ".a.xmp.k2k2k2k2.tmp"]
    theirs = [out / ".other.jpg.abcdefgh.tmp", out / "a.jpg.tmp", out / ".a.jpg.tmp", out / "notes.tmp"]
    for p in ours + theirs:
        p.write_bytes(b"partial")
    assert is_temp_of(ours[0].name, "a.jpg") and not is_temp_of(theirs[0].name, "a.jpg")
    removed = remove_stale_temps([out / "a.jpg", out / "sub" / "b.tif"])
    assert sorted(map(str, removed)) == sorted(map(str, ours))
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)


# ---- running it as a service -----------------------------------------------------------------------------


def test_service_files_are_valid_and_run_watch():
    docs = REPO / "docs" / "service"
    unit = (docs / "backlitfix-watch.service").read_text()
    assert "ExecStart=" in unit and " watch " in unit and "KillSignal=SIGTERM" in unit
    plist = plistlib.loads((docs / "com.backlitfix.watch.plist").read_bytes())
    assert plist["ProgramArguments"][1] == "watch" and plist["KeepAlive"]
    readme = (docs / "README.md").read_text()
    assert "backlitfix-watch.service" in readme and "com.backlitfix.watch.plist" in readme


# ---- stopping from a signal handler ------------------------------------------------------------------------


class _Forbidden:
    """A lock that must not be taken: a signal handler that waits for a lock the code it interrupted
    holds never returns."""

    def __enter__(self):
        raise AssertionError("a lock was taken")

    def __exit__(self, *exc):
        return False

    acquire = __enter__


def test_request_stop_takes_no_lock_so_a_signal_handler_can_call_it(tmp_path):
    from backlitfix.config import load_config
    from backlitfix.watch.daemon import Daemon

    journal = Journal(tmp_path / "j.sqlite")
    d = Daemon(load_config(user_config=None), tmp_path, tmp_path / "out", journal, None)
    d.log._lock = d._lock = journal._lock = _Forbidden()
    d.ready._cond = d._kick = _Forbidden()
    d.request_stop(15)
    assert d.stop.is_set() and d.stop.signum == 15
    d.request_stop(2)  # a second one keeps the first's name for the log
    assert d.stop.signum == 15


def test_log_lines_stay_one_line_with_hostile_names():
    import io

    from backlitfix.watch.daemon import Log

    buf = io.StringIO()
    log = Log(stream=buf)
    log.error("/in/a\nerror: forged.jpg", "truncated\nfile")
    log.info("done: /in/b\r.jpg -> /out/b\r.jpg")
    lines = buf.getvalue().splitlines()
    assert lines == ["error: /in/a\\nerror: forged.jpg: truncated file", "done: /in/b\\r.jpg -> /out/b\\r.jpg"]
