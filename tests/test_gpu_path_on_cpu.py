"""Issue 15, the GPU path without a GPU: what CUDA computes that is not CUDA-specific, checked on the CPU.

A GPU runs fast mode with fp16 autocast (`pick_dtype`), takes the photo in one block instead of strips,
and keeps exact mode's pooled statistics in float64 on the device. Each of those runs here on the CPU.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backlitfix.enhance import ONE_THREAD_PIXELS, STRIP_ROWS, Enhancer, pick_dtype
from backlitfix.model.checkpoint import load_model
from backlitfix.model.network import EnhanceNet
from backlitfix.tiling import _float64_device, exact_L
from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net() -> EnhanceNet:
    return load_model(shared_path("models", "official", "rave_unpaired.pth"))[0]


def golden_photos() -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(shared_path("reference", "golden").glob("*.png"))]


def extreme_photos() -> dict[str, np.ndarray]:
    return {"black": np.zeros((90, 120, 3), np.uint8), "white": np.full((90, 120, 3), 255, np.uint8),
            "black16": np.zeros((70, 50, 3), np.uint16), "white16": np.full((70, 50, 3), 65535, np.uint16)}


def test_a_gpu_picks_fp16_and_whole_photo_blocks():
    """What the tests below mimic is what the CUDA path actually chooses."""
    cuda = torch.device("cuda")
    assert pick_dtype("auto", cuda) == torch.float16
    assert Enhancer(EnhanceNet(), device=torch.device("meta")).strip_rows is None  # any non-CPU device
    assert Enhancer(EnhanceNet()).strip_rows == STRIP_ROWS
    assert _float64_device(cuda) == cuda and _float64_device(torch.device("mps")).type == "cpu"
    with pytest.raises(ValueError, match="strip_rows"):
        Enhancer(EnhanceNet(), strip_rows=0)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_fp16_autocast_is_finite_on_golden_and_extreme_photos(net, mode):
    """The CUDA precision (fp16 autocast), on the CPU: no NaN or inf anywhere, and no warning of one."""
    fp16 = Enhancer(net, mode=mode, dtype=torch.float16, working_megapixels=0.02, tile=160, strip_rows=None)
    fp32 = Enhancer(net, mode=mode, working_megapixels=0.02, tile=160)
    step = 4 if mode == "fast" else 5  # exact mode runs the network at full size
    photos = {f"golden{i}": p[::step, ::step] for i, p in enumerate(golden_photos())} | extreme_photos()
    for name, pixels in photos.items():
        Ls = []
        warned = []
        out = fp16.enhance(pixels, on_L=Ls.append, warn=warned.append)
        assert not warned, (name, warned)
        assert Ls and torch.isfinite(Ls[0]).all(), name
        ref = fp32.enhance(pixels)
        # fp16 moves the result by a few levels at most, never a wholesale change
        diff = np.abs(out.astype(np.float64) - ref) / np.iinfo(pixels.dtype).max
        assert diff.mean() < 2e-3 and np.percentile(diff, 99.9) < 0.05, (name, diff.mean(), diff.max())


@pytest.mark.slow  # fp16 is emulated on most CPUs: about 8 s
def test_network_in_half_precision_is_finite(net):
    """Harsher than autocast: every op of the network in fp16 (.half()), as a GPU without autocast would."""
    half = EnhanceNet(padding=net.padding)
    half.load_state_dict(net.state_dict())
    half = half.half().eval()
    photos = [p[::8, ::8] for p in golden_photos()] + list(extreme_photos().values())
    for pixels in photos:
        x = torch.from_numpy(pixels.astype(np.float32) / np.iinfo(pixels.dtype).max).permute(2, 0, 1)[None]
        with torch.no_grad():
            L = half(x.half()).float()
            ref = net(x)
        assert torch.isfinite(L).all()
        assert (L - ref).abs().max() < 0.02


@pytest.mark.parametrize("size", [(300, 257), (600, 40)])  # several strips, and a last strip of 88 rows
def test_whole_photo_blocks_equal_strips(net, size):
    """`strip_rows=None` (a GPU's single block) gives the same pixels as the CPU's strips."""
    rng = np.random.default_rng(1)
    H, W = size
    pixels = (np.linspace(0, 255, H * W * 3).reshape(H, W, 3) * rng.uniform(0.3, 1.0, (H, W, 3))).astype(np.uint8)
    kw = dict(mode="fast", working_megapixels=0.02)
    whole = Enhancer(net, strip_rows=None, **kw).enhance(pixels, strength=1.3)
    strips = Enhancer(net, strip_rows=64, **kw).enhance(pixels, strength=1.3)
    default = Enhancer(net, **kw).enhance(pixels, strength=1.3)
    assert np.abs(whole.astype(int) - strips).max() <= 1  # the same sums in another order: one level at most
    assert (whole == strips).mean() > 0.999
    assert np.array_equal(default, Enhancer(net, strip_rows=STRIP_ROWS, **kw).enhance(pixels, strength=1.3))
    assert not np.array_equal(whole, pixels)  # it corrected something


def test_float64_pooled_sums_match_one_pass(net):
    """Exact mode's pooled statistics (float64 sums of tiles) give one full-resolution pass's L, on a photo
    whose tiles do not divide its pooling cells."""
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.uniform(0, 1, (1, 3, 131, 173)).astype(np.float32))
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)  # some structure, not only noise
    with torch.no_grad():
        ref = net(x)
    L = torch.full_like(ref, float("nan"))
    for (y0, y1, x0, x1), Lt in exact_L(net, lambda a, b, c, d: x[..., a:b, c:d], 131, 173, tile=45):
        L[..., y0:y1, x0:x1] = Lt
    assert torch.isfinite(L).all()
    assert (L - ref).abs().max() < 1e-5


def test_gpu_check_help_runs_anywhere():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--device" in r.stdout and "--megapixels" in r.stdout


def test_a_small_network_input_runs_on_one_thread_and_threads_come_back():
    """Issue 15's small photo: intra-op threads contend with run's decode/encode pool on a small input
    (measured 1.92 s on 2 threads against 0.24 s on 1), so it runs on one; a working-size input keeps them all."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = EnhanceNet()
        seen: list[int] = []
        net.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
        enh = Enhancer(net, working_megapixels=0.5)
        small = np.full((120, 160, 3), 40, np.uint8)
        large = np.full((420, 400, 3), 40, np.uint8)
        assert 120 * 160 < ONE_THREAD_PIXELS <= 420 * 400
        enh.enhance(small)
        enh.enhance(large)
        assert seen == [1, 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
