"""The guidance losses, the trainer and `backlitfix train`, end to end on CPU with the tiny random CLIP."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("open_clip", reason="needs the train extra (open_clip_torch)")

from backlitfix.model.network import EnhanceNet
from backlitfix.training.clip import TINY, TINY_RN, load_clip
from backlitfix.training.data import Augment, load_image_set
from backlitfix.training.guidance import (
    LatentPair,
    PairObjective,
    PromptPair,
    RaveObjective,
    backlit_score,
    ranking_loss,
)
from backlitfix.training.identity import identity_loss, layer_indices
from backlitfix.training.trainer import STATE_FILE, Trainer, TrainingError, TrainSettings
from conftest import photo_free_folders, shared_path, shrunk_sets

TINY_ARGS = ["--clip-model", TINY, "--clip-pretrained", "random"]


@pytest.fixture(scope="module")
def clip():
    return load_clip(TINY, "random")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return shrunk_sets(tmp_path_factory.mktemp("sets"), 5)


def small_settings(**kw):
    base = {"steps": 4, "warmup_steps": 1, "batch_size": 2, "image_size": 48, "checkpoint_every": 2,
            "prompt_init_steps": 2, "round_steps": 2, "refine_steps": 2, "views": 2, "view_size": 32,
            "precision": "fp32"}
    return TrainSettings(**{**base, **kw})


# --- the losses -------------------------------------------------------------------------------------------


def test_backlit_score_is_the_softmax_of_100_cos():
    emb = F.normalize(torch.randn(5, 8), dim=-1)
    vec = torch.randn(2, 8)
    cos = emb @ F.normalize(vec, dim=-1).T
    expected = torch.sigmoid(100 * (cos[:, 0] - cos[:, 1]))
    assert torch.allclose(backlit_score(emb, vec), expected, atol=1e-6)
    assert torch.allclose(backlit_score(emb, vec, temperature=1.0), torch.sigmoid(cos[:, 0] - cos[:, 1]), atol=1e-6)


def _mr(a, b, m):
    return max(0.0, b - a + m)


@pytest.mark.parametrize("order", ["paper", "code"])
def test_ranking_loss_follows_eq5(order):
    b, w, new, old = 0.95, 0.05, 0.30, 0.60  # the newest result is less backlit than the previous one
    t = lambda v: torch.tensor([v])
    got = float(ranking_loss(t(b), t(w), t(new), t(old), order=order))
    if order == "paper":  # S(b) > S(I_{t-1}) > S(I_t) > S(w)
        want = _mr(b, w, 0.9) + _mr(b, old, 0.9) + _mr(new, w, 0.1) + _mr(old, new, 0.1)
    else:  # the released code: S(b) > S(new) > S(old) > S(w)
        want = _mr(b, w, 0.9) + _mr(b, new, 0.9) + _mr(new, old, 0.1) + _mr(old, w, 0.1)
    assert got == pytest.approx(200 * want, rel=1e-6)
    # the paper is satisfied by this ordering on its I_t/I_{t-1} term; the code penalises it
    paper = float(ranking_loss(t(b), t(w), t(new), t(old), order="paper"))
    code = float(ranking_loss(t(b), t(w), t(new), t(old), order="code"))
    assert paper < code
    assert float(ranking_loss(t(b), t(w))) == pytest.approx(200 * _mr(b, w, 1.0))
    assert float(ranking_loss(t(b), t(w), t(new))) == pytest.approx(
        200 * (_mr(b, w, 0.9) + _mr(b, new, 0.9) + _mr(new, w, 0.2)))


def test_identity_loss_averages_the_batch_of_per_layer_means():
    torch.manual_seed(0)
    a = [torch.randn(3, 4, 5, 5) for _ in range(5)]
    b = [torch.randn(3, 4, 5, 5) for _ in range(5)]
    alpha = (1, 1, 1, 1, 0.5)
    want = sum(al * ((x[i] - y[i]) ** 2).mean() for al, x, y in zip(alpha, a, b) for i in range(3))
    assert float(identity_loss(a, b, alpha)) == pytest.approx(float(want) / 3, rel=1e-5)
    assert float(identity_loss(a, a, alpha)) == 0


def test_identity_layers_spread_over_a_vit_and_cover_a_resnet(clip):
    assert layer_indices(clip.model.visual) == [0, 1, 2, 3]  # 4 blocks: 0, 0.75→1, 1.5→2, 2.25→2, 3
    import open_clip

    vit = open_clip.create_model("ViT-B-32", pretrained=None).visual
    assert layer_indices(vit) == [0, 3, 6, 8, 11]
    rn = load_clip(TINY_RN, "random")
    assert layer_indices(rn.model.visual) == [0, 1, 2, 3, 4]


def test_rave_loss_matches_its_formula(clip):
    torch.manual_seed(1)
    r = torch.randn(clip.dim)
    obj = RaveObjective(clip, r, thr=0.2)
    x = torch.rand(3, 3, 40, 40)
    y = (x * 1.5).clamp(0, 1)
    loss, parts = obj.loss(y, x)
    emb = clip.embed_images(y)
    res = ((emb @ F.normalize(r, dim=0) - 0.2) ** 2).mean()
    assert parts["residual"] == pytest.approx(float(res), rel=1e-4)
    assert float(loss) == pytest.approx(1920 * float(res) + 22.5 * 8 * parts["identity"], rel=1e-4)
    assert obj.loss(x, x)[1]["identity"] == 0


def test_gradients_reach_only_the_network_and_the_pair(clip):
    torch.manual_seed(2)
    pair = PromptPair(clip)
    obj = PairObjective(clip, pair, "clip-lit")
    from backlitfix.model.checkpoint import load_model

    net = load_model(shared_path("models", "official", "rave_unpaired.pth"))[0]  # a random net saturates the clamp
    x = torch.rand(2, 3, 48, 48) * 0.5
    loss, _ = obj.loss((x / (net(x) + 1e-9)).clamp(0, 1), x)
    loss.backward()
    assert all(p.grad is None for p in clip.model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert pair.ctx.grad is None  # the network phase keeps the prompts frozen
    v = pair.vectors()
    v.sum().backward()
    assert pair.ctx.grad is not None and pair.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.model.parameters())


def test_prompt_init_choices(clip):
    x = PromptPair(clip, init="x")
    assert torch.equal(x.ctx[0], x.ctx[1])  # the code: both prompts start identical
    r = PromptPair(clip, init="random", generator=torch.Generator().manual_seed(0))
    assert not torch.equal(r.ctx[0], r.ctx[1])  # the paper: random
    assert x.vectors().shape == (2, clip.dim)
    with pytest.raises(ValueError, match="prompt_init"):
        PromptPair(clip, init="zeros")


def test_augment_shared_draw_and_identity():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    none = torch.tensor([[0, 0, 0, 1, 1, 0]] * 4, dtype=torch.float32)
    assert torch.equal(Augment.apply(x, none), x)
    flip = torch.tensor([[1, 0, 0, 1, 1, 0]] * 4, dtype=torch.float32)
    assert torch.equal(Augment.apply(x, flip), x.flip(3))
    params = Augment(p_zoom=1, p_rotate=1).draw(4, gen)
    y = Augment.apply(torch.cat([x[:1]] * 4), params[:1].repeat(4, 1))
    assert torch.allclose(y[0], y[3])  # one draw, applied to several images, moves them alike
    z = Augment.apply(x, params)
    assert z.shape == x.shape and not torch.allclose(z, x)


# --- the trainer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rave", "clip-lit", "clip-lit-latent"])
def test_each_method_trains_end_to_end(method, clip, folders, tmp_path):
    torch.manual_seed(0)
    images = load_image_set(sorted(folders["backlit"].iterdir()), 48)
    welllit = load_image_set(sorted(folders["welllit"].iterdir()), 32)
    if method == "rave":
        obj = RaveObjective(clip, torch.randn(clip.dim), 0.1)
    else:
        pair = PromptPair(clip) if method == "clip-lit" else LatentPair(clip)
        obj = PairObjective(clip, pair, method)
    pair = getattr(obj, "pair", None)
    pair_before = [p.detach().clone() for p in pair.parameters()] if pair is not None else []
    net = EnhanceNet(padding="zeros")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clip_before = clip.model.visual.conv1.weight.clone()
    tr = Trainer(net, obj, images, small_settings(), tmp_path / "w", welllit=welllit, progress=False)
    tr.run(resume=False)
    assert tr.step == 5  # 1 warm-up + 4 guided
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(clip.model.visual.conv1.weight, clip_before)
    phases = tr.history.phases
    if method == "rave":
        assert phases == ["warmup"] + ["enhance"] * 4
    else:  # stage A, warm-up, a round, a refinement with one result set, the next round
        assert phases == ["init"] * 2 + ["warmup"] + ["enhance"] * 2 + ["refine"] * 2 + ["enhance"] * 2
        assert any(not torch.equal(a, b) for a, b in zip(pair_before, pair.parameters()))
    state = torch.load(tmp_path / "w" / STATE_FILE, weights_only=True)
    assert state["step"] == 5 and state["method"] == method


class _Interrupt(Exception):
    pass


class _Flaky:
    """Wraps an objective: raises or returns NaN at a chosen network step, to test resume and the NaN guard."""

    def __init__(self, inner, at: int, what: str):
        self.inner, self.at, self.what, self.name = inner, at, what, inner.name
        self.clip = inner.clip

    def warmup_loss(self, *a):
        return self.inner.warmup_loss(*a)

    def loss(self, enhanced, original, L=None, step=0):
        if step + 1 == self.at:
            if self.what == "interrupt":
                raise _Interrupt
            return enhanced.sum() * float("nan"), {}
        return self.inner.loss(enhanced, original, L, step)


def test_interrupted_training_resumes_where_it_stopped(clip, folders, tmp_path):
    images = load_image_set(sorted(folders["backlit"].iterdir()), 48)
    obj = RaveObjective(clip, torch.randn(clip.dim), 0.1)
    net = EnhanceNet(padding="zeros")
    with pytest.raises(_Interrupt):
        Trainer(net, _Flaky(obj, at=4, what="interrupt"), images, small_settings(), tmp_path, progress=False).run()
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 2  # checkpoint_every=2
    net2 = EnhanceNet(padding="zeros")
    logs = []
    tr = Trainer(net2, obj, images, small_settings(), tmp_path, progress=False, log=logs.append)
    tr.run()
    assert any("resuming" in m and "step 2/5" in m for m in logs)
    assert tr.history.steps == [1, 2, 3, 4, 5]  # nothing done twice, nothing skipped


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(clip, folders, tmp_path):
    images = load_image_set(sorted(folders["backlit"].iterdir()), 48)
    obj = _Flaky(RaveObjective(clip, torch.randn(clip.dim), 0.1), at=4, what="nan")
    net = EnhanceNet(padding="zeros")
    with pytest.raises(TrainingError, match=r"loss became nan at step 3.*last good checkpoint is kept"):
        Trainer(net, obj, images, small_settings(), tmp_path, progress=False).run()
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["net"].values())


def test_resume_refuses_another_methods_checkpoint(clip, folders, tmp_path):
    images = load_image_set(sorted(folders["backlit"].iterdir()), 48)
    Trainer(EnhanceNet(padding="zeros"), RaveObjective(clip, torch.randn(clip.dim), 0.1), images,
            small_settings(steps=1, warmup_steps=0), tmp_path, progress=False).run()
    obj = PairObjective(clip, LatentPair(clip), "clip-lit-latent")
    with pytest.raises(TrainingError, match="is a rave run, not clip-lit-latent"):
        Trainer(EnhanceNet(padding="zeros"), obj, images, small_settings(), tmp_path, progress=False).run()


def test_collapse_guard_reinitialises_and_extends_warmup(clip, folders, tmp_path):
    images = load_image_set(sorted(folders["backlit"].iterdir()), 48)
    s = small_settings(warmup_steps=200, steps=0)
    tr = Trainer(EnhanceNet(padding="zeros"), RaveObjective(clip, torch.randn(clip.dim), 0.1), images, s, tmp_path,
                 progress=False, log=lambda m: None)
    before = tr.net.conv1.weight.clone() if hasattr(tr.net, "conv1") else next(tr.net.parameters()).clone()
    tr._since_init = 101
    for _ in range(30):
        tr._collapse_guard(5.0)  # 5 dB: the output has nothing to do with the input
    # one restart: the buffer still averages under 8 dB, but the next needs 100 more warm-up steps
    assert tr.s.warmup_steps == 300 and tr._since_init == 29
    after = tr.net.conv1.weight if hasattr(tr.net, "conv1") else next(tr.net.parameters())
    assert not torch.equal(before, after)


# --- the command ------------------------------------------------------------------------------------------


def _train(args, tmp_path):
    from backlitfix.cli import main

    return CliRunner().invoke(main, ["train", *TINY_ARGS, "--image-size", "48", "--batch-size", "2", *args],
                              catch_exceptions=False, env={"XDG_CACHE_HOME": str(tmp_path / "cache"),
                                                           "XDG_DATA_HOME": str(tmp_path / "data")})


def test_train_command_writes_a_model_that_run_loads(folders, tmp_path):
    official = shared_path("models", "official", "rave_unpaired.pth")
    out = tmp_path / "mine.safetensors"
    r = _train(["--method", "rave", "--backlit", str(folders["backlit"]), "--welllit", str(folders["welllit"]),
                "--from", str(official), "--steps", "3", "-o", str(out)], tmp_path)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["model"] == str(out)
    from backlitfix.model.checkpoint import load_model

    _, info = load_model(out)
    assert info.method == "rave" and info.guidance == f"{TINY}/random"
    assert info.extra["steps"] == 3 and info.extra["from"]
    for f in (summary["loss_curve"], summary["sheet"]):
        with Image.open(f) as im:
            assert im.size[0] > 100 and np.asarray(im).std() > 5  # a real picture, not a blank
    # the result loads in `backlitfix run --model`
    from backlitfix.cli import main

    photo = next(folders["backlit"].iterdir())
    res = CliRunner().invoke(main, ["run", "--model", str(out), "-o", str(tmp_path / "fixed"), str(photo)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fixed" / photo.name).exists()


def test_train_clip_lit_from_scratch_by_name(folders, tmp_path):
    r = _train(["--method", "clip-lit-latent", "--backlit", str(folders["backlit"]), "--welllit",
                str(folders["welllit"]), "--scratch", "--warmup-steps", "1", "--steps", "2", "-o", "mystyle",
                "--config", str(_cfg(tmp_path))], tmp_path)
    assert r.exit_code == 0, r.output
    model = tmp_path / "data" / "backlitfix" / "models" / "mystyle.safetensors"
    assert model.exists(), r.output
    from backlitfix.model.checkpoint import load_model

    assert load_model(model)[1].method == "clip-lit-latent"


def _cfg(tmp_path):
    p = tmp_path / "short.yaml"
    p.write_text("training:\n  prompt_init_steps: 2\n  round_steps: 1\n  refine_steps: 1\n  views: 1\n")
    return p


def test_train_bad_input_is_one_clear_line(folders, tmp_path):
    bad = photo_free_folders(tmp_path, next(folders["backlit"].iterdir()))
    empty, notes, one = bad["empty"], bad["notes"], bad["one"]
    cases = [
        (["--backlit", str(empty), "--welllit", str(folders["welllit"])], "no images in this folder"),
        (["--backlit", str(notes), "--welllit", str(folders["welllit"])], "no images in this folder"),
        (["--backlit", str(one), "--welllit", str(folders["welllit"])], "only 1 image; training needs at least 2"),
        (["--backlit", str(folders["backlit"]), "--welllit", str(folders["welllit"]), "--paired"],
         "have no partner of the same name"),
    ]
    for args, message in cases:
        r = _train(["--method", "rave", *args, "--scratch", "-o", str(tmp_path / "x.safetensors")], tmp_path)
        assert r.exit_code == 2, r.output
        assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_train_without_clip_weights_fails_fast(folders, tmp_path):
    from backlitfix.cli import main

    r = CliRunner().invoke(main, ["train", "--method", "rave", "--backlit", str(folders["backlit"]), "--welllit",
                                  str(folders["welllit"]), "--scratch", "-o", str(tmp_path / "m.safetensors")],
                           env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.exit_code == 2
    assert "ViT-B-32/openai are not cached" in r.stderr and "--clip-pretrained FILE" in r.stderr


def test_paired_mismatch_names_the_files(tmp_path):
    from backlitfix.training.cli_train import check_pairs

    b = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    w = [tmp_path / "a.png", tmp_path / "c.png"]
    with pytest.raises(ValueError) as e:
        check_pairs(b, w)
    assert "b.jpg" in str(e.value) and "c.png" in str(e.value)
    check_pairs(b, [tmp_path / "a.tif", tmp_path / "b.tif"])  # extensions may differ


def test_training_loss_goes_down_on_a_learnable_target(clip, folders, tmp_path):
    """A sanity check that the loop optimises: RAVE towards the direction of brighter images lowers the loss."""
    images = load_image_set(sorted(folders["backlit"].iterdir()), 48)
    with torch.no_grad():
        x = images.batch(list(range(len(images))), "cpu")
        dark, bright = clip.embed_images(x * 0.5), clip.embed_images((x * 2).clamp(0, 1))
    v_wl = F.normalize(bright.mean(0), dim=0)
    r = F.normalize(v_wl - F.normalize(dark.mean(0), dim=0), dim=0)
    obj = RaveObjective(clip, r, float(v_wl @ r))
    net = EnhanceNet(padding="zeros")
    s = small_settings(steps=25, warmup_steps=0, lr=1e-3, checkpoint_every=100)
    torch.manual_seed(3)
    tr = Trainer(net, obj, images, s, tmp_path, progress=False)
    tr.run(resume=False)
    losses = tr.history.losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) and all(math.isfinite(v) for v in losses)
