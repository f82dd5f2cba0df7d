"""Turning stored pixels upright: EXIF Orientation (1-8) and LibRaw's `flip` code."""
from __future__ import annotations

import numpy as np

# EXIF Orientation -> the transform that shows the stored pixels upright
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored vertically
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # needs 90 degrees clockwise
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transverse
    8: lambda a: np.rot90(a, 1),  # needs 90 degrees counter-clockwise
}
# LibRaw sizes.flip -> EXIF Orientation (LibRaw maps Orientation o to "50132467"[o & 7])
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


def upright(pixels: np.ndarray, orientation: int | None) -> np.ndarray:
    """Pixels as they should be shown; unknown or missing orientations count as 1."""
    turned = _UPRIGHT.get(orientation or 1, _UPRIGHT[1])(pixels)
    return turned if turned is pixels else np.ascontiguousarray(turned)


def orientation_of_flip(flip: int) -> int:
    return _FLIP_TO_ORIENTATION.get(flip, 1)
