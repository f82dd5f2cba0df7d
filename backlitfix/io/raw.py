"""Camera RAW decoding through rawpy (LibRaw).

Rendering choices, as a photographer would expect from a neutral conversion:
* the camera's as-shot white balance; no auto-brightening (it would change with image content);
  highlights clipped (no magenta/pink blown skies);
* sRGB primaries with the sRGB tone curve (LibRaw's default curve is BT.709's), 16 bits, an sRGB
  ICC profile attached;
* a DNG's DefaultCrop applied (the border pixels it excludes are not meant to be seen);
* orientation applied once, here: LibRaw's own rotation is switched off (user_flip=0) and its flip
  code is applied after cropping, so the crop rectangle is in sensor coordinates.
"""
from __future__ import annotations

import mmap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rawpy

from ..photo import Metadata, Photo, PhotoError
from .metadata import clean_file_exif, srgb_profile, without_develop_settings, xmp_upright
from .orientation import orientation_of_flip, upright
from .sidecars import find_sidecars
from .tiff_ifd import TiffFormatError, TiffReader, image_data_end

_XMP = 0x02BC


@contextmanager
def libraw_errors(path: Path) -> Iterator[None]:
    """LibRaw's exceptions as one-line `PhotoError`s naming the file (full and reduced decoding alike)."""
    try:
        yield
    except rawpy.LibRawFileUnsupportedError:
        raise PhotoError(path, "not a RAW file LibRaw can read (unsupported or damaged)") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError, rawpy.LibRawOutOfOrderCallError):
        raise PhotoError(path, "truncated or corrupt RAW data") from None
    except rawpy.LibRawError as e:
        raise PhotoError(path, f"RAW decoding failed ({type(e).__name__})") from None


def decode_raw(path: Path, *, max_pixels: int) -> Photo:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            reader = TiffReader(buf)
        except TiffFormatError:  # CR3, RAF, CRW, X3F, ...: LibRaw's own checks apply
            exif, xmp, warnings = None, None, [f"{path.name}: EXIF is not read from {path.suffix} files; not carried"]
        else:
            _check_complete(path, reader)
            exif, _, warnings = clean_file_exif(buf, path.name)  # orientation comes from LibRaw below
            xmp = _embedded_xmp(reader)
    with libraw_errors(path):
        with rawpy.imread(str(path)) as raw:
            s = raw.sizes
            pixels = max(s.width * s.height, s.raw_width * s.raw_height)
            if pixels > max_pixels:
                raise PhotoError(path, f"image has {pixels} pixels, over the limit of {max_pixels} (input.max_pixels)")
            rgb = raw.postprocess(**_params(raw))
    if path.suffix.lower() == ".dng":
        rgb = _default_crop(rgb, s)
    rgb = upright(rgb, orientation_of_flip(s.flip))
    meta = Metadata(exif=exif, icc=srgb_profile(), xmp=xmp, source_format="raw", bit_depth=16,
                    sidecars=find_sidecars(path), warnings=warnings)
    return Photo(path, rgb, meta)


def _params(raw: rawpy.RawPy) -> dict:
    params = dict(
        use_camera_wb=True, no_auto_bright=True, output_bps=16, output_color=rawpy.ColorSpace.sRGB,
        gamma=(2.4, 12.92), highlight_mode=rawpy.HighlightMode.Clip, user_flip=0,
    )
    # Some files state a white level below their data (a Nikon film-scanner NEF says 255 for
    # 16-bit samples): everything would come out white. Use the container's full range instead.
    peak = int(raw.raw_image_visible.max())
    if peak > raw.white_level:
        params["user_sat"] = (1 << peak.bit_length()) - 1
    return params


def _default_crop(rgb: np.ndarray, s) -> np.ndarray:
    """Apply LibRaw's crop rectangle (a DNG's DefaultCrop; in raw coordinates) when it fits."""
    top, left = s.crop_top_margin - s.top_margin, s.crop_left_margin - s.left_margin
    h, w = s.crop_height, s.crop_width
    if rgb.shape[:2] != (s.height, s.width) or not (h and w) or min(top, left) < 0 \
            or top + h > s.height or left + w > s.width or (h, w) == (s.height, s.width):
        return rgb
    return np.ascontiguousarray(rgb[top:top + h, left:left + w])


def _embedded_xmp(r: TiffReader) -> bytes | None:
    """IFD0's XMP (DNG and several other RAWs), upright and without develop settings."""
    entry = r.read_ifd(r.first_ifd, [], "IFD0")[0].get(_XMP)
    return xmp_upright(without_develop_settings(entry.data)) if entry else None


def _check_complete(path: Path, r: TiffReader) -> None:
    """A TIFF-based RAW whose image data runs past the end of the file was cut short. LibRaw
    often notices, but not always (it fills what is missing and only prints to stderr)."""
    end = image_data_end(r)
    if end > len(r.buf):
        raise PhotoError(path, f"truncated RAW file (image data needs {end} bytes, the file has {len(r.buf)})")
