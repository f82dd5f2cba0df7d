"""Files holding more than one picture, and TIFF sample types we cannot read: never silent."""
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from backlitfix.io import decode
from backlitfix.photo import PhotoError
from conftest import shared_path

LIMIT = 250_000_000


def _frames(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (24, 16), (40 * i, 200 - 40 * i, 90)) for i in range(n)]


def test_multi_page_tiff_says_how_many_pages_were_dropped(tmp_path):
    tifffile.imwrite(tmp_path / "scan.tif", np.zeros((3, 16, 24, 3), np.uint8), photometric="rgb")
    photo = decode(tmp_path / "scan.tif", max_pixels=LIMIT)
    assert photo.pixels.shape == (16, 24, 3)
    assert photo.meta.warnings == ["scan.tif: multi-page TIFF: only page 1 of 3 is corrected; 2 pages dropped"]


def test_a_tiff_preview_page_is_not_a_dropped_page(tmp_path):
    with tifffile.TiffWriter(tmp_path / "preview.tif") as tif:
        tif.write(np.zeros((16, 24, 3), np.uint8), photometric="rgb")
        tif.write(np.zeros((4, 6, 3), np.uint8), photometric="rgb", subfiletype=1)  # reduced resolution
    assert decode(tmp_path / "preview.tif", max_pixels=LIMIT).meta.warnings == []
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        for _ in range(2):
            tif.write(np.zeros((16, 24, 3), np.uint8), photometric="rgb")
    assert decode(tmp_path / "two.tif", max_pixels=LIMIT).meta.warnings == [
        "two.tif: multi-page TIFF: only page 1 of 2 is corrected; 1 page dropped"]


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_animation_says_how_many_frames_were_dropped(tmp_path, fmt):
    frames = _frames(4)
    frames[0].save(tmp_path / f"anim.{fmt}", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    photo = decode(tmp_path / f"anim.{fmt}", max_pixels=LIMIT)
    np.testing.assert_array_equal(photo.pixels, np.asarray(frames[0]))  # frame 1 is what is corrected
    assert photo.meta.warnings == [
        f"anim.{fmt}: animated {fmt.upper()}: only frame 1 of 4 is corrected; 3 frames dropped"]
    frames[0].save(tmp_path / f"still.{fmt}", lossless=True)
    assert decode(tmp_path / f"still.{fmt}", max_pixels=LIMIT).meta.warnings == []


@pytest.mark.parametrize("dtype, bits", [(np.float32, 32), (np.float16, 16), (np.float64, 64)])
def test_float_tiff_is_named_as_unsupported(tmp_path, dtype, bits):
    rgb = np.random.default_rng(0).random((8, 9, 3)).astype(dtype)
    tifffile.imwrite(tmp_path / "hdr.tif", rgb, photometric="rgb")
    with pytest.raises(PhotoError) as err:
        decode(tmp_path / "hdr.tif", max_pixels=LIMIT)
    assert err.value.reason == f"{bits}-bit floating-point TIFF is not supported (save it as 8- or 16-bit integer TIFF)"


@pytest.mark.parametrize("shape", [(8, 9, 3), (8, 9)])  # Pillow opens the greyscale ones ("F", "I")
def test_float_and_32bit_integer_tiffs_are_named_as_unsupported(tmp_path, shape):
    values = np.random.default_rng(0).random(shape) * 100_000
    for dtype, kind in ((np.float32, "floating-point"), (np.uint32, "unsigned integer"), (np.int32, "signed integer")):
        tifffile.imwrite(tmp_path / "deep.tif", values.astype(dtype), photometric="rgb" if len(shape) == 3 else None)
        with pytest.raises(PhotoError) as err:
            decode(tmp_path / "deep.tif", max_pixels=LIMIT)
        assert err.value.reason.startswith(f"32-bit {kind} TIFF is not supported (save it as 8- or 16-bit")


def test_a_tiff_layout_pillow_cannot_open_is_named(tmp_path):
    la = np.zeros((8, 9, 2), np.uint16)  # 16-bit grey + alpha
    tifffile.imwrite(tmp_path / "la.tif", la, photometric="minisblack", extrasamples=[2], planarconfig="contig")
    with pytest.raises(PhotoError) as err:
        decode(tmp_path / "la.tif", max_pixels=LIMIT)
    assert err.value.reason == "unsupported TIFF layout (2 samples of 16-bit unsigned integer per pixel)"


def test_run_reports_dropped_pages_and_float_tiffs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    photo = np.asarray(Image.open(shared_path("data", "backlit", "ovd0312_4.jpg")).convert("RGB"))
    tifffile.imwrite(d / "pages.tif", np.stack([photo, photo[::-1]]), photometric="rgb")
    frames = [Image.fromarray(photo), Image.fromarray(photo[::-1])]
    frames[0].save(d / "anim.webp", save_all=True, append_images=frames[1:], duration=100)
    tifffile.imwrite(d / "hdr.tif", photo.astype(np.float32) / 255, photometric="rgb")
    r = CliRunner().invoke(main, ["run", "--model", str(shared_path("models", "official", "rave_unpaired.pth")),
                                  "--json", str(d)], env={"XDG_CONFIG_HOME": "/nonexistent"}, catch_exceptions=False)
    files = {Path(f["input"]).name: f for f in json.loads(r.stdout)["files"]}
    assert files["pages.tif"]["status"] == "done"
    assert files["pages.tif"]["warnings"] == [
        "pages.tif: multi-page TIFF: only page 1 of 2 is corrected; 1 page dropped"]
    assert files["anim.webp"]["warnings"] == [
        "anim.webp: animated WEBP: only frame 1 of 2 is corrected; 1 frame dropped"]
    assert files["hdr.tif"]["status"] == "failed"
    reason = "32-bit floating-point TIFF is not supported (save it as 8- or 16-bit integer TIFF)"
    assert files["hdr.tif"]["reason"] == reason
    assert f"error: {d / 'hdr.tif'}: {reason}\n" in r.stderr
    for w in files["pages.tif"]["warnings"] + files["anim.webp"]["warnings"]:
        assert f"warning: {w}\n" in r.stderr
    assert r.exit_code == 1  # one photo failed; the others were done
