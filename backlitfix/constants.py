"""Numbers and tables that several modules must agree on, kept in one place.

No imports beyond the standard library: anything (the CLI, the watch daemon, training, the benches) may
import this without pulling in torch or Pillow.
"""
from __future__ import annotations

APP_NAME = "backlitfix"

# --- luma weights --------------------------------------------------------------------------------------
# Rec. 709 / sRGB primaries: the luminance that auto strength and training's backlit selection measure.
LUMA_REC709: tuple[float, float, float] = (0.2126, 0.7152, 0.0722)
# Rec. 601 luma of the encoded values: the guide of the fast-mode upsampler, eval's exposure statistics and
# the zero-reference losses. Kept distinct from Rec. 709 on purpose: changing it changes outputs.
LUMA_REC601: tuple[float, float, float] = (0.299, 0.587, 0.114)

# --- illumination ----------------------------------------------------------------------------------------
# Illumination L below this would multiply the input by more than 1000 (about 10 stops): treat as this.
L_FLOOR = 1e-3

# --- decoding --------------------------------------------------------------------------------------------
# The shipped default of input.max_pixels (config.yaml must say the same; a test checks it): images with
# more pixels are refused from their header, before any pixel is decoded (decompression-bomb guard).
MAX_PIXELS = 250_000_000

# --- file formats ----------------------------------------------------------------------------------------
RAW_EXTENSIONS: frozenset[str] = frozenset(
    "." + e
    for e in (
        "dng cr2 cr3 crw nef nrw arw srf sr2 raf orf rw2 rwl pef ptx srw x3f 3fr fff iiq mos mrw erf kdc dcr mef raw"
    ).split()
)
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif", ".hif"})
# Lower-case extension (with dot) -> source format; RAW included. The readable files.
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
# Pillow's format name -> ours, for the formats decode reads through Pillow (RAW goes through rawpy)
PILLOW_READABLE: dict[str, str] = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "TIFF": "tiff", "WEBP": "webp",
                                   "HEIF": "heif"}
# The formats encode writes, and the extension each gets when it is not the source's own
WRITABLE_FORMATS: tuple[str, ...] = ("jpeg", "png", "tiff", "webp", "heif")
OUTPUT_EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "png": ".png", "tiff": ".tif", "webp": ".webp", "heif": ".heic"}
# Values of `run --format` / config output.format: what a user may ask for
OUTPUT_FORMAT_CHOICES: tuple[str, ...] = ("auto", "jpeg", "png", "tiff")

# The folder our outputs go to beside the inputs; a folder of this name is never searched for inputs
OUTPUT_DIRNAME = APP_NAME
