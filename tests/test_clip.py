"""CLIP loading: the tiny test models, real weights from a file or the cache, and failing fast without them.

No CLIP weights can be downloaded here, so the cache test registers a pretrained tag for the tiny model and
lays out a real Hugging Face cache folder for it; everything else runs open_clip and huggingface_hub as is.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip", reason="needs the train extra (open_clip_torch)")

from training.clip import TINY, TINY_RN, ClipUnavailable, load_clip


@pytest.fixture(scope="module")
def tiny():
    return load_clip(TINY, "random")


def test_tiny_model_has_both_towers_and_is_frozen(tiny):
    x = torch.rand(3, 3, 70, 50)
    assert tiny.embed_images(x).shape == (3, tiny.dim)
    assert tiny.embed_texts(["dark", "well lit photo"]).shape == (2, tiny.dim)
    assert torch.allclose(tiny.embed_images(x).norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())


def test_prepare_is_bilinear_without_antialias_and_differentiable(tiny):
    x = torch.rand(1, 3, 300, 200, requires_grad=True)
    p = tiny.prepare(x)
    ref = F.interpolate(x, size=(tiny.input_size,) * 2, mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(tiny.mean).view(1, 3, 1, 1)
    std = torch.tensor(tiny.std).view(1, 3, 1, 1)
    assert torch.allclose(p, (ref - mean) / std, atol=1e-6)
    tiny.embed_images(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_weights_are_refused_for_real_models():
    with pytest.raises(ClipUnavailable, match="refusing to guide training with a randomly initialised ViT-B-32"):
        load_clip("ViT-B-32", "random")


def test_unknown_architecture_and_tag_are_named():
    with pytest.raises(ClipUnavailable, match="unknown CLIP architecture 'ViT-Q-99'"):
        load_clip("ViT-Q-99", "openai")
    with pytest.raises(ClipUnavailable, match="no such pretrained tag.*known tags: .*openai"):
        load_clip("ViT-B-32", "nosuchtag")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_in_subprocess(env_extra: dict, tmp_path) -> tuple[subprocess.CompletedProcess, float]:
    """A fresh interpreter, as a user's first run would be, with an empty Hugging Face cache."""
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path), **env_extra}
    env.pop("HF_HUB_OFFLINE", None) if "HF_HUB_OFFLINE" not in env_extra else None
    # open_clip's own import (seconds on a busy machine) is not the hub wait being measured.
    code = ("import time, sys, open_clip\nfrom training.clip import load_clip, ClipUnavailable\nt = time.time()\n"
            "try:\n    load_clip('ViT-B-32', 'openai')\nexcept ClipUnavailable as e:\n"
            "    print(f'{time.time() - t:.2f}'); print(e); sys.exit(3)\n")
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    return proc, time.time() - t


def test_offline_fails_within_seconds_with_instructions(tmp_path):
    proc, _ = _load_in_subprocess({"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert proc.returncode == 3, proc.stderr
    seconds, message = proc.stdout.split("\n", 1)
    assert float(seconds) < 5
    assert "HF_HUB_OFFLINE is set" in message
    assert "training.clip_pretrained" in message and "timm/vit_base_patch32_clip_224.openai" in message


def test_unreachable_hub_fails_within_seconds(tmp_path):
    # The hub endpoint is a closed port on loopback: no traffic leaves the machine.
    proc, _ = _load_in_subprocess({"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}, tmp_path)
    assert proc.returncode == 3, proc.stderr
    seconds, message = proc.stdout.split("\n", 1)
    assert float(seconds) < 5
    assert "the hub is unreachable" in message


def test_local_weights_file_is_loaded(tiny, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    other = open_clip.create_model(TINY, pretrained=None)
    path = tmp_path / "my clip.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    clip = load_clip(TINY, str(path))
    assert clip.name == f"{TINY}/my clip.safetensors"
    for (k, a), b in zip(other.state_dict().items(), clip.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_cached_tag_loads_offline(tmp_path, monkeypatch):
    """A tag whose weights sit in the Hugging Face cache loads with HF_HUB_OFFLINE=1 and no network."""
    from open_clip import pretrained as oc_pretrained
    from safetensors.torch import save_file

    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {"testtag": {"hf_hub": "backlitfix/tiny-test/",
                                                                       "quick_gelu": False}})
    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    snap = hub / "models--backlitfix--tiny-test" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (hub / "models--backlitfix--tiny-test" / "refs").mkdir()
    (hub / "models--backlitfix--tiny-test" / "refs" / "main").write_text("0123abc")
    torch.manual_seed(7)
    ref = open_clip.create_model(TINY, pretrained=None)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "open_clip_model.safetensors"))
    clip = load_clip(TINY, "testtag")
    assert clip.name == f"{TINY}/testtag"
    assert torch.equal(clip.model.visual.conv1.weight, ref.visual.conv1.weight)


def test_resnet_tiny_gives_five_stages():
    from training.identity import Tower

    rn = load_clip(TINY_RN, "random")
    emb, maps = Tower(rn)(rn.prepare(torch.rand(2, 3, 64, 64)))
    assert len(maps) == 5 and emb.shape == (2, rn.dim)
    # as RN101 (64, 256, 512, 1024, 2048 for width 64): stem, then layer1..4
    assert [m.shape[1] for m in maps] == [8, 8 * 4, 8 * 8, 8 * 16, 8 * 32]
