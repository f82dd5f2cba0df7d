"""The Python API (backlitfix.load / Enhancer.enhance): what it returns equals what `backlitfix run`
writes, for the real CLI (a subprocess) on real photos from ../shared, written as PNG so that no JPEG
re-encoding stands between the two."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import backlitfix
from backlitfix.io import decode
from conftest import REPO, shared_path

MAX_PIXELS = 250_000_000


def cli(*args: str, cwd: Path) -> dict:
    env = {**os.environ, "XDG_CONFIG_HOME": str(cwd / "xdg"), "PYTHONPATH": str(REPO)}  # no user config
    proc = subprocess.run([sys.executable, "-m", "backlitfix.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return {Path(f["input"]).name: f for f in json.loads(proc.stdout)["files"]}


@pytest.fixture(scope="module")
def enh():
    return backlitfix.load()  # the defaults: the embedded model, fast, auto, as `run` without options


def rgba_png(folder: Path) -> Path:
    """A real RGBA PNG: a backlit photo with an alpha ramp and a fully transparent corner."""
    im = Image.open(shared_path("data", "backlit", "ovd0312_4.jpg")).convert("RGB")
    w, h = im.size
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    alpha[: h // 4, : w // 4] = 0
    im.putalpha(Image.fromarray(alpha))
    path = folder / "rgba.png"
    im.save(path)
    return path


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """One `run` with the defaults (strength auto) over a backlit JPEG, a well-lit one, an EXIF-rotated
    one (Orientation 6 and 5), an RGBA PNG and a 16-bit TIFF: {input name: (source, output, strength)}."""
    tmp = tmp_path_factory.mktemp("auto")
    sources = [shared_path("data", "backlit", "ovd0312_1.jpg"), shared_path("data", "welllit", "kodim23.jpg"),
               shared_path("data", "exif", "landscape_6.jpg"), shared_path("data", "exif", "landscape_5.jpg"),
               rgba_png(tmp), shared_path("data", "exif", "tiff_16bit_RGB.tiff")]
    files = cli("run", "--output", str(tmp / "out"), "--format", "png", "--json", "--", *map(str, sources), cwd=tmp)
    return {s.name: (s, Path(files[s.name]["output"]), files[s.name]["strength"]) for s in sources}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ovd0312_1.jpg", "kodim23.jpg", "landscape_6.jpg", "landscape_5.jpg"])
def test_pil_image_from_image_open_equals_run_auto(enh, auto_run, name):
    src, out, applied = auto_run[name]
    with Image.open(src) as im:
        result, s = enh.enhance(im, return_strength=True)
    expected = decode(out, max_pixels=MAX_PIXELS).pixels
    assert isinstance(result, Image.Image) and result.mode == "RGB"
    assert result.size == (expected.shape[1], expected.shape[0])  # turned upright as run turns it
    np.testing.assert_array_equal(np.asarray(result), expected)
    assert s == applied  # the strength run's --json reports


@pytest.mark.slow
def test_auto_bias_equals_runs_flag(tmp_path):
    """load(auto_bias=...) leans as `run --auto-bias` does: the same strength and the same pixels."""
    src = shared_path("data", "backlit", "ovd0312_21.jpg")  # in auto's ramp: the lean shows
    files = cli("run", "--output", str(tmp_path / "out"), "--format", "png", "--json", "--auto-bias", "-0.5",
                "--", str(src), cwd=tmp_path)
    with Image.open(src) as im:
        leaned, s = backlitfix.load(auto_bias=-0.5).enhance(im, return_strength=True)
        _, s0 = backlitfix.load().enhance(im, return_strength=True)
    assert s == files[src.name]["strength"] < s0
    np.testing.assert_array_equal(np.asarray(leaned), decode(Path(files[src.name]["output"]),
                                                             max_pixels=MAX_PIXELS).pixels)
    with pytest.raises(backlitfix.BacklitfixError, match="auto.bias"):
        backlitfix.load(auto_bias=5)


@pytest.mark.slow
def test_auto_decides_per_photo(auto_run):
    """The auto runs above are not all one strength: a test of "auto" that a fixed value would also pass
    would prove nothing."""
    strengths = {auto_run[n][2] for n in ("ovd0312_1.jpg", "kodim23.jpg", "landscape_6.jpg")}
    assert len(strengths) > 1, strengths


@pytest.mark.slow
def test_rgba_keeps_alpha_as_run_does(enh, auto_run):
    src, out, applied = auto_run["rgba.png"]
    with Image.open(src) as im:
        result, s = enh.enhance(im, return_strength=True)
        alpha_in = np.asarray(im.getchannel("A"))
    written = decode(out, max_pixels=MAX_PIXELS)
    assert result.mode == "RGBA" and s == applied
    np.testing.assert_array_equal(np.asarray(result)[..., :3], written.pixels)
    np.testing.assert_array_equal(np.asarray(result)[..., 3], written.alpha)
    np.testing.assert_array_equal(np.asarray(result)[..., 3], alpha_in)


@pytest.mark.slow
def test_16_bit_array_equals_run(enh, auto_run):
    src, out, applied = auto_run["tiff_16bit_RGB.tiff"]
    pixels = decode(src, max_pixels=MAX_PIXELS).pixels  # the decoded, upright pixels run corrects
    assert pixels.dtype == np.uint16
    before = pixels.copy()
    result, s = enh.enhance(pixels, return_strength=True)
    expected = decode(out, max_pixels=MAX_PIXELS).pixels
    assert expected.dtype == np.uint16 and result.dtype == np.uint16 and result.shape == pixels.shape
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(pixels, before)  # the caller's array is left alone
    assert s == applied


@pytest.mark.slow
def test_fixed_strength_and_exact_mode_equal_run(tmp_path):
    sources = [shared_path("data", "backlit", "ovd0312_9.jpg"), shared_path("data", "exif", "landscape_8.jpg")]
    files = cli("run", "--strength", "0.6", "--mode", "exact", "--output", str(tmp_path / "out"), "--format", "png",
                "--json", "--", *map(str, sources), cwd=tmp_path)
    exact = backlitfix.load(mode="exact", strength=0.6)
    fast = backlitfix.load()  # strength auto by default; 0.6 given per call below
    for src in sources:
        expected = decode(files[src.name]["output"], max_pixels=MAX_PIXELS).pixels
        assert files[src.name]["strength"] == 0.6
        with Image.open(src) as im:
            result, s = exact.enhance(im, return_strength=True)
            np.testing.assert_array_equal(np.asarray(result), expected)
            assert s == 0.6
            quick = fast.enhance(im, strength=0.6)
        assert 0 < np.abs(np.asarray(quick).astype(int) - expected).max() < 64  # fast: close, not the same


def test_rotated_image_is_turned_upright(enh):
    with Image.open(shared_path("data", "exif", "landscape_6.jpg")) as im:
        assert im.size == (450, 600)  # stored on its side
        result = enh.enhance(im, strength=0)
        upright = ImageOps.exif_transpose(im)
    assert result.size == (600, 450)
    np.testing.assert_array_equal(np.asarray(result), np.asarray(upright))  # strength 0: the pixels as they were


def test_array_strength_zero_is_the_input_and_alpha_channel_is_kept(enh):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 65536, (40, 60, 4), dtype=np.uint16)
    out = enh.enhance(a, strength=0)
    np.testing.assert_array_equal(out, a)
    dark = (a // 8).astype(np.uint16)
    out, s = enh.enhance(dark, strength=1.0, return_strength=True)
    assert s == 1.0 and out.dtype == np.uint16 and out.shape == dark.shape
    np.testing.assert_array_equal(out[..., 3], dark[..., 3])  # alpha untouched
    assert out[..., :3].mean() > 1.2 * dark[..., :3].mean()  # colour lifted


def test_icc_profile_and_greyscale(enh):
    with Image.open(shared_path("data", "exif", "landscape_1.jpg")) as im:
        icc = im.info.get("icc_profile")
        result = enh.enhance(im, strength=0.5)
    if icc:
        assert result.info["icc_profile"] == icc
    grey = Image.fromarray(np.tile(np.linspace(10, 120, 64).astype(np.uint8), (48, 1)), "L")
    out = enh.enhance(grey, strength=1.0)
    assert out.mode == "RGB" and out.size == grey.size


def test_pil_modes_convert_as_runs_decoder_does(enh, tmp_path):
    """CMYK and a palette PNG with a transparent colour: the PIL image gives what the array that run's
    decoder makes of the same file gives (and the array path is run's, above)."""
    rng = np.random.default_rng(2)
    cmyk = Image.fromarray(rng.integers(0, 256, (40, 56, 4), dtype=np.uint8), "CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    pal = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).quantize(16)
    pal.save(tmp_path / "pal.png", transparency=3)
    for name in ("cmyk.jpg", "pal.png"):
        photo = decode(tmp_path / name, max_pixels=MAX_PIXELS)
        with Image.open(tmp_path / name) as im:
            if name == "cmyk.jpg":
                with pytest.warns(UserWarning, match="CMYK"):
                    result = enh.enhance(im, strength=0.7)
            else:
                result = enh.enhance(im, strength=0.7)
        expected = enh.enhance(photo.pixels, strength=0.7)
        np.testing.assert_array_equal(np.asarray(result)[..., :3], expected)
        if photo.alpha is None:
            assert result.mode == "RGB"
        else:
            assert result.mode == "RGBA" and (photo.alpha == 0).any()
            np.testing.assert_array_equal(np.asarray(result)[..., 3], photo.alpha)


def test_bad_input_is_a_clear_error(enh):
    with pytest.raises(ValueError, match="uint8 or uint16"):
        enh.enhance(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        enh.enhance(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        enh.enhance(np.zeros((1, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="strength must be"):
        enh.enhance(np.zeros((8, 8, 3), np.uint8), strength=2.5)
    with pytest.raises(ValueError, match="numpy array"):
        enh.enhance(Image.new("I;16", (8, 8)))
    with pytest.raises(TypeError, match="PIL.Image.Image or a numpy array"):
        enh.enhance([[0, 0, 0]])


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(backlitfix.BacklitfixError, match="no-such-model"):
        backlitfix.load("no-such-model")
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(backlitfix.BacklitfixError, match="broken.pth"):
        backlitfix.load(bad)
    with pytest.raises(backlitfix.BacklitfixError, match="mode"):
        backlitfix.load(mode="slow")
    with pytest.raises(backlitfix.BacklitfixError, match="strength"):
        backlitfix.load(strength=3)


def test_public_surface_and_import_stays_light():
    assert set(backlitfix.__all__) == {"load", "Enhancer", "BacklitfixError", "__version__"}
    assert all(hasattr(backlitfix, n) for n in backlitfix.__all__)
    assert (Path(backlitfix.__file__).parent / "py.typed").is_file()
    heavy = "('torch', 'numpy', 'PIL', 'yaml', 'click')"
    code = f"import sys, backlitfix; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"  # none of them until load() is called
