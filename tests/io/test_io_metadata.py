"""EXIF and XMP editing: only what the corrected output makes wrong changes."""
import piexif
import pytest
from PIL import Image

from backlitfix.io.metadata import (
    clean_exif,
    output_exif,
    output_xmp,
    parse_exif,
    strip_prefix,
    without_develop_settings,
    xmp_orientation,
)
from backlitfix.io.tiff_ifd import TiffFormatError
from conftest import shared_path


def embedded_exif(name: str) -> bytes:
    with Image.open(shared_path("data", "exif", name)) as im:
        return strip_prefix(im.info["exif"])


def test_decoding_only_resets_orientation_in_place():
    blob = embedded_exif("landscape_6.jpg")
    cleaned, orientation, warnings = clean_exif(b"Exif\0\0" + blob, "landscape_6.jpg")
    assert orientation == 6 and warnings == []
    assert len(cleaned) == len(blob) and sum(a != b for a, b in zip(cleaned, blob, strict=True)) == 1
    assert piexif.load(cleaned)["0th"][piexif.ImageIFD.Orientation] == 1


def test_thumbnail_is_dropped_and_the_block_shrinks():
    blob = embedded_exif("DSCN0010.jpg")
    assert piexif.load(blob)["thumbnail"]  # the premise: a thumbnail of the uncorrected picture
    out = output_exif(blob, width=640, height=480, software="t").to_bytes()
    loaded = piexif.load(out)
    assert not loaded["thumbnail"] and not loaded["1st"]
    assert len(out) < len(blob)


@pytest.mark.parametrize("name", ["Canon_DIGITAL_IXUS_400.jpg", "DSCN0010.jpg", "Panasonic_DMC-FZ30.jpg",
                                  "Fujifilm_FinePix_E500.jpg", "IMG_9424.JPG"])
def test_maker_notes_stay_at_their_offsets(name):
    # Maker notes hold offsets into the block; re-serialising (as piexif.dump does) moves them
    blob = embedded_exif(name)
    before = parse_exif(blob).exif[piexif.ExifIFD.MakerNote]
    out = output_exif(blob, width=10, height=20, software="t").to_bytes()
    after = parse_exif(out).exif[piexif.ExifIFD.MakerNote]
    assert after.offset == before.offset and after.data == before.data
    assert out[before.offset:before.offset + len(before.data)] == before.data


def test_output_tags():
    out = output_exif(embedded_exif("IMG_9424.JPG"), width=640, height=480, software="backlitfix 1.0").to_bytes()
    d = piexif.load(out)
    assert d["0th"][piexif.ImageIFD.Software] == b"backlitfix 1.0"
    assert d["0th"][piexif.ImageIFD.Orientation] == 1
    assert (d["Exif"][piexif.ExifIFD.PixelXDimension], d["Exif"][piexif.ExifIFD.PixelYDimension]) == (640, 480)
    tiff = output_exif(embedded_exif("IMG_9424.JPG"), width=640, height=480, software="b", tiff=True)
    assert piexif.ExifIFD.PixelXDimension not in tiff.exif and not tiff.interop  # JPEG-only tags


def test_damaged_entries_are_dropped_and_reported():
    blob = embedded_exif("hopper_bad_exif.jpg")
    cleaned, orientation, warnings = clean_exif(blob, "hopper_bad_exif.jpg")
    assert orientation == 1
    assert len(warnings) == 1
    assert warnings[0].startswith("hopper_bad_exif.jpg: EXIF was damaged (IFD0 claims 32 entries")
    assert piexif.load(cleaned)["0th"][piexif.ImageIFD.XResolution]


def test_wrongly_typed_exif_pointer_is_followed():
    blob = embedded_exif("exif_typeerror.jpg")
    cleaned, _, warnings = clean_exif(blob, "exif_typeerror.jpg")
    assert "wrong type" in warnings[0]
    assert piexif.load(cleaned)["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2010:07:11 13:53:00"


def test_block_without_tiff_structure_is_kept_verbatim():
    junk = b"this is not a TIFF structure"
    cleaned, orientation, warnings = clean_exif(b"Exif\0\0" + junk, "a.jpg")
    assert cleaned == junk and orientation is None
    assert warnings == ["a.jpg: EXIF could not be parsed (no TIFF header); copied unchanged"]
    assert output_exif(junk, width=1, height=1, software="t") == junk
    with pytest.raises(TiffFormatError):
        parse_exif(junk)


def test_xmp_orientation_and_size():
    xmp = (b'<rdf:Description tiff:Orientation="6" exif:PixelXDimension="4000" exif:PixelYDimension="3000">'
           b"<tiff:ImageWidth>4000</tiff:ImageWidth></rdf:Description>")
    assert xmp_orientation(xmp) == 6
    out = output_xmp(xmp, width=1500, height=2000)
    assert out == (b'<rdf:Description tiff:Orientation="1" exif:PixelXDimension="1500" exif:PixelYDimension="2000">'
                   b"<tiff:ImageWidth>1500</tiff:ImageWidth></rdf:Description>")
    assert xmp_orientation(b"<tiff:Orientation> 8 </tiff:Orientation>") == 8
    assert xmp_orientation(b"<x/>") is None and output_xmp(None, width=1, height=1) is None


def test_develop_settings_are_removed_but_nothing_else():
    xmp = shared_path("data", "raw", "canon_eos_6d.xmp").read_bytes()
    assert b"<crs:" in xmp
    out = without_develop_settings(xmp)
    assert b"<crs:" not in out and b" crs:" not in out.replace(b"xmlns:crs", b"")
    for kept in (b"aux:SerialNumber", b"exif:ExposureTime", b"</x:xmpmeta>"):
        assert (kept in xmp) == (kept in out)
