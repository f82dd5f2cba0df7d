"""zlib compression on all cores: zlib releases the GIL, so threads give real parallelism."""
from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

_CHUNK = 1 << 20


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="backlitfix-zlib")


def compress_each(chunks: Sequence, level: int) -> list[bytes]:
    """Independent zlib streams, one per chunk (TIFF strips)."""
    return list(_pool().map(lambda c: zlib.compress(c, level), chunks))


def compress_stream(data: memoryview, level: int) -> bytes:
    """One zlib stream (PNG IDAT) made of independently compressed pieces, like pigz: each piece
    ends on a byte boundary (Z_SYNC_FLUSH) so the raw deflate pieces concatenate into one stream."""
    pieces = [data[i:i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [data]

    def deflate(i: int) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        return c.compress(pieces[i]) + c.flush(zlib.Z_FINISH if i == len(pieces) - 1 else zlib.Z_SYNC_FLUSH)

    header = zlib.compress(b"", level)[:2]
    body = b"".join(_pool().map(deflate, range(len(pieces))))
    return header + body + zlib.adler32(data).to_bytes(4, "big")
