"""Reading a photo file into a Photo: upright pixels, 8 or 16 bits, with its metadata kept.

Every per-file problem becomes a PhotoError with a one-line reason; the size limit is checked from
the header, before any pixel is decoded.
"""
from __future__ import annotations

import io
import mmap
import stat
import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from ..photo import Metadata, Photo, PhotoError
from .formats import HEIC_HINT, format_of
from .metadata import clean_exif, clean_file_exif, icc_colour_space, srgb_profile, xmp_orientation, xmp_upright
from .orientation import upright
from .raw import decode_raw
from .tiff_ifd import TiffFormatError, TiffReader, image_data_end

# Our own limit (max_pixels) replaces Pillow's, so Pillow neither warns nor raises on its own terms
Image.MAX_IMAGE_PIXELS = None
# A truncated file is an error, never a silently grey-filled picture
ImageFile.LOAD_TRUNCATED_IMAGES = False

_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "TIFF": "tiff", "WEBP": "webp", "HEIF": "heif"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_LOAD_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


def decode(path: Path | str, *, max_pixels: int) -> Photo:
    """Read `path` (JPEG, PNG, TIFF, WebP, HEIC/HEIF or a camera RAW) as an upright Photo."""
    path = Path(path)
    head = _head(path)
    if _looks_like_text(head):
        raise PhotoError(path, "not an image (looks like a text file)")
    if format_of(path) == "raw":
        return decode_raw(path, max_pixels=max_pixels)
    heif = format_of(path) == "heif" or (head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS)
    if heif and not _heif_available():
        raise PhotoError(path, HEIC_HINT)
    return _decode_pillow(path, max_pixels)


def _head(path: Path) -> bytes:
    """The first bytes, after the checks that give the clearest reasons for unusable paths."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PhotoError(path, "file not found") from None
    except OSError as e:
        raise PhotoError(path, f"cannot read file ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise PhotoError(path, "not an image (it is a folder)")
    if not stat.S_ISREG(st.st_mode):
        raise PhotoError(path, "not an image (not a regular file)")
    if st.st_size == 0:
        raise PhotoError(path, "not an image (file is empty)")
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except PermissionError:
        raise PhotoError(path, "cannot read file (permission denied)") from None
    except OSError as e:
        raise PhotoError(path, f"cannot read file ({e.strerror})") from None


@cache
def _heif_available() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _decode_pillow(path: Path, max_pixels: int) -> Photo:
    name = path.name
    with open(path, "rb") as f:
        try:
            im = Image.open(f, formats=_pillow_formats())
        except UnidentifiedImageError:
            raise PhotoError(path, "not an image (unrecognised file content)") from None
        except _LOAD_ERRORS as e:
            raise PhotoError(path, f"damaged or truncated image ({e})") from None
        fmt = _FORMATS[im.format]
        w, h = im.size
        if w * h > max_pixels:
            raise PhotoError(path, f"image has {w * h} pixels, over the limit of {max_pixels} (input.max_pixels)")
        if fmt == "tiff":  # a TIFF's EXIF tags live in the file's own IFD0
            exif, orientation, exif_warnings = _tiff_exif(path, f)
        try:
            pixels, icc, warnings = _pixels(im, f, name)
        except _LOAD_ERRORS as e:
            raise PhotoError(path, _load_error(fmt, e)) from None
        info = im.info  # complete only after loading (a PNG's eXIf may follow the pixel data)

    if fmt != "tiff":
        exif, orientation, exif_warnings = clean_exif(info["exif"], name) if info.get("exif") else (None, None, [])
    xmp = info.get("xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if orientation is None:
        orientation = xmp_orientation(xmp)
    if fmt != "heif":  # libheif has already applied the container's rotation and mirroring
        pixels = upright(pixels, orientation)
    meta = Metadata(exif=exif, icc=icc, xmp=xmp_upright(xmp) if xmp else None, source_format=fmt,
                    bit_depth=16 if pixels.dtype == np.uint16 else 8, warnings=warnings + exif_warnings)
    return Photo(path, pixels, meta)


def _tiff_exif(path: Path, f) -> tuple[bytes | None, int | None, list[str]]:
    """EXIF from a TIFF's own directories, after checking the file holds all its image data
    (libtiff's error for a cut file is an unhelpful 'decoder error -2')."""
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            end = image_data_end(TiffReader(buf))
        except TiffFormatError:  # BigTIFF: Pillow reads its pixels, this reader not its tags
            return None, None, [f"{path.name}: BigTIFF tags are not read; EXIF not kept"]
        if end > len(buf):
            raise PhotoError(path, f"truncated TIFF (image data needs {end} bytes, the file has {len(buf)})")
        return clean_file_exif(buf, path.name)


def _pillow_formats() -> list[str]:
    Image.init()  # load every plugin (MPO's too), then keep ours; HEIF once pillow_heif registered it
    return [f for f in _FORMATS if f in Image.OPEN]


def _looks_like_text(head: bytes) -> bool:
    text = head.decode("utf-8", "ignore")  # "ignore": the sample may end inside a character
    return len(text.encode()) >= len(head) - 3 and all(c.isprintable() or c.isspace() for c in text)


def _load_error(fmt: str, e: Exception) -> str:
    msg = str(e)
    if isinstance(e, EOFError) or "truncated" in msg or "premature end" in msg.lower():
        return f"truncated {fmt.upper()}"
    return f"damaged or unsupported {fmt.upper()} ({msg or type(e).__name__})"


def _rawmode(tile) -> str:
    return tile.args if isinstance(tile.args, str) else tile.args[0]


def _pixels(im: Image.Image, f, name: str) -> tuple[np.ndarray, bytes | None, list[str]]:
    """H x W x 3 uint8/uint16 pixels, the ICC profile that describes them, and warnings."""
    icc = im.info.get("icc_profile") or None
    if im.mode in ("RGB", "RGBA") and im.tile and _rawmode(im.tile[0]).endswith((";16B", ";16L", ";16N")):
        pixels, warnings = _flatten(_load_16bit(im, f), name)
        return pixels, icc, warnings
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit greyscale
        grey = np.asarray(im).clip(0, 65535).astype(np.uint16)
        warnings = []
        if icc and icc_colour_space(icc) != b"RGB ":
            warnings.append(f"{name}: greyscale ICC profile dropped (16-bit greyscale is stored as RGB)")
            icc = None
        return np.repeat(grey[..., None], 3, axis=2), icc, warnings
    if im.mode == "F":
        raise ValueError("32-bit floating-point images are not supported")
    im.load()
    if icc and icc_colour_space(icc) != b"RGB ":
        return _colour_managed(im, icc, name)
    if im.mode == "CMYK":
        warning = f"{name}: CMYK without an ICC profile; converted to RGB approximately"
        return np.asarray(im.convert("RGB")), None, [warning]
    if im.mode == "RGB":
        return np.asarray(im), icc, []
    if "A" in im.mode or "transparency" in im.info:
        pixels, warnings = _flatten(np.asarray(im.convert("RGBA")), name)
        return pixels, icc, warnings
    return np.asarray(im.convert("RGB")), icc, []


def _load_16bit(im: Image.Image, f) -> np.ndarray:
    """16-bit RGB(A): Pillow decodes these to 8 bits, keeping each sample's high byte. Decoding a
    second time with the byte order swapped yields the low bytes; together they are exact."""
    im.load()
    hi = np.asarray(im)
    f.seek(0)
    lo_im = Image.open(f, formats=[im.format])
    native = "L" if np.little_endian else "B"
    swap = {"B": "L", "L": "B", "N": {"L": "B", "B": "L"}[native]}

    def other_byte(tile):
        mode = _rawmode(tile)
        mode = mode[:-1] + swap[mode[-1]]
        return tile._replace(args=mode if isinstance(tile.args, str) else (mode, *tile.args[1:]))

    lo_im.tile = [other_byte(t) for t in lo_im.tile]
    lo_im.load()
    return (hi.astype(np.uint16) << 8) | np.asarray(lo_im)


def _flatten(pixels: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """RGB from RGB or RGBA: transparent areas become white, as when a transparent image is printed."""
    if pixels.shape[2] == 3:
        return pixels, []
    top = np.iinfo(pixels.dtype).max
    alpha = pixels[..., 3:].astype(np.float32) / top
    if alpha.min() == 1.0:
        return np.ascontiguousarray(pixels[..., :3]), []
    rgb = pixels[..., :3] * alpha + top * (1.0 - alpha)
    return np.rint(rgb).astype(pixels.dtype), [f"{name}: transparency flattened onto white"]


def _colour_managed(im: Image.Image, icc: bytes, name: str) -> tuple[np.ndarray, bytes, list[str]]:
    """Non-RGB profiles (CMYK, greyscale) cannot describe RGB pixels: convert to sRGB through the
    embedded profile, so colours stay right, and attach an sRGB profile."""
    space = icc_colour_space(icc).decode("latin-1").strip()
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        rgb = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        return (np.asarray(im.convert("RGB")), None,
                [f"{name}: its {space} ICC profile could not be used ({e}); dropped, colours may shift"])
    return np.asarray(rgb), srgb_profile(), [f"{name}: {im.mode} image with a {space} ICC profile converted to sRGB"]
