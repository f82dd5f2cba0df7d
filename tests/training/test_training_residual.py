"""`backlitfix residual`: library embedding (reduced decoding, cache, skipping), the RAVE residual and its
file, backlit selection. Real photos from ../shared; CLIP is the tiny randomly initialised test model
(real weights cannot be downloaded here; the maths does not depend on them)."""
from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from backlitfix.training.clip import TINY, TINY_RN, load_clip
from conftest import photo_free_folders, shared_path

SEED = 1143  # config training.seed: the CLI seeds with it before loading, so the random model is the same


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are too small for threads; on a busy CPU they cost 20x
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(SEED)
    return load_clip(TINY, "random")


def _copy(folder: str, names: list[str], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    src = shared_path("data", folder)
    return [Path(shutil.copy(src / n, dest / n)) for n in names]


WL = ["kodim01.jpg", "kodim03.jpg", "kodim07.jpg", "kodim23.jpg"]
BL = ["ovd0312_25.jpg", "ovd0312_4.jpg", "ovd0312_28.jpg"]


def _count_forwards(clip, monkeypatch) -> list[int]:
    calls = []
    real = clip.model.encode_image

    def counting(x, *a, **k):
        calls.append(x.shape[0])
        return real(x, *a, **k)

    monkeypatch.setattr(clip.model, "encode_image", counting)
    return calls


# --- decoding at reduced size ----------------------------------------------------------------------------

def test_jpeg_is_decoded_in_draft_mode_at_reduced_size(tmp_path):
    from backlitfix.training.library import load_reduced

    p = shared_path("data", "backlit", "110_51093502029_o.jpg")  # 2048 x 1536
    im = load_reduced(p, p.read_bytes(), 448, 224)
    w, h = im.size
    assert (w, h) == (512, 384)  # libjpeg's 1/4 DCT scale: the smallest that keeps the long side >= 448
    full = np.asarray(Image.open(p).convert("RGB").resize((w, h), Image.BOX), dtype=np.float32)
    assert np.abs(np.asarray(im, dtype=np.float32) - full).mean() < 4  # the same picture, not a crop


def test_exif_orientation_is_applied(tmp_path):
    from backlitfix.training.library import load_reduced

    src = Image.open(shared_path("data", "welllit", "kodim01.jpg")).convert("RGB")  # 768 x 512, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    stored = src.transpose(Image.Transpose.ROTATE_90)  # what a camera held upright would store
    p = tmp_path / "rot.jpg"
    stored.save(p, quality=95, exif=exif.tobytes())
    im = load_reduced(p, p.read_bytes(), 448, 224)
    assert im.size[0] > im.size[1]  # upright again: landscape
    ref = np.asarray(src.resize(im.size, Image.BOX), dtype=np.float32)
    assert np.abs(np.asarray(im, dtype=np.float32) - ref).mean() < 6


def test_clip_crop_matches_torchvision_clip_preprocessing():
    tv = pytest.importorskip("torchvision.transforms")
    from backlitfix.training.library import clip_crop

    for name in ("kodim04.jpg", "kodim01.jpg"):  # portrait and landscape
        im = Image.open(shared_path("data", "welllit", name)).convert("RGB")
        ref = tv.Compose([tv.Resize(224, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(224)])(im)
        assert np.array_equal(clip_crop(im, 224), np.asarray(ref))


def test_raw_uses_the_embedded_preview_or_half_size(tmp_path):
    import rawpy

    from backlitfix.training.library import load_reduced

    dng = shared_path("data", "raw", "canon_eos_6d.dng")
    with rawpy.imread(str(dng)) as raw:  # independently: the preview's size
        preview = Image.open(io.BytesIO(raw.extract_thumb().data)).size
        sensor = (raw.sizes.width, raw.sizes.height)
    im = load_reduced(dng, dng.read_bytes(), 448, 224)
    factor = int(1 / max(448 / max(preview), 224 / min(preview)))
    # the preview, DCT-scaled (sizes round up), not the 1224 px sensor
    assert im.size == (-(-preview[0] // factor), -(-preview[1] // factor))
    assert preview != sensor
    nef = shared_path("data", "raw", "Nikon_uncompressed.nef")  # its preview is 320 x 218: too small for 224
    im = load_reduced(nef, nef.read_bytes(), 448, 224)
    assert min(im.size) >= 224 and im.size != (320, 218)
    a = np.asarray(im)
    assert 5 < a.mean() < 250 and a.std() > 5  # a real picture, not a blank (the white-level fix applies)


# --- embedding a library, the cache --------------------------------------------------------------------------

def test_embed_library_cache_reembeds_only_new_or_changed(tmp_path, clip, monkeypatch):
    from backlitfix.training.embedding_cache import EmbeddingCache
    from backlitfix.training.library import embed_library

    paths = _copy("welllit", WL, tmp_path / "lib") + _copy("backlit", BL[:1], tmp_path / "lib")
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    calls = _count_forwards(clip, monkeypatch)
    first = embed_library(clip, paths, cache=cache, batch_size=2)
    assert first.n_embedded == 5 and first.n_cached == 0 and sum(calls) == 5
    assert first.embeddings.shape == (5, clip.dim)
    assert torch.allclose(first.embeddings.norm(dim=1), torch.ones(5), atol=1e-5)

    calls.clear()
    again = embed_library(clip, paths, cache=cache)
    assert again.n_embedded == 0 and again.n_cached == 5 and calls == []
    assert torch.equal(again.embeddings, first.embeddings)

    Image.open(paths[0]).rotate(180).save(paths[0], quality=90)  # an edited photo: new content, same name
    new = _copy("welllit", ["kodim09.jpg"], tmp_path / "lib")
    third = embed_library(clip, paths + new, cache=cache)
    assert third.n_embedded == 2 and third.n_cached == 4 and sum(calls) == 2
    assert not torch.allclose(third.embeddings[0], first.embeddings[0])
    assert torch.allclose(third.embeddings[1:5], first.embeddings[1:5])

    torch.manual_seed(SEED + 1)
    other = load_clip(TINY, "random")  # same name, other weights: another embedding space
    assert embed_library(other, paths, cache=cache).n_cached == 0
    with sqlite3.connect(cache.path) as db:  # a real SQLite file in WAL mode
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_embeddings_match_a_direct_clip_forward(tmp_path, clip):
    from backlitfix.training.library import clip_crop, embed_library, load_reduced

    paths = _copy("welllit", WL[:2], tmp_path)
    lib = embed_library(clip, paths, cache=None)
    x = torch.stack([torch.from_numpy(clip_crop(load_reduced(p, p.read_bytes(), 448, clip.input_size),
                                                clip.input_size).copy()).permute(2, 0, 1).float() / 255
                     for p in paths])
    mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = clip.model.encode_image((x - mean) / std, normalize=True)
    assert torch.allclose(lib.embeddings, ref, atol=1e-5)


def test_unreadable_files_are_skipped_with_reasons(tmp_path, clip):
    from backlitfix.training.library import embed_library, list_images

    lib_dir = tmp_path / "lib"
    good = _copy("welllit", WL[:2], lib_dir)
    (lib_dir / "notes.jpg").write_text("not a photo at all\n")
    data = good[0].read_bytes()
    (lib_dir / "cut.jpg").write_bytes(data[: len(data) // 3])
    (lib_dir / "empty.png").write_bytes(b"")
    (lib_dir / "readme.txt").write_text("ignored: not an image extension")
    (lib_dir / "photo.xmp").write_text("<x/>")
    paths = list_images(lib_dir)
    assert {p.name for p in paths} == {"notes.jpg", "cut.jpg", "empty.png", *WL[:2]}
    res = embed_library(clip, paths, cache=None)
    assert sorted(p.name for p in res.paths) == sorted(WL[:2])
    reasons = {p.name: r for p, r in res.skipped}
    assert set(reasons) == {"notes.jpg", "cut.jpg", "empty.png"}
    assert "not an image" in reasons["notes.jpg"] and "empty" in reasons["empty.png"]
    assert "truncated" in reasons["cut.jpg"] or "damaged" in reasons["cut.jpg"]


def test_the_pixel_limit_applies_to_the_library(tmp_path, clip):
    from backlitfix.training.library import embed_library

    paths = _copy("welllit", WL[:2], tmp_path / "lib")  # kodim: 768 x 512 = 393 216 pixels
    lib = embed_library(clip, paths, cache=None, max_pixels=393_215)
    assert lib.paths == [] and [r for _, r in lib.skipped] == ["image has 393216 pixels, over the limit of 393215 "
                                                               "(input.max_pixels)"] * 2
    assert embed_library(clip, paths, cache=None, max_pixels=393_216).paths == paths


def test_corrupt_cache_is_moved_aside_and_rebuilt(tmp_path, clip):
    from backlitfix.training.embedding_cache import EmbeddingCache
    from backlitfix.training.library import embed_library

    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    msgs = []
    cache = EmbeddingCache(path, log=msgs.append)
    assert cache.available and msgs and "damaged" in msgs[0]
    assert list(tmp_path.glob("embeddings.sqlite.corrupt-*"))
    paths = _copy("welllit", WL[:2], tmp_path / "lib")
    assert embed_library(clip, paths, cache=cache).n_embedded == 2
    assert embed_library(clip, paths, cache=cache).n_cached == 2


def test_default_cache_lives_in_xdg_cache_home(tmp_path):
    from backlitfix.training.embedding_cache import default_cache_path

    assert default_cache_path() == tmp_path / "xdg-cache" / "backlitfix" / "embeddings.sqlite"


# --- the residual: maths against an independent numpy computation ---------------------------------------

def _n(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_residual_math_matches_numpy_on_real_photo_embeddings(tmp_path, clip):
    from backlitfix.training.library import embed_library
    from backlitfix.training.residual import compute_residual

    wl = embed_library(clip, _copy("welllit", WL, tmp_path / "wl"), cache=None).embeddings
    bl = embed_library(clip, _copy("backlit", BL, tmp_path / "bl"), cache=None).embeddings
    res = compute_residual(wl * 3.0, bl, clip.name)  # scaled rows: each is normalised first
    e_wl, e_bl = _n(wl.double().numpy()), _n(bl.double().numpy())
    v_wl, v_bl = _n(e_wl.mean(0)), _n(e_bl.mean(0))
    r = _n(v_wl - v_bl)
    assert np.allclose(res.r.numpy(), r, atol=1e-6) and np.allclose(res.v_wl.numpy(), v_wl, atol=1e-6)
    assert np.allclose(res.v_bl.numpy(), v_bl, atol=1e-6)
    assert res.thr == pytest.approx(float(v_wl @ r), abs=1e-6)
    assert (res.n_welllit, res.n_backlit, res.shift_tokens) == (len(WL), len(BL), 0)


def _numpy_shift(r, emb, n):
    """Reference 4.6 steps 2-5, written out independently."""
    s = _n(emb) @ r
    order = np.argsort(s, kind="stable")
    lo, hi = order[:n], order[-n:]
    a = _n((s[hi, None] * emb[hi]).mean(0))
    c = _n((s[lo, None] * emb[lo]).mean(0))
    d = _n(a + c)
    return _n(r - (r @ d) * d), d


def test_shifted_residual_matches_numpy(tmp_path, clip):
    from backlitfix.training.library import embed_library
    from backlitfix.training.residual import compute_residual
    from backlitfix.training.vocabulary import embed_vocabulary

    tokens, emb = embed_vocabulary(clip, subset=list(range(0, 49408, 37)))  # 1336 ids; the full one: test_explain
    wl = embed_library(clip, _copy("welllit", WL, tmp_path / "wl"), cache=None).embeddings
    bl = embed_library(clip, _copy("backlit", BL, tmp_path / "bl"), cache=None).embeddings
    plain = compute_residual(wl, bl, clip.name)
    for n in (1, 5, 15):
        res = compute_residual(wl, bl, clip.name, shift=(tokens, emb), shift_tokens=n)
        r_ref, d_ref = _numpy_shift(plain.r.double().numpy(), emb.double().numpy(), n)
        assert np.allclose(res.r.numpy(), r_ref, atol=1e-5)
        assert np.allclose(res.shift_direction.numpy(), d_ref, atol=1e-5)
        assert abs(float(res.r @ res.shift_direction)) < 1e-5  # the direction is gone
        assert res.thr == pytest.approx(float(plain.v_wl @ res.r), abs=1e-6)  # v_wl itself is not shifted
        assert res.shift_tokens == n and len(res.info["shift_top"]) == n
    assert compute_residual(wl, bl, clip.name, shift=(tokens, emb), shift_tokens=0).shift_direction is None


def test_residual_file_roundtrip_and_model_check(tmp_path, clip):
    from safetensors import safe_open

    from backlitfix.training.library import embed_library
    from backlitfix.training.residual import (
        ResidualError,
        compute_residual,
        load_residual,
        save_residual,
    )

    wl = embed_library(clip, _copy("welllit", WL[:2], tmp_path / "wl"), cache=None).embeddings
    bl = embed_library(clip, _copy("backlit", BL[:2], tmp_path / "bl"), cache=None).embeddings
    res = compute_residual(wl, bl, clip.name, info={"clip_pretrained": "random"})
    path = tmp_path / "style.safetensors"
    save_residual(res, path)
    with safe_open(str(path), framework="pt") as f:  # plain safetensors with string metadata
        assert set(f.keys()) == {"r", "v_wl", "v_bl"} and f.metadata()["model"] == clip.name
    back = load_residual(path, expect_model=clip.name)
    assert torch.equal(back.r, res.r) and back.thr == res.thr and back.date == res.date
    assert (back.n_welllit, back.n_backlit, back.model) == (2, 2, clip.name)
    with pytest.raises(ResidualError) as e:
        load_residual(path, expect_model="ViT-B-32/openai")
    assert clip.name in str(e.value) and "ViT-B-32/openai" in str(e.value)
    pickled = tmp_path / "evil.safetensors"
    torch.save({"r": res.r}, pickled)  # a pickle under a safetensors name is refused, never unpickled
    with pytest.raises(ResidualError, match="not a residual file"):
        load_residual(pickled)
    with pytest.raises(ResidualError, match="no such residual file"):
        load_residual(tmp_path / "missing.safetensors")


def test_too_few_images_and_empty_folders_are_clear_errors(tmp_path, clip):
    from backlitfix.training.residual import ResidualError, residual_from_folders

    wl = tmp_path / "wl"
    _copy("welllit", WL[:3], wl)
    bad = photo_free_folders(tmp_path, shared_path("data", "backlit", BL[0]))
    empty, notes, one = bad["empty"], bad["notes"], bad["one"]
    broken = tmp_path / "broken"
    broken.mkdir()
    _copy("backlit", BL[:1], broken)
    (broken / "bad.jpg").write_text("nope")
    cases = [(empty, "the folder is empty"), (notes, "no images"), (one, "1 readable backlit photo"),
             (broken, "1 skipped as unreadable"), (tmp_path / "nowhere", "no such folder")]
    for folder, msg in cases:
        with pytest.raises(ResidualError, match=msg) as e:
            residual_from_folders(clip, wl, folder, cache=None)
        assert str(folder) in str(e.value)


# --- backlit candidates from exposure statistics ------------------------------------------------------------

def test_selection_separates_backlit_from_welllit_photos_of_shared_data():
    from backlitfix.training.library import load_reduced
    from backlitfix.training.select_backlit import exposure_features, select_backlit

    photos = [(p, 1) for p in sorted(shared_path("data", "backlit").glob("*.jpg"))]
    photos += [(p, 0) for p in sorted(shared_path("data", "welllit").glob("*.jpg"))]
    feats = np.stack([exposure_features(np.asarray(load_reduced(p, p.read_bytes(), 448, 224))) for p, _ in photos])
    chosen = set(select_backlit(feats).tolist())
    truth = {i for i, (_, y) in enumerate(photos) if y}
    tp = len(chosen & truth)
    precision, recall = tp / len(chosen), tp / len(truth)
    assert precision >= 0.85 and recall >= 0.85, (precision, recall)


# --- the command ------------------------------------------------------------------------------------------

def _cli(*args):
    from backlitfix.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


TINY_ARGS = ["--clip-model", TINY, "--clip-pretrained", "random"]


def test_residual_command_writes_file_and_reuses_cache(tmp_path):
    from backlitfix.training.residual import load_residual

    wl, bl = tmp_path / "wl", tmp_path / "bl"
    _copy("welllit", WL, wl)
    _copy("backlit", BL, bl)
    (bl / "broken.jpg").write_text("x")
    out = tmp_path / "style.safetensors"
    r = _cli("residual", "--welllit", str(wl), "--backlit", str(bl), "-o", str(out), *TINY_ARGS, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["n_welllit"] == 4 and summary["n_backlit"] == 3 and summary["embedded"] == 7
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["broken.jpg"]
    res = load_residual(out, expect_model=f"{TINY}/random")
    assert res.thr == pytest.approx(summary["thr"]) and res.backlit_source == "folder"
    r2 = _cli("residual", "--welllit", str(wl), "--backlit", str(bl), "-o", str(out), *TINY_ARGS)
    assert r2.exit_code == 0, r2.output
    assert "embedded 0 photos, 7 from the cache, 1 skipped" in r2.stderr
    assert torch.equal(load_residual(out).r, res.r)  # same model (seeded), same photos: same residual


def test_residual_command_selects_backlit_candidates_and_reports_them(tmp_path):
    lib = tmp_path / "library"
    picked = ["ovd0312_25.jpg", "ovd0312_4.jpg", "ovd0312_51.jpg"]
    _copy("backlit", picked, lib)
    _copy("welllit", WL, lib)
    out = tmp_path / "style.safetensors"
    r = _cli("residual", "--welllit", str(lib), "-o", str(out), *TINY_ARGS, "--shift-tokens", "0")
    assert r.exit_code == 0, r.output
    assert "selected 3 backlit photos" in r.stderr
    for name in picked:
        assert name in r.stderr
    from backlitfix.training.residual import load_residual

    res = load_residual(out)
    assert res.backlit_source == "selected" and (res.n_backlit, res.n_welllit) == (3, 4)
    assert sorted(res.info["selected"]) == sorted(picked)


def test_residual_command_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("residual", "--welllit", str(empty), "-o", str(tmp_path / "r.safetensors"), *TINY_ARGS)
    assert r.exit_code == 2 and r.stderr.startswith("backlitfix: error:") and "empty" in r.stderr
    wl = tmp_path / "wl"
    _copy("welllit", WL[:2], wl)
    photo = tmp_path / "keep.jpg"
    shutil.copy(wl / WL[0], photo)
    before = photo.read_bytes()
    r = _cli("residual", "--welllit", str(wl), "--backlit", str(wl), "-o", str(photo), *TINY_ARGS)
    assert r.exit_code == 2 and "not overwritten" in r.stderr and photo.read_bytes() == before
    r = _cli("residual", "--welllit", str(wl), "-o", str(tmp_path / "r.safetensors"), "--clip-model",
             "no-such-clip", "--clip-pretrained", "random")
    assert r.exit_code == 2 and "unknown CLIP architecture" in r.stderr
    r = _cli("residual", "--welllit", str(wl), "-o", str(tmp_path / "r.safetensors"), *TINY_ARGS,
             "--shift-tokens", "-1")
    assert r.exit_code == 2


def test_residual_from_another_model_is_refused_by_name(tmp_path):
    wl, bl = tmp_path / "wl", tmp_path / "bl"
    _copy("welllit", WL[:2], wl)
    _copy("backlit", BL[:2], bl)
    out = tmp_path / "style.safetensors"
    assert _cli("residual", "--welllit", str(wl), "--backlit", str(bl), "-o", str(out), *TINY_ARGS).exit_code == 0
    r = _cli("explain", str(out), "--clip-model", TINY_RN, "--clip-pretrained", "random")
    assert r.exit_code == 2
    assert f"{TINY}/random" in r.stderr and f"{TINY_RN}/random" in r.stderr
