"""`watch` with auto strength: the first frame of a burst fixes its strength, the journal's database keeps
it, and a frame arriving after a restart of the daemon gets the same look (real process, real SQLite)."""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from conftest import CLI, shared_path
from test_pipeline_auto_strength import burst, exif

pytestmark = pytest.mark.slow  # the real daemon in a subprocess, across a restart

DONE = re.compile(r"done: (?P<path>.+) -> .+ \([\d.]+ s, strength (?P<s>[\d.]+)(?:, burst (?P<g>\S+))?\)")


def once(in_dir: Path, out: Path, tmp_path: Path) -> dict[str, tuple[float, str | None]]:
    """`watch --once` with the embedded model; {file name: (strength, burst)} from its log."""
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    r = subprocess.run([*CLI, "watch", str(in_dir), "--once", "-o", str(out), "--quiet-seconds", "0.2", "-j", "2"],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    found = {}
    for line in r.stderr.splitlines():
        m = DONE.search(line)
        if m:
            found[Path(m["path"]).name] = (float(m["s"]), m["g"])
    return found


@pytest.fixture
def frames(tmp_path) -> list[Path]:
    src = tmp_path / "frames"
    src.mkdir()
    return burst(shared_path("data", "backlit", "ovd0312_4.jpg"), src, "a", 10, n=2)


def late_frame(folder: Path) -> Path:
    """A well-lit photo carrying the burst's camera and a capture time 0.6 s after its first frame."""
    p = folder / "late.jpg"
    Image.open(shared_path("data", "welllit", "kodim01.jpg")).save(p, exif=exif("2026:06:01 10:00:10", 60))
    return p


def test_a_burst_keeps_its_strength_across_a_restart(tmp_path, frames):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    shutil.copy(frames[0], inbox)
    first = once(inbox, out, tmp_path)  # session 1: the first frame decides
    s1, g1 = first["a_0.jpg"]
    assert s1 > 0.95 and g1

    shutil.copy(frames[1], inbox)  # session 2, after a restart: later frames of the same burst
    late_frame(inbox)
    second = once(inbox, out, tmp_path)
    assert set(second) == {"a_1.jpg", "late.jpg"}  # the first frame is not redone
    assert second["a_1.jpg"] == (s1, g1) and second["late.jpg"] == (s1, g1)
    with sqlite3.connect(out / ".backlitfix-watch.sqlite") as db:
        frames_in = db.execute("SELECT count(*) FROM burst_frames WHERE burst = ?", (g1,)).fetchone()[0]
    assert frames_in == 3

    # control: on its own (a fresh journal), the well-lit frame would have been left alone
    alone_in = tmp_path / "alone"
    alone_in.mkdir()
    late_frame(alone_in)
    s, g = once(alone_in, tmp_path / "alone_out", tmp_path)["late.jpg"]
    assert s < 0.05 and g != g1
