"""Auto strength: how much of the model's correction a photo's light calls for (docs/auto-strength.md).

A pure, deterministic function of what fast mode already has for every photo: the input at the working
resolution and the network's illumination map L for it. Two measurements, a linear score, a smooth ramp:

- ``shadow_gain``: how many stops the network wants to lift the photo's darkest 30 % (mean of -log2 L
  there). The network lifts every photo's shadows, a well-lit one's too, but far less than a backlit
  or under-exposed one's.
- ``top_light``: how much brighter the top third of the (upright) photo is than the rest: sky, sun or a
  window behind and above a darker subject.

score = 2.3 * shadow_gain + 3.4 * top_light - 3.3 + auto.bias (a logistic fit on ../shared data; the weights were
fitted with each photo weighted by how much a wrong decision would change it; held-out accuracy 84 %
in 5-fold cross-validation; `bench/strength_fit.py` reproduces it). The strength is a smoothstep of
the score from -1 to +1: exactly 0 below (the photo is left alone, byte for byte), exactly 1 above, and
smooth in between, so a photo near the boundary never flips between 0 and 1. It costs a few milliseconds at
the working size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .constants import L_FLOOR
from .constants import LUMA_REC709 as REC709

SHADOWS = 0.30  # the darkest 30 % of the pixels: where a backlit subject sits
W_SHADOW_GAIN, W_TOP_LIGHT, BIAS = 2.3, 3.4, -3.3  # refitted for the 1200-step default model
SAMPLES = 150_000  # pixels measured, at most about this many
RAMP = (-1.0, 1.0)  # score where the strength starts to rise from 0, and where it reaches 1
LEFT_ALONE = 0.05  # a strength below this changes a photo's mean luminance by well under 2 %: "left alone"


@dataclass(frozen=True)
class Decision:
    shadow_gain: float  # EV
    top_light: float  # luma difference, -1..1
    score: float
    strength: float


def decide(small: torch.Tensor, L: torch.Tensor, bias: float = 0.0) -> Decision:
    """The decision with its measurements. ``small``: (1, 3, h, w) float in [0, 1]; ``L``: (h, w) raw map.
    ``bias`` (config ``auto.bias``) is added to the score: a photographer's lean, since no rule can both
    leave every well-lit photo alone and correct every backlit one (docs/auto-strength.md)."""
    L = L.detach().to("cpu", torch.float32)
    if L.shape != small.shape[-2:]:  # a map at another size: compare like with like
        L = torch.nn.functional.interpolate(L[None, None], size=small.shape[-2:], mode="bilinear")[0, 0]
    h, w = L.shape
    step = max(1, round((h * w / SAMPLES) ** 0.5))  # every step-th row and column: enough for a mean
    x = small.detach().to("cpu", torch.float32)[0, :, ::step, ::step].numpy()  # need no more
    Y = x[0] * REC709[0] + x[1] * REC709[1] + x[2] * REC709[2]
    gain = -np.log2(np.clip(L[::step, ::step].numpy(), L_FLOOR, 1.0))
    flat = Y.ravel()
    k = max(1, int(SHADOWS * flat.size))
    cut = np.partition(flat, k - 1)[k - 1]  # numpy's introselect: a few ms, single-threaded
    shadow_gain = float(gain[Y <= cut].mean())
    t = max(1, Y.shape[0] // 3)
    top_light = float(Y[:t].mean() - Y[t:].mean()) if Y.shape[0] > 1 else 0.0
    z = score(shadow_gain, top_light, bias)
    return Decision(shadow_gain, top_light, z, ramp(z))


def score(shadow_gain, top_light, bias=0.0):
    """The linear score of the two measurements (numbers, or numpy arrays of them); 0 = undecided."""
    return W_SHADOW_GAIN * shadow_gain + W_TOP_LIGHT * top_light + BIAS + bias


def ramp(score: float) -> float:
    """Smoothstep from RAMP[0] (0) to RAMP[1] (1): continuous with a continuous slope, flat at both ends."""
    lo, hi = RAMP
    t = min(1.0, max(0.0, (score - lo) / (hi - lo)))
    return t * t * (3.0 - 2.0 * t)


def sorted_shoot(strengths, groups) -> str:
    """How auto sorted a shoot, in a few words: "auto: 3 left alone, 2 in between, 4 full; 1 burst"."""
    s = [x for x in strengths if x is not None]
    alone, full = sum(x < LEFT_ALONE for x in s), sum(x >= 1 - LEFT_ALONE for x in s)
    bursts = len({g for g in groups if g is not None})
    return (f"auto: {alone} left alone, {len(s) - alone - full} in between, {full} full"
            + (f"; {bursts} burst{'s' * (bursts != 1)}" if bursts else ""))


def auto_strength(small: torch.Tensor, L: torch.Tensor, bias: float = 0.0) -> float:
    """A `backlitfix.enhance.StrengthRule` (with ``bias`` bound): 0 (leave alone) .. 1 (the full correction)."""
    return decide(small, L, bias).strength
