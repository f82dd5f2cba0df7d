#!/usr/bin/env python3
"""backlitfix for GIMP 3: Filters > Light and Shadow > Fix Backlight (backlitfix).

Brightens a subject that is dark against a bright sky or window, as a new layer above the active
one, named after the model and the strength applied ("backlitfix rave_unpaired 1.00"; with auto
strength, "backlitfix default auto 0.74": the strength backlitfix chose for this photo's light).

Where GIMP's Python can import backlitfix (Linux, GIMP on the system Python), the layer's pixels go
through backlitfix's Python API in this process, 16 bits a channel, transparency kept. Elsewhere
(GIMP's bundled Python on Windows and macOS), or when the dialog names a backlitfix program, it
exports the layer to a 16-bit TIFF in a private temporary folder, runs that program with an argument
list (no shell, paths after "--"), and loads its result; transparency is then flattened.

Install: `backlitfix plugins install gimp`, or copy this folder to GIMP's plug-ins folder
(Linux ~/.config/GIMP/3.0/plug-ins/backlitfix/backlitfix.py, executable; see plugins/README.md).
MIT licence, the backlitfix authors.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, Gio, GLib, GObject  # noqa: E402 - after require_version

PROCEDURE = "plug-in-backlitfix"
SUFFIX = "_backlitfix"


class BacklitfixError(Exception):
    pass


def import_api():
    """backlitfix's Python API (`backlitfix.load`), or None where this Python cannot import it.

    GIMP runs this file as a script, so its own folder, also named backlitfix, comes first on
    sys.path: it is left out while importing, or `import backlitfix` would find this plug-in."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        import backlitfix
    except Exception:  # not installed for this Python, or broken: the program may still work
        return None
    finally:
        sys.path[:] = saved
    return backlitfix if callable(getattr(backlitfix, "load", None)) else None  # an older backlitfix


def find_executable(configured=""):
    """The backlitfix program: the dialog's value, $BACKLITFIX, PATH, then the usual pip and
    Homebrew places (GIMP started from a desktop or the Finder may not have the shell's PATH)."""
    for candidate in (configured, os.environ.get("BACKLITFIX", "")):
        if candidate:
            return candidate
    found = shutil.which("backlitfix")
    if found:
        return found
    home = os.path.expanduser("~")
    for path in (os.path.join(home, ".local", "bin", "backlitfix"), "/opt/homebrew/bin/backlitfix",
                 "/usr/local/bin/backlitfix"):
        if os.access(path, os.X_OK):
            return path
    raise BacklitfixError("backlitfix not found: install it (pip install backlitfix) or give its path in the dialog")


def strength_arg(strength):
    """"auto", or the number with two decimals."""
    return "auto" if strength == "auto" else f"{strength:.2f}"


def build_command(executable, source, outdir, model, strength):
    """The argument list for one file; nothing here is ever parsed by a shell."""
    argv = [executable, "run", "--output", outdir, "--format", "tiff", "--suffix", SUFFIX,
            "--strength", strength_arg(strength), "--json"]
    if model:
        argv += ["--model", model]
    return argv + ["--", source]


def run_backlitfix(argv):
    """Run backlitfix; returns (output path, model name, strength applied) from its --json summary."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise BacklitfixError(f"cannot start {argv[0]}: {e.strerror or e}") from None
    errors = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    try:
        summary = json.loads(proc.stdout.decode("utf-8"))
        result = summary["files"][0]
    except (ValueError, KeyError, IndexError):
        raise BacklitfixError(errors[-1] if errors else f"backlitfix failed (exit code {proc.returncode})") from None
    if result.get("status") != "done" or not result.get("output"):
        raise BacklitfixError(f"backlitfix: {result.get('reason') or result.get('status')}")
    return result["output"], summary.get("model") or "default", result.get("strength")


def layer_name(model, strength, applied=None):
    """"backlitfix MODEL 1.00", or "backlitfix MODEL auto 0.74" with the strength auto chose."""
    name = f"backlitfix {os.path.splitext(os.path.basename(model))[0] or model}"
    if strength == "auto":
        return f"{name} auto" + (f" {applied:.2f}" if isinstance(applied, (int, float)) else "")
    return f"{name} {strength:.2f}"


def export_tiff(image, drawable, path):
    """Write `drawable` alone to a 16-bit TIFF at `path`, with the image's colour profile."""
    scratch = Gimp.Image.new_with_precision(drawable.get_width(), drawable.get_height(),
                                            Gimp.ImageBaseType.RGB, Gimp.Precision.U16_NON_LINEAR)
    try:
        layer = Gimp.Layer.new_from_drawable(drawable, scratch)
        scratch.insert_layer(layer, None, 0)
        layer.set_offsets(0, 0)
        scratch.set_color_profile(image.get_effective_color_profile())
        scratch.flatten()  # backlitfix corrects RGB; transparency is not carried over
        procedure = Gimp.get_pdb().lookup_procedure("file-tiff-export")
        config = procedure.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", scratch)
        config.set_property("file", Gio.File.new_for_path(path))
        config.set_property("compression", "none")
        result = procedure.run(config)
        if result.index(0) != Gimp.PDBStatusType.SUCCESS:
            raise BacklitfixError(f"could not export the layer to {path}")
    finally:
        scratch.delete()


def add_result_layer(image, drawable, path, name):
    """Load `path` as a layer named `name`, just above `drawable`, at its position."""
    layer = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(path))
    layer.set_name(name)
    image.insert_layer(layer, drawable.get_parent(), image.get_item_position(drawable))
    offsets = drawable.get_offsets()  # (success, x, y)
    layer.set_offsets(offsets[-2], offsets[-1])
    return layer


def read_pixels(drawable):
    """The drawable's pixels as 16-bit non-linear RGB(A) bytes, and its channel count."""
    channels = 4 if drawable.has_alpha() else 3
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    fmt = "R'G'B'A u16" if channels == 4 else "R'G'B' u16"
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.CLAMP)), channels


def fix_in_process(api, image, drawable, model, strength):
    """Through backlitfix's Python API, as `backlitfix run` would correct the layer; returns the new layer."""
    import numpy as np  # backlitfix's own dependency: present wherever backlitfix imports

    try:
        enhancer = api.load(model or None, strength=strength)
    except api.BacklitfixError as e:
        raise BacklitfixError(f"backlitfix: {e}") from None
    Gegl.init(None)  # libgimp has normally done it already; a second call does nothing
    w, h = drawable.get_width(), drawable.get_height()
    data, channels = read_pixels(drawable)
    pixels = np.frombuffer(data, dtype=np.uint16).reshape(h, w, channels)
    try:
        out, applied = enhancer.enhance(pixels, return_strength=True)  # alpha, if any, comes back unchanged
    except (ValueError, RuntimeError) as e:
        raise BacklitfixError(f"backlitfix: {e}") from None
    image.undo_group_start()
    try:
        layer = Gimp.Layer.new(image, layer_name(enhancer.model, strength, applied), w, h, drawable.type(), 100.0,
                               Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, drawable.get_parent(), image.get_item_position(drawable))
        offsets = drawable.get_offsets()  # (success, x, y)
        layer.set_offsets(offsets[-2], offsets[-1])
        buffer = layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u16" if channels == 4 else "R'G'B' u16", out.tobytes())
        buffer.flush()
        layer.update(0, 0, w, h)
    finally:
        image.undo_group_end()
    return layer


def fix(image, drawable, executable, model, strength):
    """In this process when backlitfix imports and no program was named; else the round trip through
    the program. Returns the new layer."""
    api = None if executable else import_api()
    if api is not None:
        return fix_in_process(api, image, drawable, model, strength)
    exe = find_executable(executable)
    with tempfile.TemporaryDirectory(prefix="backlitfix-gimp-") as tmp:
        source = os.path.join(tmp, "layer.tif")
        export_tiff(image, drawable, source)
        out, model_name, applied = run_backlitfix(build_command(exe, source, tmp, model, strength))
        image.undo_group_start()
        try:
            layer = add_result_layer(image, drawable, out, layer_name(model_name, strength, applied))
        finally:
            image.undo_group_end()
    return layer


class BacklitFix(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Fix _Backlight (backlitfix)...")
        procedure.add_menu_path("<Image>/Filters/Light and Shadow")
        procedure.set_documentation("Fix a backlit photo with backlitfix",
                                    "Brightens a subject that is dark against a bright background, "
                                    "as a new layer above the active one.", name)
        procedure.set_attribution("the backlitfix authors", "the backlitfix authors (MIT)", "2026")
        flags = GObject.ParamFlags.READWRITE
        procedure.add_double_argument("strength", "_Strength", "0 = the original, 1 = the model's correction",
                                      0.0, 2.0, 1.0, flags)
        procedure.add_boolean_argument("auto_strength", "_Auto strength",
                                       "Decide the strength from the photo's light, as `backlitfix run` does "
                                       "(a well-lit photo gets 0 and is left as it is); the strength above is "
                                       "then not used", False, flags)
        procedure.add_string_argument("model", "_Model", "Model name or checkpoint path; empty = the default model",
                                      "", flags)
        procedure.add_string_argument("executable", "backlitfix _program",
                                      "Path to the backlitfix program; empty = backlitfix's Python API "
                                      "if GIMP's Python can import it, else the program on PATH", "", flags)
        return procedure

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        if len(drawables) != 1:
            return procedure.new_return_values(Gimp.PDBStatusType.CALLING_ERROR,
                                               GLib.Error("backlitfix works on one layer at a time"))
        if run_mode == Gimp.RunMode.INTERACTIVE:
            GimpUi.init(PROCEDURE)
            dialog = GimpUi.ProcedureDialog.new(procedure, config, "Fix Backlight (backlitfix)")
            dialog.fill(None)
            ok = dialog.run()
            dialog.destroy()
            if not ok:
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
        Gimp.progress_init("backlitfix")
        strength = "auto" if config.get_property("auto_strength") else config.get_property("strength")
        try:
            fix(image, drawables[0], config.get_property("executable"), config.get_property("model"), strength)
        except BacklitfixError as e:
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(str(e)))
        Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)


if __name__ == "__main__":
    Gimp.main(BacklitFix.__gtype__, sys.argv)
