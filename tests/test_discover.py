import os
import sys
from pathlib import Path

import pytest

from backlitfix.discover import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    SIDECAR_EXTENSIONS,
    Job,
    plan,
)
from backlitfix.photo import PhotoError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run(paths, *, recursive=False, output_dir=None, suffix="", fmt="auto"):
    return plan([Path(p) for p in paths], recursive=recursive, output_dir=output_dir, suffix=suffix, fmt=fmt)


def pairs(p):
    return [(j.input, j.output) for j in p.jobs]


def outputs(p):
    return {j.input.name: j.output for j in p.jobs}


def reasons(p):
    return {e.path.name: e.reason for e in p.errors}


# ---- tables ------------------------------------------------------------------------------------


def test_extension_tables():
    for ext in (".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif", ".hif"):
        assert ext in IMAGE_EXTENSIONS and ext not in RAW_EXTENSIONS
    for ext in ".dng .cr2 .cr3 .nef .arw .raf .orf .rw2 .pef .srw .x3f .3fr .iiq .raw".split():
        assert ext in RAW_EXTENSIONS and IMAGE_EXTENSIONS[ext] == "raw"
    assert not SIDECAR_EXTENSIONS & IMAGE_EXTENSIONS.keys()
    assert {".xmp", ".pp3", ".dop", ".arp", ".on1", ".xmp~"} <= SIDECAR_EXTENSIONS


# ---- discovery ---------------------------------------------------------------------------------


@pytest.fixture
def shoot(tmp_path):
    root = tmp_path / "shoot"
    touch(root / "b.jpg")
    touch(root / "A.JPG")
    touch(root / "c.nef")
    touch(root / "c.nef.xmp")  # darktable-style sidecar
    touch(root / "c.xmp")
    touch(root / "c.pp3")
    touch(root / "notes.txt")
    touch(root / ".hidden.jpg")
    touch(root / "._A.JPG")  # macOS AppleDouble
    touch(root / ".cache" / "x.jpg")
    touch(root / "sub" / "d.png")
    touch(root / "sub" / "deeper" / "e.tiff")
    return root


def test_folder_not_recursive(shoot):
    p = run([shoot])
    assert [j.input for j in p.jobs] == [shoot / "A.JPG", shoot / "b.jpg", shoot / "c.nef"]
    assert p.errors == []
    assert p.ignored == 4  # c.nef.xmp c.xmp c.pp3 notes.txt; hidden files are not even counted


def test_folder_recursive_keeps_structure(shoot):
    p = run([shoot], recursive=True)
    out = shoot / "backlitfix"
    assert pairs(p) == [
        (shoot / "A.JPG", out / "A.JPG"),  # same format keeps the source's spelling
        (shoot / "b.jpg", out / "b.jpg"),
        (shoot / "c.nef", out / "c.tif"),  # RAW -> TIFF
        (shoot / "sub" / "d.png", out / "sub" / "d.png"),
        (shoot / "sub" / "deeper" / "e.tiff", out / "sub" / "deeper" / "e.tiff"),
    ]
    assert [j.format for j in p.jobs] == ["jpeg", "jpeg", "tiff", "png", "tiff"]
    assert [j.source_format for j in p.jobs] == ["jpeg", "jpeg", "raw", "png", "tiff"]
    assert not any(".cache" in j.input.parts or j.input.name.startswith(".") for j in p.jobs)


def test_output_dir_option(shoot, tmp_path):
    out = tmp_path / "out"
    p = run([shoot, shoot.parent / "loose.webp"], recursive=True, output_dir=out)
    # the loose file does not exist yet -> an error entry, not a crash
    assert reasons(p) == {"loose.webp": "no such file or folder"}
    touch(shoot.parent / "loose.webp")
    p = run([shoot, shoot.parent / "loose.webp"], recursive=True, output_dir=out)
    o = outputs(p)
    assert o["d.png"] == out / "sub" / "d.png"
    assert o["e.tiff"] == out / "sub" / "deeper" / "e.tiff"
    assert o["loose.webp"] == out / "loose.webp"  # file arguments go straight into DIR


def test_file_argument_default_output(tmp_path):
    f = touch(tmp_path / "shoot" / "x.heic")
    p = run([f])
    assert pairs(p) == [(f, tmp_path / "shoot" / "backlitfix" / "x.heic")]
    assert p.jobs[0].format == "heif"


def test_relative_file_argument(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / "x.jpg")
    p = run([Path("x.jpg")])
    assert pairs(p) == [(Path("x.jpg"), Path("backlitfix") / "x.jpg")]


def test_explicit_non_image_and_sidecar_are_errors(tmp_path):
    txt = touch(tmp_path / "readme.txt")
    xmp = touch(tmp_path / "a.xmp")
    p = run([txt, xmp])
    assert p.jobs == []
    r = reasons(p)
    assert r["readme.txt"] == "not a supported image type"
    assert r["a.xmp"].startswith("not a supported image type") and "sidecar" in r["a.xmp"]
    assert all(isinstance(e, PhotoError) for e in p.errors)


def test_nonexistent_argument(tmp_path):
    p = run([tmp_path / "nope.jpg", tmp_path / "nodir"])
    assert [e.reason for e in p.errors] == ["no such file or folder"] * 2
    assert p.jobs == []


def test_explicit_hidden_file_is_processed(tmp_path):
    f = touch(tmp_path / ".secret.jpg")
    assert [j.input for j in run([f]).jobs] == [f]


def test_extension_case_insensitive_and_hidden_folder_argument(tmp_path):
    d = tmp_path / ".dotdir"
    touch(d / "X.TiF")
    touch(d / "y.DNG")
    p = run([d])  # an explicitly named hidden folder is listed
    assert outputs(p) == {"X.TiF": d / "backlitfix" / "X.TiF", "y.DNG": d / "backlitfix" / "y.tif"}


# ---- outputs are never re-scanned --------------------------------------------------------------


def test_second_run_does_not_reprocess_default_output(shoot):
    first = run([shoot], recursive=True)
    for job in first.jobs:  # simulate the first run writing its outputs
        touch(job.output)
    touch(shoot / "sub" / "backlitfix" / "old.jpg")  # an earlier non-recursive run on sub/
    second = run([shoot], recursive=True)
    assert pairs(second) == pairs(first)
    assert not any("backlitfix" in j.input.parts for j in second.jobs)


def test_output_dir_inside_input_tree_is_not_scanned(shoot):
    out = shoot / "fixed"
    first = run([shoot], recursive=True, output_dir=out)
    for job in first.jobs:
        touch(job.output)
    second = run([shoot], recursive=True, output_dir=out)
    assert pairs(second) == pairs(first)
    assert not any(out in j.input.parents for j in second.jobs)


# ---- formats and names -------------------------------------------------------------------------


def test_explicit_format_and_suffix(tmp_path):
    touch(tmp_path / "a.JPG")
    touch(tmp_path / "b.tiff")
    touch(tmp_path / "c.nef")
    p = run([tmp_path], fmt="png", suffix="_fixed")
    o = {k: v.name for k, v in outputs(p).items()}
    assert o == {"a.JPG": "a_fixed.png", "b.tiff": "b_fixed.png", "c.nef": "c_fixed.png"}
    assert {j.format for j in p.jobs} == {"png"}
    p = run([tmp_path], fmt="jpeg")
    assert {k: v.name for k, v in outputs(p).items()} == {"a.JPG": "a.JPG", "b.tiff": "b.jpg", "c.nef": "c.jpg"}
    p = run([tmp_path], fmt="tiff")
    assert {k: v.name for k, v in outputs(p).items()} == {"a.JPG": "a.tif", "b.tiff": "b.tiff", "c.nef": "c.tif"}


def test_unknown_format_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        run([tmp_path], fmt="gif")


# ---- collisions and duplicates -----------------------------------------------------------------


def test_raw_collision_gets_source_extension(tmp_path):
    touch(tmp_path / "a.nef")
    touch(tmp_path / "a.dng")
    touch(tmp_path / "b.jpg")
    p = run([tmp_path])
    o = {k: v.name for k, v in outputs(p).items()}
    assert o == {"a.dng": "a_dng.tif", "a.nef": "a_nef.tif", "b.jpg": "b.jpg"}


def test_collision_with_explicit_format_and_suffix(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.png")
    p = run([tmp_path], fmt="jpeg", suffix="-bl")
    assert {k: v.name for k, v in outputs(p).items()} == {"a.jpg": "a_jpg-bl.jpg", "a.png": "a_png-bl.jpg"}


def test_collision_from_two_folders_into_one_output_dir(tmp_path):
    touch(tmp_path / "one" / "a.jpg")
    touch(tmp_path / "two" / "a.jpg")
    touch(tmp_path / "two" / "A.jpg")  # differs only in case: collides on case-insensitive filesystems
    out = tmp_path / "out"
    p = run([tmp_path / "one", tmp_path / "two"], output_dir=out)
    got = [j.output for j in p.jobs]
    assert len(p.jobs) == 3
    assert len({str(o).casefold() for o in got}) == 3
    assert got[0] == out / "a.jpg"  # the first keeps its name
    assert all(o.parent == out and o.suffix == ".jpg" for o in got)
    # deterministic: planning again gives the same answer
    assert [j.output for j in run([tmp_path / "one", tmp_path / "two"], output_dir=out).jobs] == got


def test_collision_tag_does_not_clash_with_a_real_name(tmp_path):
    touch(tmp_path / "a.nef")
    touch(tmp_path / "a.dng")
    touch(tmp_path / "a_nef.tif")  # its natural output is what a.nef would be renamed to
    p = run([tmp_path])
    outs = [j.output.name for j in p.jobs]
    assert len(set(outs)) == 3 and "a_nef.tif" in outs
    assert outputs(p)["a_nef.tif"].name == "a_nef.tif"  # the untagged one keeps its natural name


def test_same_file_twice_is_processed_once(tmp_path):
    f = touch(tmp_path / "s" / "x.jpg")
    p = run([f, tmp_path / "s", tmp_path / "s" / ".." / "s" / "x.jpg"])
    assert [j.input for j in p.jobs] == [f]
    assert p.duplicates == 2
    assert p.errors == []


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_to_same_file_is_processed_once(tmp_path):
    f = touch(tmp_path / "s" / "x.jpg")
    link = tmp_path / "link.jpg"
    try:
        link.symlink_to(f)
    except OSError:
        pytest.skip("cannot create symlinks here")
    p = run([link, tmp_path / "s"])
    assert len(p.jobs) == 1 and p.jobs[0].input == link
    assert p.duplicates == 1


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlink_loop_and_broken_link_in_folder(tmp_path):
    d = tmp_path / "d"
    touch(d / "x.jpg")
    try:
        (d / "loop").symlink_to(d, target_is_directory=True)
        (d / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    except OSError:
        pytest.skip("cannot create symlinks here")
    p = run([d], recursive=True)
    assert [j.input for j in p.jobs] == [d / "x.jpg"]
    assert reasons(p) == {"gone.jpg": "broken symbolic link"}


# ---- inputs are never outputs ------------------------------------------------------------------


def test_output_equal_to_input_is_an_error(tmp_path):
    touch(tmp_path / "x.jpg")
    touch(tmp_path / "y.nef")
    p = run([tmp_path], output_dir=tmp_path)
    assert [j.input.name for j in p.jobs] == ["y.nef"]  # y.nef -> y.tif is fine
    assert p.jobs[0].output == tmp_path / "y.tif"
    assert "overwrite the input" in reasons(p)["x.jpg"]
    # a suffix makes it safe
    p = run([tmp_path], output_dir=tmp_path, suffix="_bl")
    assert p.errors == [] and outputs(p)["x.jpg"] == tmp_path / "x_bl.jpg"


def test_output_equal_to_another_input_is_an_error(tmp_path):
    touch(tmp_path / "b.tif")
    touch(tmp_path / "b.dng")
    # b.tif alone is not an input, so b.dng -> b.tif would be the writer's overwrite question;
    # but when b.tif is also given, no output may land on it
    assert [j.output for j in run([tmp_path / "b.dng"], output_dir=tmp_path).jobs] == [tmp_path / "b.tif"]
    p = run([tmp_path / "b.dng", tmp_path / "b.tif"], output_dir=tmp_path)
    assert [j.output for j in p.jobs] == []  # b.tif -> itself (error); b.dng -> b.tif (an input: error)
    assert "is an input" in reasons(p)["b.dng"]
    assert "overwrite the input" in reasons(p)["b.tif"]


def test_output_equal_to_input_through_a_symlinked_output_dir(tmp_path):
    src = touch(tmp_path / "shoot" / "x.jpg")
    alias = tmp_path / "alias"
    try:
        alias.symlink_to(tmp_path / "shoot", target_is_directory=True)
    except OSError:
        pytest.skip("cannot create symlinks here")
    p = run([src], output_dir=alias)
    assert p.jobs == [] and "overwrite the input" in p.errors[0].reason


@pytest.mark.skipif(not hasattr(os, "link"), reason="no hard links")
def test_output_equal_to_input_by_identity(tmp_path):
    # A differently spelled path to the same file (as on case-insensitive filesystems) is the input.
    src = touch(tmp_path / "shoot" / "x.jpg")
    other = tmp_path / "other"
    other.mkdir()
    try:
        os.link(src, other / "x.jpg")
    except OSError:
        pytest.skip("cannot create hard links here")
    p = run([src], output_dir=other)
    assert p.jobs == [] and "overwrite the input" in p.errors[0].reason


# ---- hostile names -----------------------------------------------------------------------------

HOSTILE = [
    "with space.jpg",
    "quote'single.jpg",
    'quote"double.jpg',
    "$(rm -rf ~).jpg",
    "`id`;ls.jpg",
    "-rf.jpg",
    "--help.png",
    "new\nline.jpg",
    "ünïcödé 写真.jpg",
    "emoji 📷.JPEG",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_as_arguments(tmp_path, name):
    try:
        f = touch(tmp_path / name)
    except OSError:
        pytest.skip("filesystem refuses this name")
    p = run([f], suffix="_x")
    assert p.errors == []
    (job,) = p.jobs
    assert job.input == f
    assert job.output.parent == tmp_path / "backlitfix"
    assert job.output.name == Path(name).stem + "_x" + Path(name).suffix


def test_hostile_names_in_a_hostile_folder(tmp_path):
    d = tmp_path / "-$(touch pwned) 'dir'"
    made = []
    for name in HOSTILE:
        try:
            made.append(touch(d / name))
        except OSError:
            pass
    p = run([d])
    assert sorted(j.input for j in p.jobs) == sorted(made)
    assert all(j.output.parent == d / "backlitfix" for j in p.jobs)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs arbitrary bytes in file names")
def test_undecodable_bytes_in_name(tmp_path):
    name = os.fsdecode(b"bad\xff\xfe.jpg")
    try:
        f = touch(tmp_path / name)
    except OSError:
        pytest.skip("filesystem refuses this name")
    p = run([tmp_path])
    assert [j.input for j in p.jobs] == [f]
    assert p.jobs[0].output == tmp_path / "backlitfix" / name


def test_job_is_immutable(tmp_path):
    touch(tmp_path / "x.jpg")
    job = run([tmp_path]).jobs[0]
    assert isinstance(job, Job)
    with pytest.raises(AttributeError):
        job.output = Path("/elsewhere")


# ---- ignored files and their reasons; our own outputs (issue 13) -------------------------------


def test_ignored_files_each_have_a_reason(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "anim.gif")
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.xmp")
    touch(tmp_path / "README")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere")
    p = run([tmp_path])
    why = {path.name: reason for path, reason in p.ignored_files}
    assert p.ignored == len(why) == 4
    assert why["anim.gif"] == "not a supported image type (.gif)"
    assert why["README"] == "not a supported image type (no extension)"
    assert "sidecar" in why["a.xmp"] and why["gone.txt"] == "broken symbolic link"


def test_own_outputs_in_the_output_folder_are_not_inputs(tmp_path):
    import numpy as np

    from backlitfix.io import encode
    from backlitfix.photo import Metadata, Photo

    def make(name, software=None):
        from PIL import Image

        path = tmp_path / name
        if software:
            encode(Photo(path, np.zeros((8, 8, 3), np.uint8), Metadata()), path, fmt=name.rsplit(".", 1)[1]
                   .replace("jpg", "jpeg").replace("tif", "tiff"), software=software)
        else:
            Image.new("RGB", (8, 8)).save(path)

    make("a.jpg")
    make("a_fixed.jpg")  # named as a's output: ours by the suffix
    make("b.png", software="backlitfix 0.1.0")  # ours by its Software tag
    make("c.tif", software="backlitfix 0.1.0")
    make("d.jpg", software="GIMP 3.0")  # someone else's
    make("e_fixed.jpg")  # the suffix, but no "e" beside it: a user's photo
    p = run([tmp_path], output_dir=tmp_path, suffix="_fixed")
    assert sorted(j.input.name for j in p.jobs) == ["a.jpg", "d.jpg", "e_fixed.jpg"]
    why = {path.name: reason for path, reason in p.ignored_files}
    assert set(why) == {"a_fixed.jpg", "b.png", "c.tif"} and p.errors == []
    assert "suffix" in why["a_fixed.jpg"] and "Software tag" in why["b.png"] and "Software tag" in why["c.tif"]
    # elsewhere than the output folder, the same files are inputs like any other
    p = run([tmp_path], output_dir=tmp_path / "out", suffix="_fixed")
    assert len(p.jobs) == 6


def test_a_folder_walk_without_recursion_names_the_sub_folders_it_did_not_enter(tmp_path):
    """A shoot split into card folders must not be half-processed without a word: the plan names the
    sub-folders it did not search (not dot-folders, our output folders or the -o folder)."""
    shoot = tmp_path / "shoot"
    for rel in ("a.jpg", "card2/b.jpg", "card1/c.jpg", ".thumbs/d.jpg", "backlitfix/a.jpg", "out/x.jpg"):
        touch(shoot / rel)
    p = run([shoot], output_dir=shoot / "out")
    assert [j.input.name for j in p.jobs] == ["a.jpg"]
    assert p.subfolders == [shoot / "card1", shoot / "card2"]
    assert run([shoot], recursive=True, output_dir=shoot / "out").subfolders == []
    assert run([shoot / "a.jpg"]).subfolders == []  # a file argument has no sub-folders


def test_run_says_which_sub_folders_it_did_not_search(tmp_path):
    import json

    from PIL import Image

    from conftest import cli

    shoot = tmp_path / "shoot"
    (shoot / "card 2").mkdir(parents=True)
    Image.new("RGB", (16, 16), (40, 40, 40)).save(shoot / "card 2" / "b.jpg")
    r = cli("run", "--dry-run", str(shoot))
    assert r.exit_code == 0, r.output
    assert "backlitfix: 1 sub-folder not searched (card 2); -r searches them" in r.stderr
    r = cli("run", "--dry-run", "--json", str(shoot))
    assert json.loads(r.stdout)["subfolders_not_searched"] == [str(shoot / "card 2")]
    r = cli("run", "--dry-run", "-r", str(shoot))
    assert "not searched" not in r.stderr and "1 planned" in r.stderr
