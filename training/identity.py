"""The identity loss: keep the enhanced image's CLIP feature maps close to the input's (§2.2).

L_id(Ĩ, I; α) = mean_batch Σ_l α_l · mean((R_l(P(Ĩ)) − R_l(P(I)))²), with α = (1,1,1,1,0.5) in guided phases and
all ones in the warm-up. The reference *sums* over its batch of 8 while the guidance term is a batch mean, so
its balance changes with the batch size (batch 2 would make the correction 4x stronger than batch 8). We average,
and the weights in guidance.py carry the reference's batch of 8 (22.5 · 8), so batch 8 is the reference exactly and
every other batch size keeps that balance. The reference takes R_l from a second CLIP, RN101 (stem, layer1..4); by
default we take five blocks of the guidance model's own image tower instead, which saves a download and, because one
forward then yields both the embedding and the maps, a whole second network per step. ``identity: RN101``
in config restores the reference's choice.

The paper writes Σ α_l‖Φ_l(I_b) − Φ_l(I_t)‖₂ (an L2 norm); the code uses the per-layer mean squared error.
Here we follow the code: the 25 / 22.5 weights of §2.2 are calibrated to the MSE form, and an unsquared
norm would change the balance with the guidance term by orders of magnitude.
"""
from __future__ import annotations

import torch

from .clip import Clip

GUIDED_ALPHA = (1.0, 1.0, 1.0, 1.0, 0.5)
WARMUP_ALPHA = (1.0, 1.0, 1.0, 1.0, 1.0)


def layer_indices(visual) -> list[int]:
    """Which blocks feed the identity loss: all five stages of a ResNet tower; for a transformer tower five
    blocks spread evenly from the first to the last (e.g. 0, 3, 6, 8, 11 of ViT-B-32's twelve)."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        return [0, 1, 2, 3, 4]
    n = len(blocks)
    return sorted({round(i * (n - 1) / 4) for i in range(5)})


class Tower:
    """One pass of a CLIP image tower giving the (normalised) embedding and the identity feature maps."""

    def __init__(self, clip: Clip):
        self.clip = clip
        self.indices = layer_indices(clip.model.visual)

    def __call__(self, prepared: torch.Tensor, *, embed: bool = True):
        out = self.clip.model.visual.forward_intermediates(
            prepared, indices=self.indices, intermediates_only=not embed, stop_early=not embed)
        maps = out["image_intermediates"]
        emb = None
        if embed:
            emb = out["image_features"]
            emb = emb / emb.norm(dim=-1, keepdim=True)
        return emb, maps


def identity_loss(maps_out: list[torch.Tensor], maps_in: list[torch.Tensor], alpha=GUIDED_ALPHA) -> torch.Tensor:
    """Batch mean of Σ_l α_l · per-image MSE of layer l (the reference sums over the batch: see the module
    docstring and guidance.REFERENCE_BATCH)."""
    total = maps_out[0].new_zeros(())
    for a, fo, fi in zip(alpha, maps_out, maps_in):
        per_image = (fo.float() - fi.float()).pow(2).flatten(1).mean(1)
        total = total + a * per_image.mean()
    return total


class IdentityFeatures:
    """Feature maps for the identity loss from a separate tower (``identity: RN101``)."""

    def __init__(self, clip: Clip):
        from backlitfix.enhance import pick_dtype

        # a ResNet: NHWC is the fast layout on CUDA and with native bf16; in fp32 on an AVX2 CPU it was slower
        if clip.device.type == "cuda" or pick_dtype("auto", clip.device) == torch.bfloat16:
            clip.model.visual.to(memory_format=torch.channels_last)
        self.tower = Tower(clip)
        self.clip = clip

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.tower(self.clip.prepare(x), embed=False)[1]
