"""Bursts: capture info from real EXIF, grouping by camera and time, and the stores (real SQLite)."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import piexif
import pytest
from PIL import Image

from backlitfix.bursts import Capture, MemoryBurstStore, SqliteBurstStore, capture_of, capture_time
from backlitfix.io import decode


def exif_bytes(make="Canon", model="EOS R6", serial=None, when="2026:05:01 18:30:05", subsec="25", offset=None):
    zeroth, exif = {}, {}
    if make:
        zeroth[piexif.ImageIFD.Make] = make.encode()
    if model:
        zeroth[piexif.ImageIFD.Model] = model.encode()
    if when:
        exif[piexif.ExifIFD.DateTimeOriginal] = when.encode()
    if subsec:
        exif[piexif.ExifIFD.SubSecTimeOriginal] = subsec.encode()
    if offset:
        exif[piexif.ExifIFD.OffsetTimeOriginal] = offset.encode()
    if serial:
        exif[piexif.ExifIFD.BodySerialNumber] = serial.encode()
    return piexif.dump({"0th": zeroth, "Exif": exif})


def jpeg(path, **kw):
    Image.fromarray(np.full((16, 24, 3), 90, np.uint8)).save(path, exif=exif_bytes(**kw))
    return path


def test_capture_from_a_decoded_jpeg(tmp_path):
    meta = decode(jpeg(tmp_path / "a.jpg", serial="0123", offset="+02:00"), max_pixels=10**6).meta
    c = capture_of(meta.exif)
    assert c.camera == "Canon|EOS R6|0123" and c.burstable
    # 18:30:05.25 at UTC+2 is 16:30:05.25 UTC
    assert c.time == pytest.approx(capture_time("2026:05:01 16:30:05") + 0.25)


def test_capture_time_parts():
    base = capture_time("2026:05:01 18:30:05")
    assert capture_time("2026:05:01 18:30:05", "3") - base == pytest.approx(0.3)
    assert capture_time("2026:05:01 18:30:05", "030") - base == pytest.approx(0.03)
    assert capture_time("2026:05:01 18:30:05", "", "-05:30") - base == pytest.approx(5.5 * 3600)
    assert capture_time("    :  :     :  :  ") is None  # an unset camera clock
    assert capture_time("") is None


def test_frames_without_time_or_camera_stand_alone(tmp_path):
    no_time = capture_of(decode(jpeg(tmp_path / "a.jpg", when=None, subsec=None), max_pixels=10**6).meta.exif)
    no_camera = capture_of(decode(jpeg(tmp_path / "b.jpg", make=None, model=None), max_pixels=10**6).meta.exif)
    assert not no_time.burstable and not no_camera.burstable
    assert capture_of(None) == Capture() and capture_of(b"garbage, not TIFF") == Capture()
    store = MemoryBurstStore(2.0)
    store.assign(no_time, "a", 0.0)
    assert store.lookup(no_time) is None and store.lookup(no_camera) is None


def stores(tmp_path):
    return [MemoryBurstStore(2.0), SqliteBurstStore(tmp_path / "journal.sqlite", 2.0)]


@pytest.mark.parametrize("kind", [0, 1], ids=["memory", "sqlite"])
def test_grouping_by_camera_and_gap(tmp_path, kind):
    store = stores(tmp_path)[kind]
    cam = "Canon|EOS R6|"
    first = store.assign(Capture(cam, 100.0), "f0", 0.8)
    # a chain: each frame within the gap of the previous one, though the last is 3.6 s after the first
    for i, t in enumerate((101.2, 102.4, 103.6), 1):
        b = store.lookup(Capture(cam, t))
        assert b == first
        store.assign(Capture(cam, t), f"f{i}", 0.1, b)  # a later frame keeps the burst's strength
    assert store.lookup(Capture(cam, 103.6 + 1.9)) == first
    assert store.lookup(Capture(cam, 103.6 + 2.5)) is None  # past the gap: a new shot
    assert store.lookup(Capture("Nikon|Z6|", 100.0)) is None  # another camera at the same moment
    assert store.lookup(Capture(cam + "serial2", 100.0)) is None  # another body of the same model
    second = store.assign(Capture(cam, 200.0), "g0", 0.0)
    assert second.id != first.id and second.strength == 0.0 and store.lookup(Capture(cam, 199.0)) == second


def test_sqlite_store_survives_a_restart(tmp_path):
    db = tmp_path / "journal.sqlite"
    s1 = SqliteBurstStore(db, 2.0)
    burst = s1.assign(Capture("Sony|A7 IV|", 50.0), "/in/a.jpg", 0.734)
    s1.close()
    s2 = SqliteBurstStore(db, 2.0)  # a new daemon process opens the same journal file
    assert s2.lookup(Capture("Sony|A7 IV|", 50.3)) == burst
    assert burst.strength == 0.734
    # re-recording a frame (the daemon redoes a photo) changes nothing
    assert s2.assign(Capture("Sony|A7 IV|", 50.0), "/in/a.jpg", 0.2) == burst
    rows = sqlite3.connect(db).execute("SELECT id, strength FROM bursts").fetchall()
    assert rows == [(burst.id, 0.734)]


def test_sqlite_store_shares_an_open_connection(tmp_path):
    con = sqlite3.connect(tmp_path / "journal.sqlite", check_same_thread=False)
    con.execute("CREATE TABLE photos (path TEXT)")  # the journal's own table stays untouched
    store = SqliteBurstStore(con, 2.0)
    b = store.assign(Capture("Fuji|X-T5|", 10.0), "x", 1.0)
    errors = []

    def other_thread():
        try:
            assert store.lookup(Capture("Fuji|X-T5|", 11.0)) == b
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert not errors
    store.close()  # not ours: stays open
    assert con.execute("SELECT count(*) FROM burst_frames").fetchone() == (1,)
    assert con.execute("SELECT count(*) FROM photos").fetchone() == (0,)
