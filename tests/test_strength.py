"""Auto strength: the ramp, the decision on real photos with the embedded model, and its hook in the enhancer."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from backlitfix.config import ConfigError, load_config
from backlitfix.enhance import downscale, to_float, working_size
from backlitfix.io import decode
from backlitfix.pipeline import load_enhancer
from backlitfix.strength import RAMP, auto_strength, decide, ramp
from conftest import shared_path


@pytest.fixture(scope="module")
def enhancer():
    return load_enhancer(load_config(user_config=None))[0]  # the embedded default model, as `run` uses it


def small_and_L(enhancer, path):
    px = decode(path, max_pixels=10**9).pixels
    H, W = px.shape[:2]
    h, w = working_size(H, W, enhancer.working_megapixels)
    small = to_float(px) if (h, w) == (H, W) else downscale(px, h, w)
    return small, enhancer.illumination(small)[0, 0].cpu()


def test_ramp_is_flat_at_the_ends_monotone_and_smooth():
    lo, hi = RAMP
    z = np.linspace(lo - 2, hi + 2, 4001)
    s = np.array([ramp(v) for v in z])
    assert s[z <= lo].max() == 0.0 and s[z >= hi].min() == 1.0
    assert np.all(np.diff(s) >= 0)
    slope = np.diff(s) / np.diff(z)
    # continuous slope (smoothstep): no jump anywhere, including where the ramp meets 0 and 1
    assert np.abs(np.diff(slope)).max() < 0.01 and slope.max() <= 1.5 / (hi - lo) + 1e-6
    assert ramp((lo + hi) / 2) == pytest.approx(0.5)


def test_strength_grows_with_the_lift_the_network_wants():
    g = torch.Generator().manual_seed(0)
    small = torch.rand(1, 3, 120, 180, generator=g) * 0.6
    small[:, :, :40] += 0.4  # a bright top third
    strengths = []
    for stops in np.linspace(0.0, 3.0, 31):  # L everywhere 2**-stops: the network wants `stops` of lift
        L = torch.full((120, 180), float(2.0 ** -stops))
        strengths.append(auto_strength(small, L))
    assert strengths[0] == 0.0 and strengths[-1] == 1.0
    assert all(b >= a for a, b in zip(strengths, strengths[1:]))
    assert any(0.0 < s < 1.0 for s in strengths)  # a ramp, not a switch


def test_bias_moves_the_score_and_nothing_else():
    g = torch.Generator().manual_seed(1)
    small = torch.rand(1, 3, 90, 120, generator=g)
    L = torch.full((90, 120), 2.0 ** -1.4)  # 1.4 stops wanted: inside the ramp at bias 0
    at = {b: decide(small, L, b) for b in (-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0)}
    assert 0.0 < at[0.0].strength < 1.0
    for b, d in at.items():
        assert d.score == pytest.approx(at[0.0].score + b)
        assert (d.shadow_gain, d.top_light) == (at[0.0].shadow_gain, at[0.0].top_light)
    s = [at[b].strength for b in sorted(at)]
    assert all(y > x for x, y in zip(s, s[1:]) if 0 < y < 1) and s[0] == 0.0 and s[-1] == 1.0
    assert auto_strength(small, L, -1.0) == at[-1.0].strength


@pytest.mark.slow  # every real photo decoded
def test_decision_on_real_photos(enhancer):
    welllit = decide(*small_and_L(enhancer, shared_path("data", "welllit", "kodim01.jpg")))
    backlit = decide(*small_and_L(enhancer, shared_path("data", "backlit", "ovd0312_4.jpg")))
    under = decide(*small_and_L(enhancer, shared_path("data", "sice", "Lamp_under.jpg")))
    over = decide(*small_and_L(enhancer, shared_path("data", "sice", "Lamp_over.jpg")))
    assert welllit.strength < 0.05 and over.strength < 0.05
    assert backlit.strength > 0.95 and under.strength > 0.95
    assert backlit.shadow_gain > welllit.shadow_gain


def test_decision_is_deterministic_and_cheap(enhancer):
    small, L = small_and_L(enhancer, shared_path("data", "backlit", "akai-impl_img1.jpg"))  # 2.7 MP -> 0.3 MP
    assert small.shape[-2] * small.shape[-1] > 250_000  # the default working size, not a thumbnail
    first = decide(small, L)
    assert all(decide(small.clone(), L.clone()) == first for _ in range(3))
    t = time.perf_counter()
    enhancer.illumination(small)
    net = time.perf_counter() - t
    t = time.perf_counter()
    decide(small, L)
    assert time.perf_counter() - t < 0.05 * net  # measured: ~3 ms against ~1-3 s for the network pass


def test_enhancer_applies_the_rule_once_and_leaves_alone_byte_for_byte(enhancer):
    px = decode(shared_path("data", "welllit", "kodim01.jpg"), max_pixels=10**9).pixels
    calls = []

    def rule(small, L):
        calls.append(auto_strength(small, L))
        return calls[-1]

    out = enhancer.enhance(px.copy(), rule)
    assert calls == [0.0] and np.array_equal(out, px)


def test_config_accepts_auto_or_a_number(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("strength: auto\nburst:\n  gap_seconds: 0.5\n")
    cfg = load_config(f, user_config=None)
    assert cfg.strength == "auto" and cfg.burst.gap_seconds == 0.5
    assert load_config(overrides={"strength": "0.25"}, user_config=None).strength == 0.25
    f.write_text("strength: automatic\n")
    with pytest.raises(ConfigError, match=r"strength .*allowed: a number from 0 to 2, or auto"):
        load_config(f, user_config=None)
    f.write_text("burst:\n  gap_seconds: -1\n")
    with pytest.raises(ConfigError, match=r"burst\.gap_seconds"):
        load_config(f, user_config=None)
    assert load_config(user_config=None).auto.bias == 0.0  # as calibrated
    f.write_text("auto:\n  bias: -1.5\n")
    assert load_config(f, user_config=None).auto.bias == -1.5
    f.write_text("auto:\n  bias: 4\n")
    with pytest.raises(ConfigError, match=r"auto\.bias .*from -3 to 3"):
        load_config(f, user_config=None)
