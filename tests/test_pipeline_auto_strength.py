"""`run` with auto strength: bursts share one strength and one group, --json and --dry-run say what is
applied, and a burst's strength survives a restart through the SQLite store (as the watch daemon uses it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

from backlitfix.bursts import SqliteBurstStore
from backlitfix.config import load_config
from backlitfix.discover import plan
from backlitfix.pipeline import Pipeline, load_enhancer
from conftest import cli, shared_path

pytestmark = pytest.mark.slow  # whole auto-strength runs over real bursts


def exif(when: str, subsec: int, make="Canon", model="EOS R6") -> bytes:
    return piexif.dump({"0th": {piexif.ImageIFD.Make: make.encode(), piexif.ImageIFD.Model: model.encode()},
                        "Exif": {piexif.ExifIFD.DateTimeOriginal: when.encode(),
                                 piexif.ExifIFD.SubSecTimeOriginal: f"{subsec:02d}".encode()}})


def burst(src: Path, folder: Path, stem: str, start_second: int, n: int = 3) -> list[Path]:
    """n frames 0.3 s apart: shifted crops of ``src`` with +-1/3 EV exposure jitter, EXIF with capture times."""
    img = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32)
    H, W = img.shape[:2]
    ch, cw = int(H * 0.85), int(W * 0.85)
    out = []
    for i in range(n):
        dy, dx = (i * 7) % (H - ch), (i * 11) % (W - cw)
        ev = (-1 / 3, 0.0, 1 / 3)[i % 3]
        frame = np.clip(img[dy:dy + ch, dx:dx + cw] * 2.0 ** ev, 0, 255).round().astype(np.uint8)
        centis = i * 30
        when = f"2026:06:01 10:00:{start_second + centis // 100:02d}"
        p = folder / f"{stem}_{i}.jpg"
        Image.fromarray(frame).save(p, quality=92, exif=exif(when, centis % 100))
        out.append(p)
    return out


@pytest.fixture
def shoot(tmp_path) -> Path:
    d = tmp_path / "shoot"
    d.mkdir()
    burst(shared_path("data", "backlit", "ovd0312_4.jpg"), d, "a_backlit", 10)
    burst(shared_path("data", "welllit", "kodim01.jpg"), d, "b_welllit", 30)  # 20 s later: another burst
    Image.open(shared_path("data", "backlit", "ovd0312_21.jpg")).save(d / "c_single.jpg")  # no EXIF time
    return d


def test_burst_frames_share_one_strength_and_group(shoot):
    r = cli("run", "--json", str(shoot))
    assert r.exit_code == 0, r.output
    files = {Path(f["input"]).name: f for f in json.loads(r.stdout)["files"]}
    a = [files[f"a_backlit_{i}.jpg"] for i in range(3)]
    b = [files[f"b_welllit_{i}.jpg"] for i in range(3)]
    assert len({f["strength"] for f in a}) == 1 and len({f["group"] for f in a}) == 1 and a[0]["group"]
    assert len({f["strength"] for f in b}) == 1 and len({f["group"] for f in b}) == 1 and b[0]["group"]
    assert a[0]["group"] != b[0]["group"]
    assert a[0]["strength"] > 0.95 and b[0]["strength"] < 0.05  # backlit: corrected; well lit: left alone
    assert files["c_single.jpg"]["group"] is None and 0.0 <= files["c_single.jpg"]["strength"] <= 1.0
    # left alone means left alone: the well-lit frames come out as they went in (up to JPEG re-encoding)
    src = np.asarray(Image.open(shoot / "b_welllit_0.jpg"), dtype=np.float32)
    got = np.asarray(Image.open(shoot / "backlitfix" / "b_welllit_0.jpg"), dtype=np.float32)
    assert abs(got.mean() - src.mean()) < 0.5


def test_without_bursts_each_frame_decides_alone(shoot, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("burst:\n  gap_seconds: 0\n")
    r = cli("run", "--json", "--config", str(cfg), "--dry-run", str(shoot))
    files = json.loads(r.stdout)["files"]
    assert all(f["group"] is None for f in files)
    # the frames differ (crops, exposure): deciding alone they need not agree to the last digit
    assert all(f["strength"] is not None for f in files)


def test_auto_bias_leans_the_whole_run(shoot, tmp_path):
    """config auto.bias: -3 leaves even the backlit burst alone, +3 corrects even the well-lit one; bursts
    still share one strength."""
    got = {}
    for bias in (-3, 3):
        cfg = tmp_path / f"bias{bias}.yaml"
        cfg.write_text(f"auto:\n  bias: {bias}\n")
        r = cli("run", "--json", "--config", str(cfg), "--dry-run", str(shoot))
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["auto_bias"] == bias  # the run says how it leaned
        got[bias] = {Path(f["input"]).name: f["strength"] for f in json.loads(r.stdout)["files"]}
    assert {got[-3][f"a_backlit_{i}.jpg"] for i in range(3)} == {0.0}
    assert {got[3][f"b_welllit_{i}.jpg"] for i in range(3)} == {1.0}
    assert got[-3]["c_single.jpg"] <= got[3]["c_single.jpg"]
    r = cli("run", "--auto-bias", "-3", "--dry-run", str(shoot))
    assert r.stderr.splitlines()[-1].endswith("; auto: 7 left alone, 0 in between, 0 full; 2 bursts (--auto-bias -3)")
    # the flag is the same setting, and overrides the config file
    r = cli("run", "--json", "--config", str(tmp_path / "bias3.yaml"), "--auto-bias", "-3", "--dry-run", str(shoot))
    assert {Path(f["input"]).name: f["strength"] for f in json.loads(r.stdout)["files"]} == got[-3]
    r = cli("run", "--auto-bias", "9", "--dry-run", str(shoot))
    assert r.exit_code == 2 and "auto.bias" in r.output and len(r.output.strip().splitlines()) == 1


def test_fixed_strength_in_json(shoot):
    assert "auto:" not in cli("run", "--strength", "0.5", "--dry-run", str(shoot)).stderr  # nothing to sort
    r = cli("run", "--json", "--strength", "0.5", "--dry-run", str(shoot))
    files = json.loads(r.stdout)["files"]
    assert json.loads(r.stdout)["strength"] == 0.5 and "auto_bias" not in json.loads(r.stdout)
    assert {f["strength"] for f in files} == {0.5} and {f["group"] for f in files} == {None}


def test_dry_run_prints_strengths_and_writes_nothing(shoot):
    before = sorted(p.name for p in shoot.iterdir())
    r = cli("run", "--dry-run", str(shoot))
    assert r.exit_code == 0, r.output
    lines = {Path(line.split(" -> ")[0]).name: line for line in r.stdout.splitlines() if " -> " in line}
    assert len(lines) == 7
    assert "strength 1.00" in lines["a_backlit_0.jpg"] and "strength 0.00" in lines["b_welllit_2.jpg"]
    group = lines["a_backlit_1.jpg"].split("burst ")[1]
    assert all(f"burst {group}" in lines[f"a_backlit_{i}.jpg"] for i in range(3))
    assert "burst" not in lines["c_single.jpg"]
    assert sorted(p.name for p in shoot.iterdir()) == before  # nothing written
    # the last line says how auto sorted the shoot (c_single, mildly backlit, gets part of the correction)
    last = r.stderr.splitlines()[-1]
    assert last.startswith("backlitfix: 7 planned in ")
    assert last.endswith("; auto: 3 left alone, 1 in between, 3 full; 2 bursts")


def test_burst_strength_survives_a_restart(shoot, tmp_path):
    """As the watch daemon will: Pipeline.process with a SqliteBurstStore in the journal's database file.
    The later frame is a well-lit photo carrying the burst's EXIF: on its own it would be left alone; as a
    frame of the burst begun before the restart, it gets the burst's full strength."""
    cfg = load_config(overrides={"output.dir": str(tmp_path / "out")}, user_config=None)
    enhancer, _ = load_enhancer(cfg)
    db = tmp_path / "journal.sqlite"
    jobs = {j.input.name: j for j in plan([shoot], recursive=False, output_dir=cfg.output.dir, suffix="",
                                         fmt="auto").jobs}
    store = SqliteBurstStore(db, cfg.burst.gap_seconds)
    first = Pipeline(cfg, enhancer, bursts=store).process(jobs["a_backlit_0.jpg"])
    store.close()
    assert first.status == "done" and first.strength > 0.95 and first.group

    late = shoot / "late.jpg"  # kodim01, shot 0.6 s after a_backlit_0 by the same camera
    Image.open(shared_path("data", "welllit", "kodim01.jpg")).save(late, exif=exif("2026:06:01 10:00:10", 60))
    job = plan([late], recursive=False, output_dir=cfg.output.dir, suffix="", fmt="auto").jobs[0]
    alone = Pipeline(cfg, enhancer).process(job)  # control: without the burst, it is left alone
    assert alone.strength < 0.05 and alone.group != first.group
    job.output.unlink()
    restarted = Pipeline(cfg, enhancer, bursts=SqliteBurstStore(db, cfg.burst.gap_seconds)).process(job)
    assert (restarted.strength, restarted.group) == (first.strength, first.group)


def test_auto_dry_run_reports_a_photo_it_cannot_read(shoot):
    (shoot / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 20)
    r = cli("run", "--dry-run", "--json", str(shoot))
    assert r.exit_code == 1  # as the real run would: auto strength decodes every photo
    files = {Path(f["input"]).name: f for f in json.loads(r.stdout)["files"]}
    assert files["corrupt.jpg"]["status"] == "failed" and files["corrupt.jpg"]["reason"]
    assert files["a_backlit_0.jpg"]["status"] == "planned" and files["a_backlit_0.jpg"]["strength"] > 0.95
    assert "corrupt.jpg" in r.stderr and not (shoot / "backlitfix").exists()
