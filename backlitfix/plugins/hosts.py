"""Where each host's plugin goes on Linux, macOS and Windows, and installing it there.

The plugin files live in the top-level ``plugins/`` folder of the source tree; a wheel carries them
as data files under ``share/backlitfix/plugins`` (see pyproject.toml), found here through the
installed distribution's file list.
"""
from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

from ..io.atomic import atomic_write_bytes
from ..photo import PhotoError

HOSTS = {
    "darktable": "darktable Lua script: lighttable action 'fix backlight' (the main plugin)",
    "gimp": "GIMP 3 Python plug-in: Filters > Light and Shadow > Fix Backlight",
    "lightroom": "Lightroom Classic: External Editor / post-export action (edits the file in place)",
    "digikam": "digiKam Batch Queue Manager 'User Shell Script' (text to paste)",
    "art": "ART user command (file browser context menu)",
    "rawtherapee": "RawTherapee external editor command",
}
DIGIKAM_TOKEN = "@TOKEN@"  # replaced by a random delimiter at install time


class InstallError(Exception):
    pass


@dataclass(frozen=True)
class Placement:
    source: str  # relative to the plugins folder, '/'-separated
    dest: PurePath
    executable: bool = False


@dataclass
class Plan:
    host: str
    placements: list[Placement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user does next, one line each


def is_windows(platform: str) -> bool:
    return platform.startswith("win")


def _dirs(platform: str, env: Mapping[str, str]) -> dict[str, PurePath]:
    """The per-user base folders the hosts use, as the hosts compute them."""
    win = is_windows(platform)
    P = PureWindowsPath if win else PurePosixPath
    home = P(env.get("USERPROFILE" if win else "HOME") or env.get("HOME") or Path.home())
    if win:
        return {"appdata": P(env.get("APPDATA") or home / "AppData" / "Roaming"),
                "localappdata": P(env.get("LOCALAPPDATA") or home / "AppData" / "Local"), "home": home}
    xdg_config, xdg_data = env.get("XDG_CONFIG_HOME", ""), env.get("XDG_DATA_HOME", "")
    support = home / "Library" / "Application Support"
    mac = platform == "darwin"
    return {
        "home": home,
        "support": support,
        # GLib (darktable, GIMP on Linux, ART) honours $XDG_CONFIG_HOME when absolute, as the spec says
        "config": P(xdg_config) if xdg_config.startswith("/") else home / ".config",
        "data": support if mac else (P(xdg_data) if xdg_data.startswith("/") else home / ".local" / "share"),
    }


def _which(name: str) -> str:
    return shutil.which(name) or name


def plan_install(host: str, *, platform: str | None = None, env: Mapping[str, str] | None = None) -> Plan:
    """What installing ``host``'s plugin means on ``platform`` (sys.platform values) for ``env``."""
    platform = sys.platform if platform is None else platform
    env = os.environ if env is None else env
    if host not in HOSTS:
        raise InstallError(f"unknown host {host!r}; choose one of {', '.join(HOSTS)}")
    d = _dirs(platform, env)
    win, mac = is_windows(platform), platform == "darwin"
    own = (d["localappdata"] if win else d["data"]) / "backlitfix" / "plugins" / host  # our own data folder
    p = Plan(host)
    add = p.placements.append

    if host == "darktable":
        lua = (d["localappdata"] if win else d["config"]) / "darktable" / "lua"
        add(Placement("darktable/backlitfix.lua", lua / "contrib" / "backlitfix.lua"))
        p.notes += [("enable it in script_manager (contrib/backlitfix), or add this line to "
                     f"{lua.parent / 'luarc'}:  require \"contrib/backlitfix\""),
                    ("then: lighttable > actions on selection > fix backlight; settings in preferences > lua options "
                     f"(executable: {_which('backlitfix')})")]
    elif host == "gimp":
        base = d["appdata"] if win else (d["support"] if mac else d["config"])
        plug_ins = base / "GIMP" / "3.0" / "plug-ins"
        add(Placement("gimp/backlitfix/backlitfix.py", plug_ins / "backlitfix" / "backlitfix.py", executable=True))
        p.notes += ["restart GIMP; the filter is Filters > Light and Shadow > Fix Backlight (backlitfix)",
                    f"the dialog's 'backlitfix program' field takes this path: {_which('backlitfix')}"]
    elif host == "lightroom":
        exe = _which("backlitfix-lightroom")
        if win:
            actions = d["appdata"] / "Adobe" / "Lightroom" / "Export Actions"
            p.notes += [f"External Editor: Preferences > External Editing > Additional External Editor > Choose: {exe}",
                        ("  File Format TIFF, Color Space ProPhoto RGB or AdobeRGB, Bit Depth 16 bits/component, "
                         "then 'Save Current Settings as New Preset'"),
                        f"post-export action: put a shortcut to {exe} in {actions}"]
        else:
            add(Placement("lightroom/backlitfix-lightroom.sh", own / "backlitfix-lightroom.sh", executable=True))
            add(Placement("lightroom/backlitfix-lightroom.applescript", own / "backlitfix-lightroom.applescript"))
            actions = d["support"] / "Adobe" / "Lightroom" / "Export Actions"
            app = actions / "backlitfix.app"
            p.notes += ["macOS: make the droplet app Lightroom launches (External Editor and Export Actions):",
                        "  " + shlex.join(["osacompile", "-o", str(app),
                                           str(own / "backlitfix-lightroom.applescript")]),
                        "  External Editor: choose that app; TIFF, ProPhoto RGB or AdobeRGB, 16 bits/component",
                        "Lightroom Classic has no Linux version; on Linux the script serves other tools"
                        if not mac else "  Export dialog > Post-Processing > After Export: backlitfix"]
    elif host == "digikam":
        src = "digikam/backlitfix-bqm-windows.txt" if win else "digikam/backlitfix-bqm.sh"
        add(Placement(src, own / src.split("/")[1]))
        p.notes += [("digiKam keeps BQM scripts in its queue settings: paste the text of that file into "
                     "Batch Queue Manager > Base Tools > Custom Tools > User Shell Script"),
                    "output type: the same as the input, JPEG, PNG or TIFF; mind digiKam's 60 s limit per image"]
    elif host == "art":
        base = d["localappdata"] if win else (d["support"] if mac else d["config"])
        cmds = base / "ART" / "usercommands"
        if win:
            add(Placement("art/backlitfix-windows.txt", cmds / "backlitfix.txt"))
        else:
            add(Placement("art/backlitfix.txt", cmds / "backlitfix.txt"))
            add(Placement("common/backlitfix-beside.sh", cmds / "backlitfix-beside.sh", executable=True))
        p.notes += ["restart ART; the command is in the file browser's context menu: Fix backlight (backlitfix)"]
    elif host == "rawtherapee":
        if win:
            cmd = subprocess.list2cmdline([_which("backlitfix"), "run", "--suffix", "_backlitfix", "--"])
        else:
            dest = own / "backlitfix-beside.sh"
            add(Placement("common/backlitfix-beside.sh", dest, executable=True))
            cmd = shlex.quote(str(dest))
        p.notes += ["Preferences > General (5.9) or External Editor (5.10+) > custom command line:",
                    f"  {cmd}",
                    "set the editor output folder to the image's folder: "
                    "results are saved beside it as *_backlitfix.tif"]
    return p


# ------------------------------------------------------------------------------------------------


def plugins_root() -> Path:
    """The plugins folder: the source tree's (checkout, editable install), else the wheel's data files."""
    here = Path(__file__).resolve().parents[2] / "plugins"
    if (here / "darktable" / "backlitfix.lua").is_file():
        return here
    from importlib.metadata import PackageNotFoundError, distribution

    marker = "share/backlitfix/plugins/darktable/backlitfix.lua"
    try:
        dist = distribution("backlitfix")
        for f in dist.files or ():
            if f.as_posix().endswith(marker):
                return Path(dist.locate_file(f)).resolve().parents[1]
    except PackageNotFoundError:
        pass
    raise InstallError("the plugin files are missing from this installation (reinstall backlitfix)")


def _content(placement: Placement, root: Path) -> bytes:
    data = (root / placement.source).read_bytes()
    if placement.source.startswith("digikam/"):
        # A fresh here-document delimiter per installation: a file name (digiKam pastes names in
        # unescaped) can end the here-document early only by containing this secret word.
        data = data.replace(DIGIKAM_TOKEN.encode(), secrets.token_hex(8).encode())
    return data


def install(host: str, *, platform: str | None = None, env: Mapping[str, str] | None = None,
            dry_run: bool = False, force: bool = False) -> list[Path]:
    """Copy ``host``'s plugin into place (atomically); returns the files written (or that would be).

    An existing file with other content is kept unless ``force``; an identical one is left alone.
    """
    platform = sys.platform if platform is None else platform
    plan = plan_install(host, platform=platform, env=env)
    native = is_windows(platform) == (os.name == "nt")
    if not native and not dry_run:
        raise InstallError(f"cannot install {platform} files on this system (use --dry-run to see where they go)")
    root = plugins_root()
    todo = []
    for pl in plan.placements:  # check everything before writing anything
        dest = Path(pl.dest)
        data = _content(pl, root)
        if dest.exists() and not force:
            if pl.source.startswith("digikam/"):
                continue  # its delimiter may already be pasted into digiKam: keep it
            if dest.read_bytes() != data:
                raise InstallError(f"{dest}: exists and differs from backlitfix's copy; use --force to replace it")
        todo.append((pl, dest, data))
    if not dry_run:
        for pl, dest, data in todo:
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dest, data)
                if pl.executable and os.name != "nt":
                    dest.chmod(dest.stat().st_mode | 0o111)
            except PhotoError as e:
                raise InstallError(f"{dest}: {e.reason}") from None
            except OSError as e:
                raise InstallError(f"{dest}: {e.strerror or e}") from None
    return [Path(pl.dest) for pl in plan.placements]
