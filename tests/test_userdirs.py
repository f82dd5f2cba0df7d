"""The per-user folders: platformdirs gives the locations backlitfix used before it, on every system."""
from pathlib import Path

import platformdirs.windows
import pytest

from backlitfix.userdirs import cache_dir, config_dir, data_dir, state_dir

XDG = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def home(monkeypatch):
    for var in XDG:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", "/h")
    # the Windows shell API cannot run here: platformdirs' own fallback reads the environment instead
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", platformdirs.windows.get_win_folder_from_env_vars)
    monkeypatch.setenv("APPDATA", "C:/R")
    monkeypatch.setenv("LOCALAPPDATA", "C:/L")
    return monkeypatch


@pytest.mark.parametrize("platform, config, data, state, cache", [
    ("linux", "/h/.config/backlitfix", "/h/.local/share/backlitfix", "/h/.local/state/backlitfix",
     "/h/.cache/backlitfix"),
    ("darwin", "/h/Library/Application Support/backlitfix", "/h/Library/Application Support/backlitfix",
     "/h/Library/Application Support/backlitfix/state", "/h/Library/Caches/backlitfix"),
    ("win32", "C:/R/backlitfix", "C:/L/backlitfix", "C:/L/backlitfix/state", "C:/L/backlitfix"),
])
def test_locations_are_those_users_already_have(home, platform, config, data, state, cache):
    assert config_dir(platform) == Path(config)
    assert data_dir(platform) == Path(data)
    assert state_dir(platform) == Path(state)
    assert cache_dir(platform) == Path(cache)


def test_absolute_xdg_variables_move_the_folders_relative_ones_do_not(home):
    for var, where in zip(XDG, ("/c", "/d", "/s", "/k")):
        home.setenv(var, where)
    assert (config_dir("linux"), data_dir("linux"), state_dir("linux"), cache_dir("linux")) == tuple(
        Path(p) / "backlitfix" for p in ("/c", "/d", "/s", "/k"))
    assert state_dir("darwin") == Path("/s/backlitfix")  # as before platformdirs
    for var in XDG:
        home.setenv(var, "relative")
    assert config_dir("linux") == Path("/h/.config/backlitfix")
    assert state_dir("linux") == Path("/h/.local/state/backlitfix")


def test_callers_use_these_folders(home, tmp_path):
    from backlitfix.config import user_config_path
    from backlitfix.model.registry import user_model_dir
    from backlitfix.watch.journal import journal_path

    home.setenv("XDG_STATE_HOME", str(tmp_path / "s"))
    home.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    home.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    assert user_config_path() == tmp_path / "c" / "backlitfix" / "config.yaml"
    assert user_model_dir() == tmp_path / "d" / "backlitfix" / "models"
    assert journal_path("state", tmp_path / "out").parent == tmp_path / "s" / "backlitfix"
