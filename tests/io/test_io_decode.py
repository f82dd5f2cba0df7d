"""decode(): every supported input, orientation, bit depth, and every way a file can be unusable."""
import builtins
import importlib
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import piexif
import pytest
import tifffile
from PIL import Image, ImageFile, ImageOps

from backlitfix.io import decode
from backlitfix.io.formats import HEIC_HINT
from backlitfix.photo import PhotoError
from conftest import shared_path

EXIF_FILES = [
    "BlueSquare.jpg", "Canon_DIGITAL_IXUS_400.jpg", "chameleon_lime.jpg", "DSCN0010.jpg", "exif.png",
    "exif_typeerror.jpg", "flower.webp", "flower2.webp", "Fujifilm_FinePix_E500.jpg", "hopper_bad_exif.jpg",
    "IMG_9424.JPG", *[f"landscape_{i}.jpg" for i in range(1, 9)], "Panasonic_DMC-FZ30.jpg",
    "photoprism_example_adobergb.png", "tiff_16bit_RGB.tiff",
]
LIMIT = 250_000_000
decode_module = importlib.import_module("backlitfix.io.decode")  # `backlitfix.io.decode` is the function


def exif_file(name: str) -> Path:
    return shared_path("data", "exif", name)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, reading the reference below
@pytest.mark.parametrize("name", EXIF_FILES)
def test_every_exif_sample_decodes_upright_with_orientation_1(name):
    path = exif_file(name)
    photo = decode(path, max_pixels=LIMIT)
    with Image.open(path) as ref:
        upright = ImageOps.exif_transpose(ref)  # Pillow's independent idea of the upright size
        assert photo.pixels.shape == (upright.height, upright.width, 3)
        assert photo.meta.source_format == {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff"}[ref.format]
    assert photo.pixels.dtype == (np.uint16 if photo.meta.bit_depth == 16 else np.uint8)
    if photo.meta.exif:
        assert piexif.load(photo.meta.exif)["0th"].get(piexif.ImageIFD.Orientation, 1) == 1


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.mean(axis=2).ravel(), b.mean(axis=2).ravel())[0, 1])


def test_all_eight_orientations_show_the_same_picture():
    ref = decode(exif_file("landscape_1.jpg"), max_pixels=LIMIT).pixels.astype(np.float32)
    second = decode(exif_file("landscape_2.jpg"), max_pixels=LIMIT).pixels.astype(np.float32)
    for i in range(2, 9):
        p = decode(exif_file(f"landscape_{i}.jpg"), max_pixels=LIMIT).pixels.astype(np.float32)
        assert p.shape == ref.shape
        # landscape_1 was encoded with different colours, so compare structure with it ...
        upright = _corr(p, ref)
        assert upright > 0.9
        for wrong in (p[::-1], p[:, ::-1], p[::-1, ::-1]):
            assert _corr(wrong, ref) < upright - 0.2
        # ... and pixel values with landscape_2..8, which share an encoder (JPEG noise only)
        assert np.abs(p - second).mean() < 6


def test_exif_and_xmp_orientation_are_reset(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:5, :5] = 255  # marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">' \
          b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    Image.fromarray(rgb).save(tmp_path / "o6.png", exif=exif.tobytes(), pnginfo=_pnginfo_xmp(xmp))
    photo = decode(tmp_path / "o6.png", max_pixels=LIMIT)
    assert photo.pixels.shape == (30, 20, 3)
    assert photo.pixels[:5, -5:].min() == 255  # rotated clockwise: the corner is now top-right
    assert piexif.load(photo.meta.exif)["0th"][piexif.ImageIFD.Orientation] == 1
    assert b'tiff:Orientation="1"' in photo.meta.xmp


def test_orientation_from_xmp_when_exif_has_none(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:5, :5] = 255
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">' \
          b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"><tiff:Orientation>3</tiff:Orientation>' \
          b'</rdf:Description></rdf:RDF></x:xmpmeta>'
    Image.fromarray(rgb).save(tmp_path / "o3.png", pnginfo=_pnginfo_xmp(xmp))
    photo = decode(tmp_path / "o3.png", max_pixels=LIMIT)
    assert photo.pixels[-5:, -5:].min() == 255 and photo.pixels[:5, :5].max() == 0
    assert b"<tiff:Orientation>1</tiff:Orientation>" in photo.meta.xmp


def _pnginfo_xmp(xmp: bytes):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    return info


def test_malformed_exif_keeps_the_photo_and_warns():
    for name in ("exif_typeerror.jpg", "hopper_bad_exif.jpg"):
        with pytest.raises((TypeError, ValueError, struct.error)):
            piexif.load(str(exif_file(name)))  # the premise: piexif cannot read these
        photo = decode(exif_file(name), max_pixels=LIMIT)
        assert photo.pixels.size
        assert any(w.startswith(f"{name}: EXIF") for w in photo.meta.warnings), photo.meta.warnings
        # what was readable is kept, in a block other tools can read again
        assert piexif.load(photo.meta.exif)["0th"]
    # flower.webp only has a stray "Exif\0\0" prefix inside its WebP chunk: no damage, no warning
    photo = decode(exif_file("flower.webp"), max_pixels=LIMIT)
    assert piexif.load(photo.meta.exif)["0th"][piexif.ImageIFD.Model] == b"Canon PowerShot S40"
    assert photo.meta.warnings == []


def test_metadata_is_kept():
    photo = decode(exif_file("chameleon_lime.jpg"), max_pixels=LIMIT)
    with Image.open(exif_file("chameleon_lime.jpg")) as ref:
        assert photo.meta.icc == ref.info["icc_profile"]
        assert b"crs:" in photo.meta.xmp and photo.meta.xmp.strip().startswith(b"<?xpacket")
    gps = piexif.load(photo.meta.exif)["GPS"]
    assert gps == piexif.load(str(exif_file("chameleon_lime.jpg")))["GPS"]
    png = decode(exif_file("photoprism_example_adobergb.png"), max_pixels=LIMIT)
    assert b"Adobe RGB" in png.meta.icc and png.meta.xmp


def test_png_exif_after_pixel_data_is_read():
    photo = decode(exif_file("exif.png"), max_pixels=LIMIT)  # its eXIf chunk follows IDAT
    assert photo.meta.exif and piexif.load(photo.meta.exif)["0th"]


def test_16bit_tiff_keeps_every_value():
    path = exif_file("tiff_16bit_RGB.tiff")
    photo = decode(path, max_pixels=LIMIT)
    expected = tifffile.imread(path)
    assert photo.pixels.dtype == np.uint16 and photo.meta.bit_depth == 16
    assert expected.dtype == np.uint16 and (expected % 257).any()  # the premise: real 16-bit values
    np.testing.assert_array_equal(photo.pixels, expected)


def _png(pixels: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG using all five row filters in turn (an encoder independent of the one tested)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w, c = pixels.shape
    bpp = 2 * c
    rows = pixels.astype(">u2").view(np.uint8).reshape(h, -1).astype(np.int32)
    out = b""
    for y in range(h):
        ft, r = y % 5, rows[y]
        up = rows[y - 1] if y else np.zeros_like(r)
        left = np.concatenate([np.zeros(bpp, np.int32), r[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        p = left + up - ul
        paeth = np.where((abs(p - left) <= abs(p - up)) & (abs(p - left) <= abs(p - ul)), left,
                         np.where(abs(p - up) <= abs(p - ul), up, ul))
        f = [r, r - left, r - up, r - (left + up) // 2, r - paeth][ft]
        out += bytes([ft]) + (f % 256).astype(np.uint8).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b"")


def test_16bit_png_keeps_every_value_for_every_row_filter(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (11, 13, 3), dtype=np.uint16)
    (tmp_path / "rgb16.png").write_bytes(_png(rgb, 2))
    photo = decode(tmp_path / "rgb16.png", max_pixels=LIMIT)
    assert photo.meta.bit_depth == 16
    np.testing.assert_array_equal(photo.pixels, rgb)


def test_16bit_rgba_png_keeps_its_alpha_unchanged(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 65536, (6, 7, 4), dtype=np.uint16)
    rgba[0, 0, 3] = 0  # one transparent pixel
    (tmp_path / "rgba16.png").write_bytes(_png(rgba, 6))
    photo = decode(tmp_path / "rgba16.png", max_pixels=LIMIT)
    np.testing.assert_array_equal(photo.pixels, rgba[..., :3])  # the colour, not flattened
    np.testing.assert_array_equal(photo.alpha, rgba[..., 3])
    assert photo.meta.warnings == []


def test_greyscale_and_palette_become_rgb(tmp_path):
    grey = decode(exif_file("hopper_bad_exif.jpg"), max_pixels=LIMIT).pixels
    assert grey.shape[2] == 3 and np.array_equal(grey[..., 0], grey[..., 2])
    rng = np.random.default_rng(2)
    pal = Image.fromarray(rng.integers(0, 255, (9, 8, 3), dtype=np.uint8)).convert("P")
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode(tmp_path / "p.png", max_pixels=LIMIT).pixels, np.asarray(pal.convert("RGB")))
    grey16 = rng.integers(0, 65536, (5, 4), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g16.tif", grey16)
    photo = decode(tmp_path / "g16.tif", max_pixels=LIMIT)
    assert photo.pixels.dtype == np.uint16 and np.array_equal(photo.pixels[..., 1], grey16)


def test_cmyk_is_converted_to_rgb_with_a_warning(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    photo = decode(tmp_path / "cmyk.jpg", max_pixels=LIMIT)
    r, g, b = photo.pixels.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full: red
    assert any("CMYK" in w for w in photo.meta.warnings)


# --- unusable inputs -----------------------------------------------------------------------------

def _reason(path: Path, max_pixels: int = LIMIT) -> str:
    with pytest.raises(PhotoError) as err:
        decode(path, max_pixels=max_pixels)
    assert err.value.path == Path(path)
    return err.value.reason


def test_empty_text_missing_and_folder(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "not an image (file is empty)"
    (tmp_path / "notes.jpg").write_text("shopping list: milk, eggs\n")
    assert "text" in _reason(tmp_path / "notes.jpg")
    (tmp_path / "noise.png").write_bytes(bytes(range(256)))
    assert "not an image" in _reason(tmp_path / "noise.png")
    assert "not found" in _reason(tmp_path / "missing.jpg")
    (tmp_path / "x.jpg").mkdir()  # what a scan can meet; also stands in for an unreadable path
    assert "folder" in _reason(tmp_path / "x.jpg")


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (4, 4)).save(path)
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything, so simulate the refusal of open()
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    assert "permission denied" in _reason(path)


def test_truncated_jpeg_png_tiff_are_errors(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for name, word in (("IMG_9424.JPG", "truncated JPEG"), ("photoprism_example_adobergb.png", "truncated PNG"),
                       ("tiff_16bit_RGB.tiff", "truncated TIFF"), ("flower2.webp", "truncated")):
        data = exif_file(name).read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        assert word in _reason(cut)


def test_over_max_pixels_is_refused_before_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    reason = _reason(exif_file("IMG_9424.JPG"), max_pixels=12_000_000)
    assert reason == "image has 12192768 pixels, over the limit of 12000000 (input.max_pixels)"


def test_importing_backlitfix_leaves_pillows_limit_alone():
    code = ("from PIL import Image; default = Image.MAX_IMAGE_PIXELS; import backlitfix.cli, backlitfix.io; "
            "assert default is not None and Image.MAX_IMAGE_PIXELS == default, Image.MAX_IMAGE_PIXELS")
    subprocess.run([sys.executable, "-c", code], check=True)


def _bomb_png(path: Path, side: int) -> None:
    """A PNG whose header claims side x side pixels, with a few bytes of (absent) image data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1000)))
                     + chunk(b"IEND", b""))


def test_our_limit_guards_against_a_bomb_and_pillows_stands_aside(tmp_path, monkeypatch):
    _bomb_png(tmp_path / "bomb.png", 40_000)  # 1.6 gigapixels claimed in 1 KB
    assert _reason(tmp_path / "bomb.png") == (
        "image has 1600000000 pixels, over the limit of 250000000 (input.max_pixels)")
    # Pillow's own limit, whatever the process set, neither refuses nor warns about a photo under ours
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for fmt, name in (("png", "big.png"), ("tiff", "big.tif"), ("jpeg", "big.jpg"), ("webp", "big.webp")):
        Image.new("RGB", (100, 60), (9, 99, 199)).save(tmp_path / name, fmt)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a DecompressionBombWarning fails the test
            assert decode(tmp_path / name, max_pixels=LIMIT).pixels.shape == (60, 100, 3)
        assert Image.MAX_IMAGE_PIXELS == 1000  # and it is put back
    assert "over the limit of 5000 (input.max_pixels)" in _reason(tmp_path / "big.png", max_pixels=5000)


def test_heic_without_pillow_heif_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_module, "_heif_available", lambda: False)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic")
    assert _reason(path) == HEIC_HINT


def test_heif_rotation_is_applied_once(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # pillow_heif turns this into the container's rotation (irot), as phones do
    pillow_heif.from_bytes(mode="RGB", size=(60, 40), data=rgb.tobytes()).save(
        tmp_path / "rot.heic", quality=95, exif=exif.tobytes())
    photo = decode(tmp_path / "rot.heic", max_pixels=LIMIT)
    assert photo.meta.source_format == "heif"
    assert photo.pixels.shape == (60, 40, 3)
    assert photo.pixels[:8, -8:].mean() > 200 and photo.pixels[:8, :8].mean() < 50  # top-right, once
