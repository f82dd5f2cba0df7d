"""Embedding a photo library with CLIP, fast: reduced-size decoding, overlapped with the forward pass, cached.

Libraries hold thousands of 12-50 MP photos, but CLIP sees 224 x 224. So each photo is decoded only as large
as needed (``embed_size`` on the long side, never below CLIP's input on the short side) by `run`'s own decoder,
``backlitfix.io.decode(..., reduce_to=...)``: JPEGs through libjpeg's DCT scaling (``Image.draft``, 1/2-1/8 of
the work), RAWs through their embedded JPEG preview (falling back to LibRaw's half-size development), other
formats through Pillow with a box ``reduce``. The orientation, ICC profiles (to sRGB) and the pixel limit
apply as in `run`. Then the reference's own CLIP preprocessing (reference 4.1: shorter side to
the input size, bicubic with antialiasing, centre crop) so ``v_wl``/``v_bl`` match what RAVE computes; the
only difference is the DCT-scaled start, a slight softening far below what 224 px can show.

Decoding runs in a thread pool (Pillow, libjpeg and LibRaw release the GIL) while the main thread runs CLIP
on the previous batch, so the forward pass, not decoding, sets the pace. Each file is read once: its bytes
are hashed for the cache key and decoded from memory.
"""
from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from backlitfix.constants import MAX_PIXELS
from backlitfix.io import decode
from backlitfix.io.walk import Policy, find_images
from backlitfix.photo import PhotoError

# bump when decoding or preprocessing changes the pixels (v2: `run`'s decoder, ICC profiles converted to sRGB)
PREP_VERSION = "clip-bicubic-centre-crop-v2"


def list_images(folder: Path | str, recursive: bool = True) -> list[Path]:
    """Image and RAW files under ``folder`` (by extension), sorted; hidden files and folders, sidecars and
    backlitfix output folders are left out. Symlinked folders are not followed (no loops)."""
    return list(find_images(Path(folder), Policy(recursive=recursive)))


@dataclass
class LibraryEmbeddings:
    paths: list[Path]  # the photos that were embedded, in input order (skipped ones left out)
    embeddings: torch.Tensor  # N x D float32, L2-normalised
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, one-line reason)
    hashes: list[str] = field(default_factory=list)  # sha256 of each file's bytes
    exposure: np.ndarray | None = None  # N x K exposure statistics (select_backlit), when asked for
    n_embedded: int = 0  # photos that went through CLIP in this call
    n_cached: int = 0  # photos whose embedding came from the cache


def prep_key(clip, embed_size: int) -> str:
    return f"{PREP_VERSION}/decode{embed_size}/input{clip.input_size}"


def space_key(clip) -> str:
    """The embedding space: the model's name plus a fingerprint of its weights, so two weight files that
    share a name (or two random initialisations) never share cache entries."""
    return f"{clip.name}#{weights_fingerprint(clip.model)}"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap digest of the weights: a strided sample of every tensor (the whole of ViT-B-32 would take
    a second to hash; any real difference in weights shows in the sample)."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].to("cpu", torch.float32).numpy()
        h.update(name.encode())
        h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()[:16]


# --- decoding at reduced size -------------------------------------------------------------------------

def load_reduced(path: Path, data: bytes, embed_size: int, min_short: int = 224,
                 max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An upright 8-bit sRGB image of ``path`` (whose bytes are ``data``) at reduced size: `run`'s decoder
    (``backlitfix.io.decode(..., reduce_to=...)``), so ICC profiles, orientation and the pixel limit apply."""
    return Image.fromarray(decode(path, data=data, max_pixels=max_pixels, reduce_to=embed_size,
                                  min_short=min_short).pixels)


def clip_crop(im: Image.Image, size: int) -> np.ndarray:
    """CLIP's PIL preprocessing before normalisation (torchvision Resize(size, bicubic) + CenterCrop(size)):
    shorter side to ``size`` with antialiased bicubic, then the centre square. size x size x 3 uint8."""
    w, h = im.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
    left, top = round((nw - size) / 2.0), round((nh - size) / 2.0)
    return np.asarray(im.crop((left, top, left + size, top + size)))


def _reason(e: BaseException) -> str:
    if isinstance(e, PhotoError):
        return e.reason
    if isinstance(e, UnidentifiedImageError):
        return "not an image (unrecognised file content)"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "cannot read file (permission denied)"
    if isinstance(e, IsADirectoryError):
        return "not an image (it is a folder)"
    if type(e).__module__.startswith("rawpy") or "LibRaw" in type(e).__name__:
        return f"not a RAW file LibRaw can read ({type(e).__name__})"
    msg = str(e) or type(e).__name__
    if isinstance(e, EOFError) or "truncated" in msg:
        return "damaged or truncated image"
    return f"cannot decode ({msg})"


# --- the embedding loop -------------------------------------------------------------------------------

@dataclass
class _Item:
    sha: str | None = None
    pixels: np.ndarray | None = None  # input_size^2 x 3 uint8, when the embedding must be computed
    exposure: np.ndarray | None = None
    error: str | None = None


def embed_library(
    clip,
    paths: list[Path],
    *,
    embed_size: int = 448,
    cache=None,
    batch_size: int = 32,
    log: Callable[[str], None] | None = None,
    exposure: bool = False,
    workers: int | None = None,
    max_pixels: int = MAX_PIXELS,
) -> LibraryEmbeddings:
    """L2-normalised CLIP embeddings of the photos in ``paths``; unreadable files are skipped with a reason.

    ``cache``: an :class:`~training.embedding_cache.EmbeddingCache` or None. ``exposure``: also compute the
    exposure statistics used to pick backlit candidates (cached as well). ``log``: progress lines.
    """
    from .select_backlit import EXPOSURE_PREP, exposure_features

    paths = [Path(p) for p in paths]
    space, prep = space_key(clip), prep_key(clip, embed_size)
    have_emb = cache.keys(space, prep) if cache is not None else frozenset()
    have_exp = cache.keys("exposure", f"{EXPOSURE_PREP}/{embed_size}") if cache is not None and exposure \
        else frozenset()
    size = clip.input_size

    def work(path: Path) -> _Item:
        try:
            data = path.read_bytes()
            if not data:
                return _Item(error="not an image (file is empty)")
            sha = hashlib.sha256(data).hexdigest()
            need_emb, need_exp = sha not in have_emb, exposure and sha not in have_exp
            if not (need_emb or need_exp):
                return _Item(sha)
            im = load_reduced(path, data, embed_size, size, max_pixels)
            return _Item(sha, clip_crop(im, size) if need_emb else None,
                         exposure_features(np.asarray(im)) if need_exp else None)
        except Exception as e:  # noqa: BLE001 - one bad photo must not stop a library
            return _Item(error=_reason(e))

    mean = torch.tensor(clip.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
    std = torch.tensor(clip.std, dtype=torch.float32).view(1, 3, 1, 1) * 255
    computed: dict[str, np.ndarray] = {}
    new_exp: dict[str, np.ndarray] = {}
    batch: list[tuple[str, np.ndarray]] = []

    def flush():
        if not batch:
            return
        x = torch.from_numpy(np.stack([p for _, p in batch])).permute(0, 3, 1, 2).float()
        x = ((x - mean) / std).to(clip.device)
        with torch.inference_mode():
            e = clip.embed_prepared(x, normalize=True).float().cpu().numpy()
        fresh = {sha: e[i] for i, (sha, _) in enumerate(batch)}
        computed.update(fresh)
        if cache is not None:
            cache.put_many(fresh, space, prep)
        batch.clear()

    ok: list[tuple[Path, str]] = []
    skipped: list[tuple[Path, str]] = []
    # Decoding overlaps the forward pass: a window of photos decodes ahead in threads. With CLIP on the CPU
    # both need the same cores, so there only one decode thread per two cores (a 12 MP JPEG costs ~30 ms of
    # CPU, a ViT-B-32 forward ~0.3 s); more threads preempt torch's and slow the forward more than they
    # gain (measured on 2 cores: 2 threads 1.34x the bare forward, 1 thread 1.05-1.27x, strictly
    # alternating decode and forward 1.33x).
    cores = os.cpu_count() or 2
    on_cpu = clip.device.type == "cpu"
    workers = workers or (max(1, min(8, cores // 2)) if on_cpu else min(8, cores))
    window = max(2 * batch_size, 4 * workers)

    def decoded(pool):
        """(path, item) in input order; at most ``window`` photos in flight."""
        pending: deque = deque()
        it = iter(paths)
        while True:
            while len(pending) < window and (p := next(it, None)) is not None:
                pending.append((p, pool.submit(work, p)))
            if not pending:
                return
            path, fut = pending.popleft()
            yield path, fut.result()

    with ThreadPoolExecutor(workers, thread_name_prefix="embed-decode") as pool:
        done = 0
        for path, item in decoded(pool):
            done += 1
            if item.error:
                skipped.append((path, item.error))
                continue
            ok.append((path, item.sha))
            if item.exposure is not None:
                new_exp[item.sha] = item.exposure
            if item.pixels is not None and item.sha not in computed and all(s != item.sha for s, _ in batch):
                batch.append((item.sha, item.pixels))
                if len(batch) >= batch_size:
                    flush()
                    if log:
                        log(f"embedded {len(computed)} new photos ({done}/{len(paths)} read)")
        flush()
    if cache is not None and new_exp:
        cache.put_many(new_exp, "exposure", f"{EXPOSURE_PREP}/{embed_size}")

    hashes = [s for _, s in ok]
    from_cache = cache.get_many([s for s in hashes if s not in computed], space, prep) if cache is not None else {}
    vectors = {**from_cache, **computed}
    missing = [p for p, s in ok if s not in vectors]
    if missing:  # a cache row vanished between keys() and get_many() (another process pruned it): redo them
        again = embed_library(clip, missing, embed_size=embed_size, cache=None, batch_size=batch_size,
                              exposure=False, workers=workers, max_pixels=max_pixels)
        vectors.update(zip(again.hashes, again.embeddings.numpy()))
        skipped += again.skipped
        ok = [(p, s) for p, s in ok if s in vectors]
        hashes = [s for _, s in ok]
    dim = clip.dim
    emb = torch.from_numpy(np.stack([vectors[s] for s in hashes]).astype(np.float32)) if hashes \
        else torch.zeros(0, dim)
    exp = None
    if exposure:
        cached_exp = cache.get_many([s for s in hashes if s not in new_exp], "exposure",
                                    f"{EXPOSURE_PREP}/{embed_size}") if cache is not None else {}
        allexp = {**cached_exp, **new_exp}
        exp = np.stack([allexp[s] for s in hashes]) if hashes and all(s in allexp for s in hashes) else None
        if hashes and exp is None:  # stats lost from the cache: recompute them for all (rare)
            exp = np.stack([exposure_features(np.asarray(load_reduced(p, p.read_bytes(), embed_size, size, max_pixels)))
                            for p, _ in ok])
    return LibraryEmbeddings(paths=[p for p, _ in ok], embeddings=emb, skipped=skipped, hashes=hashes,
                             exposure=exp, n_embedded=len(computed), n_cached=len(from_cache))
