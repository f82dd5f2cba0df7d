"""decode -> encode -> read back with other readers (Pillow, piexif, tifffile): pixels and metadata."""
import re
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import piexif
import pytest
import tifffile
from PIL import Image

from backlitfix.io import decode, encode
from backlitfix.io.encode import to_8bit
from backlitfix.photo import Photo
from conftest import shared_path

SOFTWARE = "backlitfix test"
LIMIT = 250_000_000
EXIF_FILES = [
    "BlueSquare.jpg", "Canon_DIGITAL_IXUS_400.jpg", "chameleon_lime.jpg", "DSCN0010.jpg", "exif.png",
    "exif_typeerror.jpg", "flower.webp", "flower2.webp", "Fujifilm_FinePix_E500.jpg", "hopper_bad_exif.jpg",
    "IMG_9424.JPG", "landscape_1.jpg", "landscape_6.jpg", "Panasonic_DMC-FZ30.jpg",
    "photoprism_example_adobergb.png", "tiff_16bit_RGB.tiff",
]
MALFORMED = {"exif_typeerror.jpg", "hopper_bad_exif.jpg"}
FORMATS = ["jpeg", "png", "tiff", "webp"]
COMPARED = {  # the tags a photographer cares about, when the input has them
    "0th": [piexif.ImageIFD.Make, piexif.ImageIFD.Model, piexif.ImageIFD.DateTime, piexif.ImageIFD.Artist,
            piexif.ImageIFD.Copyright],
    "Exif": [piexif.ExifIFD.DateTimeOriginal, piexif.ExifIFD.ExposureTime, piexif.ExifIFD.FNumber,
             piexif.ExifIFD.ISOSpeedRatings, piexif.ExifIFD.FocalLength, piexif.ExifIFD.LensModel],
}
try:
    import pillow_heif

    pillow_heif.register_heif_opener()  # to read outputs back with Pillow
    HEIF = True
except ImportError:
    HEIF = False


@cache
def _decoded(folder: str, name: str) -> Photo:
    return decode(shared_path("data", folder, name), max_pixels=LIMIT)


def fresh(folder: str, name: str) -> Photo:
    """A decoded photo, decoded once per test session; encode may append warnings, so copy meta."""
    p = _decoded(folder, name)
    return Photo(p.path, p.pixels, replace(p.meta, warnings=list(p.meta.warnings)))


def input_exif(path: Path) -> dict:
    """The input's EXIF as piexif sees it, read straight from the file (not through decode)."""
    if path.suffix.lower() in (".jpg", ".tiff", ".tif", ".dng", ".nef"):
        return piexif.load(str(path))
    with Image.open(path) as im:
        im.load()
        data = im.info.get("exif", b"")
    data = data[6:] if data.startswith(b"Exif\0\0") else data
    return piexif.load(data) if data else {"0th": {}, "Exif": {}, "GPS": {}}


def output_metadata(path: Path, fmt: str) -> tuple[dict, bytes | None, bytes | None]:
    """(EXIF as piexif reads it, ICC profile, XMP) of an output file, read by other libraries."""
    with Image.open(path) as im:
        im.load()
        icc, xmp, exif = im.info.get("icc_profile"), im.info.get("xmp"), im.info.get("exif")
    if fmt == "tiff":
        with tifffile.TiffFile(path) as tf:
            tags = tf.pages[0].tags
            xmp = tags["XMP"].value if "XMP" in tags else None
            icc = tags["InterColorProfile"].value if "InterColorProfile" in tags else None
        return piexif.load(str(path)), icc, xmp
    exif = exif[6:] if exif.startswith(b"Exif\0\0") else exif
    return piexif.load(exif), icc, xmp


def xmp_properties(xmp: bytes) -> set[bytes]:
    """Property names in an XMP packet (attribute and element forms)."""
    return set(re.findall(rb"\b([A-Za-z]\w*:\w+)\s*=", xmp)) | set(re.findall(rb"<([A-Za-z]\w*:\w+)[\s>/]", xmp))


# Every exif file in every output format; the 12 MP phone JPEG is left out of HEIF only, whose encode
# alone would take longer than the rest of this file (HEIF metadata is covered by the other files).
ROUNDTRIPS = [(n, f) for f in FORMATS + ["heif"] for n in EXIF_FILES if (n, f) != ("IMG_9424.JPG", "heif")]


@pytest.mark.parametrize("name,fmt", ROUNDTRIPS)
def test_roundtrip_keeps_metadata_and_pixels(name, fmt, tmp_path):
    if fmt == "heif" and not HEIF:
        pytest.skip("HEIF output needs the heic extra: pip install 'backlitfix[heic]'")
    src = shared_path("data", "exif", name)
    photo = fresh("exif", name)
    out = tmp_path / f"out.{fmt}"
    encode(photo, out, fmt=fmt, quality=95, software=SOFTWARE)

    exif, icc, xmp = output_metadata(out, fmt)
    assert exif["0th"][piexif.ImageIFD.Software] == SOFTWARE.encode()
    assert exif["0th"][piexif.ImageIFD.Orientation] == 1
    assert "thumbnail" not in exif or not exif["thumbnail"]
    h, w = photo.pixels.shape[:2]
    if fmt != "tiff":
        assert (exif["Exif"][piexif.ExifIFD.PixelXDimension], exif["Exif"][piexif.ExifIFD.PixelYDimension]) == (w, h)
    if name in MALFORMED:
        assert any(wn.startswith(f"{name}: EXIF") for wn in photo.meta.warnings)
    else:
        before = input_exif(src)
        for ifd, tags in COMPARED.items():
            for tag in tags:
                if tag in before[ifd]:
                    assert exif[ifd].get(tag) == before[ifd][tag], (ifd, tag)
        assert exif["GPS"] == before["GPS"]

    with Image.open(src) as ref:
        ref_icc, ref_xmp = ref.info.get("icc_profile"), ref.info.get("xmp")
    assert icc == ref_icc  # byte for byte (Adobe RGB, Display P3, ...)
    if ref_xmp:
        ref_xmp = ref_xmp.encode() if isinstance(ref_xmp, str) else ref_xmp
        assert xmp and xmp_properties(ref_xmp) <= xmp_properties(xmp)
        assert not re.search(rb'tiff:Orientation="[2-8]"|<tiff:Orientation>[2-8]<', xmp)

    back = decode(out, max_pixels=LIMIT)
    assert back.pixels.shape == photo.pixels.shape
    if fmt in ("png", "tiff"):
        np.testing.assert_array_equal(back.pixels, photo.pixels)  # lossless, 16-bit included
    else:  # lossy, and 8-bit: compare with the input scaled to 8 bits
        expected = photo.pixels.astype(np.float32) / (257 if photo.pixels.dtype == np.uint16 else 1)
        error = np.abs(back.pixels.astype(np.float32) - expected).mean()
        assert error < {"jpeg": 3, "webp": 5, "heif": 6}[fmt]


def test_16bit_stays_16bit_in_png_and_tiff(tmp_path):
    photo = fresh("exif", "tiff_16bit_RGB.tiff")
    for fmt in ("png", "tiff"):
        encode(photo, tmp_path / f"o.{fmt}", fmt=fmt, software=SOFTWARE)
    assert (tmp_path / "o.png").read_bytes()[24] == 16  # IHDR bit depth
    t = tifffile.imread(tmp_path / "o.tiff")
    assert t.dtype == np.uint16
    np.testing.assert_array_equal(t, tifffile.imread(shared_path("data", "exif", "tiff_16bit_RGB.tiff")))


def test_16bit_tiff_in_big_endian_exif_byte_order(tmp_path):
    # A TIFF is written in its EXIF block's byte order (Apple's is big-endian): samples must follow
    meta = fresh("exif", "IMG_9424.JPG").meta
    assert meta.exif[:2] == b"MM"
    rng = np.random.default_rng(3)
    px = rng.integers(0, 65536, (33, 47, 3), dtype=np.uint16)[::-1, ::2]  # a non-contiguous view, too
    encode(Photo(Path("a.tif"), px, meta), tmp_path / "o.tif", fmt="tiff", software=SOFTWARE)
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        assert tf.byteorder == ">"
        np.testing.assert_array_equal(tf.asarray(), px)
    assert piexif.load(str(tmp_path / "o.tif"))["0th"][piexif.ImageIFD.Make] == b"Apple"


def test_16bit_to_8bit_rounds_to_nearest():
    values = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(to_8bit(values), np.rint(values / 257).astype(np.uint8))
    assert to_8bit(np.array([128, 129, 65406, 65407], np.uint16)).tolist() == [0, 1, 254, 255]


def test_jpeg_uses_444_chroma_at_high_quality_and_420_below(tmp_path):
    photo = fresh("exif", "landscape_1.jpg")
    for q, sampling in ((95, (1, 1)), (80, (2, 2))):
        encode(photo, tmp_path / f"q{q}.jpg", fmt="jpeg", quality=q, software=SOFTWARE)
        with Image.open(tmp_path / f"q{q}.jpg") as im:
            assert im.layer[0][1:3] == sampling  # luma sampling factors relative to chroma
    assert (tmp_path / "q95.jpg").stat().st_size > (tmp_path / "q80.jpg").stat().st_size


def test_exiftool_reads_tiff_exif_subifd(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("exiftool"):
        pytest.skip("exiftool not installed (apt-get install libimage-exiftool-perl)")
    photo = fresh("exif", "DSCN0010.jpg")
    encode(photo, tmp_path / "o.tif", fmt="tiff", software=SOFTWARE)
    out = subprocess.run(["exiftool", "-G1", "-s", "-a", str(tmp_path / "o.tif")], capture_output=True, text=True)
    out = out.stdout
    assert re.search(r"\[IFD0\]\s+Make\s+: NIKON", out)
    assert re.search(r"\[ExifIFD\]\s+ExposureTime\s+: ", out)
    assert re.search(r"\[GPS\]\s+GPSLatitude\s+: 43 deg 28' 2.81\"", out)
    assert re.search(r"\[IFD0\]\s+Software\s+: " + SOFTWARE, out)
