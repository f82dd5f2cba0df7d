"""Which paths under the watched folder are inputs (backlitfix.watch.scope), on real files."""
from __future__ import annotations

import os

import pytest

from backlitfix.watch.scope import Scope, is_partial_name

# ---- which paths are inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [".x.jpg", "x.jpg.part", "x.JPG.crdownload", "x.jpg.tmp", "x.jpg~",
                                  ".x.jpg.ab12cd34.tmp"])
def test_names_in_transit_are_not_photos(name, tmp_path):
    assert is_partial_name(name)
    assert not Scope(tmp_path, tmp_path / "out", recursive=True).is_candidate(str(tmp_path / name))


def test_scope_follows_run_and_never_looks_inside_the_output_folder(tmp_path):
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "fixed" / "nested").mkdir(parents=True)
    (src / "backlitfix").mkdir()
    (src / ".hidden").mkdir()
    for rel in ("a.jpg", "b.PNG", "notes.txt", "a.xmp", "sub/c.tif", "sub/deeper/d.jpeg", "fixed/o.jpg",
                "fixed/nested/o2.jpg", "backlitfix/o3.jpg", ".hidden/h.jpg", ".e.jpg", "f.jpg.part"):
        (src / rel).write_bytes(b"x")
    flat = Scope(src, src / "fixed", recursive=False)
    assert [os.path.relpath(p, src) for p in flat.walk()] == ["a.jpg", "b.PNG"]
    deep = Scope(src, src / "fixed", recursive=True)
    assert sorted(os.path.relpath(p, src) for p in deep.walk()) == ["a.jpg", "b.PNG", "sub/c.tif", "sub/deeper/d.jpeg"]
    assert not deep.is_candidate(str(src / "fixed" / "new.jpg"))
    assert not deep.is_candidate(str(src / "fixed" / "nested" / "new.jpg"))
    assert deep.is_candidate(str(src / "sub" / "new.jpg"))
    assert not flat.is_candidate(str(src / "sub" / "new.jpg"))  # not recursive
    assert not deep.is_candidate(str(tmp_path / "elsewhere.jpg"))


def test_output_folder_reached_through_a_symlink_is_still_excluded(tmp_path):
    real = tmp_path / "real"
    (real / "out").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    scope = Scope(link, real / "out", recursive=True)
    assert not scope.is_candidate(str(link / "out" / "x.jpg"))
    assert scope.is_candidate(str(link / "x.jpg"))
