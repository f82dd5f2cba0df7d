"""Packaging: the repository's training/ installs as backlitfix.training (never a top-level `training`), with its
data, in the editable install and in a wheel; the CLI loads the training commands only when they are used."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from backlitfix.cli import main
from conftest import build_wheel

REPO = Path(__file__).resolve().parent.parent
LAZY = ("train", "residual", "explain")


def _packages() -> set[str]:
    """Every package folder of the source tree under the name it installs as."""
    names = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "backlitfix").rglob("__init__.py")}
    names |= {".".join(("backlitfix",) + p.parent.relative_to(REPO).parts)
              for p in (REPO / "training").rglob("__init__.py")}
    return names


def _run_py(code: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_help_lists_the_training_commands_with_their_short_help():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0, r.output
    for name in LAZY:
        short = main.get_command(None, name).get_short_help_str(limit=45)
        line = next((ln for ln in r.output.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None and short[:20] in line, (name, r.output)


def test_train_help_still_works():
    r = CliRunner().invoke(main, ["train", "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage: main train" in r.output or "Usage: backlitfix train" in r.output
    assert "--steps" in r.output and "--clip-model" in r.output


def test_an_unknown_command_is_still_a_usage_error():
    r = CliRunner().invoke(main, ["trian"])
    assert r.exit_code == 2 and "No such command" in r.output


def test_the_training_commands_come_from_backlitfix_training():
    for name in LAZY:
        assert main.get_command(None, name).callback.__module__.startswith("backlitfix.training."), name


@pytest.mark.slow  # real processes
def test_run_never_imports_the_training_package_or_open_clip(tmp_path):
    pytest.importorskip("open_clip")  # installed, so its absence from sys.modules means something
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (64, 48), (40, 60, 90)).save(photo)
    code = ("import json, sys\nfrom backlitfix.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    code = e.code\n"
            "mods = [m for m in sys.modules if m.split('.')[0] in ('open_clip', 'training')"
            " or m.startswith('backlitfix.training')]\n"
            "print(json.dumps({'code': code, 'mods': mods}))")
    for argv in (["run", "--dry-run", str(photo)], ["--help"]):
        r = _run_py(code, *argv, cwd=tmp_path)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["code"] in (0, None), r.stderr
        if argv[0] == "run":
            assert "p.jpg" in r.stdout and out["mods"] == [], out  # nothing from training, let alone open_clip
        else:
            assert not any(m.split(".")[0] == "open_clip" for m in out["mods"]), out


@pytest.mark.slow  # a real process
def test_editable_install_imports_backlitfix_training_from_anywhere(tmp_path):
    code = ("import importlib.util, backlitfix.training.clip as c, backlitfix.training.recipes.default_model\n"
            "print(sorted(p.name for p in c._CONFIG_DIR.glob('*.json')))\n"
            "print(importlib.util.find_spec('training'))")
    r = _run_py(code, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    configs, top_level = r.stdout.splitlines()[-2:]
    assert configs == str(sorted(p.name for p in (REPO / "training" / "model_configs").glob("*.json")))
    assert "backlitfix-tiny.json" in configs
    assert top_level == "None"  # no top-level `training` is installed


@pytest.mark.slow  # builds and installs a wheel
def test_wheel_ships_training_as_backlitfix_training(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    code_names = [n for n in names if ".dist-info/" not in n and ".data/" not in n]
    assert {n.split("/")[0] for n in code_names} == {"backlitfix"}, sorted({n.split("/")[0] for n in code_names})
    top_level = next((n for n in names if n.endswith("top_level.txt")), None)
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["backlitfix"]
    shipped = {n.rsplit("/", 1)[0].replace("/", ".") for n in code_names if n.endswith("/__init__.py")}
    assert shipped == _packages(), shipped ^ _packages()  # a new package folder must be listed in pyproject
    for p in (REPO / "training").rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts:
            assert "backlitfix/training/" + p.relative_to(REPO / "training").as_posix() in names, p

    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    "--prefix", str(prefix), str(wheel)], check=True, capture_output=True, timeout=300)
    site = next(prefix.glob("lib/python*/site-packages"))
    code = ("import importlib.util, backlitfix.training.clip as c\n"
            "print(c.__file__)\nprint(sorted(p.name for p in c._CONFIG_DIR.glob('*.json')))\n"
            "print(importlib.util.find_spec('training'))\n"
            "from backlitfix.cli import main\nmain(['train', '--help'])")
    r = _run_py(code, cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert Path(lines[0]).is_relative_to(site)
    assert "backlitfix-tiny.json" in lines[1]
    assert lines[2] == "None"
    assert "--steps" in r.stdout
