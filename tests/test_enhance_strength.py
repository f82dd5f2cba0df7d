"""Strength: a rule decided per photo (auto strength's hook), and extrapolation above 1 that keeps highlights."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from backlitfix.enhance import Enhancer, working_size
from test_enhance import golden_pixels, net


class Rule:
    """Records what it was asked and answers a fixed strength."""

    def __init__(self, answer: float):
        self.answer, self.calls = answer, []

    def __call__(self, small: torch.Tensor, L: torch.Tensor) -> float:
        self.calls.append((small.clone(), L.clone()))
        return self.answer


@pytest.mark.parametrize("mode, megapixels", [("fast", 0.05), ("fast", 1.0), ("exact", 0.05)])
def test_a_strength_rule_is_asked_once_with_the_working_resolution_input_and_its_map(mode, megapixels):
    n, px = net(), golden_pixels()
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
    assert np.array_equal(out, e.enhance(px, 0.7))  # the answer is the strength applied
    assert not np.array_equal(out, e.enhance(px, 1.0))


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_rule_answering_zero_leaves_the_photo_alone_and_answers_are_clamped_to_two(mode):
    n, px = net(), golden_pixels()
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
    n, px = net(), golden_pixels()
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
