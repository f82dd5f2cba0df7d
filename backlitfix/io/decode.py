"""Reading a photo file into a Photo: upright pixels, 8 or 16 bits, with its metadata kept.

Every per-file problem becomes a PhotoError with a one-line reason; the size limit is checked from
the header, before any pixel is decoded.

``decode(path, reduce_to=N)`` is the same reader for analysis (training, eval, benches): 8-bit sRGB
at a reduced size, decoded no larger than needed (libjpeg's DCT scaling for JPEG, a RAW's embedded
preview or LibRaw's half-size development), with the same checks, orientation and pixel limit.
"""
from __future__ import annotations

import io
import mmap
import stat
import struct
import threading
import zlib
from contextlib import contextmanager
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import rawpy
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from ..constants import PILLOW_READABLE as _FORMATS
from ..photo import Metadata, Photo, PhotoError
from .formats import HEIC_HINT, format_of
from .metadata import (
    EXTENDED_XMP_HEADER,
    clean_exif,
    clean_file_exif,
    icc_colour_space,
    read_extended_xmp,
    srgb_profile,
    xmp_orientation,
    xmp_upright,
)
from .orientation import orientation_of_flip, upright
from .raw import _params as raw_params
from .raw import decode_raw, libraw_errors
from .tiff_ifd import TiffFormatError, TiffReader, image_data_end, page_directories, sample_format

# A truncated file is an error, never a silently grey-filled picture
ImageFile.LOAD_TRUNCATED_IMAGES = False

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_ALPHA_MODES = ("RGBA", "LA", "PA")
_LOAD_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


def decode(path: Path | str, *, max_pixels: int, reduce_to: int | None = None, min_short: int = 0,
           data: bytes | None = None) -> Photo:
    """Read `path` (JPEG, PNG, TIFF, WebP, HEIC/HEIF or a camera RAW) as an upright Photo.

    ``reduce_to``: decode for analysis instead, as 8-bit sRGB (ICC profiles applied, transparency
    flattened onto white, no metadata kept) shrunk by a whole factor while the long side stays at
    least ``reduce_to`` and the short side at least ``min_short``: between those and about twice them
    (callers resize to their exact size). ``data``: the file's bytes, when the caller has read them
    already (training hashes them); the pixel limit applies to the full image size either way.
    """
    path = Path(path)
    head = _head(path) if data is None else _head_of(path, data)
    if _looks_like_text(head):
        raise PhotoError(path, "not an image (looks like a text file)")
    if format_of(path) == "raw":
        if reduce_to is not None:
            return _decode_raw_reduced(path, data, max_pixels, reduce_to, min_short)
        return decode_raw(path, max_pixels=max_pixels)
    heif = format_of(path) == "heif" or (head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS)
    if heif and not _heif_available():
        raise PhotoError(path, HEIC_HINT)
    with _own_size_limit():
        if reduce_to is not None:
            return _decode_reduced(path, data, max_pixels, reduce_to, min_short)
        return _decode_pillow(path, max_pixels)


_limit_lock = threading.Lock()
_limit_users = 0
_pillow_limit: int | None = None


@contextmanager
def _own_size_limit():
    """Pillow's process-wide decompression-bomb limit (89 MP warns, 179 MP fails) stands aside
    while we read a file: ours (input.max_pixels) is checked from the header before any pixel is
    decoded. Restored when the last concurrent decode ends, so importing backlitfix, or using
    Pillow elsewhere in the process, keeps Pillow's own setting."""
    global _limit_users, _pillow_limit
    with _limit_lock:
        if _limit_users == 0:
            _pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _pillow_limit


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


def _head_of(path: Path, data: bytes) -> bytes:
    if not data:
        raise PhotoError(path, "not an image (file is empty)")
    return data[:64]


@cache
def _heif_available() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _open_pillow(path: Path, f, max_pixels: int) -> tuple[Image.Image, str]:
    """(lazily opened image, our format name); one-line errors for what is no image, damaged, or too large
    (from the header, before any pixel is decoded)."""
    try:
        im = Image.open(f, formats=_pillow_formats())
    except UnidentifiedImageError:
        reason = _unsupported_tiff(f, opened=False) or "not an image (unrecognised file content)"
        raise PhotoError(path, reason) from None
    except _LOAD_ERRORS as e:
        raise PhotoError(path, f"damaged or truncated image ({e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise PhotoError(path, f"image has {w * h} pixels, over the limit of {max_pixels} (input.max_pixels)")
    return im, _FORMATS[im.format]


def _decode_pillow(path: Path, max_pixels: int) -> Photo:
    name = path.name
    with open(path, "rb") as f:
        im, fmt = _open_pillow(path, f, max_pixels)
        w, h = im.size
        if fmt == "tiff":  # a TIFF's EXIF tags live in the file's own IFD0
            if reason := _unsupported_tiff(f):  # float or 32-bit greyscale, which Pillow opens
                raise PhotoError(path, reason)
            exif, orientation, exif_warnings, pages = _tiff_exif(path, f)
        else:
            pages = getattr(im, "n_frames", 1) if fmt in ("png", "webp") else 1
        try:
            pixels, alpha, icc, warnings = _pixels(im, f, name)
        except _LOAD_ERRORS as e:
            raise PhotoError(path, _load_error(fmt, e)) from None
        info = im.info  # complete only after loading (a PNG's eXIf may follow the pixel data)
        extension = [s for m, s in getattr(im, "applist", ()) if m == "APP1" and s.startswith(EXTENDED_XMP_HEADER)]

    if fmt != "tiff":
        exif, orientation, exif_warnings = clean_exif(info["exif"], name) if info.get("exif") else (None, None, [])
    xmp = info.get("xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    xmp, xmp_extended, xmp_warnings = read_extended_xmp(xmp, extension, name) if fmt == "jpeg" else (xmp, None, [])
    warnings += xmp_warnings
    if orientation is None:
        orientation = xmp_orientation(xmp)
    if fmt != "heif":  # libheif has already applied the container's rotation and mirroring
        pixels = upright(pixels, orientation)
        alpha = None if alpha is None else upright(alpha, orientation)
    if pages > 1:
        warnings.append(_pages_dropped(name, fmt, pages))
    meta = Metadata(exif=exif, icc=icc, xmp=xmp_upright(xmp) if xmp else None, source_format=fmt,
                    xmp_extended=xmp_upright(xmp_extended) if xmp_extended else None,
                    bit_depth=16 if pixels.dtype == np.uint16 else 8, warnings=warnings + exif_warnings)
    return Photo(path, pixels, meta, alpha=alpha)


def _pages_dropped(name: str, fmt: str, n: int) -> str:
    what, kind = ("page", "multi-page TIFF") if fmt == "tiff" else ("frame", f"animated {fmt.upper()}")
    return f"{name}: {kind}: only {what} 1 of {n} is corrected; {n - 1} {what}{'s' * (n > 2)} dropped"


def _tiff_exif(path: Path, f) -> tuple[bytes | None, int | None, list[str], int]:
    """EXIF from a TIFF's own directories, after checking the file holds all its image data
    (libtiff's error for a cut file is an unhelpful 'decoder error -2'); and how many full-size
    pages the file has (reduced-resolution previews are not pages)."""
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            r = TiffReader(buf)
            end = image_data_end(r)
        except TiffFormatError:  # BigTIFF: Pillow reads its pixels, this reader not its tags
            return None, None, [f"{path.name}: BigTIFF tags are not read; EXIF not kept"], 1
        if end > len(buf):
            raise PhotoError(path, f"truncated TIFF (image data needs {end} bytes, the file has {len(buf)})")
        pages = sum(1 for d in page_directories(r) if _is_page(d, r.endian))
        return (*clean_file_exif(buf, path.name), max(pages, 1))


def _is_page(entries: dict, endian: str) -> bool:
    """A full-size image: it has a width (not a garbage directory) and is no reduced-resolution preview."""
    subfile = entries[0x00FE].first(endian) if 0x00FE in entries else 0
    return 0x0100 in entries and not (subfile or 0) & 1


def _unsupported_tiff(f, *, opened: bool = True) -> str | None:
    """Why we cannot read a TIFF, when it is its sample type (float, 32-bit); or, for one that
    Pillow could not open at all (`opened` False), its layout."""
    try:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            kind, bits, samples = sample_format(TiffReader(buf))
    except (TiffFormatError, OSError, ValueError):
        return None
    if kind == "float":
        return f"{bits}-bit floating-point TIFF is not supported (save it as 8- or 16-bit integer TIFF)"
    if bits > 16:
        return f"{bits}-bit {kind} TIFF is not supported (save it as 8- or 16-bit TIFF)"
    if not opened:
        return f"unsupported TIFF layout ({samples} samples of {bits}-bit {kind} per pixel)"
    return None


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


def _pixels(im: Image.Image, f, name: str) -> tuple[np.ndarray, np.ndarray | None, bytes | None, list[str]]:
    """H x W x 3 uint8/uint16 colour, the H x W alpha channel (None when the file has none), the ICC
    profile that describes the colour, and warnings."""
    icc = im.info.get("icc_profile") or None
    if im.tile and _rawmode(im.tile[0]) == "LA;16B":  # 16-bit grey + alpha PNG, which Pillow cuts to 8 bits
        # read as 8-bit RGBA instead: the same 4 bytes a pixel, so each byte arrives exactly
        im.tile = [_with_rawmode(t, "RGBA") for t in im.tile]
        b = np.asarray(im).astype(np.uint16)
        return _grey16((b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3], icc, name)
    if im.mode in ("RGB", "RGBA") and im.tile and _rawmode(im.tile[0]).endswith((";16B", ";16L", ";16N")):
        return (*_split(_load_16bit(im, f)), icc, [])
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit greyscale
        return _grey16(np.asarray(im).clip(0, 65535).astype(np.uint16), None, icc, name)
    if im.mode == "F":
        raise ValueError("32-bit floating-point images are not supported")
    im.load()
    alpha = None
    if im.mode in _ALPHA_MODES or "transparency" in im.info:  # or a PNG's tRNS (palette or colour key)
        alpha = np.asarray((im if im.mode in _ALPHA_MODES else im.convert("RGBA")).getchannel("A"))
        im = im.convert("L" if im.mode in ("LA", "L") else "RGB")  # greyscale may still need its ICC
    if icc and icc_colour_space(icc) != b"RGB ":
        return _colour_managed(im, icc, name, alpha)
    if im.mode == "CMYK":
        warning = f"{name}: CMYK without an ICC profile; converted to RGB approximately"
        return np.asarray(im.convert("RGB")), alpha, None, [warning]
    if im.mode == "RGB":
        return np.asarray(im), alpha, icc, []
    return np.asarray(im.convert("RGB")), alpha, icc, []


def _grey16(grey: np.ndarray, alpha: np.ndarray | None, icc: bytes | None, name: str):
    warnings = []
    if icc and icc_colour_space(icc) != b"RGB ":
        warnings.append(f"{name}: greyscale ICC profile dropped (16-bit greyscale is stored as RGB)")
        icc = None
    return np.repeat(grey[..., None], 3, axis=2), alpha, icc, warnings


def _load_16bit(im: Image.Image, f) -> np.ndarray:
    """16-bit RGB(A): Pillow decodes these to 8 bits, keeping each sample's high byte. Decoding a
    second time with the byte order swapped yields the low bytes; together they are exact.
    Associated (premultiplied) alpha is read as stored, and divided out here at full precision."""
    premultiplied = _rawmode(im.tile[0]).startswith("RGBa")
    im.tile = [_with_rawmode(t, _rawmode(t).replace("RGBa", "RGBA")) for t in im.tile]
    im.load()
    hi = np.asarray(im)
    f.seek(0)
    lo_im = Image.open(f, formats=[im.format])
    native = "L" if np.little_endian else "B"
    swap = {"B": "L", "L": "B", "N": {"L": "B", "B": "L"}[native]}

    def other_byte(tile):
        mode = _rawmode(tile).replace("RGBa", "RGBA")
        return _with_rawmode(tile, mode[:-1] + swap[mode[-1]])

    lo_im.tile = [other_byte(t) for t in lo_im.tile]
    lo_im.load()
    px = (hi.astype(np.uint16) << 8) | np.asarray(lo_im)
    return _unpremultiply(px) if premultiplied else px


def _with_rawmode(tile, mode: str):
    return tile._replace(args=mode if isinstance(tile.args, str) else (mode, *tile.args[1:]))


def _unpremultiply(px: np.ndarray) -> np.ndarray:
    """Straight colour from colour premultiplied by alpha (TIFF ExtraSamples 1); alpha unchanged."""
    top = np.iinfo(px.dtype).max
    a = px[..., 3:].astype(np.float64)
    rgb = np.where(a > 0, px[..., :3] * (top / np.maximum(a, 1)), 0)
    return np.concatenate([np.rint(rgb.clip(0, top)).astype(px.dtype), px[..., 3:]], axis=2)


def _split(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour and alpha, each in its own contiguous array: the enhancer gets only the colour, and
    the encoder puts the alpha back unchanged."""
    if pixels.shape[2] == 3:
        return pixels, None
    return np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3])


def _colour_managed(im: Image.Image, icc: bytes, name: str,
                    alpha: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, bytes | None, list[str]]:
    """Non-RGB profiles (CMYK, greyscale) cannot describe RGB pixels: convert to sRGB through the
    embedded profile, so colours stay right, and attach an sRGB profile."""
    space = icc_colour_space(icc).decode("latin-1").strip()
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        rgb = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        return (np.asarray(im.convert("RGB")), alpha, None,
                [f"{name}: its {space} ICC profile could not be used ({e}); dropped, colours may shift"])
    return (np.asarray(rgb), alpha, srgb_profile(),
            [f"{name}: {im.mode} image with a {space} ICC profile converted to sRGB"])


# --- reduced-size decoding for analysis ----------------------------------------------------------


def reduced_scale(w: int, h: int, reduce_to: int, min_short: int) -> float:
    """How far a w x h image may shrink: long side down to reduce_to, short side not below min_short."""
    return min(1.0, max(reduce_to / max(w, h, 1), min_short / max(1, min(w, h))))


def _decode_reduced(path: Path, data: bytes | None, max_pixels: int, reduce_to: int, min_short: int) -> Photo:
    with open(path, "rb") if data is None else io.BytesIO(data) as f:
        im, fmt, orientation, warnings = _reduced_pillow(path, f, max_pixels, reduce_to, min_short)
    pixels = upright(np.asarray(im), orientation)
    return Photo(path, pixels, Metadata(icc=srgb_profile(), source_format=fmt, bit_depth=8, warnings=warnings))


def _reduced_pillow(path: Path, f, max_pixels: int, reduce_to: int,
                    min_short: int) -> tuple[Image.Image, str, int | None, list[str]]:
    """(8-bit sRGB image as stored, reduced; format; the orientation still to apply; warnings)."""
    name = path.name
    im, fmt = _open_pillow(path, f, max_pixels)
    w, h = im.size
    if im.mode == "F":
        raise PhotoError(path, "32-bit floating-point images are not supported")
    s = reduced_scale(w, h, reduce_to, min_short)
    if fmt == "jpeg" and s < 1:  # libjpeg's DCT scaling: 1/2-1/8 of the work, never below the size asked
        im.draft(im.mode, (max(1, int(w * s)), max(1, int(h * s))))
    try:
        im.load()
        orientation = None if fmt == "heif" else _orientation(im, fmt, f, name)  # libheif has turned it
        rgb, warnings = _analysis_rgb(im, name, lambda im: _reduce_by_whole_factor(im, reduce_to, min_short))
    except _LOAD_ERRORS as e:
        raise PhotoError(path, _load_error(fmt, e)) from None
    return rgb, fmt, orientation, warnings


def _orientation(im: Image.Image, fmt: str, f, name: str) -> int | None:
    """The EXIF (else XMP) orientation, read as the full decode reads it."""
    orientation = None
    if fmt == "tiff":  # a TIFF's EXIF tags live in the file's own IFD0
        if isinstance(f, io.BytesIO):
            orientation = clean_file_exif(f.getbuffer(), name)[1]
        else:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                orientation = clean_file_exif(buf, name)[1]
    elif im.info.get("exif"):
        orientation = clean_exif(im.info["exif"], name)[1]
    if orientation is None:
        xmp = im.info.get("xmp")
        orientation = xmp_orientation(xmp.encode("utf-8") if isinstance(xmp, str) else xmp)
    return orientation


def _analysis_rgb(im: Image.Image, name: str, reduce) -> tuple[Image.Image, list[str]]:
    """8-bit sRGB: 16-bit scaled down, transparency onto white, ``reduce``d, then every ICC profile
    converted to sRGB (on the reduced pixels, the fewest)."""
    icc = im.info.get("icc_profile") or None
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit greyscale: Pillow's convert would clip
        im = Image.fromarray((np.asarray(im, dtype=np.float32) / 257.0).clip(0, 255).round().astype(np.uint8), "L")
        icc = None  # as the full decode: a greyscale profile is not kept for 16-bit greyscale
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        grey = im.mode in ("LA", "L")
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        im = im.convert("L" if grey else "RGB")  # greyscale stays grey, so a grey profile still applies
    if im.mode not in ("L", "RGB", "CMYK"):  # palette, 1-bit, ...: their profile (if any) describes RGB
        im = im.convert("RGB")
    im = reduce(im)
    if icc and not _is_srgb(icc):
        space = icc_colour_space(icc).decode("latin-1").strip()
        try:
            return ImageCms.applyTransform(im, _to_srgb(icc, im.mode)), []
        except (ImageCms.PyCMSError, OSError, ValueError) as e:
            return im.convert("RGB"), [f"{name}: its {space} ICC profile could not be used ({e}); colours may shift"]
    if im.mode == "CMYK":
        return im.convert("RGB"), [f"{name}: CMYK without an ICC profile; converted to RGB approximately"]
    return (im if im.mode == "RGB" else im.convert("RGB")), []


@lru_cache(maxsize=16)  # a library has a few profiles (its cameras'): building one costs as much as applying it
def _to_srgb(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    # NOCACHE: training's decode threads share one transform, and lcms's one-pixel cache is not thread-safe
    return ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), mode,
                                   "RGB", flags=ImageCms.Flags.NOCACHE)


@lru_cache(maxsize=16)
def _is_srgb(icc: bytes) -> bool:
    """An RGB profile that is sRGB already (by its description): converting would change nothing."""
    if icc_colour_space(icc) != b"RGB ":
        return False
    try:
        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return True  # unreadable: the full decode keeps it as it is, and so do we
    return "srgb" in desc.lower().replace(" ", "")


def _reduce_by_whole_factor(im: Image.Image, reduce_to: int, min_short: int) -> Image.Image:
    s = reduced_scale(*im.size, reduce_to, min_short)
    factor = int(1 / s) if s < 1 else 1
    return im.reduce(factor) if factor >= 2 else im


def _decode_raw_reduced(path: Path, data: bytes | None, max_pixels: int, reduce_to: int, min_short: int) -> Photo:
    """A RAW's embedded preview when it is large enough, else LibRaw's half-size development."""
    with libraw_errors(path):
        with rawpy.imread(io.BytesIO(data) if data is not None else str(path)) as raw:
            s = raw.sizes
            if max(s.width * s.height, s.raw_width * s.raw_height) > max_pixels:
                n = max(s.width * s.height, s.raw_width * s.raw_height)
                raise PhotoError(path, f"image has {n} pixels, over the limit of {max_pixels} (input.max_pixels)")
            flip = orientation_of_flip(s.flip)
            im = _raw_preview(path, raw, flip, max_pixels, reduce_to, min_short)
            if im is None or min(im.shape[:2]) < min_short:
                params = raw_params(raw)
                params.update(output_bps=8, half_size=True)
                rgb = Image.fromarray(raw.postprocess(**params))
                im = upright(np.asarray(_reduce_by_whole_factor(rgb, reduce_to, min_short)), flip)
    return Photo(path, im, Metadata(icc=srgb_profile(), source_format="raw", bit_depth=8))


def _raw_preview(path: Path, raw, flip: int, max_pixels: int, reduce_to: int, min_short: int) -> np.ndarray | None:
    """The embedded preview, upright (its own EXIF orientation, else the RAW's), or None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        return upright(np.asarray(thumb.data), flip)
    if thumb.format != rawpy.ThumbFormat.JPEG:
        return None
    try:
        with io.BytesIO(bytes(thumb.data)) as f, _own_size_limit():
            im, _, own, _ = _reduced_pillow(path, f, max_pixels, reduce_to, min_short)
    except PhotoError:  # a damaged preview: develop the RAW instead
        return None
    return upright(np.asarray(im), own if own not in (None, 1) else flip)  # previews usually as the sensor saw
