"""Reading and writing TIFF directories (IFDs): the structure shared by EXIF blocks, TIFF files and
most camera RAWs.

The reader is lenient: a damaged entry is dropped and described in ``problems`` instead of costing
the whole block. The writer appends directories after existing bytes, so values that stay where they
were (maker notes, which often hold absolute offsets) remain valid.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

# TIFF field type -> bytes per value
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL, IFD = 1, 2, 3, 4, 5, 7, 10, 13
_UNPACK = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I"}
# The four classic-TIFF magics: TIFF/EXIF, Olympus ORF (IIRO, IIRS) and Panasonic RW2 (IIU)
_MAGICS = {42, 0x4F52, 0x5352, 0x55}


class TiffFormatError(ValueError):
    """Not a TIFF structure at all (no usable header)."""


@dataclass
class Entry:
    tag: int
    type: int
    count: int
    data: bytes  # the value bytes, in the block's byte order
    offset: int | None = None  # where `data` sits in the source when stored out of line
    pos: int | None = None  # where the 12-byte entry itself sits in the source

    def values(self, endian: str) -> tuple:
        """Numeric values (integers; rationals as (num, den) pairs); () for ASCII/UNDEFINED/FLOAT."""
        if self.type in (RATIONAL, SRATIONAL):
            ints = struct.unpack(f"{endian}{2 * self.count}{'I' if self.type == RATIONAL else 'i'}", self.data)
            return tuple(zip(ints[::2], ints[1::2], strict=True))
        code = _UNPACK.get(self.type)
        return struct.unpack(f"{endian}{self.count}{code}", self.data) if code else ()

    def first(self, endian: str) -> int | None:
        v = self.values(endian)
        return v[0] if v and isinstance(v[0], int) else None

    def detached(self) -> Entry:
        """The same value, no longer tied to its position in the source (it will be copied)."""
        return Entry(self.tag, self.type, self.count, self.data)


def shorts(tag: int, values: Iterable[int], endian: str) -> Entry:
    v = list(values)
    return Entry(tag, SHORT, len(v), struct.pack(f"{endian}{len(v)}H", *v))


def longs(tag: int, values: Iterable[int], endian: str) -> Entry:
    v = list(values)
    return Entry(tag, LONG, len(v), struct.pack(f"{endian}{len(v)}I", *v))


def rational(tag: int, num: int, den: int, endian: str) -> Entry:
    return Entry(tag, RATIONAL, 1, struct.pack(f"{endian}2I", num, den))


def text(tag: int, value: str) -> Entry:
    data = value.encode("utf-8", "replace") + b"\0"
    return Entry(tag, ASCII, len(data), data)


def undefined(tag: int, data: bytes, type_: int = UNDEFINED) -> Entry:
    return Entry(tag, type_, len(data), bytes(data))


class TiffReader:
    """Lenient reader over a bytes-like buffer (bytes, memoryview or mmap) holding a TIFF structure."""

    def __init__(self, buf):
        self.buf = buf
        if len(buf) < 8 or bytes(buf[:2]) not in (b"II", b"MM"):
            raise TiffFormatError("no TIFF header")
        self.endian = "<" if bytes(buf[:2]) == b"II" else ">"
        magic, self.first_ifd = struct.unpack(self.endian + "HI", bytes(buf[2:8]))
        if magic not in _MAGICS:
            raise TiffFormatError(f"unknown TIFF magic {magic}")

    def u32(self, data: bytes) -> int:
        return struct.unpack(self.endian + "I", data)[0]

    def read_ifd(self, offset: int, problems: list[str], name: str) -> tuple[dict[int, Entry], int]:
        """Entries by tag, and the offset of the next IFD (0 if none or unreadable)."""
        buf, e = self.buf, self.endian
        if offset < 8 or offset + 2 > len(buf):
            problems.append(f"{name} points outside the data")
            return {}, 0
        (n,) = struct.unpack(e + "H", bytes(buf[offset:offset + 2]))
        fit = (len(buf) - offset - 2) // 12
        if n > fit:
            problems.append(f"{name} claims {n} entries but only {fit} fit")
            n = fit
        entries: dict[int, Entry] = {}
        for i in range(n):
            pos = offset + 2 + 12 * i
            tag, typ, count = struct.unpack(e + "HHI", bytes(buf[pos:pos + 8]))
            if typ not in TYPE_SIZES:
                # The rest of a directory after a nonsense type is almost always garbage too
                problems.append(f"{name} is damaged from entry {i} (tag 0x{tag:04X}, type {typ}); "
                                f"{n - i} entries dropped")
                break
            size = TYPE_SIZES[typ] * count
            if size <= 4:
                entries.setdefault(tag, Entry(tag, typ, count, bytes(buf[pos + 8:pos + 8 + size]), None, pos))
                continue
            off = self.u32(bytes(buf[pos + 8:pos + 12]))
            if off + size > len(buf):
                problems.append(f"{name} tag 0x{tag:04X} points outside the data; dropped")
                continue
            entries.setdefault(tag, Entry(tag, typ, count, bytes(buf[off:off + size]), off, pos))
        nxt_pos = offset + 2 + 12 * n
        nxt = self.u32(bytes(buf[nxt_pos:nxt_pos + 4])) if nxt_pos + 4 <= len(buf) else 0
        return entries, (nxt if 8 <= nxt < len(buf) else 0)

    def pointer(self, entries: dict[int, Entry], tag: int, problems: list[str], name: str) -> int | None:
        """Follow an IFD pointer tag (Exif, GPS, Interop)."""
        ent = entries.get(tag)
        if ent is None:
            return None
        if ent.type in (LONG, IFD) and ent.count == 1:
            return ent.first(self.endian)
        if ent.offset is not None:
            # Some writers store the directory itself as the tag's (wrongly typed) value
            problems.append(f"{name} has the wrong type ({ent.type}); read the directory at its value offset")
            return ent.offset
        problems.append(f"{name} has the wrong type ({ent.type}); dropped")
        return None


_STRIPS = ((0x0111, 0x0117), (0x0144, 0x0145), (0x0201, 0x0202))  # (offsets, byte counts) tag pairs
_SUB_IFDS = 0x014A


def image_data_end(r: TiffReader) -> int:
    """Where the furthest strip, tile or embedded JPEG of any image in the file ends (IFD chain and
    SubIFDs): a file shorter than this was cut short."""
    end, seen, todo = 0, set(), [r.first_ifd]
    while todo and len(seen) < 64:
        off = todo.pop()
        if not off or off in seen:
            continue
        seen.add(off)
        entries, nxt = r.read_ifd(off, [], "IFD")
        todo.append(nxt)
        if _SUB_IFDS in entries:
            todo.extend(entries[_SUB_IFDS].values(r.endian))
        for off_tag, len_tag in _STRIPS:
            if off_tag in entries and len_tag in entries:
                offs, lens = entries[off_tag].values(r.endian), entries[len_tag].values(r.endian)
                end = max([end, *(o + n for o, n in zip(offs, lens, strict=False))])
    return end


def page_directories(r: TiffReader, limit: int = 10_000) -> list[dict[int, Entry]]:
    """The directories of the IFD chain (a multi-page file's pages; SubIFDs not included)."""
    pages, seen, off = [], set(), r.first_ifd
    while off and off not in seen and len(pages) < limit:
        seen.add(off)
        entries, off = r.read_ifd(off, [], "IFD")
        pages.append(entries)
    return pages


_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "float", 4: "undefined"}


def sample_format(r: TiffReader) -> tuple[str, int, int]:
    """The first page's sample type ("unsigned integer", "float", ...), bits per sample and samples per pixel."""
    entries, _ = r.read_ifd(r.first_ifd, [], "IFD0")
    kind = entries[0x0153].first(r.endian) if 0x0153 in entries else 1
    bits = entries[0x0102].first(r.endian) if 0x0102 in entries else 1
    samples = entries[0x0115].first(r.endian) if 0x0115 in entries else 1
    return _SAMPLE_FORMATS.get(kind, "unknown"), bits or 1, samples or 1


class TiffWriter:
    """Appends values and IFDs to a seekable binary stream that starts with a TIFF header."""

    def __init__(self, out: BinaryIO, endian: str, heap: bytes | None = None):
        """`heap`, when given, is an existing TIFF structure (an EXIF block) written first, unchanged
        except for its first-IFD pointer, so values that stay in it keep their offsets."""
        self.out, self.endian = out, endian
        self.base = out.tell()
        if heap is None:
            heap = (b"II" if endian == "<" else b"MM") + struct.pack(endian + "HI", 42, 0)
        out.write(heap)
        self.pos = len(heap)

    def add(self, data) -> int:
        """Write `data` on a word boundary; return its offset."""
        if self.pos % 2:
            self.out.write(b"\0")
            self.pos += 1
        off = self.pos
        self.out.write(data)
        self.pos += len(data)
        return off

    def add_ifd(self, entries: Iterable[Entry], next_ifd: int = 0) -> int:
        """Write one IFD (entries sorted by tag) after its out-of-line values; return its offset."""
        e = self.endian
        rows = []
        for ent in sorted(entries, key=lambda x: x.tag):
            if len(ent.data) <= 4:
                field = ent.data.ljust(4, b"\0")
            else:
                off = ent.offset if ent.offset is not None else self.add(ent.data)
                field = struct.pack(e + "I", off)
            rows.append(struct.pack(e + "HHI", ent.tag, ent.type, ent.count) + field)
        return self.add(struct.pack(e + "H", len(rows)) + b"".join(rows) + struct.pack(e + "I", next_ifd))

    def finish(self, first_ifd: int) -> None:
        """Point the header at the first IFD."""
        end = self.out.tell()
        self.out.seek(self.base + 4)
        self.out.write(struct.pack(self.endian + "I", first_ifd))
        self.out.seek(end)
