"""Exact tiled inference: the output of one full-resolution pass, in memory set by the tile size (§1.6).

The pyramid pooling is global, so a tile cannot pool on its own. Two passes:
1. statistics: per tile, run the stem (5 convs) on the tile grown by 5 px and add the tile's own
   32-channel features into every pooling cell it meets (float64 sums, divided by the global cell size);
2. output: per tile grown by 17 px, run the stem again, build the pyramid maps for exactly that region
   from the tiny pooled tensors, and run the rest of the network.
Every 3x3 conv is evaluated "valid" where the region has real neighbours and padded as in the full
network where the region touches the image border, so a region shrinks to exactly the tile.
Interior tiles (whose grown window touches no border) are all "valid" convolutions, which an exported graph
can run: ``runtime`` (`backlitfix.backends.TileRuntime`) takes those where given; border tiles stay here.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .model.network import EnhanceNet, ResidualBlock, lrelu

STEM_RADIUS = 5  # cond1 + 2 residual blocks
TOTAL_RADIUS = 17  # + PPM fuse + condx/condy/cond_add1 + 4 residual blocks


@dataclass
class Region:
    """A feature map covering absolute image rows [y0, y1) and columns [x0, x1) of an H x W image."""

    t: torch.Tensor
    y0: int
    y1: int
    x0: int
    x1: int
    H: int
    W: int


def _conv(r: Region, weight: torch.Tensor, bias: torch.Tensor | None, mode: str) -> Region:
    top, bottom, left, right = r.y0 == 0, r.y1 == r.H, r.x0 == 0, r.x1 == r.W
    pad = (int(left), int(right), int(top), int(bottom))
    t = r.t
    if any(pad):
        t = F.pad(t, pad, mode="reflect" if mode == "reflect" else "constant")
    t = F.conv2d(t, weight, bias)
    return Region(t, r.y0 + (not top), r.y1 - (not bottom), r.x0 + (not left), r.x1 - (not right), r.H, r.W)


def _crop(r: Region, like: Region) -> torch.Tensor:
    return r.t[..., like.y0 - r.y0 : like.y1 - r.y0, like.x0 - r.x0 : like.x1 - r.x0]


def _outer(r: Region, conv: torch.nn.Conv2d, net: EnhanceNet) -> Region:
    return _conv(r, conv.weight, conv.bias, net.padding)


def _block(r: Region, blk: ResidualBlock) -> Region:
    a = _conv(r, blk.conv1.weight, None, "reflect")
    a.t = lrelu(a.t)
    b = _conv(a, blk.conv2.weight, None, "reflect")
    b.t = lrelu(b.t + _crop(r, b))
    return b


def _stem(net: EnhanceNet, r: Region) -> Region:
    r = _outer(r, net.cond1, net)
    r.t = lrelu(r.t)
    return _block(_block(r, net.ResidualBlock1), net.ResidualBlock2)


def _float64_device(device: torch.device) -> torch.device:
    """Where float64 sums can live: on the device itself, except Apple's MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def _cell_bounds(n: int, b: int) -> list[tuple[int, int]]:
    """Adaptive average pooling cells along one axis: [floor(i*n/b), ceil((i+1)*n/b))."""
    return [((i * n) // b, -((-(i + 1) * n) // b)) for i in range(b)]


def _interp_matrix(idx: torch.Tensor, n_out: int, b: int) -> torch.Tensor:
    """Bilinear align_corners=True weights (len(idx) x b) mapping b samples onto absolute positions idx."""
    m = torch.zeros(len(idx), b, dtype=torch.float64)
    if b == 1 or n_out == 1:
        m[:, 0] = 1.0
        return m
    src = idx.double() * (b - 1) / (n_out - 1)
    i0 = src.floor().long().clamp(max=b - 1)
    i1 = (i0 + 1).clamp(max=b - 1)
    w1 = src - i0.double()
    rows = torch.arange(len(idx))
    m[rows, i0] += 1.0 - w1
    m[rows, i1] += w1
    return m


def tiles(H: int, W: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """Tiles of about ``tile`` px covering the image, balanced so no sliver is left at the edge."""
    ny, nx = max(1, math.ceil(H / tile)), max(1, math.ceil(W / tile))
    ys = [round(i * H / ny) for i in range(ny + 1)]
    xs = [round(j * W / nx) for j in range(nx + 1)]
    for i in range(ny):
        for j in range(nx):
            yield ys[i], ys[i + 1], xs[j], xs[j + 1]


def _interior(t: tuple[int, int, int, int], g: int, H: int, W: int) -> bool:
    """Whether the tile grown by ``g`` px touches no image border: then no convolution pads."""
    return t[0] > g and t[1] + g < H and t[2] > g and t[3] + g < W


def largest_tile(H: int, W: int, tile: int) -> tuple[int, int]:
    """The height and width of the largest of `tiles` (balanced tiles differ by a pixel at most)."""
    ts = list(tiles(H, W, tile))
    return max(t[1] - t[0] for t in ts), max(t[3] - t[2] for t in ts)


def _grown(get_input: Callable, H: int, W: int, t: tuple[int, int, int, int], g: int) -> Region:
    y0, y1, x0, x1 = max(0, t[0] - g), min(H, t[1] + g), max(0, t[2] - g), min(W, t[3] + g)
    return Region(get_input(y0, y1, x0, x1), y0, y1, x0, x1, H, W)


def _common(t: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Tile ``t`` extended down and right to ``size``, the largest tile's: a runtime then sees one input shape
    (one compiled model, not one per tile size: each held ~100 MB) and the caller crops the extra away."""
    return t[0], t[0] + size[0], t[2], t[2] + size[1]


def _crop_to(out: torch.Tensor, t: tuple[int, int, int, int]) -> torch.Tensor:
    return out[..., : t[1] - t[0], : t[3] - t[2]]


def _stem_features(net: EnhanceNet, get_input: Callable, H: int, W: int, t, runtime, size) -> torch.Tensor:
    """The stem's (1, 32, h, w) features for exactly tile ``t``."""
    if runtime is not None and _interior(c := _common(t, size), STEM_RADIUS, H, W):
        x = _grown(get_input, H, W, c, STEM_RADIUS).t
        if (f := runtime.stem(x)) is not None:
            return _crop_to(f, t).to(x.device, net.cond1.weight.dtype)
    r = _grown(get_input, H, W, t, STEM_RADIUS)
    f = _stem(net, r)
    assert (f.y0, f.y1, f.x0, f.x1) == t
    return f.t


@torch.no_grad()
def pooled_context(net: EnhanceNet, get_input: Callable, H: int, W: int, tile: int,
                   runtime=None) -> list[torch.Tensor]:
    """Pass 1: the PPM's four (1, 8, b, b) maps for the whole image, computed tile by tile."""
    size = largest_tile(H, W, tile)
    bins = net.PPM1.bins
    device = net.cond1.weight.device
    acc = _float64_device(device)
    sums = [torch.zeros(32, b, b, dtype=torch.float64, device=acc) for b in bins]
    bounds = [(_cell_bounds(H, b), _cell_bounds(W, b)) for b in bins]
    for t in tiles(H, W, tile):
        feat = _stem_features(net, get_input, H, W, t, runtime, size)[0].to(acc, torch.float64)
        for k, (rows, cols) in enumerate(bounds):
            for i, (r0, r1) in enumerate(rows):
                a, z = max(r0, t[0]), min(r1, t[1])
                if a >= z:
                    continue
                band = feat[:, a - t[0] : z - t[0]].sum(dim=1)  # (32, tile width)
                for j, (c0, c1) in enumerate(cols):
                    p, q = max(c0, t[2]), min(c1, t[3])
                    if p < q:
                        sums[k][:, i, j] += band[:, p - t[2] : q - t[2]].sum(dim=1)
    out = []
    dtype = net.cond1.weight.dtype
    for k, (rows, cols) in enumerate(bounds):
        counts = torch.tensor([[(r1 - r0) * (c1 - c0) for c0, c1 in cols] for r0, r1 in rows], dtype=torch.float64)
        mean = (sums[k].cpu() / counts)[None].to(device, dtype)
        out.append(net.PPM1.features[k][2](net.PPM1.features[k][1](mean)))  # 1x1 conv, PReLU
    return out


def _pyramid(pooled: list[torch.Tensor], y0: int, y1: int, x0: int, x1: int, H: int, W: int,
             like: torch.Tensor) -> list[torch.Tensor]:
    """The four pyramid maps, upsampled as the full network would, for absolute rows [y0, y1) and
    columns [x0, x1) only: (1, 8, h, w) each, on ``like``'s device and dtype."""
    ys, xs = torch.arange(y0, y1), torch.arange(x0, x1)
    acc = _float64_device(like.device)
    maps = []
    for p in pooled:
        b = p.shape[-1]
        ry, rx = _interp_matrix(ys, H, b).to(acc), _interp_matrix(xs, W, b).to(acc)
        up = torch.einsum("yi,cij,xj->cyx", ry, p[0].to(acc, torch.float64), rx)
        maps.append(up[None].to(like.device, like.dtype))
    return maps


@torch.no_grad()
def tile_output(net: EnhanceNet, get_input: Callable, H: int, W: int, t, pooled: list[torch.Tensor],
                runtime=None, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Pass 2 for one tile: L (1, 1, h, w) for exactly the tile's pixels. ``size``: the largest tile's
    (`largest_tile`), the one input shape a runtime sees."""
    c = _common(t, size or (t[1] - t[0], t[3] - t[2]))
    if runtime is not None and _interior(c, TOTAL_RADIUS, H, W):
        x = _grown(get_input, H, W, c, TOTAL_RADIUS).t
        g = TOTAL_RADIUS - STEM_RADIUS  # the stem's output window: the tile grown by g
        ups = _pyramid(pooled, c[0] - g, c[1] + g, c[2] - g, c[3] + g, H, W, x)
        if (L := runtime.tile(x, torch.cat(ups, dim=1))) is not None:
            return _crop_to(L, t).to(x.device)
    f = _stem(net, _grown(get_input, H, W, t, TOTAL_RADIUS))
    maps = [f.t, *_pyramid(pooled, f.y0, f.y1, f.x0, f.x1, H, W, f.t)]
    r = Region(torch.cat(maps, dim=1), f.y0, f.y1, f.x0, f.x1, H, W)
    fuse = net.PPM1.fuse
    r = _conv(r, fuse[0].weight, None, "zeros")
    r.t = fuse[1](r.t)
    r = _block(_block(_outer(r, net.condx, net), net.ResidualBlock3), net.ResidualBlock4)
    r = _block(_block(_outer(r, net.condy, net), net.ResidualBlock5), net.ResidualBlock6)
    r = _outer(r, net.cond_add1, net)
    assert (r.y0, r.y1, r.x0, r.x1) == tuple(t)
    return F.relu(r.t)


def exact_L(
    net: EnhanceNet, get_input: Callable, H: int, W: int, tile: int = 512, runtime=None
) -> Iterator[tuple[tuple, torch.Tensor]]:
    """Yield (tile, L of that tile) for the whole image; equal to ``net(image)`` up to float rounding.

    ``get_input(y0, y1, x0, x1)`` returns the (1, 3, h, w) float input for that window, so the caller
    decides how pixels are stored and converted. ``runtime``: a `backlitfix.backends.TileRuntime` for the
    interior tiles, or None (PyTorch for all).
    """
    if H < 2 or W < 2:
        raise ValueError("the network needs an image of at least 2 x 2 pixels")
    tile = max(tile, 2 * TOTAL_RADIUS)
    pooled = pooled_context(net, get_input, H, W, tile, runtime)
    size = largest_tile(H, W, tile)
    for t in tiles(H, W, tile):
        yield t, tile_output(net, get_input, H, W, t, pooled, runtime, size)


class InPlaceTiles:
    """Tiles written into ``out`` while later tiles still read their halo from ``pixels``, which may be ``out``.

    Tiles come in raster order (`tiles`), and a tile's halo reaches TOTAL_RADIUS rows into the tile row
    above and columns into the tile on its left. When ``out`` may share memory with ``pixels``, a tile
    row's output is held until the row is done, and before it is written the original rows that the next
    row's halo reads are copied aside. Memory: one tile row of output plus TOTAL_RADIUS rows (about 20 MB
    for a 6000 px wide 16-bit photo at tile 512), not a second copy of the photo (144 MB at 24 MP).
    """

    def __init__(self, pixels, out):
        self.pixels, self.out = pixels, out
        self.aliased = np.may_share_memory(pixels, out)
        self.band, self.band_y0, self.band_y1 = None, 0, 0  # original rows [band_y0, band_y1)
        self.row, self.pending = None, []  # the tile row being computed and its finished tiles

    def read(self, y0: int, y1: int, x0: int, x1: int):
        """Original pixels of a window, as they were before any tile was written."""
        if self.band is None or y0 >= self.band_y1:
            return self.pixels[y0:y1, x0:x1]
        assert y0 >= self.band_y0, "a halo taller than a tile row"
        return np.concatenate([self.band[y0 - self.band_y0 :, x0:x1], self.pixels[self.band_y1 : y1, x0:x1]])

    def write(self, rows: slice, cols: slice, block) -> None:
        if not self.aliased:
            self.out[rows, cols] = block
            return
        if rows != self.row:
            self.flush()
            self.row = rows
        self.pending.append((cols, block))

    def flush(self) -> None:
        """Write the held tile row, keeping the original rows the next tile row reads above itself."""
        if not self.pending:
            return
        y1 = self.row.stop
        self.band_y0, self.band_y1 = max(self.row.start, y1 - TOTAL_RADIUS), y1
        self.band = self.pixels[self.band_y0 : y1].copy()
        for cols, block in self.pending:
            self.out[self.row, cols] = block
        self.pending = []
