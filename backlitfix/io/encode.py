"""Writing a Photo to a file, atomically, with its metadata made true for the output.

Every format that can hold them gets the EXIF (Orientation 1, Software, the output's pixel size, no
thumbnail), the ICC profile byte for byte, and the XMP (Orientation 1). A photo's alpha channel is
written back unchanged; JPEG, which cannot hold one, gets the colour flattened onto white.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..constants import WRITABLE_FORMATS as FORMATS
from ..photo import Photo, PhotoError
from .atomic import atomic_write
from .formats import HEIC_HINT
from .metadata import (
    EXIF_PREFIX,
    Exif,
    extended_xmp_segments,
    merge_extended_xmp,
    output_exif,
    output_xmp,
    with_extended_guid,
    without_extended_flag,
)
from .png import write_png
from .tiff_write import write_tiff

_JPEG_MARKER = 65533  # most payload bytes a JPEG marker segment can hold
_XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
_WEBP_MAX_SIDE = 16383

_TO_8BIT = np.rint(np.arange(65536) / 257).astype(np.uint8)

Writer = Callable[[BinaryIO], None]


def encode(photo: Photo, dest: Path | str, *, fmt: str, quality: int = 95, software: str) -> None:
    """Write `photo` to `dest` as `fmt` (jpeg | png | tiff | webp | heif). `quality` applies to JPEG,
    WebP and HEIF. Problems raise PhotoError; metadata that cannot be carried adds a warning."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    px = photo.pixels
    if px.ndim != 3 or px.shape[2] != 3 or px.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be H x W x 3 uint8 or uint16, not {px.shape} {px.dtype}")
    dest = Path(dest)
    h, w = px.shape[:2]
    meta, name = photo.meta, photo.path.name

    def warn(message: str) -> None:
        if f"{name}: {message}" not in meta.warnings:
            meta.warnings.append(f"{name}: {message}")

    alpha = _alpha_like(photo.alpha, px)
    if alpha is not None and fmt == "jpeg":
        if alpha.min() < np.iinfo(alpha.dtype).max:
            warn("transparency flattened onto white (JPEG has no alpha channel)")
            px = _flatten(px, alpha)
    elif alpha is not None:
        px = np.dstack([px, alpha])
    px = np.ascontiguousarray(px)  # the writers slice rows as raw bytes

    exif = output_exif(meta.exif, width=w, height=h, software=software, tiff=fmt == "tiff")
    xmp = output_xmp(meta.xmp, width=w, height=h)
    extended = output_xmp(meta.xmp_extended, width=w, height=h) if xmp else None
    if extended and fmt != "jpeg":  # no segment limit: one packet, as XMP part 3 says
        merged = merge_extended_xmp(xmp, extended)
        if merged is None:
            warn("extended XMP could not be merged into the main XMP; dropped")
            merged = without_extended_flag(xmp)
        xmp, extended = merged, None
    if fmt == "tiff":
        if not isinstance(exif, Exif):
            warn("EXIF could not be parsed, so it cannot be stored in a TIFF; dropped")
            exif = output_exif(None, width=w, height=h, software=software, tiff=True)
        atomic_write(dest, partial(write_tiff, pixels=px, exif=exif, icc=meta.icc, xmp=xmp))
        return
    exif_bytes = exif.to_bytes() if isinstance(exif, Exif) else exif
    if fmt == "png":
        writer: Writer = partial(write_png, pixels=px, exif=exif_bytes, icc=meta.icc, xmp=xmp, software=software)
    elif fmt == "jpeg":
        writer = _jpeg(px, exif_bytes, meta.icc, xmp, extended, quality, warn)
    elif fmt == "webp":
        if max(h, w) > _WEBP_MAX_SIDE:
            raise PhotoError(dest, f"WebP cannot store images over {_WEBP_MAX_SIDE} pixels on a side ({w}x{h})")
        writer = _pillow(px, "WEBP", quality=quality, exif=exif_bytes, icc_profile=meta.icc, xmp=xmp)
    else:
        writer = _heif(dest, px, exif_bytes, meta.icc, xmp, quality)
    atomic_write(dest, writer)


def _alpha_like(alpha: np.ndarray | None, px: np.ndarray) -> np.ndarray | None:
    """The alpha channel at the colour's size and depth (the colour may have changed depth)."""
    if alpha is None:
        return None
    if alpha.shape != px.shape[:2]:
        raise ValueError(f"alpha must be {px.shape[:2]} to match the pixels, not {alpha.shape}")
    if alpha.dtype == px.dtype:
        return alpha
    return to_8bit(alpha) if px.dtype == np.uint8 else alpha.astype(np.uint16) * 257


def _flatten(px: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour over white, as when a transparent image is printed."""
    top = np.iinfo(px.dtype).max
    a = alpha[..., None].astype(np.float32) / top
    return np.rint(px * a + top * (1.0 - a)).astype(px.dtype)


def to_8bit(px: np.ndarray) -> np.ndarray:
    """uint16 -> uint8, rounded to nearest (v / 257), not truncated. A 64 KiB lookup table is ~10x
    faster than the arithmetic on a 24 MP image."""
    return px if px.dtype == np.uint8 else _TO_8BIT[px]


def _pillow(px: np.ndarray, fmt: str, **options) -> Writer:
    image = Image.fromarray(to_8bit(px))
    options = {k: v for k, v in options.items() if v is not None}
    return lambda f: image.save(f, fmt, **options)


def _jpeg(px: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None, extended: bytes | None,
          quality: int, warn: Callable[[str], None]) -> Writer:
    if exif and len(EXIF_PREFIX) + len(exif) > _JPEG_MARKER:
        warn(f"EXIF is {len(exif)} bytes, too large for a JPEG; dropped")
        exif = None
    segments = []
    if extended:
        # The GUID is the MD5 of the extended part (XMP part 3): unchanged content keeps the source's
        guid = hashlib.md5(extended).hexdigest().upper().encode()
        xmp = with_extended_guid(xmp, guid)
        segments = extended_xmp_segments(extended, guid)
    if xmp and len(_XMP_JPEG_HEADER) + len(xmp) > _JPEG_MARKER:
        warn(f"XMP is {len(xmp)} bytes, too large for a JPEG (extended XMP is not written); dropped"
             + (" with its extended XMP" if segments else ""))
        xmp, segments = None, []
    # Pillow writes `extra` as is after its own APP segments: the main XMP first, then its extension
    extra = b"".join(_app1(s) for s in ([_XMP_JPEG_HEADER + xmp] if xmp else []) + segments)
    # 4:4:4 chroma at high quality keeps colour edges (and the backlit subject's outline) crisp;
    # optimize=False: Huffman optimisation saves ~5 % and costs a second pass over a 24 MP image.
    return _pillow(px, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2, optimize=False,
                   exif=EXIF_PREFIX + exif if exif else None, icc_profile=icc, extra=extra or None)


def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


def _heif(dest: Path, px: np.ndarray, exif: bytes | None, icc: bytes | None, xmp: bytes | None,
          quality: int) -> Writer:
    try:
        import pillow_heif
    except ImportError:
        raise PhotoError(dest, HEIC_HINT) from None
    h, w = px.shape[:2]
    # 16-bit pixels are stored as 10-bit HEIF, the depth HEIF viewers support
    mode = "RGBA" if px.shape[2] == 4 else "RGB"
    heif = pillow_heif.from_bytes(mode=mode + ";16" if px.dtype == np.uint16 else mode, size=(w, h), data=px.tobytes())
    if icc:
        heif.info.update(icc_profile=icc, icc_profile_type="prof")
    # 4:2:0 always: Apple's decoders do not show 4:4:4 HEIC. x265's "ultrafast" preset: a 24 MP
    # photo in ~7 s instead of ~25 s, about 8 % larger at quality 95.
    return lambda f: heif.save(f, quality=quality, exif=exif, xmp=xmp, chroma=420,
                               enc_params={"preset": "ultrafast"})
