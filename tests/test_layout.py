"""The tests are laid out by module (issue 16): from a module's name you find its tests.

    backlitfix/<module>.py                 tests/test_<module>*.py
    backlitfix/<package>/<module>.py       tests/<package>/test_<package>_<module>*.py
    training/<module>.py (backlitfix.training.<module>)
                                           tests/training/test_training_<module>*.py

A module without a file of its own is tested in its package's file, tests/<package>/test_<package>.py,
which must then import it; or it is listed in ELSEWHERE with the file that tests it (or in UNTESTED, with
why). Every test file is named after a module, a package or one of TOPICS, and sits in its package's folder.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# Modules tested in a file named after another module, each with that file. Entries for modules that gain a
# file of their own must go (the test says so), so this list only shrinks.
ELSEWHERE = {
    "photo": "tests/io/test_io_decode.py",  # data classes: every decode test builds and reads them
    "cli_options": "tests/test_cli_run.py",  # run's and watch's options, through the commands
    "display": "tests/test_runner_hardening.py",  # names in messages, one line each
    "provenance": "tests/test_runner_hardening.py",  # a second run skips its own outputs
    "tiling": "tests/test_enhance_inplace.py",  # exact mode's tiles, in place
    "model.checkpoint": "tests/test_network.py",
    "model.network": "tests/test_network.py",  # not moved: test_backends.py and bench/gpu_check.py import it
    "model.registry": "tests/test_cli_run.py",  # models by name, a build without the embedded one
    "io.orientation": "tests/io/test_io_decode.py",
    "io.sidecars": "tests/test_cli_run.py",  # a RAW's .xmp goes with its output
    "io.tiff_ifd": "tests/io/test_io_metadata.py",
    "io.deflate": "tests/io/test_io_encode.py",  # encode's PNG and TIFF writers
    "io.png": "tests/io/test_io_encode.py",
    "io.tiff_write": "tests/io/test_io_encode.py",
    "eval.evaluate": "tests/eval/test_eval.py",  # through `backlitfix eval`
    "eval.command": "tests/eval/test_eval.py",
    "watch.command": "tests/watch/test_watch_daemon.py",
    "training.library": "tests/training/test_training_residual.py",  # the library the residual embeds
    "training.embedding_cache": "tests/training/test_training_residual.py",
    "training.select_backlit": "tests/training/test_training_residual.py",
    "training.cli_residual": "tests/training/test_training_residual.py",
    "training.stats_embedding": "tests/training/test_training_recipes_default_model.py",
    "training.sheets": "tests/training/test_training.py",  # the before/after sheet of `backlitfix train`
    "training.zero_reference": "tests/training/test_training_recipes_default_model.py",  # the recipe's losses
    "plugins.command": "tests/plugins/test_plugins.py",  # list/install and the Lightroom entry point
    "plugins.hosts": "tests/plugins/test_plugins.py",  # install locations
}
# Modules with no automated test, and why.
UNTESTED = {
    "training.recipes.default_model_report": "the shipped model's report for docs/, run by hand after the recipe",
}
# Test files about something other than one module: the wheel, a whole code path, a host program, a bench.
TOPICS = {
    # network: model.network's tests stay in tests/ (test_backends.py and bench/gpu_check.py import them)
    "": {"packaging", "gpu_path_on_cpu", "layout", "network", "shoot", "speed", "backend"},
    "io": {"dependencies"},
    "plugins": {"darktable", "gimp"},  # the host programs' own plug-in scripts, in plugins/
}


def modules() -> dict[str, Path]:
    """'discover', 'io.decode', 'training.recipes.default_model', ... -> the source file."""
    found = {}
    for root, prefix in ((REPO / "backlitfix", ""), (REPO / "training", "training.")):
        for path in sorted(root.rglob("*.py")):
            if path.name != "__init__.py":
                found[prefix + ".".join(path.relative_to(root).with_suffix("").parts)] = path
    return found


def folder_of(module: str) -> Path:
    return TESTS / module.split(".")[0] if "." in module else TESTS


def own_files(module: str) -> list[Path]:
    stem = "test_" + module.replace(".", "_")
    return [p for p in folder_of(module).glob("test_*.py") if p.stem == stem or p.stem.startswith(stem + "_")]


def package_file_imports(module: str) -> bool:
    package, _, name = module.rpartition(".")
    pkg_file = TESTS / package.split(".")[0] / f"test_{package.split('.')[0]}.py"
    if not package or not pkg_file.is_file():
        return False
    full = f"backlitfix.{module}"
    for node in ast.walk(ast.parse(pkg_file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == full or (node.module == f"backlitfix.{package}" and name in {a.name for a in node.names}):
                return True
        if isinstance(node, ast.Import) and any(a.name == full for a in node.names):
            return True
    return False


def test_every_module_has_its_tests_where_its_name_says():
    missing = [m for m in modules() if not own_files(m) and not package_file_imports(m)
               and m not in ELSEWHERE and m not in UNTESTED]
    assert missing == [], "add tests/.../test_<module>.py (see the module docstring) for: " + ", ".join(missing)


def test_elsewhere_lists_only_modules_without_their_own_file():
    mods = modules()
    stale = [m for m in {**ELSEWHERE, **UNTESTED} if m not in mods or own_files(m) or package_file_imports(m)]
    assert stale == [], "remove from ELSEWHERE: " + ", ".join(stale)
    absent = [f for f in ELSEWHERE.values() if not (REPO / f).is_file()]
    assert absent == []


def test_every_test_file_is_named_after_a_module_package_or_topic_in_its_folder():
    mods = modules()
    wrong = []
    for path in sorted(TESTS.rglob("test_*.py")):
        folder = path.parent.relative_to(TESTS).as_posix()
        rest = path.stem[len("test_"):]
        if folder == ".":
            names = {m for m in mods if "." not in m} | TOPICS[""]
            ok = any(rest == n or rest.startswith(n + "_") for n in names)
        else:
            package = folder.split("/")[0]
            names = {m.replace(".", "_") for m in mods if m.split(".")[0] == package}
            names |= {f"{package}_{t}" for t in TOPICS.get(package, ())} | {package}
            ok = folder == package and any(rest == n or rest.startswith(n + "_") for n in names)
        if not ok:
            wrong.append(path.relative_to(REPO).as_posix())
    assert wrong == [], "rename or move (see the module docstring): " + ", ".join(wrong)
