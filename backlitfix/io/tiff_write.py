"""TIFF writer for 8- and 16-bit RGB or RGBA that carries a full EXIF structure.

The file is built on the EXIF block: it starts with the block's bytes (same byte order), so every
EXIF offset, maker notes' included, stays valid; then come the image strips, the Exif/GPS
directories and IFD0 with the image tags. Readers (exiftool, piexif, Photoshop, Lightroom) see
IFD0 camera tags and a real Exif sub-IFD.

Compression: Adobe Deflate with the horizontal predictor at zlib level 2, strips compressed on all
cores. Measured on 2 shared cores, 24 MP: 8-bit -> 23 % of the raw size in ~0.5 s; a 16-bit RAW
rendering -> 56 % in ~2.5 s (uncompressed: 144 MB, ~0.45 s to write). Level 1 is no faster,
level 6 is twice as slow for 1-3 % less. Deflate is read by libtiff, Photoshop, Lightroom, Capture
One, GIMP, darktable and macOS; exiftool's -validate flags it only as not TIFF 6.0 baseline.
"""
from __future__ import annotations

from typing import BinaryIO

import numpy as np

from .deflate import compress_each
from .metadata import Exif
from .tiff_ifd import BYTE, UNDEFINED, TiffWriter, longs, rational, shorts, undefined

LEVEL = 2
_STRIP_BYTES = 1 << 19  # uncompressed bytes per strip
_MAX_CLASSIC = (1 << 32) - (1 << 24)  # offsets are 32-bit; keep room for the metadata
_RESOLUTION_TAGS = (0x011A, 0x011B, 0x0128)


def write_tiff(f: BinaryIO, pixels: np.ndarray, *, exif: Exif, icc: bytes | None, xmp: bytes | None) -> None:
    """`exif` has been finalized for a TIFF (Orientation 1, Software)."""
    h, w, channels = pixels.shape
    if pixels.nbytes > _MAX_CLASSIC:
        raise ValueError(f"{pixels.nbytes} bytes of pixels is too large for a TIFF file (4 GiB limit)")
    e = exif.endian
    bits = pixels.dtype.itemsize * 8
    # Horizontal predictor: each sample minus the same channel of the pixel to its left (wrapping)
    diff = np.empty(pixels.shape, pixels.dtype)
    diff[:, 0] = pixels[:, 0]
    np.subtract(pixels[:, 1:], pixels[:, :-1], out=diff[:, 1:])
    data = diff.astype(diff.dtype.newbyteorder(e), copy=False).reshape(h, -1).view(np.uint8)
    rows = max(1, _STRIP_BYTES // data.shape[1])
    strips = compress_each([data[y:y + rows] for y in range(0, h, rows)], LEVEL)

    w_ = TiffWriter(f, e, exif.heap)
    offsets = [w_.add(s) for s in strips]
    tags = [
        longs(0x0100, [w], e), longs(0x0101, [h], e), shorts(0x0102, [bits] * channels, e),
        shorts(0x0103, [8], e),  # Adobe Deflate
        shorts(0x0106, [2], e),  # RGB
        longs(0x0111, offsets, e), shorts(0x0115, [channels], e), longs(0x0116, [rows], e),
        longs(0x0117, [len(s) for s in strips], e), shorts(0x011C, [1], e),
        shorts(0x013D, [2], e),  # horizontal differencing
    ]
    if channels == 4:
        tags.append(shorts(0x0152, [2], e))  # ExtraSamples: unassociated (straight) alpha, as PNG's
    if not all(t in exif.ifd0 for t in _RESOLUTION_TAGS):  # baseline TIFF requires a resolution
        tags += [rational(0x011A, 72, 1, e), rational(0x011B, 72, 1, e), shorts(0x0128, [2], e)]
    if xmp:
        tags.append(undefined(0x02BC, xmp, BYTE))
    if icc:
        tags.append(undefined(0x8773, icc, UNDEFINED))
    exif.write(w_, tags)
