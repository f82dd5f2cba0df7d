"""Shared test helpers: where ../shared is, and skipping (or failing, in CI) when it is absent; the model and
photos most tests run; the program in process and in a real process."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    return Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")


def shared_path(*parts: str) -> Path:
    """A file or folder in ../shared (or $BACKLITFIX_SHARED). Skips the test when it is missing,
    unless BACKLITFIX_REQUIRE_SHARED=1 (as in CI), where a missing file is a failure."""
    p = shared_root().joinpath(*parts)
    if not p.exists():
        msg = f"needs ../shared: {p} is missing"
        if os.environ.get("BACKLITFIX_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " (BACKLITFIX_REQUIRE_SHARED=1)")
        pytest.skip(msg)
    return p


@pytest.fixture
def shared():
    return shared_path


def model() -> str:
    """The official RAVE checkpoint most tests correct with."""
    return str(shared_path("models", "official", "rave_unpaired.pth"))


def photo(name: str) -> Path:
    """A photo of ../shared's backlit set."""
    return shared_path("data", "backlit", name)


def cli(*args: str, env: dict | None = None):
    """`backlitfix ARGS` in process (click's runner), away from the user's config file."""
    from click.testing import CliRunner

    from backlitfix.cli import main

    return CliRunner().invoke(main, list(args), env={"XDG_CONFIG_HOME": "/nonexistent", **(env or {})},
                              catch_exceptions=False)


# The program in a real process, run by the Python that runs the tests (no console script needed).
CLI = [sys.executable, "-c", "import sys; from backlitfix.cli import main; sys.exit(main())"]


def shrunk_sets(root: Path, n: int) -> dict[str, Path]:
    """``n`` real backlit and ``n`` well-lit photos from ../shared, shrunk to 96 x 64 so that a training step
    takes a fraction of a second: {"backlit": folder, "welllit": folder} under ``root``."""
    from PIL import Image

    out = {}
    for name, pattern in (("backlit", "ovd0312_*.jpg"), ("welllit", "kodim0*.jpg")):
        d = root / name
        d.mkdir()
        for src in sorted(shared_path("data", name).glob(pattern))[:n]:
            with Image.open(src) as im:
                im.convert("RGB").resize((96, 64)).save(d / src.name, quality=92)
        out[name] = d
    return out


def photo_free_folders(root: Path, one_photo: Path) -> dict[str, Path]:
    """Folders a command that needs photos must refuse with one clear line, under ``root``: "empty", "notes"
    (a text file, no photo) and "one" (a copy of ``one_photo`` alone)."""
    import shutil

    out = {name: root / name for name in ("empty", "notes", "one")}
    for d in out.values():
        d.mkdir()
    (out["notes"] / "readme.txt").write_text("no photos here")
    shutil.copy(one_photo, out["one"])
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny models: threads only contend on a busy CPU (tests/training/test_training_residual.py measured 20x)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_wheel(tmp_path: Path) -> Path:
    """A wheel of the project built from a copy of its sources (no __pycache__) under ``tmp_path``."""
    import shutil
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md", "backlitfix", "plugins", "training"):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(REPO / item, src / item)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "whl"), str(src)], check=True, capture_output=True, timeout=300)
    return next((tmp_path / "whl").glob("backlitfix-*.whl"))
