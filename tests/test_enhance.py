"""The Enhancer's modes, strength and image formation, and the runner's overlap."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from backlitfix.discover import Job
from backlitfix.enhance import (
    ColumnUpsampled,
    Enhancer,
    GuidedUpsampler,
    apply_gain,
    guided_coefficients,
    working_size,
)
from backlitfix.model.checkpoint import load_model
from backlitfix.model.network import EnhanceNet, form_image
from backlitfix.photo import Metadata, Photo, PhotoError
from conftest import shared_path


def net():
    return load_model(shared_path("models", "official", "rave_unpaired.pth"))[0]


def golden_pixels(name="ovd0312_18_360x386.png") -> np.ndarray:
    return np.array(Image.open(shared_path("reference", "golden", name)).convert("RGB"))


def single_pass_uint8(n, px) -> np.ndarray:
    x = torch.from_numpy(px).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        E = form_image(x, n(x))
    return (E[0].permute(1, 2, 0) * 255 + 0.5).floor().numpy().astype(np.uint8)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_exact_mode_equals_one_full_resolution_pass():
    n, px = net(), golden_pixels()
    ref = single_pass_uint8(n, px)
    out = Enhancer(n, mode="exact", tile=128).enhance(px)
    assert np.abs(out.astype(int) - ref).max() <= 1  # only rounding at .5 may differ


def test_exact_mode_leaves_the_working_pass_network_as_it_was():
    """Exact tiling wants the default memory layout; `Module.to` changes a module in place, so it takes a
    copy: the channels-last network that an auto decision or a dry run's working pass uses is kept."""
    px = golden_pixels()
    enh = Enhancer(net(), mode="exact", tile=128)
    assert enh.net.cond1.weight.is_contiguous(memory_format=torch.channels_last)
    small, before = enh.working_pass(px)
    enh.enhance(px)
    assert enh.net.cond1.weight.is_contiguous(memory_format=torch.channels_last)  # was the default layout
    assert torch.equal(enh.working_pass(px)[1], before)


def test_fast_mode_is_exact_when_the_photo_is_no_larger_than_the_working_size():
    n, px = net(), golden_pixels()
    ref = single_pass_uint8(n, px)
    out = Enhancer(n, mode="fast", working_megapixels=1.0).enhance(px)
    assert np.abs(out.astype(int) - ref).max() <= 1


@pytest.mark.slow  # an exact-mode reference
def test_fast_mode_at_a_lower_working_resolution_stays_close_to_exact():
    n, px = net(), golden_pixels("110_51093502029_o_1152x864.png")
    exact = Enhancer(n, mode="exact", tile=512).enhance(px)
    fast = Enhancer(n, mode="fast", working_megapixels=0.25).enhance(px)
    assert fast.shape == exact.shape
    assert psnr(fast, exact) > 33
    assert abs(fast.mean() - exact.mean()) < 2


def test_bf16_fast_path_is_close_to_fp32():
    n, px = net(), golden_pixels("110_51093502029_o_1152x864.png")
    fp32 = Enhancer(n, mode="fast", working_megapixels=0.25).enhance(px)
    bf16 = Enhancer(n, mode="fast", working_megapixels=0.25, dtype=torch.bfloat16).enhance(px)
    assert psnr(bf16, fp32) > 40


def test_strength_zero_is_the_original_and_strength_is_monotonic():
    n, px = net(), golden_pixels()
    e = Enhancer(n, mode="fast")
    assert np.array_equal(e.enhance(px, 0.0), px)
    means = [e.enhance(px, s).astype(np.float64).mean() for s in (0.0, 0.5, 1.0, 1.5)]
    assert means == sorted(means) and means[-1] > means[0] + 10


def test_sixteen_bit_pixels_stay_sixteen_bit_with_full_precision():
    n = net()
    px16 = ((golden_pixels().astype(np.uint32) * 257).clip(0, 65532) + np.arange(3)).astype(np.uint16)
    out = Enhancer(n, mode="fast").enhance(px16)
    assert out.dtype == np.uint16
    assert np.mean(out % 257 != 0) > 0.5  # not merely 8-bit values scaled up
    out8 = Enhancer(n, mode="fast").enhance(golden_pixels())
    assert np.abs(out.astype(np.float64) / 257 - out8).mean() < 1.0


def test_image_formation_never_gives_nan_or_inf():
    """A network whose L is exactly 0 everywhere (the reference divides by it unguarded)."""
    zero = EnhanceNet()
    for p in zero.parameters():
        torch.nn.init.zeros_(p)
    px = golden_pixels()
    px[:10] = 0  # 0 / 0 in the reference
    for mode in ("fast", "exact"):
        out = Enhancer(zero, mode=mode, tile=128).enhance(px)
        assert np.all(out[:10] == 0) and out.max() == 255
    E = apply_gain(torch.zeros(4, 4, 3), torch.zeros(4, 4), 0.5)
    assert torch.isfinite(E).all()


def test_working_size_keeps_aspect_and_never_upscales():
    assert working_size(4000, 6000, 0.5) == (577, 866)
    assert working_size(300, 400, 0.5) == (300, 400)


def test_guided_upsampling_follows_a_sharp_edge():
    """An L that steps where the photo steps is recovered at full resolution without a wide halo."""
    H, W, h, w = 400, 400, 50, 50
    Y = torch.zeros(1, 1, H, W)
    Y[..., :, W // 2 + 3 :] = 1.0  # a vertical edge off the low-res grid
    Ys = torch.nn.functional.interpolate(Y, size=(h, w), mode="area")
    L_small = 0.3 + 0.6 * Ys
    a, _ = guided_coefficients(Ys, L_small, 2, 1e-3)
    L = GuidedUpsampler(L_small, Ys, a, W).rows(Y[0, 0].clone(), H, 0, H)
    truth = (0.3 + 0.6 * Y)[0, 0]
    assert (L - truth).abs().max() < 0.05
    naive = torch.nn.functional.interpolate(L_small, size=(H, W), mode="bilinear")
    assert (naive[0, 0] - truth).abs().max() > 0.25  # plain bilinear smears the edge: the guide matters


def test_strip_upsampling_equals_bilinear_interpolation():
    m = torch.rand(1, 1, 7, 9)
    ref = torch.nn.functional.interpolate(m, size=(30, 41), mode="bilinear", align_corners=False)
    strip = ColumnUpsampled(m, 41).rows(30, 10, 20)
    assert torch.allclose(strip, ref[0, 0, 10:20, :], atol=1e-6)


class FakePipeline:
    """Stands in for decode/encode so the test sees only the runner's scheduling."""

    def __init__(self):
        self.loaded = [threading.Event() for _ in range(4)]
        self.saved = []

    def should_skip(self, job):
        return False

    def load(self, job):
        i = int(job.input.stem)
        if i == 2:
            raise PhotoError(job.input, "truncated JPEG")
        self.loaded[i].set()
        return Photo(job.input, np.zeros((2, 2, 3), np.uint8), Metadata())

    def correct(self, photo):
        i = int(photo.path.stem)
        nxt = i + 1
        if nxt < 4 and nxt != 2:
            # The next photo is decoded while this one is being enhanced: the stages overlap.
            assert self.loaded[nxt].wait(10), f"photo {nxt} was not decoded during enhancement of {i}"
        return photo

    def save(self, photo, job):
        self.saved.append(int(job.input.stem))


def test_runner_overlaps_decoding_with_enhancement_and_keeps_going_after_a_failure(tmp_path):
    from pathlib import Path

    from backlitfix.runner import run_batch

    jobs = [Job(Path(f"{i}.jpg"), tmp_path / f"{i}.jpg", "jpeg", "jpeg") for i in range(4)]
    fake = FakePipeline()
    results = run_batch(jobs, fake, workers=2)
    assert [r.status for r in results] == ["done", "done", "failed", "done"]
    assert results[2].reason == "truncated JPEG"
    assert sorted(fake.saved) == [0, 1, 3]
