"""The RAVE residual vector of a photo library, its bias correction, and its file format.

Reference 4.1: with unit embeddings e = n(E(x)) of the well-lit and the backlit photos,

    v_wl = n(mean e_wl),  v_bl = n(mean e_bl),  r = n(v_wl - v_bl),  thr = <v_wl, r>

Reference 4.6 (the "shifted" residual, optional): project out of r the one direction spanned by the n most
and n least aligned vocabulary tokens, r' = n(r - <r, d> d); thr is then <v_wl, r'> (v_wl is not shifted).

A residual file is safetensors (tensors r, v_wl, v_bl, and when shifted r_unshifted and shift_direction)
with string metadata: the CLIP model, the counts, the date, the shift and where the backlit set came from.
It never holds a pickle.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from backlitfix import __version__
from backlitfix.io.atomic import atomic_write_bytes

FORMAT = "backlitfix-residual"
FORMAT_VERSION = "1"


class ResidualError(ValueError):
    """A residual cannot be computed or loaded; ``str()`` is the complete, user-facing message."""


@dataclass
class ResidualRun:
    """What residual_from_folders did: the photos of each set, what it skipped or picked, the cache hits."""

    welllit: list[Path]  # the photos each set used
    backlit: list[Path]
    skipped: list[tuple[Path, str]]
    selected_scores: list[float] = field(default_factory=list)  # with backlit_source "selected"
    n_embedded: int = 0
    n_cached: int = 0


@dataclass
class Residual:
    r: torch.Tensor  # D, unit: the direction training pushes along (shifted when shift_tokens > 0)
    v_wl: torch.Tensor  # D, unit mean of the well-lit embeddings
    v_bl: torch.Tensor  # D, unit mean of the backlit embeddings
    thr: float  # <v_wl, r>: the projection a corrected photo should reach
    model: str  # the CLIP embedding space, e.g. "ViT-B-32/openai"
    n_welllit: int
    n_backlit: int
    date: str  # ISO 8601, UTC
    shift_tokens: int = 0
    backlit_source: str = "folder"  # "folder" (--backlit) | "selected" (picked from the library)
    shift_direction: torch.Tensor | None = None
    r_unshifted: torch.Tensor | None = None
    info: dict = field(default_factory=dict)  # free-form, JSON-able: clip_pretrained, folders, tokens, ...
    run: ResidualRun | None = field(default=None, repr=False, compare=False)  # how it was made; not saved


def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v.float().reshape(-1), dim=0)


def compute_residual(welllit_emb: torch.Tensor, backlit_emb: torch.Tensor, model: str, *, shift=None,
                     shift_tokens: int = 0, backlit_source: str = "folder", info: dict | None = None) -> Residual:
    """The residual of two sets of image embeddings (N x D, any norm: each row is normalised first).

    ``shift``: None (plain RAVE), or the vocabulary ``(tokens, raw_embeddings)`` to correct with, taking
    ``shift_tokens`` tokens from each end (0 = no correction).
    """
    for name, e in (("well-lit", welllit_emb), ("backlit", backlit_emb)):
        if e.ndim != 2 or e.shape[0] < 2:
            raise ResidualError(f"the {name} set needs at least 2 photos, it has {e.shape[0] if e.ndim else 0}")
    if welllit_emb.shape[1] != backlit_emb.shape[1]:
        raise ResidualError(f"embedding sizes differ ({welllit_emb.shape[1]} vs {backlit_emb.shape[1]})")
    v_wl = _unit(F.normalize(welllit_emb.float(), dim=-1).mean(0))
    v_bl = _unit(F.normalize(backlit_emb.float(), dim=-1).mean(0))
    diff = v_wl - v_bl
    if float(diff.norm()) < 1e-6:
        raise ResidualError("the well-lit and backlit sets have the same mean embedding; no residual direction")
    r = _unit(diff)
    info = dict(info or {})
    d = r0 = None
    if shift is not None and shift_tokens > 0:
        from .vocabulary import shift_direction, shift_residual

        tokens, emb = shift
        s = shift_direction(r, tokens, emb, shift_tokens)
        r0, d = r, s.direction
        r = shift_residual(r, d)
        info.update(shift_top=s.top, shift_bottom=s.bottom)
    else:
        shift_tokens = 0
    return Residual(r=r, v_wl=v_wl, v_bl=v_bl, thr=float(v_wl @ r), model=model,
                    n_welllit=int(welllit_emb.shape[0]), n_backlit=int(backlit_emb.shape[0]),
                    date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                    shift_tokens=int(shift_tokens), backlit_source=backlit_source, shift_direction=d,
                    r_unshifted=r0, info=info)


def save_residual(res: Residual, path: Path | str) -> None:
    """Write ``res`` as safetensors with string metadata, atomically (temp file + rename)."""
    from safetensors.torch import save

    tensors = {"r": res.r, "v_wl": res.v_wl, "v_bl": res.v_bl}
    if res.shift_direction is not None:
        tensors["shift_direction"] = res.shift_direction
    if res.r_unshifted is not None:
        tensors["r_unshifted"] = res.r_unshifted
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "backlitfix_version": __version__,
        "model": res.model, "thr": repr(float(res.thr)), "n_welllit": str(res.n_welllit),
        "n_backlit": str(res.n_backlit), "date": res.date, "shift_tokens": str(res.shift_tokens),
        "backlit_source": res.backlit_source, "info": json.dumps(res.info, ensure_ascii=False),
    }
    data = save({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)
    atomic_write_bytes(Path(path), data)


def load_residual(path: Path | str, expect_model: str | None = None) -> Residual:
    """Read a residual file (safetensors only). ``expect_model``: the CLIP name this run uses; a residual
    from another embedding space is an error that names both."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ResidualError(f"{path}: no such residual file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ResidualError(f"{path}: not a residual file (not readable as safetensors: {e})") from None
    if meta.get("format") != FORMAT:
        raise ResidualError(f"{path}: not a backlitfix residual file (safetensors without residual metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ResidualError(f"{path}: residual format version {meta.get('format_version')!r} is not supported "
                            f"(this backlitfix reads version {FORMAT_VERSION})")
    missing = [k for k in ("r", "v_wl", "v_bl") if k not in tensors]
    if missing:
        raise ResidualError(f"{path}: residual file lacks {', '.join(missing)}")
    model = meta.get("model", "?")
    if expect_model is not None and model != expect_model:
        raise ResidualError(f"{path}: the residual was computed with CLIP {model}, but this run uses CLIP "
                            f"{expect_model}; use the same model (--clip-model/--clip-pretrained) or "
                            f"recompute the residual with `backlitfix residual`")
    try:
        info = json.loads(meta.get("info") or "{}")
        return Residual(
            r=tensors["r"], v_wl=tensors["v_wl"], v_bl=tensors["v_bl"], thr=float(meta["thr"]), model=model,
            n_welllit=int(meta["n_welllit"]), n_backlit=int(meta["n_backlit"]), date=meta.get("date", ""),
            shift_tokens=int(meta.get("shift_tokens", "0")), backlit_source=meta.get("backlit_source", "folder"),
            shift_direction=tensors.get("shift_direction"), r_unshifted=tensors.get("r_unshifted"), info=info)
    except (KeyError, ValueError) as e:
        raise ResidualError(f"{path}: damaged residual metadata ({e})") from None


# --- from folders: what `backlitfix residual` and the trainer share ----------------------------------------

def _images_of(folder: Path, what: str, recursive: bool) -> list[Path]:
    from .library import list_images

    if not folder.exists():
        raise ResidualError(f"{folder}: no such folder ({what} photos)")
    if not folder.is_dir():
        raise ResidualError(f"{folder}: not a folder ({what} photos)")
    paths = list_images(folder, recursive=recursive)
    if not paths:
        anything = any(folder.iterdir())
        raise ResidualError(f"{folder}: {'no images in this folder' if anything else 'the folder is empty'} "
                            f"({what} photos; JPEG, PNG, TIFF, WebP, HEIC and RAW files count)")
    return paths


def residual_from_folders(clip, welllit: Path | str, backlit: Path | str | None = None, *,
                          embed_size: int = 448, shift_tokens: int = 0, cache="default", vocab_cache_dir=None,
                          clip_pretrained: str | None = None, recursive: bool = True, batch_size: int = 32,
                          log: Callable[[str], None] | None = None, max_pixels: int | None = None) -> Residual:
    """Embed the two folders (or pick the backlit photos out of ``welllit`` when ``backlit`` is None) and
    compute the residual, shifted when ``shift_tokens`` > 0. Unreadable photos are skipped; ``.run`` of the
    result lists them, the photos of each set and the cache hits. ``cache``: "default" (the XDG cache),
    None (no cache) or an EmbeddingCache."""
    from .embedding_cache import EmbeddingCache
    from .library import embed_library

    if isinstance(cache, str) and cache == "default":
        with EmbeddingCache() as store:
            return residual_from_folders(clip, welllit, backlit, embed_size=embed_size, shift_tokens=shift_tokens,
                                         cache=store, vocab_cache_dir=vocab_cache_dir,
                                         clip_pretrained=clip_pretrained, recursive=recursive,
                                         batch_size=batch_size, log=log, max_pixels=max_pixels)

    welllit = Path(welllit)
    wl_paths = _images_of(welllit, "well-lit", recursive)
    bl_paths = _images_of(Path(backlit), "backlit", recursive) if backlit is not None else []
    if backlit is not None:
        wl_set = {p.resolve() for p in wl_paths}
        bl_paths = [p for p in bl_paths if p.resolve() not in wl_set]  # nested folders: a photo is in one set
    selecting = backlit is None
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}  # None: the shipped input.max_pixels
    lib = embed_library(clip, wl_paths + bl_paths, embed_size=embed_size, cache=cache, batch_size=batch_size,
                        log=log, exposure=selecting, **limit)
    wl_set = set(wl_paths)
    n_wl_ok = sum(1 for p in lib.paths if p in wl_set)
    scores: list[float] = []
    if selecting:
        from .select_backlit import backlit_scores, select_backlit

        chosen = select_backlit(lib.exposure) if len(lib.paths) else []
        all_scores = backlit_scores(lib.exposure) if len(lib.paths) else []
        chosen_set = {int(i) for i in chosen}
        bl_idx = [int(i) for i in chosen]
        wl_idx = [i for i in range(len(lib.paths)) if i not in chosen_set]
        scores = [float(all_scores[i]) for i in bl_idx]
        if len(bl_idx) < 2:
            raise ResidualError(f"{welllit}: found {len(bl_idx)} backlit-looking photo(s) among {len(lib.paths)}; "
                                f"at least 2 are needed: name a folder of backlit photos with --backlit")
    else:
        wl_idx, bl_idx = list(range(n_wl_ok)), list(range(n_wl_ok, len(lib.paths)))
    for name, folder, idx in (("well-lit", welllit, wl_idx), ("backlit", backlit or welllit, bl_idx)):
        if len(idx) < 2:
            raise ResidualError(f"{folder}: {len(idx)} readable {name} photo(s); at least 2 are needed"
                                + (f" ({len(lib.skipped)} skipped as unreadable)" if lib.skipped else ""))
    shift = None
    if shift_tokens > 0:
        from .vocabulary import vocabulary

        shift = vocabulary(clip, vocab_cache_dir, log=log)
    from .library import weights_fingerprint

    info = {"clip_pretrained": clip_pretrained, "weights_fingerprint": weights_fingerprint(clip.model),
            "welllit_folder": str(welllit),
            "backlit_folder": str(backlit) if backlit is not None else None, "embed_size": embed_size}
    if selecting:
        info["selected"] = [str(lib.paths[i].relative_to(welllit)) for i in bl_idx]
    res = compute_residual(lib.embeddings[wl_idx], lib.embeddings[bl_idx], clip.name, shift=shift,
                           shift_tokens=shift_tokens, backlit_source="selected" if selecting else "folder",
                           info=info)
    res.run = ResidualRun([lib.paths[i] for i in wl_idx], [lib.paths[i] for i in bl_idx], lib.skipped,
                          scores, lib.n_embedded, lib.n_cached)
    return res
