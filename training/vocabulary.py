"""The CLIP vocabulary as text embeddings, for explaining a residual and for RAVE's bias correction.

Built as the reference does (reference 4.6 step 1): every token id is decoded to text on its own (``</w>``
becomes a trailing space, invalid UTF-8 becomes U+FFFD), the text is tokenized again the normal way
(start + BPE + end of text) and run through the text tower; the raw end-of-text feature after the
projection is the token's embedding. Keys are the decoded strings (later ids overwrite earlier ones, as in
the reference's dict), so "dark" and "dark " are two entries with one embedding.

Two speed-ups that do not change the result (reference 6.1 item 6 embeds one token per forward):
- Each distinct token sequence is embedded once, in batches of 1024.
- The text tower is causal: the end-of-text feature depends only on the positions up to it. Single-token
  strings re-tokenize to at most a few tokens, so the batch runs on the first few positions instead of 77
  (about 13x less work). ``tests/training/test_training_vocabulary.py`` checks this against
  the model's own ``encode_text``.
The result is cached in a safetensors file per model and weights (``$XDG_CACHE_HOME/backlitfix/vocab/``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from backlitfix.io.atomic import atomic_write_bytes

_VERSION = "vocab-v1"


def default_cache_dir() -> Path:
    from .embedding_cache import default_cache_path

    return default_cache_path().parent / "vocab"


def _decoded_vocabulary(tokenizer) -> list[str]:
    n = getattr(tokenizer, "vocab_size", None) or len(tokenizer.encoder)
    return [tokenizer.decode([i]) for i in range(n)]


def encode_short(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` (unnormalised), computed only on the positions up to the last
    end-of-text token. Falls back to the full context for text towers this shortcut does not fit."""
    pool = getattr(model, "text_pool_type", None)
    mask = getattr(model, "attn_mask", None)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if pool != "argmax" or mask is None or not all(hasattr(model, a) for a in needed):
        return model.encode_text(tokens)
    from open_clip.transformer import text_global_pool

    length = int(tokens.argmax(dim=-1).max()) + 1  # the end-of-text id is the largest in each row
    t = tokens[:, :length]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(t).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=mask[:length, :length])
    x = text_global_pool(model.ln_final(x), t, pool)
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def _cache_file(cache_dir: Path, space: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", space)
    return cache_dir / f"{safe}.safetensors"


def embed_vocabulary(clip, *, batch_size: int = 1024, subset: list[int] | None = None,
                     log: Callable[[str], None] | None = None) -> tuple[list[str], torch.Tensor]:
    """(tokens, N x D raw embeddings), no cache. ``subset``: only these token ids (for quick tests)."""
    decoded = _decoded_vocabulary(clip.tokenizer)
    ids = range(len(decoded)) if subset is None else subset
    by_text: dict[str, int] = {}
    for i in ids:  # the reference's dict: one key per decoded string
        by_text[decoded[i]] = i
    tokens = list(by_text)
    seqs = clip.tokenizer(tokens)  # N x context
    uniq, inverse = torch.unique(seqs, dim=0, return_inverse=True)
    # short sequences together, so each batch is cut to its own longest
    order = torch.argsort(uniq.argmax(dim=-1), stable=True)
    out = torch.empty(len(uniq), clip.dim, dtype=torch.float32)
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            out[idx] = encode_short(clip.model, uniq[idx].to(clip.device)).float().cpu()
            if log and k // batch_size % 10 == 9:
                log(f"vocabulary: {k + len(idx)}/{len(order)} token sequences embedded")
    return tokens, out[inverse]


def vocabulary(clip, cache_dir: Path | str | None = None, *, log: Callable[[str], None] | None = None,
               subset: list[int] | None = None) -> tuple[list[str], torch.Tensor]:
    """The whole vocabulary's (tokens, raw embeddings), from the cache when it has them."""
    from safetensors import safe_open
    from safetensors.torch import save

    from .library import space_key

    space = space_key(clip)
    if subset is not None:  # partial vocabularies are for tests and never cached
        return embed_vocabulary(clip, subset=subset, log=log)
    path = _cache_file(Path(cache_dir) if cache_dir is not None else default_cache_dir(), space)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("space") == space and meta.get("version") == _VERSION:
                tokens = json.loads(meta["tokens"])
                emb = f.get_tensor("embeddings")
                if len(tokens) == emb.shape[0]:
                    return tokens, emb
    except FileNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
        if log:
            log(f"vocabulary cache {path} unreadable ({e}); rebuilding it")
    if log:
        log(f"embedding the CLIP vocabulary once for {clip.name} (cached in {path})")
    tokens, emb = embed_vocabulary(clip, log=log)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = save({"embeddings": emb.contiguous()},
                    metadata={"space": space, "version": _VERSION, "tokens": json.dumps(tokens)})
        atomic_write_bytes(path, data)
    except Exception as e:  # noqa: BLE001 - no cache only costs time next run
        if log:
            log(f"cannot cache the vocabulary in {path} ({e})")
    return tokens, emb


def scores(r: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Reference 4.6 step 2: cos(token, r) = <n(emb_tok), r> for a unit r."""
    return F.normalize(emb.float(), dim=-1) @ F.normalize(r.float().reshape(-1), dim=0)


def rank(r: torch.Tensor, tokens: list[str], emb: torch.Tensor, top: int = 15, *, distinct: bool = True) -> dict:
    """The ``top`` most and least aligned tokens: {"top": [(token, cos), ...] descending, "bottom": [...]
    ascending (most negative first)}. ``distinct``: a word and its word-piece form ("dark " / "dark") have
    one embedding; show it once, under its first spelling in score order."""
    s = scores(r, emb)

    def pick(order: list[int]) -> list[tuple[str, float]]:
        out, seen = [], set()
        for i in order:
            key = tokens[i].strip() if distinct else tokens[i]
            if key in seen:
                continue
            seen.add(key)
            out.append((tokens[i], float(s[i])))
            if len(out) == top:
                break
        return out

    order = torch.argsort(s, descending=True, stable=True).tolist()
    return {"top": pick(order), "bottom": pick(order[::-1])}


@dataclass
class Shift:
    """The bias direction of reference 4.6 and the tokens that defined it."""

    direction: torch.Tensor  # d, unit
    n: int
    top: list[str]  # the n highest-scoring tokens ("removing info from")
    bottom: list[str]  # the n lowest ("adding info from")


def shift_direction(r: torch.Tensor, tokens: list[str], emb: torch.Tensor, n: int) -> Shift | None:
    """Reference 4.6 steps 2-4: d = n(a + c), a = n(mean_H score*emb), c = n(mean_Lo score*emb), with the
    raw (unnormalised) token embeddings and the token scores for both sets. None when n == 0."""
    if n <= 0:
        return None
    if 2 * n > len(tokens):
        raise ValueError(f"cannot take {n} tokens from each end of a {len(tokens)}-token vocabulary")
    emb = emb.float()
    s = scores(r, emb)
    order = torch.argsort(s)  # ascending, as the reference sorts
    lo, hi = order[:n], order[-n:]
    a = F.normalize((s[hi, None] * emb[hi]).mean(0), dim=0)
    c = F.normalize((s[lo, None] * emb[lo]).mean(0), dim=0)
    d = F.normalize(a + c, dim=0)
    return Shift(d, n, [tokens[i] for i in hi.flip(0).tolist()], [tokens[i] for i in lo.tolist()])


def shift_residual(r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Reference 4.6 step 5: r' = n(r - <r, d> d): one direction projected out."""
    r = r.float().reshape(-1)
    return F.normalize(r - (r @ d) * d, dim=0)

