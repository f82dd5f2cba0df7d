"""Shared test helpers: where ../shared is, and skipping (or failing, in CI) when it is absent."""
from __future__ import annotations

import os
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
