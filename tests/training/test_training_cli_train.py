"""Issue 17, the photographer's journey through `backlitfix train`: honest --help, --preset, --shift-tokens, a
residual file's CLIP model and backlit photos reused, the residual named in the model, the RN101 identity."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("open_clip", reason="needs the train extra (open_clip_torch)")

from backlitfix.model.checkpoint import load_model
from backlitfix.training.clip import TINY
from conftest import shared_path, shrunk_sets

TINY_ARGS = ["--clip-model", TINY, "--clip-pretrained", "random"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return shrunk_sets(tmp_path_factory.mktemp("sets"), 4)


def _cli(tmp_path, *args):
    from backlitfix.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False,
                              env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
                                   "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})


def test_help_shows_defaults_and_the_cost():
    r = CliRunner().invoke(__import__("backlitfix.cli", fromlist=["main"]).main, ["train", "--help"],
                           terminal_width=400)
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "short fine-tune" not in text
    assert "[default: 2000 (config training.steps)]" in text
    assert "[default: 512 (config training.image_size)]" in text
    assert "--preset" in text and "--shift-tokens" in text
    assert "hours" in text and "minutes on a GPU" in text


def test_preset_cpu_and_flags_that_win(folders, tmp_path):
    out = tmp_path / "cpu.safetensors"
    r = _cli(tmp_path, "train", "--method", "rave", *TINY_ARGS, "--backlit", str(folders["backlit"]), "--welllit",
             str(folders["welllit"]), "--preset", "cpu", "--steps", "1", "--batch-size", "2", "--identity",
             "guidance", "-o", str(out))
    assert r.exit_code == 0, r.output
    extra = load_model(out)[1].extra
    assert (extra["preset"], extra["image_size"], extra["batch_size"], extra["steps"]) == ("cpu", 256, 2, 1)
    assert "estimate:" not in r.stderr  # one step: nothing measured yet, nothing guessed


def test_shift_tokens_reaches_the_residual(folders, tmp_path, monkeypatch):
    import backlitfix.training.vocabulary as vocab

    real = vocab.vocabulary
    monkeypatch.setattr(vocab, "vocabulary", lambda clip, cache_dir=None, log=None: real(
        clip, cache_dir, log=log, subset=list(range(0, 49408, 37))))  # 1336 tokens: seconds, not minutes
    out = tmp_path / "shifted.safetensors"
    r = _cli(tmp_path, "train", "--method", "rave", *TINY_ARGS, "--backlit", str(folders["backlit"]), "--welllit",
             str(folders["welllit"]), "--shift-tokens", "3", "--steps", "1", "--image-size", "48", "--batch-size",
             "2", "--identity", "guidance", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert load_model(out)[1].extra["shift_tokens"] == 3
    bad = _cli(tmp_path, "train", "--method", "clip-lit", *TINY_ARGS, "--backlit", str(folders["backlit"]),
               "--welllit", str(folders["welllit"]), "--shift-tokens", "3", "-o", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "RAVE's bias correction" in bad.stderr


def _residual_then_train(tmp_path, name: str, steps: int, *residual_args: str):
    """`residual` with ``residual_args``, then `train --residual` with no --backlit, --welllit or CLIP flags
    (the residual file has them all); both must succeed. (residual file, model file, model info, train's result)."""
    res = tmp_path / f"{name}.residual.safetensors"
    r = _cli(tmp_path, "residual", *residual_args, "-o", str(res), *TINY_ARGS)
    assert r.exit_code == 0, r.output
    out = tmp_path / f"{name}.safetensors"
    r = _cli(tmp_path, "train", "--method", "rave", "--residual", str(res), "--steps", str(steps), "--image-size",
             "48", "--batch-size", "2", "-o", str(out))
    assert r.exit_code == 0, r.output
    return res, out, load_model(out)[1], r


def test_train_reuses_the_residual_files_choices(folders, tmp_path):
    res, out, info, r = _residual_then_train(tmp_path, "style", 2, "--welllit", str(folders["welllit"]),
                                             "--backlit", str(folders["backlit"]))
    assert info.guidance == f"{TINY}/random"
    assert info.extra["residual_file"] == str(res.resolve())
    assert info.extra["residual_model"] == f"{TINY}/random"
    assert f"backlit from {folders['backlit']}" in info.training_data
    assert info.extra["identity"] == "RN101" or "identity loss from the guidance tower" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["model"] == str(out)


def test_backlit_is_still_required_without_a_residual(folders, tmp_path):
    r = _cli(tmp_path, "train", "--method", "rave", *TINY_ARGS, "--welllit", str(folders["welllit"]),
             "-o", str(tmp_path / "m"))
    assert r.exit_code == 2 and "--backlit is required" in r.stderr and r.stderr.count("\n") == 1


def test_rn101_identity_with_the_tiny_clip_uses_the_tiny_resnet(folders, tmp_path):
    out = tmp_path / "rn.safetensors"
    r = _cli(tmp_path, "train", "--method", "rave", *TINY_ARGS, "--backlit", str(folders["backlit"]), "--welllit",
             str(folders["welllit"]), "--identity", "RN101", "--steps", "1", "--image-size", "48", "--batch-size",
             "2", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert load_model(out)[1].extra["identity"] == "RN101"


def test_sheet_shows_the_starting_model_on_photos_kept_out_of_training(tmp_path):
    import numpy as np

    backlit = tmp_path / "eight"
    backlit.mkdir()
    for src in sorted(shared_path("data", "backlit").glob("ovd0312_*.jpg"))[:8]:
        with Image.open(src) as im:
            im.convert("RGB").resize((96, 64)).save(backlit / src.name, quality=92)
    welllit = tmp_path / "wl"
    welllit.mkdir()
    for src in sorted(shared_path("data", "welllit").glob("kodim0*.jpg"))[:3]:
        with Image.open(src) as im:
            im.convert("RGB").resize((96, 64)).save(welllit / src.name, quality=92)
    out = tmp_path / "sheet.safetensors"
    r = _cli(tmp_path, "train", "--method", "rave", *TINY_ARGS, "--backlit", str(backlit), "--welllit", str(welllit),
             "--steps", "1", "--image-size", "48", "--batch-size", "2", "--identity", "guidance", "-o", str(out))
    assert r.exit_code == 0, r.output
    info = load_model(out)[1]
    kept = info.extra["held_out"]
    assert len(kept) == 1 and info.training_data.startswith("7 backlit")  # 1 in 8 kept out of training
    assert "keeping 1 of 8 backlit photos out of training" in r.stderr
    with Image.open(tmp_path / "sheet.sheet.jpg") as im:
        sheet = np.asarray(im.convert("RGB")).astype(float)
    assert sheet.shape[1] == 3 * (320 + 8) + 8  # before | starting model | trained
    cols = [sheet[40:200, 8 + c * 328:8 + c * 328 + 320] for c in range(3)]
    assert abs(cols[1].mean() - cols[0].mean()) > 1  # the starting model does change the photo


def test_train_takes_the_photos_a_residual_picked_from_the_library(tmp_path):
    import shutil

    lib = tmp_path / "library"
    lib.mkdir()
    picked = ["ovd0312_25.jpg", "ovd0312_4.jpg", "ovd0312_51.jpg"]  # as in test_residual's selection test
    for folder, names in (("backlit", picked), ("welllit", ["kodim01.jpg", "kodim03.jpg", "kodim07.jpg",
                                                             "kodim23.jpg"])):
        for n in names:
            shutil.copy(shared_path("data", folder, n), lib / n)
    res, out, info, _ = _residual_then_train(tmp_path, "picked", 1, "--welllit", str(lib))
    assert info.training_data.startswith(f"3 backlit from {lib}")
    assert info.extra["residual_backlit_source"] == "selected"
    (lib / picked[0]).unlink()  # a photo the residual picked is gone: one clear line, not a traceback
    r = _cli(tmp_path, "train", "--method", "rave", "--residual", str(res), "--steps", "1", "-o", str(out))
    assert r.exit_code == 2 and "are not all there" in r.stderr and picked[0] in r.stderr


def test_missing_rn101_weights_say_how_to_train_without_them(folders, tmp_path, monkeypatch):
    """The guidance CLIP is there (a local file), RN101 is not cached and the hub is off: one line naming both
    ways out, within seconds."""
    import open_clip as oc
    from safetensors.torch import save_file

    from backlitfix.training.clip import _open_clip

    _open_clip()
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in oc.create_model(TINY, pretrained=None).state_dict().items()},
              str(weights))
    monkeypatch.setattr("backlitfix.training.cli_train.identity_model", lambda m, p: ("RN101", p))  # as for a real CLIP
    r = _cli(tmp_path, "train", "--method", "rave", "--clip-model", TINY, "--clip-pretrained", str(weights),
             "--backlit", str(folders["backlit"]), "--welllit", str(folders["welllit"]), "--identity", "RN101",
             "-o", str(tmp_path / "m"))
    assert r.exit_code == 2
    assert "RN101/openai are not cached" in r.stderr and "--identity guidance" in r.stderr
    assert r.stderr.count("\n") == 1
