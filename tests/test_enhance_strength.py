"""Strength: a rule decided per photo (auto strength's hook), and extrapolation above 1 that keeps highlights."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from backlitfix.enhance import Enhancer, apply_gain, working_size
from conftest import shared_path
from test_enhance import golden_pixels, net


def photo(mode: str) -> np.ndarray:
    """The golden photo; a crop of it in exact mode, whose tiled passes cost most (still several 128 px tiles)."""
    px = golden_pixels()
    return np.ascontiguousarray(px[:200, :260]) if mode == "exact" else px


class Rule:
    """Records what it was asked and answers a fixed strength."""

    def __init__(self, answer: float):
        self.answer, self.calls = answer, []

    def __call__(self, small: torch.Tensor, L: torch.Tensor) -> float:
        self.calls.append((small.clone(), L.clone()))
        return self.answer


@pytest.mark.parametrize("mode, megapixels", [("fast", 0.05), ("fast", 1.0), ("exact", 0.05)])
def test_a_strength_rule_is_asked_once_with_the_working_resolution_input_and_its_map(mode, megapixels):
    n, px = net(), photo(mode)
    e = Enhancer(n, mode=mode, tile=128, working_megapixels=megapixels)
    rule = Rule(0.7)
    out = e.enhance(px, rule)
    assert len(rule.calls) == 1
    small, L = rule.calls[0]
    h, w = working_size(*px.shape[:2], megapixels)
    assert small.shape == (1, 3, h, w) and small.dtype == torch.float32 and small.device.type == "cpu"
    assert 0.0 <= small.min() and small.max() <= 1.0 and small.max() > 0.5
    assert L.shape == (h, w) and L.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(L, n(small)[0, 0], atol=1e-4)  # the raw map of exactly what it was shown
    ws, wL = e.working_pass(px)  # what a dry run asks the same rule with
    assert torch.equal(ws, small) and torch.allclose(wL, L, atol=1e-5)  # same pass; conv order may differ
    assert np.array_equal(out, e.enhance(px, 0.7))  # the answer is the strength applied
    assert not np.array_equal(out, e.enhance(px, 1.0))


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_rule_answering_zero_leaves_the_photo_alone_and_answers_are_clamped_to_two(mode):
    n, px = net(), photo(mode)
    e = Enhancer(n, mode=mode, tile=128, working_megapixels=0.05)
    seen = []
    assert np.array_equal(e.enhance(px, Rule(0.0), on_L=seen.append), px)
    assert seen == []  # nothing to preview for a photo left alone
    assert np.array_equal(e.enhance(px, Rule(5.0)), e.enhance(px, 2.0))
    with pytest.raises(ValueError, match="strength rule"):
        e.enhance(px, Rule(float("nan")))


class NaNNet(torch.nn.Module):
    """A network whose map is NaN on the left half and +inf in one corner, as fp16 overflow can give."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        L = self.n(x).clone()
        L[..., :, : L.shape[-1] // 2] = float("nan")
        L[..., :4, -4:] = float("inf")
        return L


def all_nan(n):
    """The real network with a NaN bias at its output: a NaN map everywhere (exact mode runs its layers)."""
    bad = copy.deepcopy(n)
    with torch.no_grad():
        bad.cond_add1.bias.fill_(float("nan"))
    return bad


@pytest.mark.parametrize("mode, megapixels", [("fast", 0.05), ("fast", 1.0), ("exact", 0.05)])
def test_a_nan_map_leaves_pixels_uncorrected_and_warns_once(mode, megapixels):
    n, px = net(), photo(mode)
    told = []
    e = Enhancer(NaNNet(n) if mode == "fast" else all_nan(n), mode=mode, tile=128, working_megapixels=megapixels)
    out = e.enhance(px, warn=told.append)
    assert len(told) == 1 and "NaN" in told[0] and "%" in told[0]
    nan_cols = px.shape[1] // 2 - 8 if mode == "fast" else px.shape[1]  # 8: beyond the guided filter's reach
    left = out[:, :nan_cols].astype(int) - px[:, :nan_cols]
    assert np.abs(left).max() <= 1  # no correction where the map is unusable: not black
    if mode == "fast":
        assert (out[:, -nan_cols:].astype(int) - px[:, -nan_cols:]).mean() > 5  # the rest is corrected
    with pytest.warns(RuntimeWarning, match="NaN"):  # a caller without `warn` still hears of it
        e.enhance(px)
    told.clear()
    Enhancer(n, mode=mode, tile=128, working_megapixels=megapixels).enhance(px, warn=told.append)
    assert told == []


def clipped(px: np.ndarray) -> float:
    """Percent of pixels with any channel at full scale."""
    return float((px == np.iinfo(px.dtype).max).any(axis=-1).mean() * 100)


class LumaNet(torch.nn.Module):
    """A stand-in network: L rises with luma, as a backlit photo's map does (dark subject, bright sky)."""

    def forward(self, x):
        y = x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114
        return 0.2 + 0.8 * y


def test_strength_up_to_one_is_exactly_the_power_law():
    img = torch.rand(40, 50, 3)
    L = torch.rand(40, 50) * 0.9 + 0.05
    for s in (0.3, 0.5, 1.0):
        want = (img / L[..., None] ** s).clamp(0, 1)
        assert torch.equal(apply_gain(img.clone(), L.clone(), s), want)


def test_strength_two_lifts_shadows_without_blowing_highlights_on_a_synthetic_scene():
    """A dark-to-bright ramp with coloured noise, which I / L**2 would push to white over much of its bright end."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.02, 0.9, 256)[None, :, None] * np.ones((64, 1, 3))
    px = (np.clip(ramp * rng.uniform(0.85, 1.0, (64, 256, 3)), 0, 1) * 255).round().astype(np.uint8)
    e = Enhancer(LumaNet(), mode="fast", working_megapixels=1.0)
    one, two = e.enhance(px, 1.0), e.enhance(px, 2.0)
    L = LumaNet()(torch.from_numpy(px).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    naive = np.floor(np.clip(px / 255 / L[..., None] ** 2, 0, 1) * 255 + 0.5)
    assert (naive == 255).any(-1).mean() * 100 > clipped(one) + 20  # a scene plain extrapolation blows out
    assert clipped(two) <= clipped(one) + 1.0  # beyond what the model itself takes to white
    dark = px.astype(float).mean(-1) < 60
    lift1 = (one[dark].astype(float) - px[dark]).mean()
    lift2 = (two[dark].astype(float) - px[dark]).mean()
    assert lift2 > 1.8 * lift1  # the shadows still get (nearly) the whole extra stop
    bright = px.astype(float).max(-1) > 200
    assert (two[bright].astype(int) >= one[bright]).all()  # never darker than strength 1, only less lifted
    nearly_one = e.enhance(px, 1.001)
    assert np.abs(nearly_one.astype(int) - one).max() <= 1  # continuous at 1: no jump in the look


def test_strength_two_keeps_a_real_backlit_photos_highlights():
    """Issue 12: --strength 2 on ovd0312_9 took pixels with a channel at 255 from 1.5 % to about 40 %."""
    from backlitfix.eval.metrics import exposure_change
    from backlitfix.io import decode
    from backlitfix.model.checkpoint import load_model
    from backlitfix.model.registry import resolve

    px = decode(shared_path("data", "backlit", "ovd0312_9.jpg"), max_pixels=10**8).pixels
    e = Enhancer(load_model(resolve("default").path)[0], mode="fast")
    one, two = e.enhance(px, 1.0), e.enhance(px, 2.0)
    assert clipped(two) <= clipped(px) + 1.0, (clipped(px), clipped(two))
    assert exposure_change(px, two)["dark30_gain"] > 1.5 * exposure_change(px, one)["dark30_gain"]


def test_a_nan_map_reaches_the_photos_warnings_through_the_pipeline(tmp_path):
    from PIL import Image

    from backlitfix.config import load_config
    from backlitfix.discover import Job
    from backlitfix.pipeline import Pipeline

    src = tmp_path / "dusk.png"
    Image.fromarray(golden_pixels()).save(src)
    cfg = load_config(None, {"strength": 1.0}, user_config=None)
    job = Job(src, tmp_path / "out" / "dusk.png", "png", "png")
    r = Pipeline(cfg, Enhancer(NaNNet(net()), mode="fast")).process(job)
    assert r.status == "done", r.reason
    assert len([w for w in r.warnings if "NaN" in w]) == 1 and r.warnings[0].startswith("dusk.png: ")
