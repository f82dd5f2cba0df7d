"""Issue 17: the identity : guidance balance is the reference's at batch 8 and does not move with the batch size."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip", reason="needs the train extra (open_clip_torch)")

from backlitfix.training.clip import TINY, load_clip
from backlitfix.training.guidance import PairObjective, PromptPair, RaveObjective


@pytest.fixture(scope="module")
def clip():
    return load_clip(TINY, "random")


def _identity_share(obj, enhanced, original, guidance_weight: float, guidance_key: str) -> float:
    """The identity part of the loss divided by the guidance part."""
    loss, parts = obj.loss(enhanced, original)
    guidance = guidance_weight * parts[guidance_key]
    return (float(loss) - guidance) / guidance


def _pairs(n: int):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 40, 40, generator=gen) * 0.5
    y = (x * torch.tensor([1.6, 2.2]).view(2, 1, 1, 1)).clamp(0, 1)
    return y.repeat(n // 2, 1, 1, 1), x.repeat(n // 2, 1, 1, 1)  # the same per-image content at any batch


def test_rave_balance_does_not_depend_on_the_batch_size(clip):
    torch.manual_seed(1)
    obj = RaveObjective(clip, torch.randn(clip.dim), thr=0.3)
    share = {n: _identity_share(obj, *_pairs(n), 1920, "residual") for n in (2, 8)}
    assert share[2] == pytest.approx(share[8], rel=1e-4)  # was 4x smaller at batch 2: the correction 4x stronger


def test_clip_lit_balance_does_not_depend_on_the_batch_size(clip):
    obj = PairObjective(clip, PromptPair(clip, generator=torch.Generator().manual_seed(0)), "clip-lit")
    share = {n: _identity_share(obj, *_pairs(n), 320, "backlit_score") for n in (2, 8)}
    assert share[2] == pytest.approx(share[8], rel=1e-4)


def test_batch_8_is_the_reference_balance(clip):
    """At the reference's batch of 8: 1920 · mean_b L_res + 22.5 · Σ_b L_id, with L_id computed here."""
    torch.manual_seed(1)
    obj = RaveObjective(clip, torch.randn(clip.dim), thr=0.3)
    y, x = _pairs(8)
    loss, parts = obj.loss(y, x)
    tower = obj.tower
    _, mo = tower(clip.prepare(y))
    _, mi = tower(clip.prepare(x))
    summed = sum(a * ((fo[i] - fi[i]) ** 2).mean() for a, fo, fi in zip((1, 1, 1, 1, 0.5), mo, mi) for i in range(8))
    assert float(loss) == pytest.approx(1920 * parts["residual"] + 22.5 * float(summed), rel=1e-4)
