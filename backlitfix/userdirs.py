"""The per-user folders backlitfix keeps things in, from platformdirs (XDG on Linux and the BSDs, the
Apple and Windows conventions elsewhere). Nothing here creates a folder.

* config: ``~/.config/backlitfix``; macOS ``~/Library/Application Support/backlitfix``;
  Windows ``%APPDATA%\\backlitfix`` (roaming);
* data (trained models): ``~/.local/share/backlitfix``; macOS ``~/Library/Application Support/backlitfix``;
  Windows ``%LOCALAPPDATA%\\backlitfix``;
* state (watch journals): ``~/.local/state/backlitfix``; macOS ``~/Library/Application Support/backlitfix/state``;
  Windows ``%LOCALAPPDATA%\\backlitfix\\state``;
* cache (CLIP embeddings, vocabularies): ``~/.cache/backlitfix``; macOS ``~/Library/Caches/backlitfix``;
  Windows ``%LOCALAPPDATA%\\backlitfix``.

On Linux an ``XDG_*_HOME`` variable moves its folder when it is an absolute path. These are the
locations the hand-written functions used before platformdirs, kept so nobody's models, config or
journals move. One change: on macOS, ``XDG_DATA_HOME`` and ``XDG_CACHE_HOME``, when set, now move the
data and cache folders too (platformdirs honours them there; before, only the config and state
folders followed their XDG variables on macOS).

``platform`` (a ``sys.platform`` value) picks another system's rules, for tests; platformdirs reads the
environment (``HOME``, ``XDG_*``, ``APPDATA``, ``LOCALAPPDATA``) itself.
"""
from __future__ import annotations

import sys
from pathlib import Path

import platformdirs

from .constants import APP_NAME

__all__ = ["cache_dir", "config_dir", "data_dir", "state_dir"]


def _dirs(platform: str | None, *, roaming: bool = False) -> platformdirs.PlatformDirsABC:
    if platform is None or platform == sys.platform:
        cls = platformdirs.PlatformDirs
    elif platform.startswith("win"):
        from platformdirs.windows import Windows as cls
    elif platform == "darwin":
        from platformdirs.macos import MacOS as cls
    else:
        from platformdirs.unix import Unix as cls
    # appauthor=False: no vendor folder on Windows; opinion=False: no extra 'Cache' folder there
    return cls(APP_NAME, appauthor=False, roaming=roaming, opinion=False)


def config_dir(platform: str | None = None) -> Path:
    """The folder of the per-user ``config.yaml`` (roaming on Windows: settings follow the user)."""
    return Path(_dirs(platform, roaming=True).user_config_dir)


def data_dir(platform: str | None = None) -> Path:
    """Per-user data: trained models live in its ``models`` folder."""
    return Path(_dirs(platform).user_data_dir)


def state_dir(platform: str | None = None) -> Path:
    """Per-user state (watch journals). Where the system has no state folder of its own (macOS,
    Windows: platformdirs gives the data folder), a ``state`` folder inside it, as before."""
    dirs = _dirs(platform)
    state = Path(dirs.user_state_dir)
    return state / "state" if state == Path(dirs.user_data_dir) else state


def cache_dir(platform: str | None = None) -> Path:
    """Per-user caches that can be deleted at any time (CLIP embeddings, vocabularies)."""
    return Path(_dirs(platform).user_cache_dir)
