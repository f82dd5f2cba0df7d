"""Loading CLIP through open_clip: real weights or a clear error, never a silent random model.

Out of the box open_clip retries the hub for about a minute when offline and can end up guiding with random
weights. Here a pretrained *tag* is resolved to a file first: the Hugging Face cache, then open_clip's legacy
URL cache, then (only when the hub answers within seconds and ``HF_HUB_OFFLINE`` is unset) a download. When
none works, :class:`ClipUnavailable` says exactly how to provide the weights. Random weights are refused for
every real architecture; only the tiny test models registered below may run randomly initialised.

    clip = load_clip("ViT-B-32", "openai")          # the papers' model
    clip = load_clip("ViT-B-32", "/path/open_clip_model.safetensors")
    clip = load_clip(TINY, "random")                 # tests: a few hundred kB, both towers
"""
from __future__ import annotations

import hashlib
import os
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

TINY = "backlitfix-tiny"  # ViT image tower + text tower, randomly initialised; for tests and smoke runs
TINY_RN = "backlitfix-tiny-rn"  # ModifiedResNet image tower: the RN101 identity path in miniature
RANDOM = "random"
_CONFIG_DIR = Path(__file__).with_name("model_configs")
_HUB_PROBE_SECONDS = 3.0


class ClipUnavailable(RuntimeError):
    """CLIP weights cannot be had; ``str()`` is the complete, user-facing message."""


def _open_clip():
    try:
        import open_clip
    except ImportError as e:  # the train extra is optional
        raise ClipUnavailable(
            f"training needs open_clip_torch ({e}); install it with: pip install 'backlitfix[train]'") from None
    if TINY not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)
    return open_clip


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_unreachable(timeout: float = _HUB_PROBE_SECONDS) -> str | None:
    """Why the hub cannot be reached, or None when it answers. One HEAD request through huggingface_hub's own
    HTTP client, so proxies (HTTPS_PROXY, NO_PROXY...) are used exactly as the download will use them: seconds,
    not the minute of retries a download would spend. Any HTTP answer counts: the download's own error, if
    any, is more precise than a guess here."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        get_session().head(endpoint, timeout=timeout, follow_redirects=False)
    except Exception as e:  # noqa: BLE001 - connection, proxy, TLS and timeout errors of whatever client
        return f"the hub is unreachable: {type(e).__name__}: {e}".rstrip(": ")
    return None


def _is_torchscript(path: str) -> bool:
    """OpenAI's original CLIP files (~/.cache/clip/ViT-B-32.pt) are TorchScript archives: a zip with code/."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _from_torchscript(open_clip, model: str, path: str, device) -> torch.nn.Module:
    """OpenAI's TorchScript file read as open_clip's OpenAI loader does (torch.jit.load: a TorchScript archive,
    no Python pickle), its state dict loaded strictly into ``model`` with QuickGELU, as OpenAI trained it.
    open_clip's own ``create_model(pretrained=FILE)`` refuses these files (torch.load with weights_only)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated for new code, not for reading
            scripted = torch.jit.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - a damaged archive: say which file
        raise ClipUnavailable(f"cannot read CLIP weights {path}: not a loadable TorchScript archive ({e})") from None
    state = {k: v for k, v in scripted.state_dict().items()
             if k not in ("input_resolution", "context_length", "vocab_size")}  # OpenAI's bookkeeping entries
    net = open_clip.create_model(model, pretrained=None, force_quick_gelu=True)
    try:
        net.load_state_dict(state)  # strict: a file of another architecture fails here, by name
    except RuntimeError as e:
        first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ClipUnavailable(f"CLIP weights {path} do not fit {model} ({first.strip()[:200]}); name the "
                              f"architecture the file holds with --clip-model") from None
    return net.float().to(device)


def _openai_tag(open_clip, model: str, path: str) -> bool:
    """Is ``path`` OpenAI's own file for ``model``? Its URL names the SHA-256, so a copy (clip_model/ViT-B-32.pt)
    gets the embedding-space name ``model/openai`` and matches residuals computed with the tag."""
    url = (open_clip.get_pretrained_cfg(model, "openai") or {}).get("url", "")
    parts = urllib.parse.urlparse(url).path.split("/")
    if len(parts) < 2 or len(parts[-2]) != 64:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest() == parts[-2]


def _hub_repo(tag_cfg: dict) -> tuple[str, list[str]] | None:
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return repo, names


def _cached_file(tag_cfg: dict) -> str | None:
    """The weights of a pretrained tag if some cache already has them."""
    from huggingface_hub import try_to_load_from_cache

    repo = _hub_repo(tag_cfg)
    if repo:
        for name in repo[1]:
            hit = try_to_load_from_cache(repo[0], name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = tag_cfg.get("url", "")
    if url:  # open_clip's own URL cache (OpenAI's original files)
        legacy = Path("~/.cache/clip").expanduser() / os.path.basename(urllib.parse.urlparse(url).path)
        if legacy.is_file():
            return str(legacy)
    return None


def _how_to_provide(model: str, tag: str, tag_cfg: dict) -> str:
    repo = _hub_repo(tag_cfg)
    where = f"https://huggingface.co/{repo[0]}" if repo else tag_cfg.get("url", "the model's release page")
    return (
        f"To provide them, either: (1) on a machine with internet run "
        f"`python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{tag}')\"` and copy its "
        f"~/.cache/huggingface/hub folder here (same path, or set HF_HOME); or (2) download "
        f"{repo[1][0] if repo else 'the weights file'} from {where} and name the file in config "
        f"(training.clip_pretrained: /path/to/file) or with --clip-pretrained FILE."
    )


def resolve_weights(model: str, pretrained: str) -> tuple[str, dict]:
    """A local file holding ``model``'s ``pretrained`` weights, and the tag's settings (quick_gelu, mean, std).

    Raises :class:`ClipUnavailable` within seconds when they are not cached and the hub is unreachable.
    """
    open_clip = _open_clip()
    if model not in open_clip.list_models():
        raise ClipUnavailable(f"unknown CLIP architecture {model!r}; open_clip knows e.g. ViT-B-32, ViT-B-16, RN101 "
                              f"(python -c 'import open_clip; print(open_clip.list_models())')")
    if pretrained == RANDOM or not pretrained:
        if model.startswith(TINY):
            return "", {}
        raise ClipUnavailable(f"refusing to guide training with a randomly initialised {model}: name pretrained "
                              f"weights (a tag such as 'openai', or a weights file)")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path), {}
    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        kind = "file" if os.sep in pretrained or "." in pretrained else "pretrained tag"
        raise ClipUnavailable(f"CLIP weights {pretrained!r} for {model}: no such {kind} "
                              f"(known tags: {tags}; or name an existing weights file)")
    cached = _cached_file(tag_cfg)
    if cached:
        return cached, tag_cfg
    why = "HF_HUB_OFFLINE is set" if _offline() else _hub_unreachable()
    if why is None:
        from huggingface_hub import hf_hub_download

        repo = _hub_repo(tag_cfg)
        if repo:
            for name in repo[1]:
                try:
                    return hf_hub_download(repo[0], name), tag_cfg
                except Exception as e:  # noqa: BLE001 - try the next file name, report the last
                    why = f"download failed: {e}"
        else:
            why = "this tag has no hub copy"
    raise ClipUnavailable(f"CLIP weights {model}/{pretrained} are not cached here and cannot be downloaded "
                          f"({why}). {_how_to_provide(model, pretrained, tag_cfg)}")


@dataclass
class Clip:
    """A frozen CLIP in eval mode, with the preprocessing the training losses use.

    ``prepare`` is the reference's "CLIP loss preprocessing" P: a bilinear resize of the whole image to the
    model's input size without antialiasing (pinned: newer torchvision antialiases by default, which changes
    the scores), then CLIP normalisation. It is differentiable, so guidance gradients reach the enhancer.
    """

    model: torch.nn.Module
    name: str  # "ViT-B-32/openai": names the embedding space (cache keys, residual metadata)
    tokenizer: object
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if getattr(self.model, "text_projection", None) is not None \
            else int(self.model.visual.output_dim)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                          antialias=False)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed_images(self, x: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Image embeddings of a B×3×H×W batch in [0,1] (any size; P is applied here)."""
        return self.model.encode_image(self.prepare(x), normalize=normalize)

    def embed_prepared(self, x: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Image embeddings of an already preprocessed (resized, normalised) batch."""
        return self.model.encode_image(x, normalize=normalize)

    def embed_texts(self, texts: list[str], *, normalize: bool = True) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens, normalize=normalize)


def load_clip(model: str = "ViT-B-32", pretrained: str = "openai", device: str | torch.device = "cpu") -> Clip:
    """Load a frozen CLIP (both towers) for guidance. See the module docstring for the rules on weights."""
    open_clip = _open_clip()
    weights, tag_cfg = resolve_weights(model, pretrained)
    kwargs = {"force_quick_gelu": True} if tag_cfg.get("quick_gelu") else {}
    tag = pretrained
    try:
        if weights and _is_torchscript(weights):
            net = _from_torchscript(open_clip, model, weights, device)
            tag = "openai" if tag_cfg or _openai_tag(open_clip, model, weights) else pretrained
            tag_cfg = tag_cfg or open_clip.get_pretrained_cfg(model, "openai") or {}
        else:
            net = open_clip.create_model(model, pretrained=weights or None, device=device, **kwargs)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise ClipUnavailable(f"cannot load CLIP {model} from {weights}: {e}") from None
    net.eval().requires_grad_(False)
    pre = getattr(net.visual, "preprocess_cfg", {}) or {}
    size = net.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return Clip(
        model=net,
        name=f"{model}/{Path(tag).name if tag == pretrained and Path(tag).expanduser().is_file() else tag}",
        tokenizer=open_clip.get_tokenizer(model),
        input_size=int(size),
        mean=tuple(tag_cfg.get("mean") or pre.get("mean") or open_clip.OPENAI_DATASET_MEAN),
        std=tuple(tag_cfg.get("std") or pre.get("std") or open_clip.OPENAI_DATASET_STD),
    )


def load_random(model: str, device: str | torch.device = "cpu", seed: int = 0) -> Clip:
    """A randomly initialised CLIP of any architecture, for benchmarks only: weights do not change speed."""
    open_clip = _open_clip()
    torch.manual_seed(seed)
    net = open_clip.create_model(model, pretrained=None, device=device).eval().requires_grad_(False)
    size = net.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return Clip(net, f"{model}/random", open_clip.get_tokenizer(model), int(size),
                tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD))
