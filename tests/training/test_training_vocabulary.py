"""`backlitfix explain` and the vocabulary behind it (reference 4.6 step 1), with the tiny random CLIP (real
tokenizer, all 49,408 tokens; real weights cannot be downloaded here)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from backlitfix.training.clip import TINY, load_clip
from conftest import shared_path

SEED = 1143  # config training.seed, as the CLI seeds before loading: the same random model here and there


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One cache folder for the module, so the full vocabulary is embedded once and reused by the CLI."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model's matrices are too small for threads; on a busy CPU they cost 20x
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        mp.setenv("XDG_CONFIG_HOME", str(cache / "config"))
        yield cache
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(env):
    torch.manual_seed(SEED)
    return load_clip(TINY, "random")


@pytest.fixture(scope="module")
def vocab(clip):
    import time

    from backlitfix.training.vocabulary import vocabulary

    t0 = time.perf_counter()
    tokens, emb = vocabulary(clip)
    return tokens, emb, time.perf_counter() - t0


def test_short_context_encoding_equals_encode_text(clip):
    from backlitfix.training.vocabulary import encode_short

    texts = ["dark", "silhouette ", "sunset", "", "<end_of_text>", "wildlifewednesday", "!", "ab cd ef", "é€"]
    tokens = clip.tokenizer(texts)
    with torch.no_grad():
        full = clip.model.encode_text(tokens)
        short = encode_short(clip.model, tokens)
    assert torch.allclose(short, full, atol=1e-5)


def test_full_vocabulary_is_built_as_the_reference_does_and_cached(clip, vocab, env):
    from backlitfix.training.vocabulary import vocabulary

    tokens, emb, seconds = vocab
    tok = clip.tokenizer
    decoded = [tok.decode([i]) for i in range(49408)]
    assert tokens == list(dict.fromkeys(decoded))  # one key per decoded string, in id order
    assert emb.shape == (len(tokens), clip.dim) and torch.isfinite(emb).all()
    index = {t: i for i, t in enumerate(tokens)}
    assert torch.equal(emb[index["dark"]], emb[index["dark "]])  # word-piece and word re-tokenize alike
    sample = ["dark ", "silhouette ", "sunset ", "beijing ", "!", "<start_of_text>"]
    with torch.no_grad():  # raw, unnormalised EOT features of the normal tokenizer's output
        ref = clip.model.encode_text(tok(sample))
    assert torch.allclose(emb[[index[s] for s in sample]], ref, atol=1e-5)
    assert not torch.allclose(emb.norm(dim=1), torch.ones(len(tokens)))
    files = list((env / "backlitfix" / "vocab").glob("*.safetensors"))
    assert len(files) == 1 and clip.name.split("/")[0] in files[0].name
    tokens2, emb2 = vocabulary(clip)  # from the cache this time
    assert tokens2 == tokens and torch.equal(emb2, emb)
    print(f"full vocabulary ({len(tokens)} tokens) through the tiny text tower: {seconds:.1f} s")


def test_rank_orders_by_cosine_and_shows_each_word_once(clip, vocab):
    from backlitfix.training.vocabulary import rank

    tokens, emb, _ = vocab
    r = torch.nn.functional.normalize(torch.randn(clip.dim, generator=torch.Generator().manual_seed(3)), dim=0)
    out = rank(r, tokens, emb, 10)
    cos = (emb.double() / emb.double().norm(dim=1, keepdim=True)) @ r.double()
    top = [c for _, c in out["top"]]
    bottom = [c for _, c in out["bottom"]]
    assert top == sorted(top, reverse=True) and bottom == sorted(bottom)
    assert top[0] == pytest.approx(float(cos.max()), abs=1e-6)
    assert bottom[0] == pytest.approx(float(cos.min()), abs=1e-6)
    shown = [t.strip() for t, _ in out["top"]]
    assert len(shown) == len(set(shown)) == 10


def _residual(tmp_path, shift: int):
    from backlitfix.cli import main

    wl, bl = tmp_path / "wl", tmp_path / "bl"
    for folder, names, dest in (("welllit", ["kodim01.jpg", "kodim05.jpg", "kodim08.jpg"], wl),
                                ("backlit", ["ovd0312_25.jpg", "ovd0312_28.jpg"], bl)):
        dest.mkdir()
        for n in names:
            shutil.copy(shared_path("data", folder, n), dest / n)
    out = tmp_path / "style.safetensors"
    r = CliRunner().invoke(main, ["residual", "--welllit", str(wl), "--backlit", str(bl), "-o", str(out),
                                  "--clip-model", TINY, "--clip-pretrained", "random", "--shift-tokens", str(shift)])
    assert r.exit_code == 0, r.output
    return out


def test_explain_json_is_sorted_and_consistent_with_a_recomputation(tmp_path, clip, vocab):
    from backlitfix.cli import main
    from backlitfix.training.residual import load_residual

    out = _residual(tmp_path, shift=15)
    r = CliRunner().invoke(main, ["explain", str(out), "--top", "7", "--json"])  # model from the residual
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    tokens, emb, _ = vocab
    res = load_residual(out)
    assert data["model"] == f"{TINY}/random" and data["shift_tokens"] == 15 and len(res.info["shift_top"]) == 15
    assert data["vocabulary_size"] == len(tokens) and len(data["top"]) == len(data["bottom"]) == 7
    index = {t: i for i, t in enumerate(tokens)}
    e = emb.double().numpy()
    cos = e @ res.r.double().numpy() / np.linalg.norm(e, axis=1)
    for side in ("top", "bottom"):
        got = [d["cosine"] for d in data[side]]
        assert got == sorted(got, reverse=side == "top")
        for d in data[side]:
            assert d["cosine"] == pytest.approx(cos[index[d["token"]]], abs=1e-5)
    assert data["top"][0]["cosine"] == pytest.approx(cos.max(), abs=1e-5)
    assert data["bottom"][0]["cosine"] == pytest.approx(cos.min(), abs=1e-5)
    # the shift removed the direction of the extreme tokens of the unshifted residual
    assert abs(float(res.r @ res.shift_direction)) < 1e-5


def test_explain_table(tmp_path, clip, vocab):
    from backlitfix.cli import main

    out = _residual(tmp_path, shift=0)
    r = CliRunner().invoke(main, ["explain", str(out), "--top", "5", "--clip-model", TINY,
                                  "--clip-pretrained", "random"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1].startswith(f"{len(vocab[0])} vocabulary tokens") and "towards" in lines[2]
    assert f"CLIP {TINY}/random, 3 well-lit / 2 backlit (folder)" in lines[0]
    rows = [ln.split() for ln in lines[3:]]  # header, count, column titles, then the rows
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4, 5]
    left = [float(row[2]) for row in rows if len(row) == 5]
    right = [float(row[4]) for row in rows if len(row) == 5]
    assert left == sorted(left, reverse=True) and right == sorted(right)
    assert min(left) > max(right)


def test_explain_bad_files(tmp_path, env):
    from backlitfix.cli import main

    photo = shared_path("data", "welllit", "kodim01.jpg")
    r = CliRunner().invoke(main, ["explain", str(photo)])
    assert r.exit_code == 2 and "not a residual file" in r.stderr and str(photo) in r.stderr
    r = CliRunner().invoke(main, ["explain", str(tmp_path / "none.safetensors")])
    assert r.exit_code == 2 and "no such residual file" in r.stderr
