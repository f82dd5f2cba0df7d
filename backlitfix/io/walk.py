"""Finding photos in folders: the one folder walker of `run`, `watch`, `eval` and training.

Every caller gets the same order and the same rules, with options only where their needs differ:

* entries sorted by name, a folder's files before its sub-folders (depth first);
* an image is a file with an extension of :data:`~backlitfix.constants.IMAGE_EXTENSIONS`, matched
  case-insensitively; symbolic links to files are followed (``file_links``);
* symbolic links to folders are never followed (no loops, nothing outside the tree);
* dot-names (files and folders) are skipped unless ``hidden``; so are our own temporary files, which
  are dot-files;
* folders named ``backlitfix`` (where outputs go beside their inputs) are skipped unless
  ``output_folders``; callers add their own output folder through ``skip_folder``;
* folders that cannot be read, broken links and other files are reported through ``on_error`` and
  ``on_ignored`` with a one-line reason, when the caller asks; otherwise passed over silently.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..constants import IMAGE_EXTENSIONS, OUTPUT_DIRNAME, SIDECAR_EXTENSIONS

__all__ = ["Policy", "find_images", "is_hidden", "why_not_a_photo"]

P = TypeVar("P", str, Path)
Report = Callable[[Path, str], None]


@dataclass(frozen=True)
class Policy:
    """What a walk yields. The defaults are `run`'s rules."""

    recursive: bool = True
    hidden: bool = False  # yield dot-files and enter dot-folders
    output_folders: bool = False  # enter folders named 'backlitfix' (our outputs beside their inputs)
    file_links: bool = True  # yield symbolic links to image files (as the link's path)
    extensions: Collection[str] = tuple(IMAGE_EXTENSIONS)  # lower-case, with the dot
    # extra rules: a folder (path, its DirEntry) not to enter; a file name that is not (yet) a photo
    skip_folder: Callable[[str, os.DirEntry], bool] | None = None
    skip_name: Callable[[str], bool] | None = None


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def why_not_a_photo(name: str) -> str:
    """The reason a file found in a folder is not an input, as `run` reports it."""
    ext = os.path.splitext(name)[1].lower()
    if ext in SIDECAR_EXTENSIONS:
        return "a sidecar: copied with its photo"
    return f"not a supported image type ({ext})" if ext else "not a supported image type (no extension)"


def find_images(root: P, policy: Policy = Policy(), *, on_ignored: Report | None = None,
                on_error: Report | None = None, on_not_entered: Callable[[Path], None] | None = None) -> Iterator[P]:
    """The images under ``root`` by ``policy``, as paths of ``root``'s type (str or Path) that start
    with ``root``. ``root`` itself is always entered (it was asked for).

    ``on_ignored(path, why)``: a file that is no photo (other extension, sidecar, a broken link
    without an image extension). ``on_error(path, why)``: a folder that cannot be read, a broken
    link with an image extension. ``on_not_entered(path)``: a folder the walk would enter if it were
    recursive (the policy's other rules allow it).
    """
    as_str = isinstance(root, str)
    exts = frozenset(policy.extensions)
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if on_error:
                on_error(Path(folder), f"cannot read folder: {exc.strerror or exc}")
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            if not policy.hidden and is_hidden(name):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file()  # follows symlinks
                is_link = entry.is_symlink()
            except OSError:
                continue
            if is_dir:
                if _enter(entry, policy):
                    if policy.recursive:
                        subdirs.append(entry.path)
                    elif on_not_entered:
                        on_not_entered(Path(entry.path))
                continue
            image = os.path.splitext(name)[1].lower() in exts
            if is_file:
                if not image:
                    if on_ignored:
                        on_ignored(Path(entry.path), why_not_a_photo(name))
                elif (policy.file_links or not is_link) and not (policy.skip_name and policy.skip_name(name)):
                    yield entry.path if as_str else Path(entry.path)
            elif is_link and not os.path.exists(entry.path):
                report = on_error if image else on_ignored
                if report:
                    report(Path(entry.path), "broken symbolic link")
            # symlinks to folders are not followed (no loops); sockets, FIFOs etc. are not photos
        stack.extend(reversed(subdirs))  # depth first, in name order


def _enter(entry: os.DirEntry, policy: Policy) -> bool:
    if not policy.output_folders and entry.name.casefold() == OUTPUT_DIRNAME:
        return False
    return not (policy.skip_folder and policy.skip_folder(entry.path, entry))
