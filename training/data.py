"""Training images: decoded once at training size and kept in memory, augmented in batches on the device.

The reference decodes and augments every image in DataLoader workers at every pass (§5.1 a). Training sets
are hundreds of photos, so 512² uint8 copies (0.75 MB each) fit in memory and augmentation runs as one
batched affine resample on whatever device trains, which is what keeps the CPU free for the network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from backlitfix.constants import MAX_PIXELS


class DataError(ValueError):
    """A training set that cannot be used; ``str()`` names the folder or files."""


def read_square(path: Path, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One photo as a size×size×3 uint8 array: upright, decoded at reduced size (JPEG draft mode, RAW
    previews; see library.load_reduced), then squashed to a square with Lanczos, as the reference does (§5.1 a)."""
    from .library import load_reduced

    path = Path(path)
    im = load_reduced(path, path.read_bytes(), embed_size=size, min_short=size, max_pixels=max_pixels)
    return np.asarray(im.resize((size, size), Image.Resampling.LANCZOS))


@dataclass
class ImageSet:
    """N photos at size², uint8 N×3×S×S on the CPU, and the files they came from."""

    pixels: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]]

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, idx: torch.Tensor | list[int], device, dtype=torch.float32) -> torch.Tensor:
        return self.pixels[idx].to(device=device, dtype=dtype, non_blocking=True).div_(255.0)


def load_image_set(paths: list[Path], size: int, *, what: str = "images", minimum: int = 2, log=None,
                   max_pixels: int = MAX_PIXELS) -> ImageSet:
    """Decode ``paths`` at ``size``; unreadable files are skipped with a reason. Fewer than ``minimum``: error."""
    arrays, kept, skipped = [], [], []
    for p in paths:
        try:
            arrays.append(read_square(p, size, max_pixels))
            kept.append(Path(p))
        except Exception as e:  # noqa: BLE001 - any decoder failure skips one photo, named in the log
            reason = getattr(e, "reason", None) or str(e) or type(e).__name__
            skipped.append((Path(p), reason))
            if log:
                log(f"warning: {p}: skipped: {reason}")
    if len(kept) < minimum:
        raise DataError(f"{what}: {len(kept)} usable image(s), need at least {minimum}"
                        + (f" ({len(skipped)} unreadable)" if skipped else ""))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(pixels, kept, skipped)


@dataclass(frozen=True)
class Augment:
    """The reference's augmentation (§5.1), as one batched resample: flips and transpose (p 0.5 each), zoom
    (p 0.3, independent x/y factors in ``zoom``) and rotation (p 0.3, ±90°) about the centre, bilinear with
    reflected borders. ``draw`` returns parameters so several images can share one draw (§5.1 c)."""

    zoom: tuple[float, float] = (0.7, 1.3)
    p_zoom: float = 0.3
    p_rotate: float = 0.3
    max_angle: float = 90.0

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n×6 parameters: hflip, vflip, transpose, zx, zy, angle (radians)."""
        u = torch.rand(n, 7, generator=generator)
        lo, hi = self.zoom
        zx = torch.where(u[:, 3] < self.p_zoom, lo + (hi - lo) * u[:, 4], torch.ones(n))
        zy = torch.where(u[:, 3] < self.p_zoom, lo + (hi - lo) * u[:, 5], torch.ones(n))
        ang = torch.where(u[:, 6] < self.p_rotate,
                          (torch.rand(n, generator=generator) * 2 - 1) * math.radians(self.max_angle),
                          torch.zeros(n))
        return torch.stack([(u[:, 0] < 0.5).float(), (u[:, 1] < 0.5).float(), (u[:, 2] < 0.5).float(),
                            zx, zy, ang], dim=1)

    @staticmethod
    def apply(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Apply per-image parameters from :meth:`draw` to a B×C×H×W batch (square images)."""
        params = params.to(x.device, torch.float32)
        hflip, vflip, transpose, zx, zy, ang = params.unbind(1)
        x = torch.where(transpose.view(-1, 1, 1, 1) > 0, x.transpose(2, 3), x)
        x = torch.where(hflip.view(-1, 1, 1, 1) > 0, x.flip(3), x)
        x = torch.where(vflip.view(-1, 1, 1, 1) > 0, x.flip(2), x)
        warp = (zx != 1) | (zy != 1) | (ang != 0)
        if not bool(warp.any()):
            return x
        # Output pixel p samples the input at R(-a) p / z: the content is zoomed by z and rotated by a.
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.stack([torch.stack([cos / zx, sin / zx, torch.zeros_like(zx)], 1),
                             torch.stack([-sin / zy, cos / zy, torch.zeros_like(zy)], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return torch.where(warp.view(-1, 1, 1, 1), warped, x)
