"""The GIMP 3 plug-in (plugins/gimp/backlitfix/backlitfix.py) against a stub of GIMP.

STUB, and why: GIMP 3 and its Python bindings (gir1.2-gimp-3.0) do not exist on Debian 12 (it has
GIMP 2.10 without Python), so `gi.repository.Gimp` cannot be imported here. The stub below
implements only the few Gimp/Gegl/Gio/GLib calls the plug-in makes, with real files: its TIFF
exporter writes the layer's pixels as a real 16-bit TIFF, its file_load_layer reads the result
back, and its Gegl buffers hand out and take 16-bit pixels as bytes, as GEGL's "R'G'B'(A) u16"
formats do. Everything between is real: backlitfix's Python API in the process, or the plug-in's
argument list and the real `backlitfix` program (a subprocess); a real checkpoint. What the stub
cannot show is that GIMP's own calls behave as assumed; plugins/README.md says how to check the
plug-in by hand in GIMP 3.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import stat
import sys
import tempfile
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import tifffile

from conftest import REPO, shared_path

PLUGIN = REPO / "plugins" / "gimp" / "backlitfix" / "backlitfix.py"


# ---------------------------------------------------------------- the stub of GIMP 3's Python API

class Enum:
    def __init__(self, *names):
        for n in names:
            setattr(self, n, n)


class StubError(Exception):
    pass


class GFile:
    def __init__(self, path):
        self.path = path

    @classmethod
    def new_for_path(cls, path):
        return cls(path)


class Rectangle:
    @staticmethod
    def new(x, y, w, h):
        return (x, y, w, h)


class Buffer:
    """A Gegl.Buffer of a stub layer: only whole-layer reads and writes in the 16-bit R'G'B'(A) formats."""

    def __init__(self, layer):
        self.layer, self.flushed = layer, False

    def _check(self, rect, fmt):
        h, w, c = self.layer.pixels.shape
        assert rect == (0, 0, w, h) and fmt == ("R'G'B'A u16" if c == 4 else "R'G'B' u16"), (rect, fmt)

    def get(self, rect, scale, fmt, abyss):
        self._check(rect, fmt)
        assert scale == 1.0 and abyss == "CLAMP"
        return self.layer.pixels.astype(np.uint16).tobytes()

    def set(self, rect, fmt, data):
        self._check(rect, fmt)
        self.layer.pixels = np.frombuffer(data, np.uint16).reshape(self.layer.pixels.shape).copy()

    def flush(self):
        self.flushed = True


class Layer:
    def __init__(self, pixels, name="layer", offsets=(0, 0)):
        self.pixels, self.name, self.offsets, self.parent = pixels, name, offsets, None
        self.buffer, self.updated = None, None

    @classmethod
    def new_from_drawable(cls, drawable, image):
        return cls(drawable.pixels.copy(), drawable.name, drawable.offsets)

    @classmethod
    def new(cls, image, name, w, h, image_type, opacity, mode):
        assert mode == "NORMAL" and opacity == 100.0
        return cls(np.zeros((h, w, 4 if image_type == "RGBA_IMAGE" else 3), np.uint16), name)

    def has_alpha(self):
        return self.pixels.shape[2] == 4

    def type(self):
        return "RGBA_IMAGE" if self.has_alpha() else "RGB_IMAGE"

    def get_buffer(self):
        self.buffer = Buffer(self)
        return self.buffer

    def update(self, x, y, w, h):
        self.updated = (x, y, w, h)

    def get_width(self):
        return self.pixels.shape[1]

    def get_height(self):
        return self.pixels.shape[0]

    def get_offsets(self):
        return (True, *self.offsets)

    def set_offsets(self, x, y):
        self.offsets = (x, y)

    def set_name(self, name):
        self.name = name

    def get_parent(self):
        return self.parent


class Image:
    deleted = 0

    def __init__(self, precision=None):
        self.layers, self.profile, self.precision, self.undo_depth, self.undo_groups = [], None, precision, 0, 0

    @classmethod
    def new_with_precision(cls, w, h, base_type, precision):
        assert base_type == "RGB"
        return cls(precision)

    def insert_layer(self, layer, parent, position):
        self.layers.insert(position, layer)

    def get_item_position(self, layer):
        return self.layers.index(layer)

    def get_effective_color_profile(self):
        return self.profile

    def set_color_profile(self, profile):
        self.profile = profile

    def flatten(self):
        pass

    def delete(self):
        Image.deleted += 1

    def undo_group_start(self):
        self.undo_depth += 1

    def undo_group_end(self):
        self.undo_depth -= 1
        self.undo_groups += 1


class Config(dict):
    def set_property(self, k, v):
        self[k] = v

    def get_property(self, k):
        if k == "auto_strength" and k not in self:
            return False  # the argument's declared default, as GIMP's config would hold it
        return self[k]


class TiffExport:
    """file-tiff-export: writes the scratch image's only layer as a real TIFF."""

    calls: ClassVar[list] = []

    def create_config(self):
        return Config()

    def run(self, cfg):
        TiffExport.calls.append(dict(cfg))
        image = cfg["image"]
        assert cfg["run-mode"] == "NONINTERACTIVE" and cfg["compression"] == "none"
        assert image.precision == "U16_NON_LINEAR" and len(image.layers) == 1
        tifffile.imwrite(cfg["file"].path, image.layers[0].pixels.astype(np.uint16), photometric="rgb")
        return types.SimpleNamespace(index=lambda i: "SUCCESS")


def file_load_layer(run_mode, image, gfile):
    assert run_mode == "NONINTERACTIVE"
    return Layer(tifffile.imread(gfile.path), name=os.path.basename(gfile.path))


class Procedure:
    def __init__(self, plugin, name, proc_type, run, data):
        self.name, self.run_fn, self.calls, self.arguments = name, run, {}, {}

    @classmethod
    def new(cls, *a):
        return cls(*a)

    def __getattr__(self, attr):  # set_menu_label, add_menu_path, ...: recorded
        if attr.startswith(("set_", "add_menu")):
            return lambda *a: self.calls.setdefault(attr, []).append(a)
        raise AttributeError(attr)

    def add_double_argument(self, name, nick, blurb, lo, hi, default, flags):
        self.arguments[name] = default

    def add_string_argument(self, name, nick, blurb, default, flags):
        self.arguments[name] = default

    def add_boolean_argument(self, name, nick, blurb, default, flags):
        self.arguments[name] = default

    def new_return_values(self, status, error):
        return status, error


class Dialog:
    answer = True

    @classmethod
    def new(cls, procedure, config, title):
        return cls()

    def fill(self, what):
        pass

    def run(self):
        return Dialog.answer

    def destroy(self):
        pass


def load_plugin(monkeypatch):
    Gimp = types.SimpleNamespace(
        PlugIn=object, main=lambda *a: None, Image=Image, Layer=Layer, ImageProcedure=Procedure,
        RunMode=Enum("INTERACTIVE", "NONINTERACTIVE"), ImageBaseType=Enum("RGB"),
        Precision=Enum("U16_NON_LINEAR"), PDBProcType=Enum("PLUGIN"), LayerMode=Enum("NORMAL"),
        ProcedureSensitivityMask=Enum("DRAWABLE"),
        PDBStatusType=Enum("SUCCESS", "CANCEL", "EXECUTION_ERROR", "CALLING_ERROR"),
        get_pdb=lambda: types.SimpleNamespace(
            lookup_procedure=lambda n: TiffExport() if n == "file-tiff-export" else None),
        file_load_layer=file_load_layer, progress_init=lambda *a: None, displays_flush=lambda: None)
    Gegl = types.SimpleNamespace(Rectangle=Rectangle, AbyssPolicy=Enum("CLAMP"), init=lambda argv: None)
    repo = types.SimpleNamespace(Gimp=Gimp, Gegl=Gegl,
                                 GimpUi=types.SimpleNamespace(init=lambda n: None, ProcedureDialog=Dialog),
                                 Gio=types.SimpleNamespace(File=GFile), GLib=types.SimpleNamespace(Error=StubError),
                                 GObject=types.SimpleNamespace(ParamFlags=Enum("READWRITE")))
    gi = types.ModuleType("gi")
    gi.require_version = lambda name, version: None
    monkeypatch.setitem(sys.modules, "gi", gi)
    monkeypatch.setitem(sys.modules, "gi.repository", repo)
    gi.repository = repo
    spec = importlib.util.spec_from_file_location("gimp_backlitfix", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- helpers

def fake_backlitfix(folder: Path, body: str | None = None) -> Path:
    """`backlitfix` for this interpreter and checkout, in a folder whose name needs quoting."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "backlitfix"
    run = f'PYTHONPATH={REPO}{os.pathsep}"$PYTHONPATH" exec {sys.executable} -m backlitfix.cli "$@"\n'
    exe.write_text("#!/bin/sh\n" + (body or run))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def backlit_layer() -> Layer:
    """A bright background with a dark subject: 96 x 64, 16-bit, offset in the image."""
    y, x = np.mgrid[0:64, 0:96]
    sky = np.stack([0.85 + 0.1 * x / 96, 0.9 + 0 * x, 0.95 + 0 * x], axis=-1)
    subject = ((x - 48) ** 2 / 30 ** 2 + (y - 40) ** 2 / 22 ** 2) < 1
    px = np.where(subject[..., None], np.array([0.08, 0.06, 0.05]) + 0.02 * (y[..., None] / 64), sky)
    return Layer((px * 65535).astype(np.uint16), name="Background", offsets=(10, 20))


HOSTILE_DIR = "-x $(touch PWNED) `touch PWNED2`; 'q' \"d\" ü\nnl"


# ---------------------------------------------------------------- tests

def imports(nodes) -> set[str]:
    found = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
    return found | {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}


def test_plugin_loads_without_backlitfix():
    """It runs under GIMP's bundled Python too, where backlitfix is not importable: the module itself
    imports only the standard library and gi; backlitfix only inside import_api, guarded."""
    tree = ast.parse(PLUGIN.read_text())
    assert imports(tree.body) <= {"json", "os", "shutil", "subprocess", "sys", "tempfile", "gi"}
    guarded = [n for n in ast.walk(tree) if isinstance(n, ast.Try) and "backlitfix" in imports(n.body)]
    assert len(guarded) == 1
    assert any(isinstance(h.type, ast.Name) and h.type.id == "Exception" for h in guarded[0].handlers)
    def ours(nodes):
        return [n for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)) and "backlitfix" in imports([n])]

    assert ours(ast.walk(tree)) == ours(guarded[0].body)  # no other import of backlitfix anywhere
    assert PLUGIN.read_text().startswith("#!/usr/bin/env python3\n")  # GIMP skips scripts without it


def test_import_api_skips_the_plugins_own_folder(monkeypatch):
    """GIMP puts the plug-in's folder (.../plug-ins/backlitfix/, holding backlitfix.py) first on sys.path:
    `import backlitfix` must still find the package, not the plug-in."""
    plugin = load_plugin(monkeypatch)
    monkeypatch.syspath_prepend(str(PLUGIN.parent))
    for name in [m for m in sys.modules if m == "backlitfix" or m.startswith("backlitfix.")]:
        monkeypatch.delitem(sys.modules, name)
    api = plugin.import_api()
    assert api is not None and os.path.basename(api.__file__) == "__init__.py" and callable(api.load)
    assert sys.path[0] == str(PLUGIN.parent)  # sys.path is given back as it was


def test_registration(monkeypatch):
    plugin = load_plugin(monkeypatch)
    p = plugin.BacklitFix()
    assert p.do_query_procedures() == ["plug-in-backlitfix"]
    proc = p.do_create_procedure("plug-in-backlitfix")
    assert proc.calls["add_menu_path"] == [("<Image>/Filters/Light and Shadow",)]
    assert proc.calls["set_sensitivity_mask"] == [("DRAWABLE",)]
    assert proc.arguments == {"strength": 1.0, "auto_strength": False, "model": "", "executable": ""}


def test_command_is_an_argument_list_with_paths_after_double_dash(monkeypatch):
    plugin = load_plugin(monkeypatch)
    argv = plugin.build_command("/opt/b f/backlitfix", "-x $(y).tif", "/t/o d", "", 0.5)
    assert argv[:2] == ["/opt/b f/backlitfix", "run"] and argv[-2:] == ["--", "-x $(y).tif"]
    assert argv[argv.index("--strength") + 1] == "0.50" and "--model" not in argv
    assert argv[argv.index("--output") + 1] == "/t/o d" and "--json" in argv
    argv = plugin.build_command("b", "s.tif", "o", "-m 'x'.pth", 1.25)
    assert argv[argv.index("--model") + 1] == "-m 'x'.pth" and argv[argv.index("--strength") + 1] == "1.25"
    argv = plugin.build_command("b", "s.tif", "o", "", "auto")
    assert argv[argv.index("--strength") + 1] == "auto"


def test_layer_names_say_the_strength_applied(monkeypatch):
    plugin = load_plugin(monkeypatch)
    assert plugin.layer_name("/m/rave_unpaired.pth", 0.8) == "backlitfix rave_unpaired 0.80"
    assert plugin.layer_name("default", "auto", 0.737) == "backlitfix default auto 0.74"
    assert plugin.layer_name("default", "auto", None) == "backlitfix default auto"  # an older backlitfix


def test_auto_strength_in_process_matches_the_api_and_names_the_strength(monkeypatch):
    """With "Auto strength" ticked, the layer gets the strength backlitfix decides for the photo's light
    (the embedded model, as `run` decides it), and its name says which strength that was."""
    plugin = load_plugin(monkeypatch)
    import backlitfix
    image, layer = Image(), backlit_layer()
    image.insert_layer(layer, None, 0)
    before = layer.pixels.copy()
    proc = plugin.BacklitFix().do_create_procedure("plug-in-backlitfix")
    config = Config(strength=0.3, auto_strength=True, model="", executable="")
    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer], config, None)
    assert status == "SUCCESS", error
    expected, applied = backlitfix.load(strength="auto").enhance(before, return_strength=True)
    assert 0.3 < applied <= 1.0  # a backlit layer: auto chose far more than the (unused) 0.3
    new = image.layers[0]
    assert new.name == f"backlitfix default auto {applied:.2f}"
    np.testing.assert_array_equal(new.pixels, expected)


@pytest.mark.slow  # a subprocess: the real program
def test_round_trip_through_the_real_cli_with_hostile_paths(monkeypatch, tmp_path):
    plugin = load_plugin(monkeypatch)
    hostile = tmp_path / HOSTILE_DIR
    hostile.mkdir()
    model = hostile / "rave_unpaired.pth"
    model.symlink_to(shared_path("models", "official", "rave_unpaired.pth"))
    exe = fake_backlitfix(hostile / "bin")
    tmp_root = hostile / "tmp"
    tmp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_root))  # the export and result land in a hostile folder
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user config

    image = Image()
    layer = backlit_layer()
    image.insert_layer(layer, None, 0)
    TiffExport.calls.clear()
    proc = plugin.BacklitFix().do_create_procedure("plug-in-backlitfix")
    config = Config(strength=0.8, model=str(model), executable=str(exe))
    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer], config, None)

    assert status == "SUCCESS", error
    assert len(image.layers) == 2 and image.layers[1] is layer  # the result sits above the original
    new = image.layers[0]
    assert new.name == "backlitfix rave_unpaired 0.80"
    assert new.offsets == layer.offsets and new.pixels.shape == layer.pixels.shape
    assert new.pixels.dtype == np.uint16  # 16 bits both ways
    dark = layer.pixels.mean(axis=2) < 20000
    before, after = layer.pixels[dark].mean(), new.pixels[dark].astype(float).mean()
    assert after > 1.5 * before  # the subject was brightened
    assert abs(new.pixels[~dark].astype(float).mean() - layer.pixels[~dark].mean()) < 0.1 * 65535  # sky kept
    assert image.undo_depth == 0 and image.undo_groups == 1
    assert TiffExport.calls[0]["file"].path.startswith(str(tmp_root))
    assert list(tmp_root.iterdir()) == []  # its temporary folder is gone
    assert not list(tmp_path.rglob("PWNED*")) and not Path("PWNED").exists()
    import backlitfix  # the program and the Python API agree to the level
    np.testing.assert_array_equal(new.pixels, backlitfix.load(model, strength=0.8).enhance(layer.pixels))


def test_in_process_through_the_python_api_keeps_alpha(monkeypatch, tmp_path):
    """No program named, backlitfix importable: the layer goes through backlitfix.load(...).enhance in this
    process (no subprocess, no TIFF), 16 bits with its alpha, and gets what the API gives for its pixels."""
    plugin = load_plugin(monkeypatch)
    model = shared_path("models", "official", "rave_unpaired.pth")
    monkeypatch.setattr(plugin.subprocess, "run", lambda *a, **k: pytest.fail("no subprocess in process"))
    image = Image()
    layer = backlit_layer()
    alpha = np.tile(np.linspace(0, 65535, layer.get_width()).astype(np.uint16), (layer.get_height(), 1))
    layer.pixels = np.concatenate([layer.pixels, alpha[..., None]], axis=2)
    before = layer.pixels.copy()
    image.insert_layer(layer, None, 0)
    TiffExport.calls.clear()
    proc = plugin.BacklitFix().do_create_procedure("plug-in-backlitfix")
    config = Config(strength=0.8, model=str(model), executable="")
    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer], config, None)

    assert status == "SUCCESS", error
    assert TiffExport.calls == []  # no round trip through a file
    assert len(image.layers) == 2 and image.layers[1] is layer
    new = image.layers[0]
    assert new.name == "backlitfix rave_unpaired 0.80" and new.offsets == layer.offsets
    assert new.buffer.flushed and new.updated == (0, 0, layer.get_width(), layer.get_height())
    np.testing.assert_array_equal(layer.pixels, before)  # the original layer is untouched
    import backlitfix
    expected = backlitfix.load(model, strength=0.8).enhance(before)
    np.testing.assert_array_equal(new.pixels, expected)
    np.testing.assert_array_equal(new.pixels[..., 3], alpha)  # transparency kept
    dark = before[..., :3].mean(axis=2) < 20000
    assert new.pixels[..., :3][dark].mean() > 1.5 * before[..., :3][dark].mean()
    assert image.undo_depth == 0 and image.undo_groups == 1

    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer],
                                Config(strength=1.0, model="no-such-model", executable=""), None)
    assert status == "EXECUTION_ERROR" and "no-such-model" in str(error) and len(image.layers) == 2


def test_without_the_api_it_falls_back_to_the_program(monkeypatch, tmp_path):
    plugin = load_plugin(monkeypatch)
    monkeypatch.setattr(plugin, "import_api", lambda: None)  # GIMP's bundled Python: backlitfix not importable
    exe = fake_backlitfix(tmp_path / "bin", "echo 'error: layer.tif: the program ran' >&2\nexit 1\n")
    monkeypatch.setenv("BACKLITFIX", str(exe))
    image, layer = Image(), backlit_layer()
    image.insert_layer(layer, None, 0)
    proc = plugin.BacklitFix().do_create_procedure("plug-in-backlitfix")
    config = Config(strength=1.0, model="", executable="")
    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer], config, None)
    assert status == "EXECUTION_ERROR" and "the program ran" in str(error)


def test_failure_is_reported_as_an_execution_error(monkeypatch, tmp_path):
    plugin = load_plugin(monkeypatch)
    exe = fake_backlitfix(tmp_path / "bin", "echo 'error: layer.tif: model exploded' >&2\nexit 1\n")
    image, layer = Image(), backlit_layer()
    image.insert_layer(layer, None, 0)
    proc = plugin.BacklitFix().do_create_procedure("plug-in-backlitfix")
    config = Config(strength=1.0, model="", executable=str(exe))
    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer], config, None)
    assert status == "EXECUTION_ERROR" and "model exploded" in str(error)
    assert len(image.layers) == 1 and image.undo_depth == 0

    missing = Config(strength=1.0, model="", executable=str(tmp_path / "nowhere" / "backlitfix"))
    status, error = proc.run_fn(proc, "NONINTERACTIVE", image, [layer], missing, None)
    assert status == "EXECUTION_ERROR" and "cannot start" in str(error)


def test_cancelled_dialog_does_nothing(monkeypatch):
    plugin = load_plugin(monkeypatch)
    image, layer = Image(), backlit_layer()
    image.insert_layer(layer, None, 0)
    proc = plugin.BacklitFix().do_create_procedure("plug-in-backlitfix")
    monkeypatch.setattr(Dialog, "answer", False)
    status, _ = proc.run_fn(proc, "INTERACTIVE", image, [layer], Config(strength=1.0, model="", executable="x"), None)
    assert status == "CANCEL" and len(image.layers) == 1
    status, _ = proc.run_fn(proc, "NONINTERACTIVE", image, [layer, layer], Config(), None)
    assert status == "CALLING_ERROR"
