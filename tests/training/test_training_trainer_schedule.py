"""Issue 17: the steps a run actually takes. The collapse guard's warm-up extension is trained, a finished run
is not trained again, the estimate is measured from the first steps, and the layout follows the host."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import backlitfix.training.trainer as trainer_mod
from backlitfix.model.network import EnhanceNet
from backlitfix.training.data import ImageSet
from backlitfix.training.trainer import STATE_FILE, Trainer, TrainSettings


class CountingObjective:
    """A cheap stand-in for the CLIP objectives that counts the network iterations it is asked for."""

    name = "rave"

    def __init__(self):
        self.calls = {"warmup": 0, "enhance": 0}

    def warmup_loss(self, enhanced, original):
        self.calls["warmup"] += 1
        return F.mse_loss(enhanced, original), {}

    def loss(self, enhanced, original, L=None, step=0):
        self.calls["enhance"] += 1
        return F.mse_loss(enhanced, original.clamp_min(0.3)), {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread


def images() -> ImageSet:
    gen = torch.Generator().manual_seed(0)
    pixels = (torch.rand(3, 3, 32, 32, generator=gen) * 200).to(torch.uint8)
    return ImageSet(pixels, [f"img{i}.png" for i in range(3)], [])


def settings(**kw):
    base = {"steps": 3, "warmup_steps": 12, "batch_size": 1, "image_size": 32, "checkpoint_every": 50,
            "precision": "fp32"}
    return TrainSettings(**{**base, **kw})


@pytest.fixture
def collapse_once(monkeypatch):
    """PSNR(I, Ĩ) of 5 dB (a collapsed network) until the guard has re-initialised once, then 30 dB. The guard
    acts after 10 steps and extends by 10 here (100 and 100 in real runs), to keep the test short."""
    monkeypatch.setattr(Trainer, "COLLAPSE_AFTER", 10)
    monkeypatch.setattr(Trainer, "COLLAPSE_EXTEND", 10)
    seen = {"n": 0}

    def fake_psnr(a, b):
        seen["n"] += 1
        return 5.0 if seen["n"] <= 11 else 30.0

    monkeypatch.setattr(trainer_mod, "psnr", fake_psnr)
    return seen


def test_collapse_extension_is_trained(tmp_path, collapse_once):
    logs = []
    obj = CountingObjective()
    tr = Trainer(EnhanceNet(padding="zeros"), obj, images(), settings(), tmp_path, progress=False, log=logs.append)
    tr.run(resume=False)
    assert any("warm-up extended to 22 steps" in m for m in logs), logs
    # 11 collapsed steps, re-initialisation, then the extended warm-up to 22 and the 3 guided steps
    assert obj.calls == {"warmup": 22, "enhance": 3}
    assert tr.step == 25 and tr.history.phases.count("warmup") == 22
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 25


def test_a_finished_run_does_not_train_again(tmp_path, collapse_once):
    Trainer(EnhanceNet(padding="zeros"), CountingObjective(), images(), settings(), tmp_path, progress=False,
            log=lambda m: None).run()
    again = CountingObjective()
    logs = []
    tr = Trainer(EnhanceNet(padding="zeros"), again, images(), settings(), tmp_path, progress=False, log=logs.append)
    tr.run()
    assert again.calls == {"warmup": 0, "enhance": 0}, logs
    assert tr.step == 25


def test_interrupted_collapsed_warmup_resumes_to_its_extended_length(tmp_path, collapse_once):
    class Stop(Exception):
        pass

    class StopAt(CountingObjective):
        def warmup_loss(self, enhanced, original):
            if self.calls["warmup"] == 15:
                raise Stop
            return super().warmup_loss(enhanced, original)

    with pytest.raises(Stop):
        Trainer(EnhanceNet(padding="zeros"), StopAt(), images(), settings(checkpoint_every=5), tmp_path,
                progress=False, log=lambda m: None).run()
    obj = CountingObjective()
    tr = Trainer(EnhanceNet(padding="zeros"), obj, images(), settings(checkpoint_every=5), tmp_path,
                 progress=False, log=lambda m: None)
    tr.run()
    assert obj.calls == {"warmup": 22 - 15, "enhance": 3}  # resumed at its checkpoint of step 15
    assert tr.step == 25


def test_estimate_is_printed_from_the_first_steps(tmp_path):
    logs = []
    tr = Trainer(EnhanceNet(padding="zeros"), CountingObjective(), images(), settings(warmup_steps=0, steps=5),
                 tmp_path, progress=False, log=logs.append)
    tr.run()
    est = [m for m in logs if m.startswith("estimate:")]
    assert len(est) == 1 and "for 5 steps on this machine" in est[0], logs
    assert "s per network step, measured" in est[0]


def test_duration_words():
    assert trainer_mod.duration(40) == "40 s"
    assert trainer_mod.duration(12 * 60) == "12 min"
    assert trainer_mod.duration(3600 + 5 * 60) == "1 h 05 min"
    assert trainer_mod.duration(37 * 3600) == "37 h 00 min"


def test_layout_follows_precision_and_device():
    cpu = torch.device("cpu")
    assert trainer_mod.memory_layout(cpu, None) == torch.contiguous_format  # fp32 on CPU: NCHW was faster
    assert trainer_mod.memory_layout(cpu, torch.bfloat16) == torch.channels_last
    assert trainer_mod.memory_layout(torch.device("cuda"), torch.float16) == torch.channels_last
    tr = Trainer(EnhanceNet(padding="zeros"), CountingObjective(), images(), settings(), "/nonexistent",
                 progress=False)
    w = next(p for p in tr.net.parameters() if p.dim() == 4)
    assert w.is_contiguous()  # fp32 asked for: the network keeps the default layout
