"""The value that travels through the pipeline: pixels plus everything needed to write them back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class PhotoError(Exception):
    """A problem with one photo. The runner records it as one line and the batch goes on."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class Metadata:
    exif: bytes | None = None  # TIFF-structured EXIF block, without the JPEG "Exif\0\0" prefix
    icc: bytes | None = None  # ICC profile, kept byte for byte so colours do not shift
    xmp: bytes | None = None  # XMP packet (UTF-8 XML)
    # A JPEG's Extended XMP (XMP part 3), reassembled: the part over 64 KB that `xmp` names by GUID
    # in xmpNote:HasExtendedXMP. JPEG outputs carry it the same way; other formats get one packet.
    xmp_extended: bytes | None = None
    source_format: str = ""  # jpeg | png | tiff | webp | heif | raw
    bit_depth: int = 8  # 8 or 16: the depth of `Photo.pixels`
    sidecars: tuple[Path, ...] = ()  # files copied beside the output (a RAW's same-name .xmp)
    warnings: list[str] = field(default_factory=list)  # non-fatal, one line each, naming the file


@dataclass
class Photo:
    """Upright pixels (EXIF orientation applied) in the file's own colour space.

    ``pixels`` is H x W x 3, uint8 or uint16; kept in the native integer type so a 24 MP photo
    costs 72 MB rather than 288 MB until the enhancer converts it strip by strip. ``alpha`` is the
    file's transparency (H x W, same type), None when it has none: the enhancer corrects only the
    colour, and the encoder writes the alpha back unchanged (or flattens onto white, with a warning,
    in a format that cannot carry it).
    """

    path: Path
    pixels: np.ndarray
    meta: Metadata
    alpha: np.ndarray | None = None

    @property
    def megapixels(self) -> float:
        return self.pixels.shape[0] * self.pixels.shape[1] / 1e6
