"""Extended XMP (XMP specification part 3): the part of a JPEG's XMP over 64 KB, in GUID-keyed APP1
chunks. JPEG outputs carry it; other formats get one merged packet. Checked with the real exiftool."""
import base64
import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from backlitfix.io import decode, encode
from conftest import shared_path

LIMIT = 250_000_000
SOFTWARE = "backlitfix test"
EXT_HEADER = b"http://ns.adobe.com/xmp/extension/\0"
XAP_HEADER = b"http://ns.adobe.com/xap/1.0/\0"
EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="needs exiftool")
# ~100 KB of random bytes, base64: a depth map as Google's camera apps store it
DEPTH = base64.b64encode(np.random.default_rng(3).bytes(75_000))
DEPTH_JSON = "base64:" + DEPTH.decode()  # exiftool -j -b: GDepth:Data is its DepthImage tag, decoded


def extended_packet() -> bytes:
    return (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description rdf:about="" xmlns:GDepth="http://ns.google.com/photos/1.0/depthmap/">'
            b'<GDepth:Data>' + DEPTH + b'</GDepth:Data></rdf:Description></rdf:RDF></x:xmpmeta>')


def main_packet(guid: bytes, orientation: int = 1) -> bytes:
    return (b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            b'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
            b'xmlns:GDepth="http://ns.google.com/photos/1.0/depthmap/" '
            b'xmpNote:HasExtendedXMP="' + guid + b'" tiff:Orientation="%d" GDepth:Format="RangeInverse"/>'
            % orientation + b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_with_extended_xmp(path: Path, rgb: np.ndarray, *, orientation: int = 1, drop_last: bool = False) -> bytes:
    """A JPEG whose XMP is split as XMP part 3 says: the main packet names the MD5 of the extended
    packet as its GUID; the extended packet follows in chunks of at most 65400 bytes, each with the
    GUID, the full length and its offset. Built byte by byte, independently of backlitfix."""
    ext = extended_packet()
    guid = hashlib.md5(ext).hexdigest().upper().encode()
    chunks = [ext[o:o + 65400] for o in range(0, len(ext), 65400)]
    assert len(ext) > 65536 and len(chunks) == 2  # the premise: too large for one segment
    if drop_last:
        chunks = chunks[:-1]
    ext_segments = b"".join(segment(0xE1, EXT_HEADER + guid + struct.pack(">II", len(ext), i * 65400) + c)
                            for i, c in enumerate(chunks))
    Image.fromarray(rgb).save(path, quality=95)
    data = path.read_bytes()
    xmp = segment(0xE1, XAP_HEADER + main_packet(guid, orientation))
    path.write_bytes(data[:2] + xmp + ext_segments + data[2:])  # right after SOI
    return ext


def app1_segments(path: Path) -> list[bytes]:
    data, pos, out = path.read_bytes(), 2, []
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] == 0xE1:
            out.append(data[pos + 4:pos + 2 + n])
        pos += 2 + n
    return out


def exiftool(path: Path, *tags: str) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-b", "-G1", *tags, "--", str(path)], capture_output=True, check=True)
    return json.loads(out.stdout)[0]


def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


@needs_exiftool
def test_exiftool_reads_the_test_files_extended_xmp(tmp_path):
    """The premise: the file built here is what exiftool understands as Extended XMP."""
    jpeg_with_extended_xmp(tmp_path / "in.jpg", rgb())
    tags = exiftool(tmp_path / "in.jpg", "-XMP-GDepth:all")
    assert tags["XMP-GDepth:DepthImage"] == DEPTH_JSON and tags["XMP-GDepth:Format"] == "RangeInverse"


@needs_exiftool
def test_jpeg_output_carries_the_extended_xmp(tmp_path):
    ext = jpeg_with_extended_xmp(tmp_path / "in.jpg", rgb())
    photo = decode(tmp_path / "in.jpg", max_pixels=LIMIT)
    assert photo.meta.xmp_extended == ext and photo.meta.warnings == []
    encode(photo, tmp_path / "out.jpg", fmt="jpeg", software=SOFTWARE)
    tags = exiftool(tmp_path / "out.jpg", "-XMP-GDepth:all", "-XMP-xmpNote:all")
    assert tags["XMP-GDepth:DepthImage"] == DEPTH_JSON and tags["XMP-GDepth:Format"] == "RangeInverse"
    # the same content keeps its GUID (the MD5 of the extended packet), and the chunks rebuild it
    guid = hashlib.md5(ext).hexdigest().upper()
    assert tags["XMP-xmpNote:HasExtendedXMP"] == guid
    chunks = [s[len(EXT_HEADER):] for s in app1_segments(tmp_path / "out.jpg") if s.startswith(EXT_HEADER)]
    assert all(c[:32] == guid.encode() and len(c) <= 65533 - len(EXT_HEADER) for c in chunks)
    assert b"".join(c[40:] for c in sorted(chunks, key=lambda c: struct.unpack(">I", c[36:40]))) == ext
    assert photo.meta.warnings == []
    validate = subprocess.run([EXIFTOOL, "-validate", "-warning", "-a", "--", str(tmp_path / "out.jpg")],
                              capture_output=True, text=True).stdout
    assert "XMP" not in validate, validate


@needs_exiftool
@pytest.mark.parametrize("fmt", ["png", "tiff", "webp"])
def test_other_formats_get_one_merged_packet(tmp_path, fmt):
    jpeg_with_extended_xmp(tmp_path / "in.jpg", rgb(), orientation=6)
    photo = decode(tmp_path / "in.jpg", max_pixels=LIMIT)
    assert photo.pixels.shape == (32, 24, 3)  # the main packet's Orientation was applied
    encode(photo, tmp_path / f"out.{fmt}", fmt=fmt, software=SOFTWARE)
    tags = exiftool(tmp_path / f"out.{fmt}", "-XMP-GDepth:all", "-XMP-xmpNote:all", "-XMP-tiff:Orientation", "-n")
    assert tags["XMP-GDepth:DepthImage"] == DEPTH_JSON and tags["XMP-GDepth:Format"] == "RangeInverse"
    assert "XMP-xmpNote:HasExtendedXMP" not in tags  # nothing claims a part that is not there
    assert tags["XMP-tiff:Orientation"] == 1
    assert photo.meta.warnings == []


def test_incomplete_extended_xmp_drops_the_reference_with_a_warning(tmp_path):
    jpeg_with_extended_xmp(tmp_path / "cut.jpg", rgb(), drop_last=True)
    photo = decode(tmp_path / "cut.jpg", max_pixels=LIMIT)
    assert photo.meta.xmp_extended is None and b"HasExtendedXMP" not in photo.meta.xmp
    assert b'GDepth:Format="RangeInverse"' in photo.meta.xmp  # the main packet is kept
    assert photo.meta.warnings == [
        "cut.jpg: its XMP names extended XMP that is missing or incomplete in the file; the reference was dropped"]
    encode(photo, tmp_path / "out.jpg", fmt="jpeg", software=SOFTWARE)
    assert not any(s.startswith(EXT_HEADER) for s in app1_segments(tmp_path / "out.jpg"))


def test_run_carries_extended_xmp(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    photo = np.asarray(Image.open(shared_path("data", "backlit", "ovd0312_4.jpg")).convert("RGB"))
    ext = jpeg_with_extended_xmp(d / "depth.jpg", photo)
    r = CliRunner().invoke(main, ["run", "--model", str(shared_path("models", "official", "rave_unpaired.pth")),
                                  "--json", str(d)], env={"XDG_CONFIG_HOME": "/nonexistent"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["files"][0]["warnings"] == []
    out = d / "backlitfix" / "depth.jpg"
    chunks = [s[len(EXT_HEADER):] for s in app1_segments(out) if s.startswith(EXT_HEADER)]
    assert b"".join(c[40:] for c in sorted(chunks, key=lambda c: struct.unpack(">I", c[36:40]))) == ext
    if EXIFTOOL:
        assert exiftool(out, "-XMP-GDepth:all")["XMP-GDepth:DepthImage"] == DEPTH_JSON


def test_merge_moves_outer_namespaces_and_refuses_a_clash(tmp_path):
    """Namespaces the extended packet declares on rdf:RDF go to the merged rdf:RDF; a prefix bound to
    another URI in the main packet cannot be merged as text: dropped, with a warning."""
    from backlitfix.io.metadata import merge_extended_xmp

    guid = b"0" * 32
    ext = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
           b'xmlns:my="http://example.com/my/"><rdf:Description rdf:about="" my:Big="1"/></rdf:RDF></x:xmpmeta>')
    merged = merge_extended_xmp(main_packet(guid), ext)
    assert b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:my="http://example.com/my/">' \
        in merged
    assert b'my:Big="1"' in merged and b"HasExtendedXMP" not in merged
    clash = main_packet(guid).replace(b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"',
                                      b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:my="urn:other"')
    assert merge_extended_xmp(clash, ext) is None
    jpeg_with_extended_xmp(tmp_path / "in.jpg", rgb())
    photo = decode(tmp_path / "in.jpg", max_pixels=LIMIT)
    photo.meta.xmp, photo.meta.xmp_extended = clash.replace(guid, b"X" * 32), ext
    encode(photo, tmp_path / "out.png", fmt="png", software=SOFTWARE)
    xmp = Image.open(tmp_path / "out.png").info["XML:com.adobe.xmp"]
    assert "HasExtendedXMP" not in xmp and "my:Big" not in xmp
    assert photo.meta.warnings == ["in.jpg: extended XMP could not be merged into the main XMP; dropped"]
