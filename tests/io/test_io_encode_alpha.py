"""Transparency: decode keeps the alpha channel beside the colour, encode writes it back unchanged;
JPEG, which has none, gets the colour flattened onto white with a warning. Ends with `backlitfix run`."""
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from backlitfix.io import decode, encode
from backlitfix.io.encode import to_8bit
from conftest import cli, model, shared_path
from test_io_decode import _png  # an encoder independent of ours, using all five row filters

LIMIT = 250_000_000
SOFTWARE = "backlitfix test"


def read_png(path: Path) -> np.ndarray:
    """A PNG's samples at full depth (Pillow reads 16-bit RGBA as 8-bit): RGB(A), 8 or 16 bit, no
    interlace, any row filter. Independent of backlitfix's writer and decoder."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, colour_type, _, _, interlace = ihdr
    assert interlace == 0 and colour_type in (2, 6)
    c = 3 if colour_type == 2 else 4
    bpp, stride = c * depth // 8, w * c * depth // 8
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, stride + 1)
    rows = np.zeros((h, stride), np.int32)
    for y in range(h):
        ft, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        up = rows[y - 1] if y else np.zeros(stride, np.int32)
        out = rows[y]
        for x in range(stride):
            a = out[x - bpp] if x >= bpp else 0
            b, cc = up[x], (up[x - bpp] if x >= bpp else 0)
            p = a + b - cc
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            paeth = a if pa <= pb and pa <= pc else b if pb <= pc else cc
            pred = [0, a, b, (a + b) // 2, paeth][ft]
            out[x] = (line[x] + pred) % 256
    px = rows.astype(np.uint8)
    if depth == 16:
        return px.view(">u2").reshape(h, w, c).astype(np.uint16)
    return px.reshape(h, w, c)


def _rgba(dtype, shape=(9, 11)) -> np.ndarray:
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max
    px = rng.integers(0, top + 1, (*shape, 4), dtype=dtype)
    px[0, :, 3] = 0  # fully transparent, fully opaque and partly transparent rows
    px[1, :, 3] = top
    return px


def _write(kind: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Write a transparent test image; return (colour, alpha) as the file stores them."""
    if kind == "png8":
        px = _rgba(np.uint8)
        Image.fromarray(px).save(path)
    elif kind == "png16":
        px = _rgba(np.uint16)
        path.write_bytes(_png(px, 6))
    elif kind in ("tiff8", "tiff16"):
        px = _rgba(np.uint8 if kind == "tiff8" else np.uint16)
        tifffile.imwrite(path, px, photometric="rgb", extrasamples=[2], compression="zlib")
    elif kind == "webp":
        px = _rgba(np.uint8)
        px[..., 3] = np.maximum(px[..., 3], 1)  # libwebp may rewrite the colour under alpha 0
        Image.fromarray(px).save(path, lossless=True, exact=True)
    elif kind == "la":
        la = _rgba(np.uint8)[..., :2]
        Image.fromarray(la, "LA").save(path)
        px = np.concatenate([np.repeat(la[..., :1], 3, axis=2), la[..., 1:]], axis=2)
    elif kind == "la16":  # Pillow itself reads these as 8 bits
        la = _rgba(np.uint16)[..., :2]
        path.write_bytes(_png(la, 4))
        px = np.concatenate([np.repeat(la[..., :1], 3, axis=2), la[..., 1:]], axis=2)
    elif kind == "palette":
        rgb = _rgba(np.uint8)[..., :3] // 64 * 64  # few colours: an exact palette
        im = Image.fromarray(rgb).quantize(colors=64, dither=Image.Dither.NONE)
        im.save(path, transparency=int(np.asarray(im)[0, 0]))  # tRNS: palette entry 0 of row 0 is clear
        px = np.asarray(Image.open(path).convert("RGBA"))
        assert px[0, 0, 3] == 0 and px[..., 3].max() == 255
    return px[..., :3], px[..., 3]


KINDS = {"png8": "png", "png16": "png", "tiff8": "tif", "tiff16": "tif", "webp": "webp", "la": "png",
         "la16": "png", "palette": "png"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decode_keeps_alpha_beside_the_colour(tmp_path, kind):
    path = tmp_path / f"{kind}.{KINDS[kind]}"
    rgb, alpha = _write(kind, path)
    photo = decode(path, max_pixels=LIMIT)
    assert photo.pixels.shape == rgb.shape and photo.pixels.dtype == rgb.dtype  # colour only, for the enhancer
    np.testing.assert_array_equal(photo.pixels, rgb)  # not flattened onto white
    np.testing.assert_array_equal(photo.alpha, alpha)
    assert not any("transparen" in w for w in photo.meta.warnings)


def _read_back(path: Path, fmt: str) -> np.ndarray:
    if fmt == "png":
        return read_png(path)
    if fmt == "tiff":
        with tifffile.TiffFile(path) as tf:
            assert tf.pages[0].extrasamples == (2,)  # unassociated alpha, as the colour is straight
            return tf.asarray()
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("kind", ["png8", "png16", "tiff16", "la", "la16"])
@pytest.mark.parametrize("fmt", ["png", "tiff", "webp"])
def test_encode_writes_the_alpha_back_unchanged(tmp_path, kind, fmt):
    path = tmp_path / f"{kind}.{KINDS[kind]}"
    rgb, alpha = _write(kind, path)
    photo = decode(path, max_pixels=LIMIT)
    photo.pixels = photo.pixels // 2  # stands in for the correction: only the colour changes
    encode(photo, tmp_path / f"out.{fmt}", fmt=fmt, software=SOFTWARE)
    back = _read_back(tmp_path / f"out.{fmt}", fmt)
    assert back.shape == (*rgb.shape[:2], 4)
    if fmt == "webp":  # 8 bits only
        alpha, rgb = to_8bit(alpha), to_8bit(rgb)
    else:
        assert back.dtype == alpha.dtype
    np.testing.assert_array_equal(back[..., 3], alpha)
    if fmt != "webp":  # WebP's colour is lossy
        np.testing.assert_array_equal(back[..., :3], rgb // 2)
    assert photo.meta.warnings == []


def test_jpeg_output_flattens_onto_white_and_says_so(tmp_path):
    path = tmp_path / "a.png"
    rgb, alpha = _write("png8", path)
    photo = decode(path, max_pixels=LIMIT)
    encode(photo, tmp_path / "a.jpg", fmt="jpeg", quality=100, software=SOFTWARE)
    out = np.asarray(Image.open(tmp_path / "a.jpg"), np.float32)
    assert out.shape == rgb.shape
    assert out[0].min() > 240  # the fully transparent row is white
    np.testing.assert_allclose(out[1], rgb[1], atol=12)  # the opaque row is the colour
    assert photo.meta.warnings == ["a.png: transparency flattened onto white (JPEG has no alpha channel)"]
    # an alpha channel with nothing transparent flattens to the colour itself, without a word
    opaque = decode(path, max_pixels=LIMIT)
    opaque.alpha = np.full_like(opaque.alpha, 255)
    encode(opaque, tmp_path / "b.jpg", fmt="jpeg", software=SOFTWARE)
    assert opaque.meta.warnings == []


def test_alpha_follows_the_exif_orientation(tmp_path):
    px = np.zeros((20, 30, 4), np.uint8)
    px[..., 3] = 255
    px[:5, :5, 3] = 0  # the stored top-left corner is transparent
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(px).save(tmp_path / "o6.png", exif=exif.tobytes())
    photo = decode(tmp_path / "o6.png", max_pixels=LIMIT)
    assert photo.alpha.shape == photo.pixels.shape[:2] == (30, 20)
    assert photo.alpha[:5, -5:].max() == 0 and photo.alpha[5:].min() == 255  # turned with the colour


# --- end to end ------------------------------------------------------------------------------------

def _backlit_rgba(path: Path, sixteen: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A real backlit photo with a soft-edged hole punched in it."""
    rgb = np.asarray(Image.open(shared_path("data", "backlit", "ovd0312_4.jpg")).convert("RGB"))
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    alpha = np.clip((np.hypot(yy - h / 2, xx - w / 2) - h / 6) * 8, 0, 255).astype(np.uint8)
    if sixteen:
        rgb16, alpha16 = rgb.astype(np.uint16) * 257 + 3, alpha.astype(np.uint16) * 257 // 3 * 3 + 1
        tifffile.imwrite(path, np.dstack([rgb16, alpha16]), photometric="rgb", extrasamples=[2])
        return rgb16, alpha16
    Image.fromarray(np.dstack([rgb, alpha])).save(path)
    return rgb, alpha


def _dark_brightened(before: np.ndarray, after: np.ndarray, visible: np.ndarray) -> None:
    a, b = before.astype(np.float32).mean(axis=2)[visible], after.astype(np.float32).mean(axis=2)[visible]
    dark = a <= np.percentile(a, 25)
    assert b[dark].mean() > 1.5 * a[dark].mean() + 1


def test_run_keeps_alpha_byte_identical_and_corrects_the_colour(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rgb, alpha = _backlit_rgba(d / "cut.png")
    rgb16, alpha16 = _backlit_rgba(d / "cut16.tif", sixteen=True)
    r = cli("run", "--model", model(), "--json", str(d))
    assert r.exit_code == 0, r.output
    assert [f["warnings"] for f in json.loads(r.stdout)["files"]] == [[], []]
    out = np.asarray(Image.open(d / "backlitfix" / "cut.png"))
    assert out.shape == (*rgb.shape[:2], 4)
    assert out[..., 3].tobytes() == alpha.tobytes()
    _dark_brightened(rgb, out[..., :3], alpha > 0)
    out16 = tifffile.imread(d / "backlitfix" / "cut16.tif")
    assert out16.dtype == np.uint16 and out16[..., 3].tobytes() == alpha16.tobytes()
    _dark_brightened(rgb16, out16[..., :3], alpha16 > 0)


def test_run_to_jpeg_flattens_and_warns_on_stderr_and_in_json(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _backlit_rgba(d / "cut.png")
    r = cli("run", "--model", model(), "--format", "jpeg", "--json", str(d))
    assert r.exit_code == 0, r.output
    warning = "cut.png: transparency flattened onto white (JPEG has no alpha channel)"
    assert json.loads(r.stdout)["files"][0]["warnings"] == [warning]
    assert f"warning: {warning}" in r.stderr
    out = np.asarray(Image.open(d / "backlitfix" / "cut.jpg"))
    assert out.ndim == 3 and out.shape[2] == 3
    h, w = out.shape[:2]
    assert out[h // 2 - 3:h // 2 + 3, w // 2 - 3:w // 2 + 3].min() > 235  # the hole is white


def test_heif_output_carries_alpha_too(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    _, alpha = _write("png8", tmp_path / "a.png")
    photo = decode(tmp_path / "a.png", max_pixels=LIMIT)
    encode(photo, tmp_path / "a.heic", fmt="heif", software=SOFTWARE)
    back = np.asarray(pillow_heif.open_heif(tmp_path / "a.heic"))
    assert back.shape == (*alpha.shape, 4)
    assert np.abs(back[..., 3].astype(int) - alpha).max() <= 2  # HEIF codes its alpha plane lossily too
