"""The one folder walker (backlitfix.io.walk) and the four callers that use it: run, watch, eval, training."""
import os
from pathlib import Path

import pytest

from backlitfix.discover import plan
from backlitfix.eval.evaluate import list_images as eval_images
from backlitfix.io.walk import Policy, find_images
from backlitfix.watch.scope import Scope


def touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path):
    """A shoot as cameras, editors and earlier runs leave it."""
    root = tmp_path / "shoot"
    touch(root, "b.JPG", "a.jpg", "a.xmp", "notes.txt", "c.nef", ".hidden.jpg", "d.jpg.part",
          "sub/e.png", "sub/deeper/f.tif", ".cache/g.jpg", "backlitfix/a.jpg", "BacklitFix/h.jpg",
          "z_sub/i.webp")
    return root


def rel(root, paths) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


def test_order_is_by_name_files_before_folders_depth_first(tree):
    assert rel(tree, find_images(tree)) == ["a.jpg", "b.JPG", "c.nef", "sub/e.png", "sub/deeper/f.tif", "z_sub/i.webp"]
    assert rel(tree, find_images(tree, Policy(recursive=False))) == ["a.jpg", "b.JPG", "c.nef"]


def test_a_walk_without_recursion_reports_the_folders_it_would_have_entered(tree):
    """By the walk's own rules: not dot-folders, not our output folders (in any case), not folder links."""
    (tree / "link").symlink_to(tree / "sub", target_is_directory=True)
    skipped = []
    assert rel(tree, find_images(tree, Policy(recursive=False), on_not_entered=skipped.append)) == [
        "a.jpg", "b.JPG", "c.nef"]
    assert rel(tree, skipped) == ["sub", "z_sub"]
    skipped.clear()
    list(find_images(tree, on_not_entered=skipped.append))  # recursive: it entered them all
    assert skipped == []


def test_hidden_and_our_output_folders_are_options(tree):
    everything = rel(tree, find_images(tree, Policy(hidden=True, output_folders=True)))
    assert {".hidden.jpg", ".cache/g.jpg", "backlitfix/a.jpg", "BacklitFix/h.jpg"} <= set(everything)
    assert not {".hidden.jpg", ".cache/g.jpg"} & set(rel(tree, find_images(tree, Policy(output_folders=True))))
    assert not {"backlitfix/a.jpg", "BacklitFix/h.jpg"} & set(rel(tree, find_images(tree, Policy(hidden=True))))


def test_extensions_and_extra_rules(tree):
    assert rel(tree, find_images(tree, Policy(extensions=(".jpg",)))) == ["a.jpg", "b.JPG"]  # case-insensitive
    assert rel(tree, find_images(tree, Policy(skip_name=lambda n: n.startswith("a"))))[0] == "b.JPG"
    no_sub = Policy(skip_folder=lambda path, entry: entry.name == "sub")
    assert rel(tree, find_images(tree, no_sub)) == ["a.jpg", "b.JPG", "c.nef", "z_sub/i.webp"]


def test_reports_what_it_passes_over(tree, tmp_path):
    ignored, errors = [], []
    os.symlink(tmp_path / "gone.jpg", tree / "broken.jpg")
    os.symlink(tmp_path / "gone.txt", tree / "broken.txt")
    list(find_images(tree, on_ignored=lambda p, why: ignored.append((p.name, why)),
                     on_error=lambda p, why: errors.append((p.name, why))))
    assert ("a.xmp", "a sidecar: copied with its photo") in ignored
    assert ("notes.txt", "not a supported image type (.txt)") in ignored
    assert ("d.jpg.part", "not a supported image type (.part)") in ignored
    assert ("broken.txt", "broken symbolic link") in ignored
    assert errors == [("broken.jpg", "broken symbolic link")]
    missing = []
    assert list(find_images(tmp_path / "missing", on_error=lambda p, why: missing.append(why))) == []
    assert missing and missing[0].startswith("cannot read folder")


def test_symlinks_to_files_are_an_option_links_to_folders_never_followed(tree, tmp_path):
    outside = tmp_path / "outside"
    touch(outside, "o.jpg")
    os.symlink(outside / "o.jpg", tree / "link.jpg")
    os.symlink(outside, tree / "linked_folder")
    os.symlink(tree, tree / "sub" / "loop")  # would never end if followed
    found = rel(tree, find_images(tree))
    assert "link.jpg" in found and not any(p.startswith(("linked_folder", "sub/loop")) for p in found)
    assert "link.jpg" not in rel(tree, find_images(tree, Policy(file_links=False)))


def test_paths_keep_the_type_of_the_root(tree):
    assert all(isinstance(p, str) for p in find_images(str(tree)))
    assert all(isinstance(p, Path) for p in find_images(tree))


def test_the_four_callers_share_the_rules(tree):
    """run, watch, eval and training see the same photos; each differs only by its documented option."""
    from backlitfix.training.library import list_images as training_images

    run = rel(tree, [j.input for j in plan([tree], recursive=True, output_dir=None, suffix="", fmt="auto").jobs])
    watch = rel(tree, Scope(tree, tree / "backlitfix", recursive=True).walk())
    assert run == watch == rel(tree, training_images(tree))
    assert rel(tree, eval_images(tree)) == ["a.jpg", "b.JPG", "c.nef"]  # eval: one folder, not recursive
    assert rel(tree, training_images(tree, recursive=False)) == ["a.jpg", "b.JPG", "c.nef"]


def test_an_output_folder_inside_the_tree_is_never_an_input(tree):
    """run -o shoot/sub and watch with its output in shoot/sub: nothing under it is an input."""
    run = plan([tree], recursive=True, output_dir=tree / "sub", suffix="_x", fmt="auto")
    assert rel(tree, [j.input for j in run.jobs]) == ["a.jpg", "b.JPG", "c.nef", "z_sub/i.webp"]
    watch = Scope(tree, tree / "sub", recursive=True)
    assert rel(tree, watch.walk()) == ["a.jpg", "b.JPG", "c.nef", "z_sub/i.webp"]
    assert rel(tree, watch.walk(str(tree / "sub"))) == []


def test_watch_skips_files_still_being_written(tree):
    touch(tree, "k.jpg.crdownload", "l.jpg~", "m.tmp.jpg")
    found = rel(tree, Scope(tree, tree / "backlitfix", recursive=False).walk())
    assert found == ["a.jpg", "b.JPG", "c.nef", "m.tmp.jpg"]
