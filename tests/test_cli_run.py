"""`backlitfix run` end to end: real photos, real checkpoints, hostile names, bad input, exit codes."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, model, photo, shared_path

SMALL = ["ovd0312_4.jpg", "ovd0312_21.jpg", "ovd0312_32.jpg"]  # 0.1 MP each: quick


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def mean_luma(path: Path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), dtype=np.float32).mean())


def assert_backlight_fixed(before: Path, after: Path):
    """The darkest quarter is brightened well; the brightest tenth (the sky) stays where it was."""
    a = np.asarray(Image.open(before).convert("L"), dtype=np.float32)
    b = np.asarray(Image.open(after).convert("L"), dtype=np.float32)
    dark, bright = a <= np.percentile(a, 25), a >= np.percentile(a, 90)
    assert b[dark].mean() > 1.5 * a[dark].mean() + 1
    assert abs(b[bright].mean() - a[bright].mean()) < 6


@pytest.fixture
def shoot(tmp_path) -> Path:
    d = tmp_path / "shoot"
    d.mkdir()
    for n in SMALL:
        shutil.copy(photo(n), d / n)
    (d / SMALL[0]).with_suffix(".xmp").write_text("<x:xmpmeta/>")  # a sidecar: not an input
    (d / "notes.txt").write_text("not a photo")
    return d


@pytest.mark.slow  # whole runs over real photos
def test_run_corrects_a_shoot_and_never_touches_originals(shoot):
    before = tree_hashes(shoot)
    # --strength 1: the correction itself (auto strength is tested in test_pipeline_auto_strength.py)
    r = cli("run", "--model", model(), "--json", "--strength", "1", str(shoot))
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["done"] == len(SMALL) and summary["failed"] == 0 and summary["ignored"] == 2
    for n in SMALL:
        out = shoot / "backlitfix" / n
        assert Image.open(out).size == Image.open(shoot / n).size
        assert Image.open(out).format == "JPEG"
        assert_backlight_fixed(shoot / n, out)
    after = tree_hashes(shoot)
    assert {k: v for k, v in after.items() if not k.startswith("backlitfix/")} == before


@pytest.mark.slow  # whole runs over real photos
def test_second_run_skips_existing_outputs_and_overwrite_replaces_them(shoot):
    assert cli("run", "--model", model(), str(shoot)).exit_code == 0
    out = shoot / "backlitfix" / SMALL[0]
    out.write_bytes(b"stale")
    r = cli("run", "--model", model(), "--json", str(shoot))
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == len(SMALL)
    assert out.read_bytes() == b"stale"
    r = cli("run", "--model", model(), "--json", "--overwrite", str(shoot))
    assert json.loads(r.stdout)["done"] == len(SMALL)
    assert Image.open(out).format == "JPEG"


def test_dry_run_writes_nothing(shoot):
    before = tree_hashes(shoot)
    r = cli("run", "--model", model(), "--dry-run", str(shoot))
    assert r.exit_code == 0
    assert all(f"{shoot / n} -> {shoot / 'backlitfix' / n}" in r.stdout for n in SMALL)
    assert tree_hashes(shoot) == before and not (shoot / "backlitfix").exists()


def test_strength_scales_the_correction(shoot, tmp_path):
    means = []
    for s in ("0", "0.5", "1"):
        out = tmp_path / f"s{s}"
        assert cli("run", "--model", model(), "--strength", s, "-o", str(out), str(shoot / SMALL[0])).exit_code == 0
        means.append(mean_luma(out / SMALL[0]))
    assert abs(means[0] - mean_luma(shoot / SMALL[0])) < 1.0  # 0 = the original (re-encoded)
    assert means[0] < means[1] < means[2]


def test_options_output_suffix_format_and_exact_mode(shoot, tmp_path):
    out = tmp_path / "out"
    r = cli("run", "--model", model(), "-o", str(out), "--suffix", "_fixed", "--format", "png", "--mode", "exact",
            "-j", "1", str(shoot / SMALL[1]))
    assert r.exit_code == 0, r.output
    res = out / (Path(SMALL[1]).stem + "_fixed.png")
    assert Image.open(res).format == "PNG"


@pytest.mark.slow  # whole runs over real photos
def test_recursive_keeps_structure(shoot):
    sub = shoot / "day2"
    sub.mkdir()
    shutil.copy(photo(SMALL[0]), sub / "a.jpg")
    assert json.loads(cli("run", "--model", model(), "--json", str(shoot)).stdout)["done"] == len(SMALL)
    r = cli("run", "--model", model(), "--json", "-r", str(shoot))
    assert json.loads(r.stdout)["done"] == 1  # only the new one: the rest exist
    assert (shoot / "backlitfix" / "day2" / "a.jpg").is_file()


@contextmanager
def tmpfs(path: Path, options: str):
    """A real small or read-only filesystem (we run as root here and in CI)."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): full/read-only output folders untested")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow  # whole runs over real photos
def test_bad_inputs_each_get_one_line_and_the_batch_goes_on(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = ["good.jpg", "café 写真 $(touch PWNED) `x`; '\".jpg", "-leading dash.jpg"]
    for n in good:
        shutil.copy(photo(SMALL[0]), d / n)
    (d / "zero.jpg").write_bytes(b"")
    data = photo(SMALL[1]).read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "text.jpg").write_text("hello, I am not a JPEG\n")
    Image.new("RGB", (1200, 1000), (40, 40, 40)).save(d / "bomb.png")  # over the limit set below
    raw = shared_path("data", "raw", "Nikon_uncompressed.nef").read_bytes()
    (d / "truncated.nef").write_bytes(raw[: len(raw) // 3])
    (d / "dangling.jpg").symlink_to(d / "gone.jpg")  # unreadable: points nowhere
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("input:\n  max_pixels: 1000000\n")
    before = tree_hashes(d)

    r = cli("run", "--model", model(), "--config", str(cfg), "--json", "-o", str(tmp_path / "out"), str(d))
    assert r.exit_code == 1
    summary = json.loads(r.stdout)
    assert summary["done"] == len(good)
    failed = {Path(f["input"]).name: f["reason"] for f in summary["files"] if f["status"] == "failed"}
    assert set(failed) == {"zero.jpg", "truncated.jpg", "text.jpg", "bomb.png", "truncated.nef", "dangling.jpg"}
    assert "1000000" in failed["bomb.png"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(failed)  # one line each, naming the file
    for name in failed:
        assert sum(name in line for line in errors) == 1
    for n in good:
        assert (tmp_path / "out" / n).is_file()
    assert tree_hashes(d) == before  # nothing the user had changed
    assert not list(Path.cwd().glob("PWNED")) and not list(d.glob("PWNED"))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_output_equal_to_input_is_refused(shoot):
    before = tree_hashes(shoot)
    r = cli("run", "--model", model(), "-o", str(shoot), "--json", str(shoot))
    assert r.exit_code == 1
    summary = json.loads(r.stdout)
    assert summary["failed"] == len(SMALL) and summary["done"] == 0
    assert tree_hashes(shoot) == before


def test_full_output_folder_fails_cleanly(shoot, tmp_path):
    with tmpfs(tmp_path / "full", "size=48k") as out:
        before = tree_hashes(shoot)
        r = cli("run", "--model", model(), "--json", "--format", "png", "-o", str(out), str(shoot))
        assert r.exit_code == 1
        reasons = [f["reason"] for f in json.loads(r.stdout)["files"] if f["status"] == "failed"]
        assert reasons and all("No space left" in x for x in reasons)
        assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]  # no partial output
        for p in out.rglob("*.png"):
            Image.open(p).load()  # whatever was written is complete
        assert tree_hashes(shoot) == before


def test_read_only_output_folder_fails_cleanly(shoot, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as out:
        r = cli("run", "--model", model(), "--json", "-o", str(out / "sub"), str(shoot))
        assert r.exit_code == 2 and not r.stdout  # found once, before any photo was processed
        assert len(r.stderr.strip().splitlines()) == 1 and "read-only file system" in r.stderr


def test_usage_errors_exit_2(tmp_path, shoot):
    r = cli("run", "--no-such-flag", str(shoot))
    assert r.exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("output:\n  jpeg_qualty: 90\n")
    r = cli("run", "--model", model(), "--config", str(bad), str(shoot))
    assert r.exit_code == 2 and "output.jpeg_qualty" in r.stderr and "jpeg_quality" in r.stderr
    r = cli("run", "--model", str(tmp_path / "nope.pth"), str(shoot))
    assert r.exit_code == 2 and "nope.pth" in r.stderr
    r = cli("run", "--strength", "7", "--model", model(), str(shoot))
    assert r.exit_code == 2 and "strength" in r.stderr


def test_a_build_without_an_embedded_model_says_so(shoot, monkeypatch):
    """This build ships a default model; a build without one (e.g. a trimmed wheel) must say so clearly."""
    from backlitfix.model import registry

    assert registry.embedded_default() is not None  # the shipped package has one
    monkeypatch.setattr(registry, "embedded_default", lambda: None)
    r = cli("run", str(shoot))
    assert r.exit_code == 2 and "no default model is embedded" in r.stderr


@pytest.mark.slow  # whole runs over real photos
def test_raw_gives_16_bit_tiff_with_sidecar_and_camera_exif(tmp_path):
    import piexif
    import tifffile

    d = tmp_path / "raw"
    d.mkdir()
    shutil.copy(shared_path("data", "raw", "canon_eos_6d.dng"), d / "IMG_1.dng")
    shutil.copy(shared_path("data", "raw", "canon_eos_6d.xmp"), d / "IMG_1.xmp")
    r = cli("run", "--model", model(), "--json", str(d))
    assert r.exit_code == 0, r.output
    out = d / "backlitfix" / "IMG_1.tif"
    arr = tifffile.imread(out)
    assert arr.dtype == np.uint16 and arr.shape[2] == 3
    assert (d / "backlitfix" / "IMG_1.xmp").read_bytes() == (d / "IMG_1.xmp").read_bytes()
    exif = piexif.load(str(out))
    assert exif["0th"][piexif.ImageIFD.Make].rstrip(b"\0") == b"Canon"
    assert exif["0th"][piexif.ImageIFD.Model].rstrip(b"\0") == b"Canon EOS 6D"


@pytest.mark.slow  # a real process
def test_console_script_with_hostile_names_in_a_real_process(tmp_path):
    """The installed entry point, argument lists only: names reach backlitfix intact, no shell runs."""
    d = tmp_path / "in"
    d.mkdir()
    name = "$(touch PWNED) ; rm -rf x `id` \n new line ü.jpg"
    shutil.copy(photo(SMALL[2]), d / name)
    exe = shutil.which("backlitfix") or pytest.fail("backlitfix console script not installed (pip install -e .)")
    p = subprocess.run([exe, "run", "--model", model(), "-o", str(tmp_path / "out"), "--json", "--", str(d / name)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / name).is_file()
    assert not list(tmp_path.rglob("PWNED"))
