"""Which paths under the watched folder are photos to process, and which are never inputs.

The rules are those of ``backlitfix run`` on the same folder (`backlitfix.discover`): image
extensions only, dot-names skipped, sub-folders only with ``--recursive``, folders named
``backlitfix`` skipped. On top of that, for a folder that fills while it is watched:

* names that import and download tools use while a file is still being written are not photos
  until they are renamed: ``*.part``, ``*.crdownload``, ``*.tmp``, ``*~`` and dot-files (our own
  temporary files, ``.<name>.<random>.tmp``, are dot-files too);
* nothing under the output folder is an input, so an output folder inside the watched folder
  causes no loop.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..constants import IMAGE_EXTENSIONS
from ..constants import OUTPUT_DIRNAME as DEFAULT_OUTPUT_DIRNAME
from ..io.walk import Policy, find_images, is_hidden

# Suffixes of files that are still being written by a download or import tool.
PARTIAL_SUFFIXES = (".part", ".crdownload", ".tmp", "~")


def is_partial_name(name: str) -> bool:
    """True for names that mark a file still in transit: dot-files and the PARTIAL_SUFFIXES."""
    return is_hidden(name) or name.lower().endswith(PARTIAL_SUFFIXES)


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Scope:
    """Decides, from the path alone, whether a path under ``in_dir`` is a candidate photo.

    ``in_dir`` and ``out_dir`` are absolute. Paths given to the methods are ``in_dir`` joined with
    a relative part, as watchdog and :meth:`walk` report them.
    """

    def __init__(self, in_dir: Path, out_dir: Path, recursive: bool):
        self.in_dir = str(in_dir)
        self.recursive = recursive
        self._in_real = os.path.realpath(in_dir)
        self._out_real = os.path.realpath(out_dir)

    def _real(self, path: str) -> str:
        """The path with ``in_dir``'s own symlinks resolved (deeper symlinks are never followed)."""
        rel = os.path.relpath(path, self.in_dir)
        return os.path.normpath(os.path.join(self._in_real, rel))

    def relative_parts(self, path: str) -> tuple[str, ...] | None:
        rel = os.path.relpath(path, self.in_dir)
        if rel == os.curdir:
            return ()
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return None
        return tuple(rel.split(os.sep))

    def in_output(self, path: str) -> bool:
        return _is_under(self._real(path), self._out_real)

    def folder_ok(self, path: str) -> bool:
        """A folder whose photos are inputs: in_dir itself, or (recursive) a sub-folder that is not
        hidden, not named ``backlitfix`` and not (inside) the output folder."""
        parts = self.relative_parts(path)
        if parts is None:
            return False
        if not parts:
            return True
        if not self.recursive:
            return False
        if any(p.startswith(".") or p.casefold() == DEFAULT_OUTPUT_DIRNAME for p in parts):
            return False
        return not self.in_output(path)

    def is_candidate(self, path: str) -> bool:
        """A photo to process once it is complete (the file itself is not looked at)."""
        folder, name = os.path.split(path)
        if is_partial_name(name) or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
            return False
        return self.folder_ok(folder) and not self.in_output(path)

    def walk(self, top: str | None = None):
        """Yield the candidate photos under ``top`` (default: the watched folder), sorted by name."""
        top = self.in_dir if top is None else top
        if not self.folder_ok(top):
            return
        # the walker's own rules (dot-names, 'backlitfix' folders) are a subset of folder_ok/is_candidate
        policy = Policy(recursive=self.recursive, skip_folder=lambda path, _entry: not self.folder_ok(path),
                        skip_name=is_partial_name)
        for path in find_images(top, policy):
            if not self.in_output(path):
                yield path
