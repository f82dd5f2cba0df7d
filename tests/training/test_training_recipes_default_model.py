"""The embedded default model: the shipped file, `run` without --model, the losses it was trained with,
and its recipe end to end on tiny data."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from backlitfix.model.checkpoint import load_model
from backlitfix.model.network import N_PARAMETERS
from backlitfix.model.registry import embedded_default, resolve
from backlitfix.training import zero_reference as zr
from backlitfix.training.stats_embedding import StatsResidual, features
from conftest import REPO, shared_path

LUMA = np.array([0.299, 0.587, 0.114])


def shipped():
    p = embedded_default()
    assert p is not None, "backlitfix/models/default.safetensors is missing from the package"
    return p


# -- the shipped file ---------------------------------------------------------------------------------------

def test_default_model_loads_with_complete_metadata():
    net, info = load_model(shipped())
    assert sum(t.numel() for t in net.state_dict().values()) == N_PARAMETERS
    assert resolve(None).path == shipped()
    s = info.extra["settings"]
    # distillation alone, or followed by the zero-reference + statistics-residual phase: the label says which
    distill_only = s["distill_steps"] >= s["steps"]
    assert info.method == ("zero-reference-distillation" if distill_only else "zero-reference+stats-residual")
    assert "no pretrained weights" in info.guidance
    for key in ("training_data", "date", "version"):
        assert getattr(info, key), key
    assert info.padding in ("reflect", "zeros")
    extra = info.extra
    # the embedded model was made before training/ installed as backlitfix.training; both names run the recipe
    assert extra["recipe"].startswith(("python -m backlitfix.training.recipes.default_model",
                                       "python -m training.recipes.default_model"))
    s = extra["settings"]
    assert s["steps"] >= 100 and isinstance(s["seed"], int) and s["weights"]["distill"] > 0
    files = extra["data_files"]
    assert files["backlit_train"] and files["backlit_heldout"] and "dicm" not in json.dumps(files).lower()
    assert all(len(h) == 64 for group in files.values() for _, h in group)
    # no photo is both trained on and held out
    assert not {n for n, _ in files["backlit_train"]} & {n for n, _ in files["backlit_heldout"]}
    assert extra["training_seconds"] > 0
    # the shipped snapshot is the one the held-out photos chose (issue 17)
    curve = extra["heldout_curve"]
    assert extra["selected_step"] == min(curve, key=lambda c: c["heldout"])["step"] <= s["steps"]


def test_default_model_is_sane_on_synthetic_scenes():
    """Bright scenes are left nearly alone, dark ones lifted, never darkened much (L stays near <= 1)."""
    net, _ = load_model(shipped())
    g = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, 96, 96, generator=g) * 0.2
    with torch.no_grad():
        L_bright = net(0.75 + texture)
        L_dark = net(0.02 + texture * 0.2)
    assert L_bright.mean() > 0.8
    assert L_dark.mean() < 0.6
    assert L_dark.max() < 1.1 and L_bright.max() < 1.15


# -- `backlitfix run` with the default --------------------------------------------------------------------

def luma(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float64) / 255.0) @ LUMA


@pytest.mark.slow  # real photos at full size
@pytest.mark.parametrize("name", ["ovd0312_32.jpg", "110_51093502029_o.jpg"])
def test_run_without_model_lifts_dark_regions_without_clipping(tmp_path, name):
    src = shared_path("data", "backlit", name)
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(src, d / name)
    # a real process running the console script's entry point (the script itself may not be installed)
    exe = [sys.executable, "-c", "from backlitfix.cli import main; main()"]
    # a fresh user: no user config, no user models; the default must come from inside the package
    env = {k: v for k, v in os.environ.items() if k != "BACKLITFIX_MODEL_PATH"}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "XDG_DATA_HOME": str(tmp_path / "data"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    p = subprocess.run([*exe, "run", "-o", str(tmp_path / "out"), "--json", "--", str(d / name)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out" / name
    a = np.asarray(Image.open(d / name).convert("RGB"))
    b = np.asarray(Image.open(out).convert("RGB"))
    assert a.shape == b.shape
    yi, yo = luma(a).ravel(), luma(b).ravel()
    dark = np.argsort(yi, kind="stable")[: int(0.3 * yi.size)]
    gain = yo[dark].mean() - yi[dark].mean()
    clipped_change = ((yo > 0.98).mean() - (yi > 0.98).mean()) * 100
    assert gain > 0.04, f"dark 30% raised by only {gain:.3f}"
    assert clipped_change <= 0.5, f"clipped share grew by {clipped_change:.2f} points"


# -- the losses -------------------------------------------------------------------------------------------

def test_exposure_loss_is_zero_at_or_above_level_and_grows_below():
    at = torch.full((2, 3, 32, 32), 0.45)
    assert float(zr.exposure(at, level=0.45)) == pytest.approx(0.0, abs=1e-10)
    assert float(zr.exposure(torch.full_like(at, 0.9), level=0.45)) == 0.0  # bright skies are not pulled down
    low, lower = float(zr.exposure(at * 0.8)), float(zr.exposure(at * 0.4))
    assert 0 < low < lower


def test_colour_constancy_zero_for_grey_and_for_a_uniform_gain():
    grey = torch.rand(2, 1, 16, 16).expand(2, 3, 16, 16)
    assert float(zr.colour_constancy(grey)) == pytest.approx(0.0, abs=1e-10)
    img = torch.rand(2, 3, 16, 16) * 0.5
    assert float(zr.colour_constancy(img * 1.7, img)) == pytest.approx(0.0, abs=1e-10)
    blue = img.clone()
    blue[:, 2] += 0.3
    assert float(zr.colour_constancy(blue)) > 0.01
    assert float(zr.colour_constancy(blue, img)) > 0.01


def test_spatial_and_smoothness_terms_are_zero_for_a_uniform_gain():
    img = torch.rand(2, 3, 32, 32) * 0.3 + 0.1
    L = torch.full((2, 1, 32, 32), 0.5)
    uniform = float(zr.spatial_consistency(img / L, img))  # not exactly 0: log(Y + 0.01) softens the darkest
    assert float(zr.illumination_smoothness(L, img)) == 0.0
    blotchy = L * (1 + 0.5 * torch.rand_like(L))
    assert float(zr.spatial_consistency((img / blotchy).clamp(0, 1), img)) > 50 * uniform
    assert float(zr.illumination_smoothness(blotchy, img)) > 1e-3


def test_highlight_protection_counts_only_new_clipping():
    img = torch.full((1, 3, 8, 8), 0.6)
    img[..., :4] = 1.0  # already clipped by the camera: not the model's fault
    assert float(zr.highlight_protection(torch.full((1, 1, 8, 8), 1.0), img)) == 0.0
    assert float(zr.highlight_protection(torch.full((1, 1, 8, 8), 0.5), img)) > 0.0
    assert float(zr.no_darkening(torch.full((1, 1, 4, 4), 1.0))) == 0.0
    assert float(zr.no_darkening(torch.full((1, 1, 4, 4), 1.2))) > 0.0


def test_illumination_target_lifts_darks_and_leaves_brights():
    g = torch.Generator().manual_seed(1)
    tex = torch.rand(1, 3, 64, 64, generator=g) * 0.1
    scene = 0.85 + tex
    scene[..., 32:] = 0.03 + tex[..., 32:] * 0.2  # a dark subject in the right half
    L = zr.illumination_target(scene)
    assert float(L.max()) <= 1.0
    assert float(L[..., :, :20].mean()) > 0.97  # the bright half is left alone
    assert float(L[..., :, 44:].mean()) < 0.35  # the dark half is lifted about 3x or more
    out = scene / L
    newly = ((out.amax(1) > 1.0) & (scene.amax(1) < 0.97)).float().mean()
    assert float(newly) < 0.01
    assert float(zr.distillation(L, L)) < 1e-2


def test_black_point_leaves_detail_less_black_alone_and_still_lifts_dark_detail():
    g = torch.Generator().manual_seed(3)
    noise = torch.rand(1, 3, 64, 64, generator=g)
    night = 0.004 + noise * 0.006  # a black night sky: only sensor noise
    shadow = 0.04 + noise * 0.1  # a dark subject with texture
    plain_night, kept_night = zr.illumination_target(night), zr.illumination_target(night, black=0.04)
    assert float(plain_night.mean()) < 0.25  # without a black point the noise is lifted 4x or more
    assert float(kept_night.mean()) > 0.6  # with it, lifted much less
    assert float(zr.illumination_target(shadow, black=0.04).mean()) < 0.4  # the subject is still lifted
    # the tone order of levels is kept: a brighter input illumination never comes out darker
    T = torch.linspace(1 / 255, 1, 500)
    out = T * zr.lift_gain(T, 7.0, 0.95, 0.04)
    assert bool((out[1:] >= out[:-1]).all())
    # the exposure term no longer asks for the black patches to be pulled up
    assert float(zr.exposure(night, original=night, black=0.04)) < 0.15 * float(zr.exposure(night))
    assert float(zr.exposure(shadow, original=shadow, black=0.04)) > 0.9 * float(zr.exposure(shadow))


def test_stats_residual_points_from_dark_to_bright():
    g = torch.Generator().manual_seed(2)
    base = torch.rand(12, 3, 48, 48, generator=g)
    backlit = base * 0.25
    backlit[..., :16, :] = 0.95  # bright sky, dark foreground
    welllit = 0.2 + base * 0.6
    stats = StatsResidual.fit(features(backlit), features(welllit))
    assert stats.residual.norm() == pytest.approx(1.0, abs=1e-5)
    pb, pw = stats.projection(backlit).mean(), stats.projection(welllit).mean()
    assert pb < pw
    assert float(pw) == pytest.approx(stats.threshold, abs=1e-5)
    # lifting the dark foreground moves a backlit photo along r, and lowers the loss
    lifted = backlit.clone()
    lifted[..., 16:, :] = (lifted[..., 16:, :] * 2.5).clamp(0, 1)
    assert stats.projection(lifted).mean() > pb
    assert float(stats.loss(lifted)) < float(stats.loss(backlit))
    # differentiable: the loss sends gradient back to the image
    x = backlit.clone().requires_grad_(True)
    stats.loss(x).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


# -- the recipe -------------------------------------------------------------------------------------------

def test_recipe_smoke_run_writes_a_loadable_model(tmp_path):
    from backlitfix.training.recipes import default_model

    data = shared_path("data")
    out = tmp_path / "m.safetensors"
    assert default_model.main(["--smoke", "--shared", str(data.parent), "--out", str(out), "--threads", "2"]) == 0
    net, info = load_model(out)
    assert info.method == "zero-reference+stats-residual"
    assert info.extra["settings"]["steps"] == 3
    assert info.extra["data_files"]["welllit"][0][0].startswith("welllit/")
    # held-out snapshots every 2 steps and after the last; the written weights are the best-scoring one
    curve = info.extra["heldout_curve"]
    assert [c["step"] for c in curve] == [2, 3]
    best = min(curve, key=lambda c: c["heldout"])
    assert info.extra["selected_step"] == best["step"]
    assert all(c["heldout"] > 0 and c["train"] > 0 for c in curve)
    assert info.extra["settings"]["precision"] in ("bf16", "fp32")  # "auto" resolved for this host
    assert info.extra["estimated_seconds"] > 0
    with torch.no_grad():
        L = net(torch.rand(1, 3, 40, 40))
    assert torch.isfinite(L).all()
