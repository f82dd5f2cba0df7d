"""Correcting in place (the pipeline's out=pixels for writable arrays) equals correcting into a new array."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from backlitfix.enhance import Enhancer
from backlitfix.io import decode
from test_enhance import golden_pixels, net


def small_photo(depth: int, H=150, W=170) -> np.ndarray:
    px = golden_pixels()[:H, :W]
    if depth == 16:  # every 16-bit level used, not 8-bit values scaled up
        px = (px.astype(np.uint32) * 257 + np.arange(W)[None, :, None] % 257).clip(0, 65535).astype(np.uint16)
    return np.ascontiguousarray(px)


@pytest.mark.parametrize("tile", [64, 100, 128])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_in_place_equals_out_of_place(mode, depth, tile):
    n = net()
    e = Enhancer(n, mode=mode, tile=tile, working_megapixels=0.01)  # fast mode really upsamples here
    px = small_photo(depth)
    readonly = px.copy()
    readonly.flags.writeable = False  # like Pillow's arrays: the pipeline corrects these out of place
    ref = e.enhance(readonly)
    # Writable arrays are corrected in place: a decoder's own copy (EXIF-rotated, 16-bit, RAW) and a strided view.
    rotated = np.rot90(np.ascontiguousarray(np.rot90(px, -1)), 1)
    assert np.array_equal(rotated, px) and not rotated.flags.c_contiguous
    for inplace in (px.copy(), rotated):
        got = e.enhance(inplace, out=inplace)
        assert got is inplace
        diff = np.abs(got.astype(np.int64) - ref)
        assert diff.max() == 0, f"{np.count_nonzero(diff)} values differ, by up to {diff.max()}"


def write_inputs(folder, upright_size=(500, 400)):
    """The same upright pixels as an Orientation-6 JPEG, an 8-bit PNG and a 16-bit TIFF."""
    src = Image.fromarray(golden_pixels("110_51093502029_o_1152x864.png")).resize(upright_size, Image.LANCZOS)
    stored = src.transpose(Image.Transpose.ROTATE_90)  # Orientation 6: the viewer turns it 90 deg clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(folder / "rot6.jpg", quality=95, exif=exif.tobytes())
    upright = decode(folder / "rot6.jpg", max_pixels=10**9).pixels
    assert upright.shape == (upright_size[1], upright_size[0], 3) and upright.flags.writeable
    Image.fromarray(upright).save(folder / "upright8.png")
    tifffile.imwrite(folder / "deep16.tif", upright.astype(np.uint16) * 257, photometric="rgb")


def test_exact_mode_gives_the_same_photo_whatever_the_file_type(tmp_path):
    """500 x 400 with tile 128: the 16-bit TIFF and Orientation-6 JPEG (corrected in place) equal the 8-bit PNG."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    write_inputs(inputs)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("exact:\n  tile: 128\n")
    r = CliRunner().invoke(main, ["run", "--mode", "exact", "--strength", "1", "--config", str(cfg), "--format", "png",
                                  "-o", str(outputs), "--json", "--", str(inputs)],
                           env={"XDG_CONFIG_HOME": "/nonexistent"}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["files"]) == 3
    ref = np.asarray(Image.open(outputs / "upright8.png")).astype(np.int64)
    deep = decode(outputs / "deep16.png", max_pixels=10**9).pixels
    assert deep.dtype == np.uint16
    deep = deep.astype(np.float64) / 257
    rot = np.asarray(Image.open(outputs / "rot6.png")).astype(np.int64)
    off = {}
    for name, got in (("16-bit TIFF", deep), ("Orientation-6 JPEG", rot)):
        assert got.shape == ref.shape
        diff = np.abs(got - ref)
        off[name] = f"{np.count_nonzero(diff > 1)} values over 1 level, up to {diff.max():.2f}"
    print(off)
    assert all(v.startswith("0 values") for v in off.values()), off


def test_in_place_tiles_keep_only_a_tile_row_and_the_halo_rows_aside():
    """The tiles' read/write pattern with a stand-in for the network (the window's mean): in place equals out of
    place, and the rows kept aside are a small part of the photo, not a second copy of it."""
    import tracemalloc

    from backlitfix.tiling import TOTAL_RADIUS, InPlaceTiles, tiles

    H, W, tile = 1200, 1600, 256
    px = np.random.default_rng(1).integers(0, 65536, (H, W, 3), dtype=np.uint16)

    def run(pixels, out):
        src = InPlaceTiles(pixels, out)
        for y0, y1, x0, x1 in tiles(H, W, tile):
            win = src.read(max(0, y0 - TOTAL_RADIUS), min(H, y1 + TOTAL_RADIUS), max(0, x0 - TOTAL_RADIUS),
                           min(W, x1 + TOTAL_RADIUS))
            src.write(slice(y0, y1), slice(x0, x1), np.full((y1 - y0, x1 - x0, 3), win.mean(), np.uint16))
        src.flush()
        return out

    ref = run(px, np.empty_like(px))
    inplace = px.copy()
    tracemalloc.start()
    run(inplace, inplace)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(inplace, ref)
    row_band = (tile + 2 * TOTAL_RADIUS) * W * 3 * 2  # one tile row of output (plus its halo read) in uint16
    assert peak < 1.5 * row_band < 0.5 * px.nbytes, (peak, row_band, px.nbytes)
