"""Exact mode's interior tiles outside PyTorch (backlitfix.backends.TileRuntime): the same map as PyTorch's
tiles, the runtime really used, border tiles left to PyTorch, and the fall-back on failure."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from backlitfix import tiling
from backlitfix.api import load
from backlitfix.backends import make_tile_runtime
from backlitfix.enhance import Enhancer, to_float
from conftest import model
from test_backends import CPU, INSTALLED, installed, net, wrong_graph
from test_enhance import golden_pixels


class Counting:
    """Counts the tiles a runtime was asked for, and what it answered."""

    def __init__(self, rt):
        self.rt, self.stems, self.tiles = rt, 0, 0

    def stem(self, x):
        self.stems += 1
        return self.rt.stem(x)

    def tile(self, x, ups):
        self.tiles += 1
        return self.rt.tile(x, ups)


@pytest.fixture(scope="module")
def runtimes():
    n = net()
    return {b: make_tile_runtime(b, n, CPU, warn=pytest.fail) for b in INSTALLED}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_interior_tiles_give_pytorchs_map(backend, runtimes):
    """Tiles of 48 px on a 230 x 301 image: 5 x 7 tiles, of which 3 x 5 are interior in pass 2 (their
    window grown by 17 px touches no border) and as many in pass 1; the map equals PyTorch's to float
    rounding, and so does the enhanced photo."""
    installed(backend)
    n = net().float().eval()
    px = (np.random.default_rng(3).random((230, 301, 3)) * 255).astype(np.uint8)
    get = lambda y0, y1, x0, x1: to_float(px[y0:y1, x0:x1])  # noqa: E731
    rt = Counting(runtimes[backend])
    ref = dict(tiling.exact_L(n, get, 230, 301, tile=48))
    got = dict(tiling.exact_L(n, get, 230, 301, tile=48, runtime=rt))
    size = tiling.largest_tile(230, 301, 48)
    common = [tiling._common(t, size) for t in ref]  # each tile as the runtime sees it: the largest tile's shape
    interior = [c for c in common if tiling._interior(c, tiling.TOTAL_RADIUS, 230, 301)]
    assert len(ref) == 35 and len(interior) == 15
    assert rt.tiles == len(interior)  # border tiles never reach the runtime
    assert rt.stems == sum(tiling._interior(c, tiling.STEM_RADIUS, 230, 301) for c in common)
    assert len({tuple(s) for s in runtimes[backend].runners[1]._compiled}) <= 2  # one shape (one thread count)
    assert not runtimes[backend].failed
    for t in ref:
        assert got[t].shape == ref[t].shape
        assert torch.allclose(got[t], ref[t], rtol=1e-4, atol=1e-5), t
    a = Enhancer(n, mode="exact", tile=48).enhance(px, 1.0)
    b = Enhancer(n, mode="exact", tile=48, tile_runtime=runtimes[backend]).enhance(px, 1.0)
    assert np.abs(a.astype(int) - b).max() <= 1


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_failing_runtime_gives_way_to_pytorch_once(backend):
    installed(backend)
    heard = []
    n = net()
    rt = make_tile_runtime(backend, n, CPU, warn=heard.append)
    for r in rt.runners:
        r.model, r._compiled = wrong_graph(), {}
    px = golden_pixels()
    out = Enhancer(n, mode="exact", tile=64, tile_runtime=rt).enhance(px, 1.0)
    assert np.array_equal(out, Enhancer(n, mode="exact", tile=64).enhance(px, 1.0))
    assert len(heard) == 1 and f"backend {backend} failed in exact mode" in heard[0] and rt.failed
    Enhancer(n, mode="exact", tile=64, tile_runtime=rt).enhance(px, 1.0)
    assert len(heard) == 1


def test_exact_mode_takes_the_backend_setting():
    for b in INSTALLED:
        assert load(model(), device="cpu", mode="exact", backend=b)._engine.tile_runtime.name == b
    assert load(model(), device="cpu", mode="exact", backend="torch")._engine.tile_runtime is None
    assert load(model(), device="cpu", mode="fast")._engine.tile_runtime is None
    assert make_tile_runtime("auto", net(), torch.device("meta")) is None
    with pytest.raises(ValueError, match="backend must be one of"):
        make_tile_runtime("tensorrt", net(), CPU)
