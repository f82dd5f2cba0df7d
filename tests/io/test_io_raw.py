"""Camera RAW input: rendering, orientation, metadata, sidecars, and damaged files."""
import importlib
import io
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import piexif
import pytest
import rawpy
import tifffile
from PIL import ImageCms

from backlitfix.io import copy_sidecars, decode, encode, find_sidecars
from backlitfix.photo import Metadata, Photo, PhotoError
from conftest import shared_path

LIMIT = 250_000_000
RAWS = ["Blackmagic.dng", "canon_eos_6d.dng", "Nikon_uncompressed.nef"]
raw_module = importlib.import_module("backlitfix.io.raw")


@cache
def decoded(name: str) -> Photo:
    return decode(shared_path("data", "raw", name), max_pixels=LIMIT)


@pytest.mark.parametrize("name", RAWS)
def test_raw_decodes_to_16bit_with_sane_brightness(name):
    photo = decoded(name)
    px = photo.pixels
    assert px.dtype == np.uint16 and px.ndim == 3 and px.shape[2] == 3
    assert photo.meta.bit_depth == 16 and photo.meta.source_format == "raw"
    mean = px.mean() / 65535
    assert 0.05 < mean < 0.75, mean  # neither black nor blown out
    assert (px == 65535).all(axis=2).mean() < 0.05  # little pure white
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(photo.meta.icc))).startswith("sRGB")


def test_dng_default_crop_is_applied():
    with rawpy.imread(str(shared_path("data", "raw", "Blackmagic.dng"))) as raw:
        s = raw.sizes
    assert (s.crop_height, s.crop_width) != (s.height, s.width)  # the premise: a real DefaultCrop
    assert decoded("Blackmagic.dng").pixels.shape[:2] == (s.crop_height, s.crop_width)


def test_wrong_white_level_does_not_blow_out():
    with rawpy.imread(str(shared_path("data", "raw", "Nikon_uncompressed.nef"))) as raw:
        assert raw.raw_image_visible.max() > raw.white_level  # the premise: LibRaw's level is wrong
    assert decoded("Nikon_uncompressed.nef").pixels.mean() < 0.6 * 65535


def test_raw_exif_goes_into_the_tiff(tmp_path):
    src = shared_path("data", "raw", "canon_eos_6d.dng")
    photo = decoded("canon_eos_6d.dng")
    encode(photo, tmp_path / "out.tif", fmt="tiff", software="backlitfix test")
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        page = tf.pages[0]
        assert page.dtype == np.uint16 and page.shape == photo.pixels.shape
        assert page.tags["Make"].value == "Canon" and page.tags["Model"].value == "Canon EOS 6D"
        assert page.tags["InterColorProfile"].value == photo.meta.icc
        xmp = page.tags["XMP"].value
    before, after = piexif.load(str(src)), piexif.load(str(tmp_path / "out.tif"))
    for tag in (piexif.ExifIFD.DateTimeOriginal, piexif.ExifIFD.ExposureTime, piexif.ExifIFD.FNumber,
                piexif.ExifIFD.ISOSpeedRatings, piexif.ExifIFD.LensModel):
        assert after["Exif"][tag] == before["Exif"][tag]
    assert after["0th"][piexif.ImageIFD.Orientation] == 1
    assert piexif.ImageIFD.DNGVersion not in after["0th"]  # raw-layout tags stay behind
    assert b"aux:Lens=" in xmp and b"crs:" not in xmp.replace(b"xmlns:crs", b"")  # develop settings dropped
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), photo.pixels)


def test_sidecar_is_found_and_copied(tmp_path):
    photo = decoded("canon_eos_6d.dng")
    sidecar = shared_path("data", "raw", "canon_eos_6d.xmp")
    assert photo.meta.sidecars == (sidecar,)
    assert decoded("Blackmagic.dng").meta.sidecars == ()
    written = copy_sidecars(photo, tmp_path / "canon_eos_6d.tif")
    assert written == [tmp_path / "canon_eos_6d.xmp"]
    assert written[0].read_bytes() == sidecar.read_bytes()  # (it has no tiff:Orientation to fix)


def test_sidecar_lookup_ignores_case_and_fixes_orientation(tmp_path):
    for sidecar_name in ("IMG_1.XMP", "IMG_1.dng.xmp"):
        folder = tmp_path / sidecar_name
        folder.mkdir()
        (folder / "IMG_1.DNG").write_bytes(b"")
        (folder / sidecar_name).write_bytes(b'<rdf:Description tiff:Orientation="8" xmp:Rating="4"/>')
        assert find_sidecars(folder / "IMG_1.DNG") == (folder / sidecar_name,)
    meta = Metadata(sidecars=find_sidecars(folder / "IMG_1.DNG"))
    photo = Photo(folder / "IMG_1.DNG", np.zeros((1, 1, 3), np.uint8), meta)
    out = tmp_path / "out"
    out.mkdir()
    copy_sidecars(photo, out / "IMG_1.tif")
    assert (out / "IMG_1.xmp").read_bytes() == b'<rdf:Description tiff:Orientation="1" xmp:Rating="4"/>'


def test_sidecar_never_overwrites_an_input(tmp_path):
    shutil.copy(shared_path("data", "raw", "canon_eos_6d.xmp"), tmp_path / "IMG.xmp")
    original = (tmp_path / "IMG.xmp").read_bytes()
    photo = Photo(tmp_path / "IMG.dng", np.zeros((1, 1, 3), np.uint8), Metadata(sidecars=(tmp_path / "IMG.xmp",)))
    assert copy_sidecars(photo, tmp_path / "IMG.tif") == []  # output beside the input: same sidecar name
    assert (tmp_path / "IMG.xmp").read_bytes() == original
    assert any("not copied" in w for w in photo.meta.warnings)


def test_raw_over_max_pixels_is_refused_before_rendering(monkeypatch):
    def no_rendering(raw):
        raise AssertionError("rendering started")

    monkeypatch.setattr(raw_module, "_params", no_rendering)
    with pytest.raises(PhotoError, match=r"image has 8\d{6} pixels, over the limit of 1000000 \(input.max_pixels\)"):
        decode(shared_path("data", "raw", "Blackmagic.dng"), max_pixels=1_000_000)


@pytest.mark.parametrize("name, keep", [("Blackmagic.dng", 0.5), ("canon_eos_6d.dng", 0.5),
                                        ("canon_eos_6d.dng", 0.999), ("Nikon_uncompressed.nef", 0.9)])
def test_truncated_raw_is_an_error(tmp_path, name, keep):
    data = shared_path("data", "raw", name).read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: int(len(data) * keep)])
    # (LibRaw alone decodes the 99.9 % canon_eos_6d.dng without complaint, grey-filling the rest)
    with pytest.raises(PhotoError, match="truncated"):
        decode(cut, max_pixels=LIMIT)


def test_not_a_raw(tmp_path):
    (tmp_path / "x.nef").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(PhotoError, match="not a RAW file"):
        decode(tmp_path / "x.nef", max_pixels=LIMIT)


def _bayer_dng(path: Path, orientation: int) -> None:
    """A tiny 12-bit RGGB DNG (written with tifffile) with a bright block in its stored top-left."""
    cfa = np.full((64, 96), 400, np.uint16)
    cfa[:16, :24] = 3500
    tags = [
        (50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "Synthetic Cam", True),
        (33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True), (50717, "I", 1, 4095, True), (50714, "H", 1, 256, True),
        (271, "s", 0, "SynthMake", True), (274, "H", 1, orientation, True),
    ]
    tifffile.imwrite(path, cfa, photometric=32803, extratags=tags, metadata=None, subfiletype=0)


@pytest.mark.parametrize("orientation, shape, corner", [(1, (64, 96), (0, 0)), (3, (64, 96), (1, 1)),
                                                        (6, (96, 64), (0, 1)), (8, (96, 64), (1, 0))])
def test_raw_orientation_is_applied_once(tmp_path, orientation, shape, corner):
    path = tmp_path / f"o{orientation}.dng"
    _bayer_dng(path, orientation)
    photo = decode(path, max_pixels=LIMIT)
    assert photo.pixels.shape[:2] == shape
    grey = photo.pixels.mean(axis=2)
    rows = slice(0, 8) if corner[0] == 0 else slice(-8, None)
    cols = slice(0, 8) if corner[1] == 0 else slice(-8, None)
    assert grey[rows, cols].mean() > 2 * grey.mean()  # the bright block is where the viewer expects it
    exif = piexif.load(photo.meta.exif)
    assert exif["0th"][piexif.ImageIFD.Make] == b"SynthMake"
    assert exif["0th"][piexif.ImageIFD.Orientation] == 1
