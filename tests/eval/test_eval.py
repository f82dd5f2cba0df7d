"""backlitfix.eval: metrics against independent computations, NIQE against a literal port of the MATLAB
release, LPIPS/FID plumbing with untrained networks saved to files, and `backlitfix eval` end to end."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage
from scipy.special import gamma as G

from backlitfix.cli import main
from backlitfix.eval import metrics
from backlitfix.eval import niqe as N
from backlitfix.io import decode
from conftest import shared_path

BIG = 10**9


def load(*parts: str) -> np.ndarray:
    return decode(shared_path(*parts), max_pixels=BIG).pixels


def pristine():
    return N.load_pristine(shared_path("metrics", "niqe_image_params.mat"))


def rng_image(h=64, w=48, seed=0, lo=0, hi=256, dtype=np.uint8):
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3)).astype(dtype)


def blur(px: np.ndarray, sigma: float) -> np.ndarray:
    out = np.stack([ndimage.gaussian_filter(px[..., c].astype(float), sigma) for c in range(3)], -1)
    return np.floor(out + 0.5).astype(np.uint8)


def save(path: Path, px: np.ndarray, **kw) -> Path:
    Image.fromarray(px).save(path, **kw)
    return path


# ------------------------------------------------------------------------------------------ PSNR, SSIM


def test_psnr_of_a_known_error():
    a = rng_image(lo=10, hi=240, seed=1)
    signs = np.random.default_rng(2).choice([-3, 3], a.shape)
    b = (a.astype(int) + signs).astype(np.uint8)  # every value off by exactly 3 levels: MSE = 9 / 255^2
    assert metrics.psnr(a, b) == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)
    assert metrics.psnr(a, a) == math.inf
    # 16-bit and 8-bit files of the same picture compare on the same full scale
    assert metrics.psnr(a.astype(np.uint16) * 257, a) == math.inf
    assert metrics.psnr(a.astype(np.uint16) * 257, b) == pytest.approx(20 * math.log10(255 / 3), abs=1e-9)


def _ssim_by_loops(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM written out window by window, with the 2-D Gaussian built directly."""
    x, y = a / 255.0, b / 255.0
    r = np.arange(-5, 6)
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    c1, c2 = (0.01) ** 2, (0.03) ** 2
    per_channel = []
    for c in range(3):
        vals = []
        for i in range(5, x.shape[0] - 5):
            for j in range(5, x.shape[1] - 5):
                p, q = x[i - 5:i + 6, j - 5:j + 6, c], y[i - 5:i + 6, j - 5:j + 6, c]
                mp, mq = (w * p).sum(), (w * q).sum()
                vp, vq = (w * (p - mp) ** 2).sum(), (w * (q - mq) ** 2).sum()
                cov = (w * (p - mp) * (q - mq)).sum()
                vals.append((2 * mp * mq + c1) * (2 * cov + c2) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


def test_ssim_matches_a_window_by_window_computation_and_its_properties():
    a = blur(rng_image(24, 20, seed=3), 1.0)
    b = np.clip(a.astype(int) + np.random.default_rng(4).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(a, b) == pytest.approx(_ssim_by_loops(a, b), abs=1e-10)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-12)
    worse = np.clip(a.astype(int) + np.random.default_rng(5).integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(a, worse) < metrics.ssim(a, b) < 1
    with pytest.raises(ValueError, match="sizes differ: 20x24 and 24x20"):
        metrics.ssim(a, a.transpose(1, 0, 2))


def test_full_reference_metrics_on_real_pairs():
    """A photo against copies degraded more and more, and MEFB's under/over-exposed shots of one scene."""
    px = load("data", "welllit", "kodim05.jpg")[:256, :384]
    light, heavy = blur(px, 0.7), blur(px, 2.5)
    assert metrics.psnr(px, light) > metrics.psnr(px, heavy) > 15
    assert 1 > metrics.ssim(px, light) > metrics.ssim(px, heavy) > 0
    for scene in ("507", "BelgiumHouse", "Cave"):
        under, over = load("data", "sice", f"{scene}_under.jpg"), load("data", "sice", f"{scene}_over.jpg")
        brightened = np.floor((under / 255.0) ** 0.4 * 255 + 0.5).astype(np.uint8)
        # brightening the dark shot brings it closer to the bright one by both measures
        assert metrics.psnr(brightened, over) > metrics.psnr(under, over)
        assert metrics.ssim(brightened, over) > metrics.ssim(under, over)


# ---------------------------------------------------------------------------------- exposure statistics


def test_exposure_statistics_of_a_known_histogram():
    y = np.full(1000, 128, np.uint8)
    y[:100] = 0  # 10 % black
    y[100:150] = 255  # 5 % white
    y[150:250] = 4  # 10 % at 4/255 = 1.6 %: crushed too
    px = np.repeat(np.random.default_rng(0).permutation(y).reshape(25, 40, 1), 3, axis=2)
    e = metrics.exposure(px)
    assert e["crushed"] == pytest.approx(20.0)
    assert e["clipped"] == pytest.approx(5.0)
    # darkest 30 %: 100 at 0, 100 at 4, 100 at 128
    assert e["dark30"] == pytest.approx((100 * 0 + 100 * 4 + 100 * 128) / 300 / 255 * 100, rel=1e-5)


def test_local_contrast_is_zero_when_flat_and_scales_with_brightness():
    flat = np.full((120, 160, 3), 90, np.uint8)
    assert metrics.exposure(flat)["local_contrast"] == 0
    tex = blur(rng_image(120, 160, seed=6, lo=20, hi=100), 1.5)
    doubled = (tex.astype(np.uint16) * 2).astype(np.uint8)  # no clipping: every luma doubles
    c1, c2 = metrics.exposure(tex)["local_contrast"], metrics.exposure(doubled)["local_contrast"]
    assert c1 > 0.5
    assert c2 == pytest.approx(2 * c1, rel=1e-3)


def test_exposure_change_over_the_input_darkest_region():
    before = blur(rng_image(60, 80, seed=7, lo=10, hi=120), 1.0)
    after = (before.astype(np.uint16) * 2).astype(np.uint8)
    ch = metrics.exposure_change(before, after)
    assert ch["dark30_stops"] == pytest.approx(1.0, abs=1e-6)
    assert ch["dark30_gain"] == pytest.approx(metrics.exposure(before)["dark30"], rel=1e-5)
    assert metrics.exposure_change(before, before) == {"dark30_gain": 0.0, "dark30_stops": 0.0}


# -------------------------------------------------------------------------------------------------- NIQE


def _cubic(x):
    a = np.abs(x)
    return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0))


def _matlab_imresize_half(img):
    """imresize(img, 0.5) as MATLAB's imresize.m computes it: contributions() then one pass per dimension."""
    def contributions(n_in, n_out, scale=0.5, width=4.0):
        kw = width / scale
        u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
        left = np.floor(u - kw / 2)
        ind = left[:, None] + np.arange(int(np.ceil(kw)) + 2)[None, :]
        w = scale * _cubic(scale * (u[:, None] - ind))
        w = w / w.sum(axis=1, keepdims=True)
        aux = np.concatenate([np.arange(1, n_in + 1), np.arange(n_in, 0, -1)])
        ind = aux[np.mod(ind - 1, len(aux)).astype(int)]
        keep = np.any(w != 0, axis=0)
        return w[:, keep], ind[:, keep] - 1

    w, ind = contributions(img.shape[0], img.shape[0] // 2)
    img = np.stack([(w[i][:, None] * img[ind[i], :]).sum(0) for i in range(len(w))])
    w, ind = contributions(img.shape[1], img.shape[1] // 2)
    return np.stack([(w[j][None, :] * img[:, ind[j]]).sum(1) for j in range(len(w))], axis=1)


def _aggd_literal(vec):
    gam = np.array([0.2 + 0.001 * k for k in range(9801)])
    r_gam = G(2 / gam) ** 2 / (G(1 / gam) * G(3 / gam))
    with np.errstate(invalid="ignore"):
        left = np.sqrt(np.mean(vec[vec < 0] ** 2)) if (vec < 0).any() else np.nan
        right = np.sqrt(np.mean(vec[vec > 0] ** 2)) if (vec > 0).any() else np.nan
        gh = left / right
        rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
        rnorm = rhat * (gh**3 + 1) * (gh + 1) / (gh**2 + 1) ** 2
    d = (r_gam - rnorm) ** 2
    alpha = gam[0] if np.isnan(d).all() else gam[np.nanargmin(d)]
    k = np.sqrt(G(1 / alpha) / G(3 / alpha))
    return alpha, left * k, right * k


def _niqe_literal(rgb8: np.ndarray, mu_p, cov_p) -> float:
    """computequality.m, one statement at a time, with loops where MATLAB has blkproc and imfilter."""
    h, w = rgb8.shape[:2]
    im = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            r, g, b = (float(v) for v in rgb8[i, j])
            im[i, j] = math.floor(0.298936021293775 * r + 0.587043074451121 * g + 0.114020904255103 * b + 0.5)
    im = im[: h // 96 * 96, : w // 96 * 96]
    x = np.arange(-3, 4)
    win = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * (7 / 6) ** 2))
    win /= win.sum()
    feats = []
    for scale in (1, 2):
        p, p2 = np.pad(im, 3, mode="edge"), np.pad(im * im, 3, mode="edge")
        mu, m2 = np.zeros_like(im), np.zeros_like(im)
        for dy in range(7):
            for dx in range(7):
                mu += win[dy, dx] * p[dy:dy + im.shape[0], dx:dx + im.shape[1]]
                m2 += win[dy, dx] * p2[dy:dy + im.shape[0], dx:dx + im.shape[1]]
        structdis = (im - mu) / (np.sqrt(np.abs(m2 - mu * mu)) + 1)
        bs = 96 // scale
        rows = []
        for bj in range(structdis.shape[1] // bs):  # blkproc order does not matter for mean and cov
            for bi in range(structdis.shape[0] // bs):
                blk = structdis[bi * bs:(bi + 1) * bs, bj * bs:(bj + 1) * bs]
                a, bl, br = _aggd_literal(blk.ravel(order="F"))
                f = [a, (bl + br) / 2]
                for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
                    pair = blk * np.roll(blk, shift, axis=(0, 1))
                    a, bl, br = _aggd_literal(pair.ravel(order="F"))
                    f += [a, (br - bl) * G(2 / a) / G(1 / a), bl, br]
                rows.append(f)
        feats.append(np.array(rows))
        im = _matlab_imresize_half(im)
    feat = np.concatenate(feats, axis=1)
    mu_d = np.nanmean(feat, axis=0)
    cov_d = np.cov(feat[~np.isnan(feat).any(axis=1)], rowvar=False)
    d = mu_p - mu_d
    return float(np.sqrt(d @ np.linalg.pinv((cov_p + cov_d) / 2) @ d))


def test_niqe_equals_a_literal_port_of_the_matlab_release():
    prist = pristine()
    photo = load("data", "lowlight", "DICM", "01.jpg")[100:490, 20:410]  # 390 x 390: 4 x 4 patches and a rest
    # a black corner makes patches with NaN features (no coefficient either side of 0): nanmean / nancov
    with_flat = photo.copy()
    with_flat[:120, :200] = 0
    for px in (photo, with_flat):
        assert N.niqe(px, prist) == pytest.approx(_niqe_literal(px, prist.mu, prist.cov), rel=1e-9)
    feats = N.features(N.gray_8bit(with_flat))
    has_nan = np.isnan(feats).any(axis=1)
    assert has_nan.any() and not has_nan.all()


def test_niqe_resize_matches_matlab_contributions():
    img = np.random.default_rng(8).uniform(0, 255, (50, 38))
    assert np.allclose(N.half(img), _matlab_imresize_half(img), rtol=0, atol=1e-10)


def test_niqe_window_and_both_model_files_agree():
    a = N.load_pristine(shared_path("metrics", "niqe_image_params.mat"))
    b = N.load_pristine(shared_path("metrics", "niqe_pris_params.npz"))
    assert np.array_equal(a.mu, b.mu) and np.array_equal(a.cov, b.cov)
    with np.load(shared_path("metrics", "niqe_pris_params.npz")) as d:
        assert np.allclose(N.gaussian_window(), d["gaussian_window"], atol=1e-15)


def test_niqe_rates_blur_and_noise_worse_on_a_real_photo():
    prist = pristine()
    for name in ("kodim05.jpg", "kodim23.jpg"):
        px = load("data", "welllit", name)
        noisy = np.clip(px + np.random.default_rng(9).normal(0, 20, px.shape), 0, 255).round().astype(np.uint8)
        base = N.niqe(px, prist)
        assert N.niqe(blur(px, 2.0), prist) > base + 1
        assert N.niqe(noisy, prist) > base + 1
        # a 16-bit file of the same picture scores as its 8-bit rendering
        assert N.niqe(px.astype(np.uint16) * 257, prist) == base


def test_niqe_refuses_what_it_cannot_score(tmp_path, monkeypatch):
    prist = pristine()
    with pytest.raises(ValueError, match="smaller than one 96 x 96"):
        N.niqe(rng_image(90, 400), prist)
    with pytest.raises(ValueError, match="at least 2 patches"):
        N.niqe(rng_image(100, 100), prist)
    monkeypatch.delenv(N.PARAMS_ENV, raising=False)
    with pytest.raises(N.NiqeUnavailable, match="niqe_image_params.mat with --niqe-params"):
        N.load_pristine(tmp_path / "missing.mat")
    bad = tmp_path / "bad.npz"
    np.savez(bad, mu_pris_param=np.zeros(5), cov_pris_param=np.eye(5))
    with pytest.raises(N.NiqeUnavailable, match="not 36 features"):
        N.load_pristine(bad)


# ------------------------------------------------------------------------------------------ LPIPS, FID


@pytest.fixture
def no_network(monkeypatch):
    """No download may even be tried: sockets and torch.hub fail loudly (this machine has no internet
    anyway, so this is what makes an attempt visible rather than a slow failure)."""
    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a[1:] or k}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_lpips_plumbing_with_an_untrained_alexnet(tmp_path, no_network):
    import torchvision

    from backlitfix.eval.lpips_metric import Lpips

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    whole, features = tmp_path / "alexnet.pth", tmp_path / "features.pth"
    torch.save(alex.state_dict(), whole)
    torch.save(alex.features.state_dict(), features)
    a = blur(rng_image(96, 128, seed=10), 1.0)
    b = blur(rng_image(96, 128, seed=11), 1.0)
    lp = Lpips(whole)
    assert lp(a, a) == 0
    d = lp(a, b)
    assert d > 0
    assert Lpips(features)(a, b) == pytest.approx(d, rel=1e-6)  # a features-only file is the same network
    # the backbone really is the file's: other weights give another distance
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "other.pth")
    assert Lpips(tmp_path / "other.pth")(a, b) != pytest.approx(d, rel=1e-3)


def test_lpips_without_a_usable_backbone_says_why_and_how(tmp_path, no_network):
    from backlitfix.eval.lpips_metric import Lpips, LpipsUnavailable

    with pytest.raises(LpipsUnavailable, match=r"eval.lpips_backbone is not set.*never downloads.*alexnet"):
        Lpips(None)
    with pytest.raises(LpipsUnavailable, match="not found"):
        Lpips(tmp_path / "nope.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(LpipsUnavailable, match="not torchvision AlexNet weights"):
        Lpips(tmp_path / "wrong.pth")


def test_frechet_distance_against_sqrtm():
    """Both ways of taking tr((S_a S_b)^1/2) agree with scipy's sqrtm on a small feature space."""
    from scipy import linalg

    from backlitfix.eval.fid import frechet

    rng = np.random.default_rng(12)
    for n_a, n_b in ((5, 8), (60, 90)):  # fewer images than features, and more
        a = rng.normal(size=(n_a, 20)) @ rng.normal(size=(20, 20))
        b = rng.normal(0.5, 1.0, size=(n_b, 20))
        sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        d = a.mean(0) - b.mean(0)
        want = d @ d + np.trace(sa) + np.trace(sb) - 2 * np.trace(linalg.sqrtm(sa @ sb)).real
        assert frechet(a, b) == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert frechet(a, a) == pytest.approx(0, abs=1e-8)


def test_fid_plumbing_with_an_untrained_inception(tmp_path, no_network):
    from backlitfix.eval.fid import FidUnavailable, Inception, build_network, frechet

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(build_network().state_dict(), weights)
    net = Inception(weights)
    set_a = [blur(rng_image(64, 48, seed=s), 1.0) for s in range(2)]
    set_b = [np.full((40, 64, 3), v, np.uint8) for v in (30, 200)]
    fa, fb = net.features(set_a + set_b, batch=3)[:2], net.features(set_b)
    assert fa.shape == (2, 2048)
    assert np.allclose(fa, net.features(set_a), rtol=1e-4, atol=1e-5)  # batching does not change features
    different = frechet(fa, fb)
    assert different > 0
    assert abs(frechet(fa, fa)) < 1e-9 * different
    with pytest.raises(FidUnavailable, match="eval.inception_weights is not set.*never downloads"):
        Inception(None)
    torch.save({"x": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(FidUnavailable, match="not pytorch-fid's Inception"):
        Inception(tmp_path / "wrong.pth")


# --------------------------------------------------------------------------------------- the command


def cli(*args: str, env: dict | None = None):
    env = {"XDG_CONFIG_HOME": "/nonexistent",
           N.PARAMS_ENV: str(shared_path("metrics", "niqe_image_params.mat")), **(env or {})}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def folders(tmp_path):
    """results/ (PNG), gt/ and inputs/ (JPEG) of three real photos, plus an unreadable result."""
    res, gt, inp = (tmp_path / n for n in ("results", "gt", "inputs"))
    for d in (res, gt, inp):
        d.mkdir()
    for name in ("ovd0312_21", "ovd0312_32", "ovd0312_4"):
        px = load("data", "backlit", f"{name}.jpg")
        save(inp / f"{name}.jpg", px, quality=95)
        save(gt / f"{name}.jpg", blur(px, 0.6), quality=95)
        bright = np.floor((px / 255.0) ** 0.7 * 255 + 0.5).astype(np.uint8)
        save(res / f"{name}_fixed.png", bright)
    (res / "broken_fixed.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return res, gt, inp


def test_cli_json_scores_every_image_and_names_the_unreadable_one(folders):
    res, gt, inp = folders
    r = cli("eval", str(res), "--gt", str(gt), "--input", str(inp), "--suffix", "_fixed", "--json")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(res / "broken_fixed.jpg") in errors[0]
    assert "no LPIPS" in r.stderr and "no FID" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["columns"] == ["niqe", "crushed", "clipped", "dark30", "local_contrast", "dark30_gain",
                              "dark30_stops", "psnr", "ssim"]
    good = [i for i in doc["images"] if not i["errors"]]
    assert len(good) == 3
    for i in good:
        result = decode(i["result"], max_pixels=BIG).pixels
        ref = decode(i["gt"], max_pixels=BIG).pixels
        assert i["psnr"] == pytest.approx(metrics.psnr(result, ref))
        assert i["niqe"] == pytest.approx(N.niqe(result, pristine()))
        assert i["dark30_gain"] > 0 and i["dark30_stops"] > 0  # gamma 0.7 lifts the shadows
        assert i["input_exposure"]["dark30"] < i["dark30"]
    assert doc["mean"]["ssim"] == pytest.approx(np.mean([i["ssim"] for i in good]))


def test_cli_csv_and_table(folders, tmp_path):
    res, gt, _ = folders
    (res / "broken_fixed.jpg").unlink()
    out = tmp_path / "m.csv"
    r = cli("eval", str(res), "--gt", str(gt), "--suffix", "_fixed", "--csv", str(out))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["image", "NIQE", "crushed"] and lines[-1].startswith("mean (3)")
    rows = list(csv.DictReader(out.open()))
    assert [row["image"] for row in rows] == ["ovd0312_21_fixed.png", "ovd0312_32_fixed.png", "ovd0312_4_fixed.png",
                                              "mean"]
    assert float(rows[-1]["psnr"]) == pytest.approx(np.mean([float(row["psnr"]) for row in rows[:3]]))
    assert cli("eval", str(res), "--json", "--csv", str(out)).exit_code == 2
    photo = res / "ovd0312_4_fixed.png"
    before = photo.read_bytes()
    r = cli("eval", str(res), "--csv", str(photo))
    assert r.exit_code == 2 and "image file name" in r.stderr and photo.read_bytes() == before


def test_cli_size_mismatch_and_missing_match_name_the_files(folders):
    res, gt, _ = folders
    (res / "broken_fixed.jpg").unlink()
    px = load("data", "backlit", "ovd0312_32.jpg")
    save(gt / "ovd0312_32.jpg", px[:-8], quality=95)  # 8 rows short
    save(res / "stray_fixed.png", px)
    r = cli("eval", str(res), "--gt", str(gt), "--suffix", "_fixed", "--json")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    size = next(e for e in errors if "ovd0312_32_fixed" in e)
    assert str(gt / "ovd0312_32.jpg") in size and "400x300" in size and "400x292" in size
    stray = next(e for e in errors if "stray_fixed" in e)
    assert "no ground-truth image named stray" in stray
    doc = json.loads(r.stdout)
    scored = {i["name"]: i for i in doc["images"]}
    assert scored["ovd0312_21_fixed.png"]["psnr"] is not None  # the others go on
    assert scored["ovd0312_32_fixed.png"]["psnr"] is None and scored["ovd0312_32_fixed.png"]["niqe"] is not None


@pytest.mark.slow  # a real process
def test_cli_lpips_from_config_in_a_real_process_without_network(folders, tmp_path):
    """`backlitfix eval` in its own process: LPIPS from the config's backbone file, FID absent with its
    reason. Where Linux lets us, the process runs in a network namespace without any network."""
    import torchvision

    res, gt, _ = folders
    (res / "broken_fixed.jpg").unlink()
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alex.pth")
    conf = tmp_path / "c.yaml"
    conf.write_text(f"eval:\n  lpips_backbone: {json.dumps(str(tmp_path / 'alex.pth'))}\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "noconfig"),
           N.PARAMS_ENV: str(shared_path("metrics", "niqe_image_params.mat"))}
    isolate = ["unshare", "-rn"] if shutil.which("unshare") and subprocess.run(
        ["unshare", "-rn", "true"], capture_output=True, check=False).returncode == 0 else []
    p = subprocess.run([*isolate, sys.executable, "-m", "backlitfix.cli", "eval", "--gt", str(gt), "--suffix", "_fixed",
                        "--config", str(conf), "--json", "--", str(res)],
                       capture_output=True, text=True, env=env, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert "lpips" in doc["columns"] and all(i["lpips"] > 0 for i in doc["images"])
    assert any("no FID" in n for n in doc["notes"])
