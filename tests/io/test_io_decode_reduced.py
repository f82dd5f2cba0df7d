"""decode(path, reduce_to=N): `run`'s decoder at reduced size, for training, eval and the benches."""
import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from backlitfix.constants import MAX_PIXELS
from backlitfix.io import decode
from backlitfix.io.metadata import srgb_profile
from backlitfix.photo import PhotoError
from conftest import shared_path


def shrink(pixels: np.ndarray, shape) -> np.ndarray:
    """The full decode shrunk to ``shape`` (what the reduced decode must look like)."""
    im = Image.fromarray(pixels)
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.BOX)).astype(np.float64)


def in_srgb(photo) -> np.ndarray:
    """A full decode's pixels converted from the profile it keeps to sRGB (the reference for analysis)."""
    if not photo.meta.icc or photo.meta.icc == srgb_profile():
        return photo.pixels
    src = ImageCms.ImageCmsProfile(io.BytesIO(photo.meta.icc))
    return np.asarray(ImageCms.profileToProfile(Image.fromarray(photo.pixels), src, ImageCms.createProfile("sRGB"),
                                                outputMode="RGB"))


def test_size_between_the_request_and_twice_it_long_and_short_side():
    p = shared_path("data", "exif", "IMG_9424.JPG")  # 4032 x 3024
    for reduce_to, min_short in ((448, 0), (448, 224), (100, 400), (64, 0)):
        h, w = decode(p, max_pixels=MAX_PIXELS, reduce_to=reduce_to, min_short=min_short).pixels.shape[:2]
        assert max(h, w) >= reduce_to and min(h, w) >= min_short
        assert max(h, w) < 2 * reduce_to or min(h, w) < 2 * min_short
    assert decode(p, max_pixels=MAX_PIXELS, reduce_to=5000).pixels.shape == (3024, 4032, 3)  # never enlarged


@pytest.mark.parametrize("k", range(1, 9))
def test_orientation_applied(k):
    """landscape_1..8 store the picture under each EXIF orientation (2..8 with a Generic RGB profile)."""
    p = shared_path("data", "exif", f"landscape_{k}.jpg")
    full = decode(p, max_pixels=MAX_PIXELS)
    red = decode(p, max_pixels=MAX_PIXELS, reduce_to=150).pixels
    assert red.shape == (113, 150, 3)  # upright: landscape, whatever the stored shape
    ref = shrink(in_srgb(full), red.shape)
    assert np.abs(red - ref).mean() < 6
    assert np.abs(red - ref[::-1, ::-1]).mean() > 20  # the picture upside down would fail
    assert np.abs(red - ref[:, ::-1]).mean() > 20  # and mirrored


def test_matches_the_full_decode():
    for name in ("DSCN0010.jpg", "hopper_bad_exif.jpg", "IMG_9424.JPG"):  # JPEG: DCT-scaled, so close only
        p = shared_path("data", "exif", name)
        red = decode(p, max_pixels=MAX_PIXELS, reduce_to=120).pixels
        assert red.dtype == np.uint8
        assert np.abs(red - shrink(in_srgb(decode(p, max_pixels=MAX_PIXELS)), red.shape)).mean() < 6, name
    for name, factor in (("exif.png", 4), ("flower.webp", 3)):  # other formats: Pillow's box reduce, exactly
        p = shared_path("data", "exif", name)
        full = Image.fromarray(decode(p, max_pixels=MAX_PIXELS).pixels)
        red = decode(p, max_pixels=MAX_PIXELS, reduce_to=max(full.size) // factor).pixels
        assert np.array_equal(red, np.asarray(full.reduce(factor))), name


@pytest.mark.parametrize("name, space", [("photoprism_example_adobergb.png", "Adobe RGB"),
                                         ("chameleon_lime.jpg", "Adobe RGB"), ("IMG_9424.JPG", "Display P3")])
def test_icc_profile_converted_to_srgb(name, space):
    """The full decode keeps the file's own profile (outputs carry it); analysis needs sRGB values."""
    p = shared_path("data", "exif", name)
    full = decode(p, max_pixels=MAX_PIXELS)
    assert space in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(full.meta.icc)))
    src = ImageCms.ImageCmsProfile(io.BytesIO(full.meta.icc))
    srgb = np.asarray(ImageCms.profileToProfile(Image.fromarray(full.pixels), src,
                                                ImageCms.createProfile("sRGB"), outputMode="RGB"))
    red = decode(p, max_pixels=MAX_PIXELS, reduce_to=100)
    assert red.meta.icc == srgb_profile()
    converted = np.abs(red.pixels - shrink(srgb, red.pixels.shape)).mean()
    unconverted = np.abs(red.pixels - shrink(full.pixels, red.pixels.shape)).mean()
    assert converted < 4.5 and unconverted > converted + 2  # the file's own values would fail


def test_pixel_limit_is_the_full_size_even_when_reducing():
    p = shared_path("data", "exif", "IMG_9424.JPG")  # 12.2 MP
    with pytest.raises(PhotoError, match="over the limit of 12000000"):
        decode(p, max_pixels=12_000_000, reduce_to=64)
    assert decode(p, max_pixels=12_200_000, reduce_to=64).pixels.shape[:2] == (54, 72)
    raw = shared_path("data", "raw", "canon_eos_6d.dng")
    with pytest.raises(PhotoError, match="over the limit of 900000"):
        decode(raw, max_pixels=900_000, reduce_to=64)  # 1224 x 816: its preview alone would pass


@pytest.mark.parametrize("name", ["canon_eos_6d.dng", "Nikon_uncompressed.nef"])
def test_raw_reduced_is_upright_like_the_full_decode(name):
    p = shared_path("data", "raw", name)
    full = decode(p, max_pixels=MAX_PIXELS).pixels
    red = decode(p, max_pixels=MAX_PIXELS, reduce_to=448, min_short=224).pixels
    assert red.dtype == np.uint8 and min(red.shape[:2]) >= 224
    assert (full.shape[0] > full.shape[1]) == (red.shape[0] > red.shape[1])  # same orientation
    aspect = full.shape[1] / full.shape[0]
    assert red.shape[1] / red.shape[0] == pytest.approx(aspect, rel=0.05)


def test_bytes_given_decode_like_the_file(tmp_path):
    p = shared_path("data", "exif", "landscape_8.jpg")
    a = decode(p, max_pixels=MAX_PIXELS, reduce_to=150).pixels
    b = decode(p, max_pixels=MAX_PIXELS, reduce_to=150, data=p.read_bytes()).pixels
    assert np.array_equal(a, b)


def test_16_bit_and_transparency(tmp_path):
    tif = shared_path("data", "exif", "tiff_16bit_RGB.tiff")
    full = decode(tif, max_pixels=MAX_PIXELS).pixels
    assert full.dtype == np.uint16
    red = decode(tif, max_pixels=MAX_PIXELS, reduce_to=100).pixels
    assert red.dtype == np.uint8 and np.abs(red - full / 257.0).max() <= 1
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :30, 3] = 255  # left half opaque red, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    px = decode(tmp_path / "a.png", max_pixels=MAX_PIXELS, reduce_to=60).pixels
    assert px[:, :30].tolist() == [[[200, 0, 0]] * 30] * 40
    assert (px[:, 30:] == 255).all()  # transparent areas onto white


def test_problems_are_photo_errors(tmp_path):
    (tmp_path / "t.jpg").write_text("not a photo, just text\n")
    with pytest.raises(PhotoError, match="looks like a text file"):
        decode(tmp_path / "t.jpg", max_pixels=MAX_PIXELS, reduce_to=64)
    with pytest.raises(PhotoError, match="file is empty"):
        decode(tmp_path / "t.jpg", max_pixels=MAX_PIXELS, reduce_to=64, data=b"")
    good = shared_path("data", "exif", "DSCN0010.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(PhotoError, match="truncated"):
        decode(tmp_path / "cut.jpg", max_pixels=MAX_PIXELS, reduce_to=64)


def test_threads_share_the_colour_transforms_safely():
    """Training decodes in a thread pool; the cached ICC transforms must give every thread the same pixels."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [shared_path("data", "exif", n) for n in ("IMG_9424.JPG", "chameleon_lime.jpg", "landscape_3.jpg")] * 4
    alone = [decode(p, max_pixels=MAX_PIXELS, reduce_to=200).pixels for p in paths]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: decode(p, max_pixels=MAX_PIXELS, reduce_to=200).pixels, paths))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
