"""`backlitfix plugins`: install locations on three systems, real installs into a temporary HOME,
the wheel carrying the plugin files, and every piece of shell glue run the way its host runs it
(Lightroom, digiKam, ART, RawTherapee), with hostile file names, real photos and the real CLI."""
from __future__ import annotations

import configparser
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from backlitfix.plugins import HOSTS, InstallError, install, plan_install, plugins_root
from backlitfix.plugins.inplace import output_format, parse_bqm_paths
from conftest import REPO, build_wheel, model, photo

SMALL = ["ovd0312_4.jpg", "ovd0312_21.jpg"]  # 0.1 MP each
# Names a shell would act on; each must reach backlitfix intact
HOSTILE = [
    "$(touch PWNED).jpg",
    "-x a b 'c' \"d\" `touch PWNED2`; e & | ü✓.jpg",
    "line one\nline two.jpg",
]


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def python_cmd(code_or_module: str) -> str:
    """A sh line running this interpreter on this checkout (the tests must not depend on PATH)."""
    return f'PYTHONPATH={shlex.quote(str(REPO))} exec {shlex.quote(sys.executable)} {code_or_module} "$@"\n'


def wrappers(folder: Path) -> tuple[Path, Path]:
    """`backlitfix` and `backlitfix-lightroom` (the console scripts pip makes) in a hostile folder."""
    bf = executable(folder / "backlitfix", python_cmd("-m backlitfix.cli"))
    lr = executable(folder / "backlitfix-lightroom",
                    python_cmd("-c 'from backlitfix.plugins.command import lightroom_main; lightroom_main()'"))
    return bf, lr


def clean_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "BACKLITFIX"))}
    return {**env, "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-none"), **extra}


def luminance(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        a = tifffile.imread(path).astype(np.float64)
        return a.mean(axis=2) / (65535 if a.max() > 255 else 255)
    return np.asarray(Image.open(path).convert("L"), np.float64) / 255


def assert_brighter(before: np.ndarray, after: np.ndarray):
    assert before.shape == after.shape
    dark = before < np.quantile(before, 0.25)
    assert after[dark].mean() > 1.2 * before[dark].mean()


def no_pwned(*roots: Path):
    for root in roots:
        assert not list(root.rglob("PWNED*")), list(root.rglob("PWNED*"))
    assert not Path("PWNED").exists()


# ------------------------------------------------------------------------- where plugins go

LINUX = {"HOME": "/home/ann"}
MAC = {"HOME": "/Users/ann"}
WIN = {"USERPROFILE": r"C:\Users\Ann", "APPDATA": r"C:\Users\Ann\AppData\Roaming",
       "LOCALAPPDATA": r"C:\Users\Ann\AppData\Local"}


@pytest.mark.parametrize("platform,env,host,expected", [
    ("linux", LINUX, "darktable", ["/home/ann/.config/darktable/lua/contrib/backlitfix.lua"]),
    ("linux", {**LINUX, "XDG_CONFIG_HOME": "/cfg"}, "darktable", ["/cfg/darktable/lua/contrib/backlitfix.lua"]),
    ("linux", {**LINUX, "XDG_CONFIG_HOME": "relative"}, "gimp",  # a relative XDG value is ignored
     ["/home/ann/.config/GIMP/3.0/plug-ins/backlitfix/backlitfix.py"]),
    ("linux", LINUX, "art", ["/home/ann/.config/ART/usercommands/backlitfix.txt",
                             "/home/ann/.config/ART/usercommands/backlitfix-beside.sh"]),
    ("linux", {**LINUX, "XDG_DATA_HOME": "/data"}, "digikam", ["/data/backlitfix/plugins/digikam/backlitfix-bqm.sh"]),
    ("linux", LINUX, "rawtherapee", ["/home/ann/.local/share/backlitfix/plugins/rawtherapee/backlitfix-beside.sh"]),
    ("darwin", MAC, "darktable", ["/Users/ann/.config/darktable/lua/contrib/backlitfix.lua"]),
    ("darwin", MAC, "gimp", ["/Users/ann/Library/Application Support/GIMP/3.0/plug-ins/backlitfix/backlitfix.py"]),
    ("darwin", MAC, "lightroom", [
        "/Users/ann/Library/Application Support/backlitfix/plugins/lightroom/backlitfix-lightroom.sh",
        "/Users/ann/Library/Application Support/backlitfix/plugins/lightroom/backlitfix-lightroom.applescript"]),
    ("darwin", MAC, "art", ["/Users/ann/Library/Application Support/ART/usercommands/backlitfix.txt",
                            "/Users/ann/Library/Application Support/ART/usercommands/backlitfix-beside.sh"]),
    ("win32", WIN, "darktable", [r"C:\Users\Ann\AppData\Local\darktable\lua\contrib\backlitfix.lua"]),
    ("win32", WIN, "gimp", [r"C:\Users\Ann\AppData\Roaming\GIMP\3.0\plug-ins\backlitfix\backlitfix.py"]),
    ("win32", WIN, "art", [r"C:\Users\Ann\AppData\Local\ART\usercommands\backlitfix.txt"]),
    ("win32", WIN, "digikam", [r"C:\Users\Ann\AppData\Local\backlitfix\plugins\digikam\backlitfix-bqm-windows.txt"]),
    ("win32", WIN, "lightroom", []),  # backlitfix-lightroom.exe itself; the notes say where to point Lightroom
    ("win32", WIN, "rawtherapee", []),
])
def test_install_locations(platform, env, host, expected):
    p = plan_install(host, platform=platform, env=env)
    P = PureWindowsPath if platform == "win32" else PurePosixPath
    assert [pl.dest for pl in p.placements] == [P(e) for e in expected]
    assert all((plugins_root() / pl.source).is_file() for pl in p.placements)
    assert p.notes


def test_windows_notes_name_the_places_lightroom_and_rawtherapee_use():
    notes = "\n".join(plan_install("lightroom", platform="win32", env=WIN).notes)
    assert r"C:\Users\Ann\AppData\Roaming\Adobe\Lightroom\Export Actions" in notes
    assert "backlitfix-lightroom" in notes and "16 bits" in notes
    assert "run --suffix _backlitfix --" in "\n".join(plan_install("rawtherapee", platform="win32", env=WIN).notes)


def test_unknown_host_and_foreign_platform_are_refused(tmp_path):
    with pytest.raises(InstallError, match="unknown host"):
        plan_install("photoshop")
    with pytest.raises(InstallError, match="cannot install win32 files"):
        install("darktable", platform="win32", env=WIN)
    assert install("darktable", platform="win32", env=WIN, dry_run=True) == [
        Path(PureWindowsPath(r"C:\Users\Ann\AppData\Local\darktable\lua\contrib\backlitfix.lua"))]


# ------------------------------------------------------------------------- real installs

def cli(*args, env):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_list_names_every_host(tmp_path):
    r = cli("plugins", "list", env={"HOME": str(tmp_path)})
    assert r.exit_code == 0
    for host in HOSTS:
        assert host in r.output
    assert str(tmp_path / ".config" / "darktable" / "lua" / "contrib" / "backlitfix.lua") in r.output


@pytest.mark.skipif(os.name == "nt", reason="POSIX paths and modes")
def test_real_install_into_a_temporary_home(tmp_path):
    home = tmp_path / "home ü 'x'"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": "", "XDG_DATA_HOME": ""}
    lua = home / ".config" / "darktable" / "lua" / "contrib" / "backlitfix.lua"

    r = cli("plugins", "install", "darktable", "--dry-run", env=env)
    assert r.exit_code == 0 and f"would install: {lua}" in r.output and not home.exists()

    r = cli("plugins", "install", "darktable", env=env)
    assert r.exit_code == 0, r.output
    assert f"installed: {lua}" in r.output and 'require "contrib/backlitfix"' in r.output
    assert lua.read_bytes() == (REPO / "plugins" / "darktable" / "backlitfix.lua").read_bytes()
    assert cli("plugins", "install", "darktable", env=env).exit_code == 0  # the same file again: fine

    lua.write_text("-- my own edits\n")
    r = cli("plugins", "install", "darktable", env=env)
    assert r.exit_code == 2 and "exists and differs" in r.output and "--force" in r.output
    assert lua.read_text() == "-- my own edits\n"  # never overwritten without --force
    assert cli("plugins", "install", "darktable", "--force", env=env).exit_code == 0
    assert lua.read_bytes() == (REPO / "plugins" / "darktable" / "backlitfix.lua").read_bytes()
    assert [p.name for p in lua.parent.iterdir()] == ["backlitfix.lua"]  # no temporary files left

    assert cli("plugins", "install", "gimp", env=env).exit_code == 0
    py = home / ".config" / "GIMP" / "3.0" / "plug-ins" / "backlitfix" / "backlitfix.py"
    assert py.stat().st_mode & stat.S_IXUSR  # GIMP skips plug-ins without the execute bit

    r = cli("plugins", "install", "digikam", env=env)
    script = home / ".local" / "share" / "backlitfix" / "plugins" / "digikam" / "backlitfix-bqm.sh"
    text = script.read_text()
    assert r.exit_code == 0 and text.rstrip("\n") in r.output  # printed for pasting
    assert "@TOKEN@" not in text and text.count("BACKLITFIX_PATHS_") == 2
    assert cli("plugins", "install", "digikam", env=env).exit_code == 0
    assert script.read_text() == text  # the delimiter already pasted into digiKam is kept

    other = tmp_path / "other"
    cli("plugins", "install", "digikam", env={**env, "HOME": str(other)})
    # random per install
    assert (other / ".local/share/backlitfix/plugins/digikam/backlitfix-bqm.sh").read_text() != text


def test_double_dash_reaches_run(tmp_path, monkeypatch):
    """The plugins put "--" before paths: `run` must take a name starting with '-' after it."""
    src = tmp_path / "-x $(touch PWNED).jpg"
    shutil.copyfile(photo(SMALL[0]), src)
    monkeypatch.chdir(tmp_path)
    r = cli("run", "--dry-run", "--model", model(), "--", src.name, env={"XDG_CONFIG_HOME": "/nonexistent"})
    assert r.exit_code == 0, r.output
    assert "-x $(touch PWNED).jpg -> backlitfix/-x $(touch PWNED).jpg" in r.output
    no_pwned(tmp_path)


# ------------------------------------------------------------------------- the wheel

@pytest.mark.slow  # builds and installs a wheel
def test_wheel_carries_the_plugins_and_installs_from_them(tmp_path):
    """Build a wheel from a copy of the project, install it elsewhere, install a plugin from it."""
    wheel = build_wheel(tmp_path)
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    shipped = {f"share/backlitfix/plugins/{p.relative_to(REPO / 'plugins').as_posix()}"
               for p in (REPO / "plugins").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "README-section.md"}
    assert shipped <= set(data), shipped - set(data)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "backlitfix-lightroom = backlitfix.plugins.command:lightroom_main" in entry_points

    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip uninstalls the environment's own backlitfix (pip's --prefix bug)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    "--prefix", str(prefix), str(wheel)], check=True, capture_output=True, timeout=300)
    site = next(prefix.glob("lib/python*/site-packages"))
    home = tmp_path / "home"
    code = ("import backlitfix.plugins as p, sys; print(p.plugins_root()); "
            "print(p.install('darktable', platform='linux', env={'HOME': sys.argv[1]})[0])")
    out = subprocess.run([sys.executable, "-c", code, str(home)], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)}, check=True).stdout.splitlines()
    assert Path(out[0]).is_relative_to(prefix) and not Path(out[0]).is_relative_to(REPO)
    assert Path(out[1]).read_bytes() == (REPO / "plugins" / "darktable" / "backlitfix.lua").read_bytes()


# ------------------------------------------------------------------------- Lightroom

@pytest.mark.slow  # the host's script runs the real program
def test_lightroom_action_corrects_in_place_with_hostile_names(tmp_path):
    """Lightroom launches the action with the files as arguments (no shell); the script hands them
    to backlitfix-lightroom, which replaces each file with its correction."""
    _, lr = wrappers(tmp_path / "bin $(touch PWNED) 'x'")
    shoot = tmp_path / "export $(touch PWNED) ü"
    shoot.mkdir()
    files = []
    for name, src in zip(HOSTILE, SMALL * 2):
        shutil.copyfile(photo(src), shoot / name)
        files.append(shoot / name)
    edit = shoot / "-Edit `touch PWNED`.tif"  # an External Editor hand-over: 16-bit TIFF
    tifffile.imwrite(edit, (np.asarray(Image.open(photo(SMALL[1])), np.uint16) * 257), photometric="rgb")
    files.append(edit)
    broken = shoot / "broken; $(touch PWNED).jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    before = {f: luminance(f) for f in files}

    script = REPO / "plugins" / "lightroom" / "backlitfix-lightroom.sh"
    env = clean_env(tmp_path, BACKLITFIX_LIGHTROOM=str(lr), BACKLITFIX_MODEL=model(), BACKLITFIX_STRENGTH="1.0")
    proc = subprocess.run([str(script), *map(str, files), str(broken)], env=env, cwd=tmp_path,
                          capture_output=True, timeout=300, check=False)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 1, err  # one file failed: the others are done
    assert f"error: {broken}" in err and broken.read_bytes() == b"\xff\xd8 not really a JPEG"
    for f in files:
        assert str(f) in out
        assert_brighter(before[f], luminance(f))
    assert tifffile.imread(edit).dtype == np.uint16  # 16-bit stays 16-bit, same file
    assert sorted(p.name for p in shoot.iterdir()) == sorted([*HOSTILE, edit.name, broken.name])  # no leftovers
    no_pwned(tmp_path)


def test_lightroom_script_reports_a_missing_program(tmp_path):
    script = REPO / "plugins" / "lightroom" / "backlitfix-lightroom.sh"
    proc = subprocess.run([str(script), "/x.tif"], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 127 and "BACKLITFIX_LIGHTROOM" in proc.stderr


# ------------------------------------------------------------------------- digiKam

def digikam_substitute(script: str, src: Path, dest: Path) -> str:
    """What digiKam's userscript.cpp does: each $INPUT/$OUTPUT becomes the path in double quotes,
    nothing escaped; the text then runs as /bin/sh -c TEXT."""
    return script.replace("$INPUT", f'"{src}"').replace("$OUTPUT", f'"{dest}"')


def bqm_script(tmp_path: Path, extra: str = "") -> str:
    [script_file] = install("digikam", platform=sys.platform, env={"HOME": str(tmp_path / "home")})
    return script_file.read_text().replace("plugins digikam", "plugins digikam" + extra)


SEPARATOR_NAME = 'q"uote\n"\nBACKLITFIX_PATHS_\ntouch PWNED3\n.jpg'  # tries to end the here-document


@pytest.mark.parametrize("name", [*HOSTILE, SEPARATOR_NAME])
def test_digikam_user_script_hands_over_hostile_names_intact(tmp_path, name):
    """The glue alone, with a `backlitfix` that records what it receives (fast); the real
    program runs in the next test."""
    record = tmp_path / "record"
    rec = executable(tmp_path / "bin" / "backlitfix", f'printf "%s\\n" "$@" > {shlex.quote(str(record))}.args\n'
                     f'cat > {shlex.quote(str(record))}.stdin\n')
    album = tmp_path / "album $(touch PWNED) `touch PWNED`"
    album.mkdir()
    src = album / name
    src.write_bytes(b"")
    dest = tmp_path / "target 'x'" / "BatchTool-AbC123.digikamtempfile.png"
    env = clean_env(tmp_path, PATH=f"{rec.parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["/bin/sh", "-c", digikam_substitute(bqm_script(tmp_path), src, dest)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert Path(f"{record}.args").read_text() == "plugins\ndigikam\n"
    assert parse_bqm_paths(Path(f"{record}.stdin").read_bytes()) == (src, dest)
    no_pwned(tmp_path)


@pytest.mark.slow  # the host's script runs the real program
def test_digikam_user_script_corrects_for_real(tmp_path):
    bf, _ = wrappers(tmp_path / "bin")
    script = bqm_script(tmp_path, f" --model {shlex.quote(model())}")
    album = tmp_path / "album $(touch PWNED)"
    album.mkdir()
    src = album / HOSTILE[1]
    shutil.copyfile(photo(SMALL[0]), src)
    target = tmp_path / "target 'x' `touch PWNED`"
    target.mkdir()
    dest = target / "BatchTool-AbC123.digikamtempfile.png"  # BQM output type: PNG
    env = clean_env(tmp_path, PATH=f"{bf.parent}{os.pathsep}{os.environ['PATH']}", TITLE="$(touch PWNED)",
                    TAGSPATH="a;b", RATING="3")
    proc = subprocess.run(["/bin/sh", "-c", digikam_substitute(script, src, dest)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(dest).format == "PNG"
    assert_brighter(luminance(src), luminance(dest))
    assert sorted(p.name for p in target.iterdir()) == [dest.name]
    no_pwned(tmp_path)


def test_digikam_failure_leaves_no_output(tmp_path):
    bf, _ = wrappers(tmp_path / "bin")
    script = bqm_script(tmp_path, f" --model {shlex.quote(model())}")
    src = tmp_path / "bad.jpg"
    src.write_bytes(b"not an image")
    dest = tmp_path / "out" / "BatchTool-1.digikamtempfile.jpg"
    dest.parent.mkdir()
    env = clean_env(tmp_path, PATH=f"{bf.parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["/bin/sh", "-c", digikam_substitute(script, src, dest)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 1 and f"error: {src}" in proc.stderr
    assert list(dest.parent.iterdir()) == []


def test_bqm_path_parsing(tmp_path):
    a = tmp_path / 'in "x"\n"y.jpg'  # contains the separator itself: the existing file decides
    a.write_bytes(b"")
    assert parse_bqm_paths(f'"{a}"\n"/o/out.tif"\n'.encode()) == (a, Path("/o/out.tif"))
    assert parse_bqm_paths(b'"/m/a.jpg"\n"/o/b.jpg"\n') == (Path("/m/a.jpg"), Path("/o/b.jpg"))
    for bad in (b"", b"/a.jpg\n/b.jpg\n", b'"/a.jpg"\n'):
        with pytest.raises(ValueError, match="two lines"):
            parse_bqm_paths(bad)
    assert output_format(Path("a.nef"), Path("t.tif")) == "tiff"
    assert output_format(Path("a.webp"), Path("t.webp")) == "auto"
    with pytest.raises(ValueError, match="JPEG, PNG or TIFF"):
        output_format(Path("a.nef"), Path("t.nef"))


def test_digikam_windows_text_uses_the_quoted_arguments():
    text = (REPO / "plugins" / "digikam" / "backlitfix-bqm-windows.txt").read_text()
    assert text.strip() == "backlitfix.exe plugins digikam --input $INPUT --output $OUTPUT"
    r = CliRunner().invoke(main, ["plugins", "digikam", "--input", "x.jpg"])
    assert r.exit_code == 2 and "both --input and --output" in r.output


# ------------------------------------------------------------------------- ART and RawTherapee

def test_art_user_command_runs_the_way_art_runs_it(tmp_path):
    """ART reads usercommands/*.txt, splits Command (no shell), appends the selected files as
    arguments and runs it in the usercommands folder."""
    bf, _ = wrappers(tmp_path / "bin 'b'")
    home = tmp_path / "home"
    install("art", platform="linux", env={"HOME": str(home)})
    cmds = home / ".config" / "ART" / "usercommands"
    keys = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    keys.read(cmds / "backlitfix.txt")
    command = keys["ART UserCommand"]["Command"]
    shoot = tmp_path / "shoot `touch PWNED`"
    shoot.mkdir()
    files = [shoot / n for n in HOSTILE]
    for f in files:
        shutil.copyfile(photo(SMALL[0]), f)
    env = clean_env(tmp_path, BACKLITFIX=str(bf), BACKLITFIX_MODEL=model())
    proc = subprocess.run([*shlex.split(command), *map(str, files)], cwd=cmds, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("backlitfix: ") == 1  # one folder, one backlitfix process (the model loads once)
    for f in files:
        out = f.with_name(f.stem + "_backlitfix.jpg")
        assert_brighter(luminance(f), luminance(out))
    no_pwned(tmp_path)


def test_beside_script_with_files_from_several_folders(tmp_path):
    """Each file is run with its own folder as --output (a `backlitfix` that records its argv)."""
    log = tmp_path / "argv.log"
    rec = executable(tmp_path / "bin" / "backlitfix",
                     f'printf "[%s]" "$@" >> {shlex.quote(str(log))}; echo >> {shlex.quote(str(log))}\n')
    a, b = tmp_path / "a $(touch PWNED)" / "-x.jpg", tmp_path / "b\nc" / "y 'z'.jpg"
    env = clean_env(tmp_path, BACKLITFIX=str(rec), BACKLITFIX_STRENGTH="0.5")
    script = REPO / "plugins" / "common" / "backlitfix-beside.sh"
    proc = subprocess.run([str(script), str(a), str(b)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == "".join(
        f"[run][--strength][0.5][--output][{f.parent}][--suffix][_backlitfix][--][{f}]\n" for f in (a, b))
    no_pwned(tmp_path)


def test_rawtherapee_command_line(tmp_path):
    """RawTherapee splits 'command + quoted path' like g_shell_parse_argv (shlex here), no shell."""
    bf, _ = wrappers(tmp_path / "bin")
    home = tmp_path / "home $(x)"
    [script] = install("rawtherapee", platform="linux", env={"HOME": str(home)})
    notes = plan_install("rawtherapee", platform="linux", env={"HOME": str(home)}).notes
    command = next(n.strip() for n in notes if n.startswith("  "))
    assert shlex.split(command) == [str(script)]
    tif = tmp_path / "rt out" / "-IMG 'x'.tif"  # what RawTherapee saves for the editor
    tif.parent.mkdir()
    tifffile.imwrite(tif, np.asarray(Image.open(photo(SMALL[1])), np.uint16) * 257, photometric="rgb")
    env = clean_env(tmp_path, BACKLITFIX=str(bf), BACKLITFIX_MODEL=model(), BACKLITFIX_STRENGTH="0.7")
    proc = subprocess.run(shlex.split(command + " " + shlex.quote(str(tif))), env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = tif.with_name("-IMG 'x'_backlitfix.tif")
    assert tifffile.imread(out).dtype == np.uint16
    assert_brighter(luminance(tif), luminance(out))


def test_beside_script_reports_a_missing_program(tmp_path):
    script = REPO / "plugins" / "common" / "backlitfix-beside.sh"
    proc = subprocess.run([str(script), "/x.jpg"], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 127 and "BACKLITFIX" in proc.stderr
