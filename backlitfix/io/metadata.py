"""EXIF, XMP and ICC handling: what is read from an input and what is written with an output.

EXIF is edited structurally (see tiff_ifd): the original block is kept as a heap and fresh
directories are appended, so maker notes with absolute offsets stay readable. Only what would be
wrong for the corrected output changes: Orientation becomes 1, the thumbnail (which shows the
uncorrected picture) is dropped, image-layout tags of the source go, damaged entries go.
"""
from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from .tiff_ifd import (
    ASCII,
    SHORT,
    Entry,
    TiffFormatError,
    TiffReader,
    TiffWriter,
    longs,
    shorts,
    text,
    undefined,
)

ORIENTATION, SOFTWARE, MODEL = 0x0112, 0x0131, 0x0110
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
PIXEL_X, PIXEL_Y, EXIF_VERSION, MAKER_NOTE = 0xA002, 0xA003, 0x9000, 0x927C
UNIQUE_CAMERA_MODEL = 0xC614  # DNG; the only camera name some DNGs carry
EXIF_PREFIX = b"Exif\0\0"

# IFD0 tags that describe how the *source* stored its pixels (or embed other metadata blocks that
# travel separately): wrong for any output, so never copied.
_LAYOUT_TAGS = frozenset(
    [0x00FE, 0x00FF, 0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0107, 0x0111, 0x0115, 0x0116, 0x0117,
     0x011C, 0x013D, 0x0140, 0x0142, 0x0143, 0x0144, 0x0145, 0x014A, 0x0152, 0x0153, 0x0201, 0x0202,
     0x0211, 0x0212, 0x0214, 0x02BC, 0x828D, 0x828E, 0x8649, 0x8773, 0x935C]
)
_JPEG_ONLY_TAGS = (0x9101, 0x9102, PIXEL_X, PIXEL_Y)  # ComponentsConfiguration, CompressedBitsPerPixel
_DNG_TAGS = range(0xC612, 0xCE00)  # DNG colour/calibration/raw-layout tags
# From a RAW or TIFF *file*, IFD0 mixes descriptive and layout tags (and vendors add more); only
# these descriptive ones are taken.
_FILE_IFD0_TAGS = frozenset(
    [0x010E, 0x010F, 0x0110, 0x0112, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132, 0x013B, 0x013C,
     0x4746, 0x4749, 0x8298, 0x83BB, 0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F]
)


@dataclass
class Exif:
    """An EXIF structure ready to be written: directories as entries, values still in `heap`."""

    endian: str
    heap: bytes | None  # the source block (entries with an `offset` point into it); None = fresh
    ifd0: dict[int, Entry]
    exif: dict[int, Entry] = field(default_factory=dict)
    gps: dict[int, Entry] = field(default_factory=dict)
    interop: dict[int, Entry] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, tag: int) -> int | None:
        ent = self.ifd0.get(tag)
        return ent.first(self.endian) if ent else None

    def finalize(self, *, width: int, height: int, software: str, tiff: bool = False) -> None:
        """Make the tags true for the written output. In a TIFF the image tags give the size, and
        EXIF's JPEG-only tags (pixel dimensions, compression details, DCF interop) do not belong."""
        e = self.endian
        self.ifd0[ORIENTATION] = shorts(ORIENTATION, [1], e)
        self.ifd0[SOFTWARE] = text(SOFTWARE, software)
        self.exif.setdefault(EXIF_VERSION, undefined(EXIF_VERSION, b"0232"))
        if tiff:
            for tag in _JPEG_ONLY_TAGS:
                self.exif.pop(tag, None)
            self.interop.clear()
        else:
            self.exif[PIXEL_X] = longs(PIXEL_X, [width], e)
            self.exif[PIXEL_Y] = longs(PIXEL_Y, [height], e)

    def write(self, w: TiffWriter, extra_ifd0: Iterable[Entry] = ()) -> None:
        """Write sub-IFDs, then IFD0 (plus `extra_ifd0`, e.g. a TIFF's image tags) to `w`."""
        e = self.endian
        exif = dict(self.exif)
        if self.interop:
            exif[INTEROP_IFD] = longs(INTEROP_IFD, [w.add_ifd(self.interop.values())], e)
        ifd0 = dict(self.ifd0)
        if exif:
            ifd0[EXIF_IFD] = longs(EXIF_IFD, [w.add_ifd(exif.values())], e)
        if self.gps:
            ifd0[GPS_IFD] = longs(GPS_IFD, [w.add_ifd(self.gps.values())], e)
        ifd0.update((x.tag, x) for x in extra_ifd0)
        w.finish(w.add_ifd(ifd0.values()))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.write(TiffWriter(buf, self.endian, self.heap))
        return buf.getvalue()


def new_exif() -> Exif:
    return Exif("<", None, {})


def strip_prefix(blob: bytes) -> bytes:
    """EXIF as stored in JPEG APP1 (and, improperly, in some WebP/PNG files) starts with Exif\\0\\0."""
    return blob[len(EXIF_PREFIX):] if blob.startswith(EXIF_PREFIX) else blob


def parse_exif(blob: bytes) -> Exif:
    """An embedded EXIF block, with the source's layout tags, pointers, thumbnail and damaged
    entries removed. Raises TiffFormatError when there is no TIFF structure at all."""
    r = TiffReader(blob)
    problems: list[str] = []
    ifd0, ifd1 = r.read_ifd(r.first_ifd, problems, "IFD0")
    exif, gps, interop = _sub_ifds(r, ifd0, problems)
    for tag in [t for t in ifd0 if t in _LAYOUT_TAGS or t in _DNG_TAGS]:
        del ifd0[tag]
    # The old directories stay in the heap, unreferenced: maker notes sometimes point just past
    # their own data, so only the thumbnail goes. It is cut off when nothing kept lies after its
    # start (the usual layout), else blanked.
    heap = bytearray(blob)
    heap[2:4] = struct.pack(r.endian + "H", 42)  # ORF/RW2-style magics are not valid EXIF
    thumb = _thumbnail_range(r, ifd1) if ifd1 else None
    if thumb:
        start, stop = thumb[0], min(thumb[1], len(heap))
        kept = [x.offset + len(x.data) for d in (ifd0, exif, gps, interop) for x in d.values() if x.offset is not None]
        if max(kept, default=8) <= start:
            del heap[start:]
        else:
            heap[start:stop] = bytes(stop - start)
    return Exif(r.endian, bytes(heap), ifd0, exif, gps, interop, problems)


def exif_from_tiff_file(buf) -> Exif:
    """The descriptive EXIF of a TIFF-structured file (TIFF, DNG, NEF, CR2, ARW, ...), copied out of
    the file: IFD0's descriptive tags plus the Exif and GPS directories. Maker notes are dropped
    because in RAW files they usually point at offsets elsewhere in the file."""
    r = TiffReader(buf)
    problems: list[str] = []
    ifd0, _ = r.read_ifd(r.first_ifd, problems, "IFD0")
    exif, gps, interop = _sub_ifds(r, ifd0, problems)
    exif.pop(MAKER_NOTE, None)
    if MODEL not in ifd0 and UNIQUE_CAMERA_MODEL in ifd0:
        ifd0[MODEL] = Entry(MODEL, ASCII, ifd0[UNIQUE_CAMERA_MODEL].count, ifd0[UNIQUE_CAMERA_MODEL].data)
    ifd0 = {t: x for t, x in ifd0.items() if t in _FILE_IFD0_TAGS}
    return Exif(r.endian, None, _detached(ifd0), _detached(exif), _detached(gps), _detached(interop), problems)


def _detached(entries: dict[int, Entry]) -> dict[int, Entry]:
    return {t: x.detached() for t, x in entries.items()}


def _sub_ifds(r: TiffReader, ifd0: dict[int, Entry], problems: list[str]):
    """The Exif, GPS and Interop directories; their pointer tags are removed (the writer re-adds them)."""

    def follow(parent: dict[int, Entry], tag: int, name: str) -> dict[int, Entry]:
        off = r.pointer(parent, tag, problems, f"{name} pointer")
        parent.pop(tag, None)
        return r.read_ifd(off, problems, name)[0] if off else {}

    exif = follow(ifd0, EXIF_IFD, "Exif IFD")
    gps = follow(ifd0, GPS_IFD, "GPS IFD")
    return exif, gps, follow(exif, INTEROP_IFD, "Interop IFD")


def _thumbnail_range(r: TiffReader, ifd1: int) -> tuple[int, int] | None:
    entries, _ = r.read_ifd(ifd1, [], "IFD1")
    for off_tag, len_tag in ((0x0201, 0x0202), (0x0111, 0x0117)):
        if off_tag in entries and len_tag in entries:
            offs, lens = entries[off_tag].values(r.endian), entries[len_tag].values(r.endian)
            if offs and lens:
                return min(offs), max(o + n for o, n in zip(offs, lens, strict=False))
    return None


def clean_exif(blob: bytes, name: str) -> tuple[bytes, int | None, list[str]]:
    """Decode-side EXIF from an embedded block: (block for Metadata.exif, the source's Orientation,
    warnings). The block says Orientation 1 from here on (the pixels are rotated instead); an intact
    block is otherwise kept byte for byte (the encoder makes the output's changes), a damaged one
    loses its damaged parts, and one with no TIFF structure at all is kept unchanged, since it may
    still mean something to other software."""
    blob = strip_prefix(blob)
    try:
        exif = parse_exif(blob)
    except TiffFormatError as e:
        return blob, None, [f"{name}: EXIF could not be parsed ({e}); copied unchanged"]
    entry = exif.ifd0.get(ORIENTATION)
    if not exif.problems and entry is None:
        return blob, None, []
    if exif.problems or entry.type != SHORT or entry.count != 1:
        return _upright(exif, name)
    patched = bytearray(blob)  # the usual case: set the value inside the entry, nothing moves
    patched[entry.pos + 8:entry.pos + 10] = struct.pack(exif.endian + "H", 1)
    return bytes(patched), exif.get(ORIENTATION), []


def clean_file_exif(buf, name: str) -> tuple[bytes | None, int | None, list[str]]:
    """Decode-side EXIF of a TIFF-structured file (TIFF, most RAWs); like clean_exif."""
    try:
        exif = exif_from_tiff_file(buf)
    except TiffFormatError:
        return None, None, []
    if not (exif.ifd0 or exif.exif or exif.gps):
        return None, None, []
    return _upright(exif, name)


def _upright(exif: Exif, name: str) -> tuple[bytes, int | None, list[str]]:
    """The block says Orientation 1 from here on: the decoder rotates the pixels instead."""
    orientation = exif.get(ORIENTATION)
    if orientation is not None:
        exif.ifd0[ORIENTATION] = shorts(ORIENTATION, [1], exif.endian)
    if not exif.problems:
        return exif.to_bytes(), orientation, []
    problems = "; ".join(exif.problems)
    return exif.to_bytes(), orientation, [f"{name}: EXIF was damaged ({problems}); kept the readable tags"]


def output_exif(blob: bytes | None, *, width: int, height: int, software: str, tiff: bool = False) -> Exif | bytes:
    """Encode-side EXIF: an Exif with the output's tags set, or the unparseable block unchanged."""
    if blob is None:
        exif = new_exif()
    else:
        try:
            exif = parse_exif(strip_prefix(blob))
        except TiffFormatError:
            return blob
    exif.finalize(width=width, height=height, software=software, tiff=tiff)
    return exif


# --- XMP ---------------------------------------------------------------------------------------

def _xmp_property(name: bytes) -> re.Pattern:
    # attribute form  tiff:Orientation="6"  or element form  <tiff:Orientation>6</tiff:Orientation>
    n = re.escape(name)
    return re.compile(rb"(\b" + n + rb"\s*=\s*[\"'])([^\"'<]*)([\"'])|(<" + n + rb">\s*)([^<]*?)(\s*</" + n + rb">)")


_XMP_ORIENTATION = _xmp_property(b"tiff:Orientation")
_XMP_SIZES = {b"tiff:ImageWidth": 0, b"exif:PixelXDimension": 0, b"tiff:ImageLength": 1, b"exif:PixelYDimension": 1}
_XMP_SIZE_RES = {name: _xmp_property(name) for name in _XMP_SIZES}


def _xmp_set(pattern: re.Pattern, xmp: bytes, value: bytes) -> bytes:
    return pattern.sub(lambda m: m[1] + value + m[3] if m[1] else m[4] + value + m[6], xmp)


def xmp_orientation(xmp: bytes | None) -> int | None:
    m = _XMP_ORIENTATION.search(xmp or b"")
    value = (m[2] or m[5]).strip() if m else b""
    return int(value) if value.isdigit() else None


def xmp_upright(xmp: bytes) -> bytes:
    return _xmp_set(_XMP_ORIENTATION, xmp, b"1")


_DEVELOP_SETTINGS = [  # Camera Raw (crs:) properties: attribute, empty-element and element forms
    re.compile(rb"\s+crs:[\w.-]+\s*=\s*(\"[^\"]*\"|'[^']*')"),
    re.compile(rb"\s*<crs:[\w.-]+\b[^>]*/>"),
    re.compile(rb"\s*<(crs:[\w.-]+)\b[^>]*>.*?</\1\s*>", re.S),
]


def without_develop_settings(xmp: bytes) -> bytes:
    """A RAW's XMP minus Camera Raw develop settings: Lightroom and Camera Raw apply those to a TIFF
    or JPEG that carries them, which would develop the already rendered output a second time."""
    for pattern in _DEVELOP_SETTINGS:
        xmp = pattern.sub(b"", xmp)
    return xmp


def output_xmp(xmp: bytes | None, *, width: int, height: int) -> bytes | None:
    """XMP that agrees with the output: Orientation 1 and the output's pixel size where stated."""
    if not xmp:
        return None
    xmp = xmp_upright(xmp)
    for name, axis in _XMP_SIZES.items():
        xmp = _xmp_set(_XMP_SIZE_RES[name], xmp, str((width, height)[axis]).encode())
    return xmp


# --- Extended XMP (XMP specification part 3, 1.1.3.1) -------------------------------------------
# A JPEG segment holds at most 64 KB, so a larger XMP is split: the main packet names a GUID in
# xmpNote:HasExtendedXMP, and APP1 segments with this header carry the rest as GUID-keyed chunks.

EXTENDED_XMP_HEADER = b"http://ns.adobe.com/xmp/extension/\0"
_EXT_CHUNK = 65533 - len(EXTENDED_XMP_HEADER) - 32 - 8  # payload left after GUID, length, offset
_XMP_EXTENDED_FLAG = _xmp_property(b"xmpNote:HasExtendedXMP")
_XMP_FLAG_REMOVE = re.compile(rb"\s+xmpNote:HasExtendedXMP\s*=\s*(\"[^\"]*\"|'[^']*')"
                              rb"|\s*<xmpNote:HasExtendedXMP>[^<]*</xmpNote:HasExtendedXMP>")
_RDF = re.compile(rb"<rdf:RDF\b[^>]*>(.*)</rdf:RDF\s*>", re.S)
_NAMESPACE = re.compile(rb"""\sxmlns:([\w.-]+)\s*=\s*["']([^"']*)["']""")


def extended_xmp_guid(xmp: bytes | None) -> bytes | None:
    m = _XMP_EXTENDED_FLAG.search(xmp or b"")
    return (m[2] or m[5]).strip() if m else None


def with_extended_guid(xmp: bytes, guid: bytes) -> bytes:
    return _xmp_set(_XMP_EXTENDED_FLAG, xmp, guid)


def without_extended_flag(xmp: bytes) -> bytes:
    return _XMP_FLAG_REMOVE.sub(b"", xmp)


def read_extended_xmp(xmp: bytes | None, segments: list[bytes],
                      name: str) -> tuple[bytes | None, bytes | None, list[str]]:
    """(main XMP, its extended XMP reassembled or None, warnings) from a JPEG's main packet and its
    APP1 extension segments. A flag whose chunks are missing is dropped, so no output claims them."""
    guid = extended_xmp_guid(xmp)
    chunks: dict[int, bytes] = {}
    full = None
    for seg in segments:
        body = seg[len(EXTENDED_XMP_HEADER):]
        if len(body) >= 40 and body[:32] == guid:
            full, offset = struct.unpack(">II", body[32:40])
            chunks[offset] = body[40:]
    if guid is None:
        return xmp, None, [f"{name}: extended XMP without a main XMP that names it; dropped"] if segments else []
    data, pos = bytearray(), 0
    for offset in sorted(chunks):
        if offset != pos:
            break
        data += chunks[offset]
        pos = len(data)
    if full is None or len(data) != full:
        missing = (f"{name}: its XMP names extended XMP that is missing or incomplete in the file; "
                   "the reference was dropped")
        return without_extended_flag(xmp), None, [missing]
    return xmp, bytes(data), []


def extended_xmp_segments(extended: bytes, guid: bytes) -> list[bytes]:
    """APP1 payloads (header included) that carry `extended` in a JPEG."""
    n = len(extended)
    return [EXTENDED_XMP_HEADER + guid + struct.pack(">II", n, off) + extended[off:off + _EXT_CHUNK]
            for off in range(0, n, _EXT_CHUNK)]


def merge_extended_xmp(xmp: bytes, extended: bytes) -> bytes | None:
    """One XMP packet holding both parts, as formats without a segment limit store it; None when
    the two cannot be merged as text (no rdf:RDF, or a namespace prefix bound to two URIs)."""
    main, ext = _RDF.search(xmp), _RDF.search(extended)
    if not main or not ext:
        return None
    outer = lambda packet, m: dict(_NAMESPACE.findall(packet[:m.start(1)]))  # noqa: E731
    main_ns, ext_ns = outer(xmp, main), outer(extended, ext)
    if any(main_ns.get(prefix, uri) != uri for prefix, uri in ext_ns.items()):
        return None
    add = b"".join(b' xmlns:%s="%s"' % (p, u) for p, u in ext_ns.items() if p not in main_ns)
    tag_end = main.start(1) - 1  # the ">" of <rdf:RDF ...>: outer namespaces of the extension go there
    merged = xmp[:tag_end] + add + xmp[tag_end:main.end(1)] + ext[1] + xmp[main.end(1):]
    return without_extended_flag(merged)


# --- ICC ---------------------------------------------------------------------------------------

def icc_colour_space(icc: bytes) -> bytes:
    """The profile's data colour space signature: b'RGB ', b'GRAY', b'CMYK', ..."""
    return bytes(icc[16:20])


@lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """An sRGB profile to tag pixels that we converted to sRGB (RAW output, CMYK input)."""
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    # lcms stamps the creation time; a fixed date keeps outputs byte-for-byte reproducible
    # (the profile carries no MD5 profile ID that would have to be recomputed)
    icc[24:36] = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)
    return bytes(icc)
