"""PNG writer for 8- and 16-bit RGB and RGBA (Pillow cannot write 16-bit RGB PNG).

Every row uses the "Up" filter: vectorised in numpy, and within ~3 % of libpng's adaptive filtering
in size on photos. zlib level 3 on all cores (see deflate.py). Measured on 2 shared cores, 24 MP:
8-bit -> 20 % of the raw size in ~0.8 s, 16-bit RAW rendering -> 57 % in ~3.5 s; level 6 saves
another ~2 % for twice the time.
"""
from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

from .deflate import compress_stream

LEVEL = 3
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_MAX = 1 << 24  # split IDAT into 16 MiB chunks; readers are happier with bounded chunks


def _chunk(f: BinaryIO, kind: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + kind)
    f.write(data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def write_png(f: BinaryIO, pixels: np.ndarray, *, exif: bytes | None, icc: bytes | None,
              xmp: bytes | None, software: str) -> None:
    h, w, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    rows = (pixels.astype(">u2", copy=False) if depth == 16 else pixels).reshape(h, -1).view(np.uint8)
    data = np.empty((h, rows.shape[1] + 1), np.uint8)
    data[:, 0] = 2  # filter type Up: byte minus the byte above (wrapping)
    data[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=data[1:, 1:])

    f.write(_SIGNATURE)
    colour_type = 6 if channels == 4 else 2  # RGBA (straight alpha) or RGB
    _chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
    if icc:
        _chunk(f, b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    if exif:
        _chunk(f, b"eXIf", exif)
    if xmp:
        # iTXt: keyword, no compression, empty language tag and translated keyword (as XMP specifies)
        _chunk(f, b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + xmp)
    _chunk(f, b"tEXt", b"Software\0" + software.encode("latin-1", "replace"))
    idat = compress_stream(memoryview(data).cast("B"), LEVEL)
    for i in range(0, len(idat), _IDAT_MAX):
        _chunk(f, b"IDAT", idat[i:i + _IDAT_MAX])
    _chunk(f, b"IEND", b"")
