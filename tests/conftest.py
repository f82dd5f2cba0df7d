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
