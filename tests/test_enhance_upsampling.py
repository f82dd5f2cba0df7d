"""Fast mode's guided upsampler stays within what the network said at working resolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from backlitfix.enhance import ColumnUpsampled, GuidedUpsampler, guided_coefficients


def scene(H=240, W=240, h=40, w=40):
    """A backlit edge with thin bright lines in the dark side (twigs against the sky), lost when downscaled."""
    Y = torch.full((1, 1, H, W), 0.1)
    Y[..., :, W // 2 + 2 :] = 0.9
    Y[..., :, 20 : W // 2 : 12] = 0.9  # 1 px lines: their luma is averaged away at working resolution
    Ys = F.interpolate(Y, size=(h, w), mode="area")
    L_small = 0.25 + 0.7 * Ys  # darker where darker, as the network's map is
    a, _ = guided_coefficients(Ys, L_small, 2, 1e-3)
    return Y, Ys, L_small, a


def test_guided_upsampling_never_leaves_the_working_resolution_range():
    Y, Ys, L_small, a = scene()
    H, W = Y.shape[-2:]
    free = GuidedUpsampler(L_small, Ys, a, W, bounded=False).rows(Y[0, 0].clone(), H, 0, H)
    kept = GuidedUpsampler(L_small, Ys, a, W).rows(Y[0, 0].clone(), H, 0, H)
    hi = ColumnUpsampled(F.max_pool2d(L_small, 3, 1, 1), W).rows(H, 0, H)
    lo = ColumnUpsampled(-F.max_pool2d(-L_small, 3, 1, 1), W).rows(H, 0, H)
    over = torch.maximum(free - hi, lo - free)
    assert over.max() > 0.05  # the guide's detail term alone overshoots here
    assert (kept <= hi + 1e-6).all() and (kept >= lo - 1e-6).all()
    inside = over <= 0
    assert torch.equal(kept[inside], free[inside])  # only the overshoot is touched
    assert inside.float().mean() > 0.8  # the lines and the edge, not the whole map
