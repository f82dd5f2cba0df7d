"""File-name extensions: which files are photos, RAWs or editor sidecars, and what an output is called.

The tables match ``backlitfix.discover`` (same sets, same format names as
``Metadata.source_format``).
"""
from __future__ import annotations

from pathlib import Path

RAW_EXTENSIONS: frozenset[str] = frozenset(
    "." + e
    for e in (
        "dng cr2 cr3 crw nef nrw arw srf sr2 raf orf rw2 rwl pef ptx srw x3f 3fr fff iiq mos mrw erf kdc dcr mef raw"
    ).split()
)
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif", ".hif"})
HEIC_HINT = "HEIC support needs the optional extra: pip install 'backlitfix[heic]'"
# Lower-case extension (with dot) -> source format; RAW included.
IMAGE_EXTENSIONS: dict[str, str] = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg",
    ".png": "png",
    ".tif": "tiff", ".tiff": "tiff",
    ".webp": "webp",
    **{ext: "heif" for ext in sorted(HEIF_EXTENSIONS)},
    **{ext: "raw" for ext in sorted(RAW_EXTENSIONS)},
}
# Editor sidecars that sit beside photos (never inputs themselves)
SIDECAR_EXTENSIONS: frozenset[str] = frozenset(
    ".xmp .xmp~ .pp3 .dop .arp .on1 .cos .cot .cof .nksc .thm .aae .acr .dxo".split()
)
OUTPUT_FORMATS: tuple[str, ...] = ("jpeg", "png", "tiff", "webp", "heif")
_OUTPUT_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp", "heif": ".heic"}


def format_of(path: Path | str) -> str | None:
    """The format implied by the extension (case-insensitive): jpeg | png | tiff | webp | heif | raw."""
    return IMAGE_EXTENSIONS.get(Path(path).suffix.lower())


def output_extension(fmt: str, source_path: Path | str) -> str:
    """Extension for an output in `fmt`. Written in its own format, a photo keeps the source's
    spelling (IMG.JPG stays .JPG, .tiff stays .tiff); a RAW becomes .tif."""
    if fmt not in _OUTPUT_EXTENSIONS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(OUTPUT_FORMATS)}")
    suffix = Path(source_path).suffix
    return suffix if format_of(source_path) == fmt else _OUTPUT_EXTENSIONS[fmt]
