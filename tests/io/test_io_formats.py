from pathlib import Path

import pytest

from backlitfix.io.formats import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    SIDECAR_EXTENSIONS,
    format_of,
    output_extension,
)


@pytest.mark.parametrize(
    "name, fmt",
    [("a.jpg", "jpeg"), ("A.JPEG", "jpeg"), ("b.Png", "png"), ("c.tif", "tiff"), ("c.TIFF", "tiff"),
     ("d.webp", "webp"), ("e.HEIC", "heif"), ("f.CR3", "raw"), ("g.nef", "raw"), ("h.dng", "raw"),
     ("i.xmp", None), ("notes.txt", None), ("noext", None)],
)
def test_format_of_is_case_insensitive(name, fmt):
    assert format_of(Path(name)) == fmt
    assert format_of(name) == fmt


@pytest.mark.parametrize(
    "fmt, source, ext",
    [("jpeg", "IMG.JPG", ".JPG"), ("jpeg", "x.jpeg", ".jpeg"), ("tiff", "scan.tiff", ".tiff"),
     ("png", "a.PNG", ".PNG"), ("tiff", "IMG.CR2", ".tif"), ("jpeg", "IMG.dng", ".jpg"),
     ("png", "a.jpg", ".png"), ("webp", "a.jpg", ".webp"), ("heif", "a.png", ".heic"), ("jpeg", "a.heic", ".jpg")],
)
def test_output_extension(fmt, source, ext):
    assert output_extension(fmt, Path(source)) == ext


def test_output_extension_rejects_unknown_format():
    with pytest.raises(ValueError, match="bmp"):
        output_extension("bmp", "a.jpg")


def test_sidecars_and_raws_are_classified():
    assert {".xmp", ".pp3", ".dop", ".arp"} <= SIDECAR_EXTENSIONS
    assert all(IMAGE_EXTENSIONS[e] == "raw" for e in RAW_EXTENSIONS)
