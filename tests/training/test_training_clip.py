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

from backlitfix.training.clip import TINY, TINY_RN, ClipUnavailable, load_clip  # noqa: E402 - after the importorskip


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
    code = ("import time, sys, open_clip\nfrom backlitfix.training.clip import load_clip, ClipUnavailable\n"
            "t = time.time()\n"
            "try:\n    load_clip('ViT-B-32', 'openai')\nexcept ClipUnavailable as e:\n"
            "    print(f'{time.time() - t:.2f}'); print(e); sys.exit(3)\n")
    t = time.time()
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                          timeout=120)
    return proc, time.time() - t


@pytest.mark.slow  # a real process that waits on a network timeout
def test_offline_fails_within_seconds_with_instructions(tmp_path):
    proc, _ = _load_in_subprocess({"HF_HUB_OFFLINE": "1"}, tmp_path)
    assert proc.returncode == 3, proc.stderr
    seconds, message = proc.stdout.split("\n", 1)
    assert float(seconds) < 5
    assert "HF_HUB_OFFLINE is set" in message
    assert "training.clip_pretrained" in message and "timm/vit_base_patch32_clip_224.openai" in message


@pytest.mark.slow  # a real process that waits on a network timeout
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
    from backlitfix.training.identity import Tower

    rn = load_clip(TINY_RN, "random")
    emb, maps = Tower(rn)(rn.prepare(torch.rand(2, 3, 64, 64)))
    assert len(maps) == 5 and emb.shape == (2, rn.dim)
    # as RN101 (64, 256, 512, 1024, 2048 for width 64): stem, then layer1..4
    assert [m.shape[1] for m in maps] == [8, 8 * 4, 8 * 8, 8 * 16, 8 * 32]


# --- issue 17: OpenAI's TorchScript files, and a probe that goes through the proxy like the download --------


def _tiny(name: str) -> torch.nn.Module:
    from backlitfix.training.clip import _open_clip

    return _open_clip().create_model(name, pretrained=None)  # registers the tiny configs first


def _torchscript_clip(model: torch.nn.Module, path) -> dict:
    """Write ``model``'s weights the way OpenAI's CLIP files hold them: a TorchScript archive whose state dict
    has OpenAI's names, bookkeeping entries and half-precision matrices. Returns the expected weights."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for k in state:
        if k.endswith("in_proj_weight") or k.endswith("c_fc.weight"):
            state[k] = state[k].half()  # OpenAI's files are partly fp16
    state.update(input_resolution=torch.tensor(64), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))

    class Node(torch.nn.Module):
        pass

    root = Node()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, Node())
            node = getattr(node, name)
        node.register_buffer(leaf, value)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated for new code; OpenAI's files are what they are
        torch.jit.script(root).save(str(path))
    return state


def test_openai_torchscript_file_loads(tmp_path):
    torch.manual_seed(11)
    ref = _tiny(TINY)
    path = tmp_path / "clip_model" / "ViT-tiny.pt"
    path.parent.mkdir()
    want = _torchscript_clip(ref, path)
    with pytest.raises(RuntimeError, match="TorchScript"), pytest.warns(UserWarning):  # open_clip's own loader
        torch.load(path, map_location="cpu", weights_only=True)
    clip = load_clip(TINY, str(path))
    assert clip.name == f"{TINY}/ViT-tiny.pt"
    got = clip.model.state_dict()
    for k, v in want.items():
        if k in got:
            assert got[k].dtype == torch.float32 and torch.equal(got[k], v.float()), k
    assert clip.embed_images(torch.rand(2, 3, 64, 64)).shape == (2, clip.dim)
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_openai_legacy_cache_file_loads_offline(tmp_path, monkeypatch):
    """The `openai` tag finds ~/.cache/clip/<file>.pt (OpenAI's own cache) and loads it with no network."""
    from open_clip import pretrained as oc_pretrained

    url = "https://openaipublic.azureedge.net/clip/models/" + "0" * 64 + "/backlitfix-tiny.pt"
    monkeypatch.setitem(oc_pretrained._PRETRAINED, TINY, {"openai": {"url": url, "quick_gelu": True}})
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / ".cache" / "clip"
    cache.mkdir(parents=True)
    torch.manual_seed(12)
    ref = _tiny(TINY)
    _torchscript_clip(ref, cache / "backlitfix-tiny.pt")
    clip = load_clip(TINY, "openai")
    assert clip.name == f"{TINY}/openai"
    assert torch.equal(clip.model.visual.conv1.weight, ref.visual.conv1.weight)


def test_torchscript_file_of_another_architecture_is_named(tmp_path):
    torch.manual_seed(13)
    path = tmp_path / "rn.pt"
    _torchscript_clip(_tiny(TINY_RN), path)
    with pytest.raises(ClipUnavailable, match=r"rn\.pt do not fit backlitfix-tiny .*--clip-model"):
        load_clip(TINY, str(path))


class _Proxy:
    """A minimal HTTP proxy on loopback that answers every request with 404 and records what was asked."""

    def __init__(self):
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                seen.append(f"{self.command} {self.path}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = _answer

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow  # a real process that waits on a network timeout
def test_hub_probe_goes_through_the_proxy(tmp_path):
    """Behind a proxy the hub itself cannot be reached directly (here: a closed port), but the download would
    go through the proxy: the probe must not call that "unreachable"; the download's own error speaks."""
    proxy = _Proxy()
    try:
        hub = f"http://127.0.0.1:{_closed_port()}"
        proc, _ = _load_in_subprocess({"HF_ENDPOINT": hub, "HTTP_PROXY": f"http://127.0.0.1:{proxy.port}",
                                       "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "",
                                       "no_proxy": ""}, tmp_path)
    finally:
        proxy.close()
    assert proc.returncode == 3, proc.stderr
    seconds, message = proc.stdout.split("\n", 1)
    assert "unreachable" not in message, message
    assert "download failed" in message
    assert any(hub in line for line in proxy.seen), proxy.seen  # the probe and the download asked the proxy
    assert float(seconds) < 10
