"""The network against the reference oracle (§7.3), checkpoint loading, and exact tiling."""
from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image

from backlitfix.model.checkpoint import CheckpointError, ModelInfo, load_checkpoint, load_model, save_model
from backlitfix.model.network import N_PARAMETERS, EnhanceNet, form_image
from backlitfix.tiling import exact_L
from conftest import shared_path

CHECKPOINTS = [
    "clip_lit_latent_paired", "clip_lit_latent_unpaired", "clip_lit_original", "clip_lit_original_init",
    "clip_lit_paired", "clip_lit_unpaired", "rave_paired", "rave_unpaired", "rave_unpaired_shifted",
]


@cache
def golden() -> dict:
    return json.loads(shared_path("reference", "golden.json").read_text())


def golden_input(name: str) -> torch.Tensor:
    img = np.asarray(Image.open(shared_path("reference", "golden", name)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None]


def official(name: str):
    return load_model(shared_path("models", "official", f"{name}.pth"))[0]


def check_against_golden(L: torch.Tensor, x: torch.Tensor, ref: dict, coords: np.ndarray):
    """The tolerances of §7.3."""
    L2 = L[0, 0].double()
    H, W = L2.shape
    samples = L2[coords[:, 0], coords[:, 1]].numpy()
    assert np.abs(samples - np.array(ref["L_samples"])).max() <= 1e-5
    assert abs(L2.min().item() - ref["L_min"]) <= 1e-5 and abs(L2.max().item() - ref["L_max"]) <= 1e-5
    assert abs(L2.mean().item() - ref["L_mean"]) <= 2e-6
    assert abs(L2.std().item() - ref["L_std"]) <= 2e-6
    xs = torch.arange(W, dtype=torch.float64) / (W - 1)
    ys = torch.arange(H, dtype=torch.float64) / (H - 1)
    assert abs((L2 * xs).mean().item() - ref["L_moment_x"]) <= 2e-6
    assert abs((L2[:, :] * ys[:, None]).mean().item() - ref["L_moment_y"]) <= 2e-6
    assert int((L2 == 0).sum()) == ref["L_zero_pixels"]
    E = form_image(x, L)[0]
    assert int(torch.isnan(E).sum()) == ref["E_nan_pixels"] == 0
    assert np.abs(E.double().mean(dim=(1, 2)).numpy() - np.array(ref["E_mean_rgb"])).max() <= 1e-5
    e_samples = E[:, coords[:, 0], coords[:, 1]].T.numpy()
    assert np.abs(e_samples - np.array(ref["E_samples_rgb"])).max() <= 1e-4
    e8 = torch.floor(E.double() * 255 + 0.5).mean().item()
    assert abs(e8 - ref["E8_mean"]) <= 1e-3


def test_parameter_count():
    assert sum(p.numel() for p in EnhanceNet().parameters()) == N_PARAMETERS == golden()["parameters"]


@pytest.mark.slow  # full-size reference images through every checkpoint: 10-70 s each
@pytest.mark.parametrize("ckpt", CHECKPOINTS)
def test_official_checkpoint_matches_reference_single_pass(ckpt):
    g = golden()
    net = official(ckpt)
    for name, meta in g["inputs"].items():
        x = golden_input(name)
        with torch.no_grad():
            L = net(x)
        check_against_golden(L, x, g["results"][name][ckpt], np.array(meta["coords"]))


@pytest.mark.slow  # full-size reference images through every checkpoint: 10-70 s each
@pytest.mark.parametrize("ckpt,tile", [("rave_unpaired", 256), ("clip_lit_original", 150), ("rave_paired", 300)])
def test_exact_tiling_matches_reference(ckpt, tile):
    """Tiles smaller than every golden input, some not dividing it, meet the single-pass tolerances."""
    g = golden()
    net = official(ckpt)
    for name, meta in g["inputs"].items():
        x = golden_input(name)
        H, W = x.shape[-2:]
        assert tile < max(H, W)
        L = torch.full((1, 1, H, W), float("nan"))
        for (y0, y1, x0, x1), Lt in exact_L(net, lambda a, b, c, d: x[..., a:b, c:d], H, W, tile):  # noqa: B023
            L[..., y0:y1, x0:x1] = Lt
        check_against_golden(L, x, g["results"][name][ckpt], np.array(meta["coords"]))


def test_zero_padding_is_detectably_different():
    """The oracle's sensitivity: zero padding on the outer convs moves L at the border (§1.5)."""
    g = golden()
    name = "ovd0312_18_360x386.png"
    net = official("rave_unpaired")
    zeros = EnhanceNet(padding="zeros")
    zeros.load_state_dict(net.state_dict())
    x = golden_input(name)
    with torch.no_grad():
        diff = (net(x) - zeros(x)).abs().max().item()
    assert diff == pytest.approx(g["results"][name]["_zero_padding_maxdiff_rave_unpaired"], rel=1e-3)


def test_safetensors_round_trip_keeps_weights_and_metadata(tmp_path):
    net = official("rave_unpaired")
    dest = tmp_path / "style.safetensors"
    save_model(net, dest, ModelInfo(method="rave", guidance="ViT-B-32/openai", training_data="12 backlit, 30 well-lit"))
    state, info = load_checkpoint(dest)
    assert info.method == "rave" and info.guidance == "ViT-B-32/openai" and info.padding == "reflect"
    assert info.training_data == "12 backlit, 30 well-lit" and info.version and info.date
    for k, v in net.state_dict().items():
        assert torch.equal(state[k], v)
    assert not [p for p in tmp_path.iterdir() if p.name != dest.name]  # no temporary left behind


def test_zero_padded_model_runs_with_zero_padding(tmp_path):
    net = EnhanceNet(padding="zeros")
    save_model(net, tmp_path / "z.safetensors", ModelInfo(method="rave"))
    loaded, info = load_model(tmp_path / "z.safetensors")
    assert info.padding == "zeros" and loaded.padding == "zeros"


def test_unknown_formats_are_rejected_with_a_clear_error(tmp_path):
    bad = tmp_path / "text.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError,
                       match=r"text.pth: not a PyTorch checkpoint of tensors \(unreadable pickle data\)"):
        load_checkpoint(bad)
    other = tmp_path / "other.pth"
    torch.save({"module.fc.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(CheckpointError, match="not a CLIP-LIT/RAVE enhancement network: missing 30"):
        load_checkpoint(other)
    shapes = tmp_path / "shape.pth"
    sd = EnhanceNet().state_dict()
    sd["cond1.bias"] = torch.zeros(5)
    torch.save(sd, shapes)
    with pytest.raises(CheckpointError, match=r"cond1.bias has shape \(5,\)"):
        load_checkpoint(shapes)
    with pytest.raises(CheckpointError, match="no such model file"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is rejected, and nothing runs."""
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not marker.exists()
