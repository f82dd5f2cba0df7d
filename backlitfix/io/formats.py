"""File-name extensions: which files are photos, RAWs or editor sidecars, and what an output is called.

The tables live in :mod:`backlitfix.constants` (format names as ``Metadata.source_format``).
"""
from __future__ import annotations

from pathlib import Path

from ..constants import (
    HEIF_EXTENSIONS,
    IMAGE_EXTENSIONS,
    OUTPUT_EXTENSIONS,
    RAW_EXTENSIONS,
    SIDECAR_EXTENSIONS,
)
from ..constants import WRITABLE_FORMATS as OUTPUT_FORMATS

__all__ = ["HEIC_HINT", "HEIF_EXTENSIONS", "IMAGE_EXTENSIONS", "OUTPUT_FORMATS", "RAW_EXTENSIONS", "SIDECAR_EXTENSIONS",
           "format_of", "output_extension"]

HEIC_HINT = "HEIC support needs the optional extra: pip install 'backlitfix[heic]'"


def format_of(path: Path | str) -> str | None:
    """The format implied by the extension (case-insensitive): jpeg | png | tiff | webp | heif | raw."""
    return IMAGE_EXTENSIONS.get(Path(path).suffix.lower())


def output_extension(fmt: str, source_path: Path | str) -> str:
    """Extension for an output in `fmt`. Written in its own format, a photo keeps the source's
    spelling (IMG.JPG stays .JPG, .tiff stays .tiff); a RAW becomes .tif."""
    if fmt not in OUTPUT_EXTENSIONS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    suffix = Path(source_path).suffix
    return suffix if format_of(source_path) == fmt else OUTPUT_EXTENSIONS[fmt]
