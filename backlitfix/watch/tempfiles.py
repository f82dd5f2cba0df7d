"""Temporary files a killed daemon left behind in the output folder.

Every output is written as ``.<name>.<8 random chars>.tmp`` beside its destination and renamed
over it (`backlitfix.io.atomic`). A ``kill -9`` between the two leaves the temporary file. At
start-up the daemon removes those that are provably its own: the destination ``<name>`` is an
output recorded in the journal (or the ``.xmp`` sidecar of one). Temporary files of anything else
writing into the same folder (another ``backlitfix run``, an editor) are left alone.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

# tempfile.mkstemp(prefix=".<name>.", suffix=".tmp"): 8 characters from [a-z0-9_]
TEMP_NAME = re.compile(r"^\.(?P<dest>.+)\.[a-z0-9_]{8}\.tmp$")


def temp_destination(path: str) -> str | None:
    """The file a temporary file was going to become, or None if the name is not one of ours."""
    folder, name = os.path.split(path)
    m = TEMP_NAME.match(name)
    return os.path.join(folder, m.group("dest")) if m else None


def remove_stale_temps(out_dir: str, outputs: Iterable[str]) -> list[str]:
    """Delete ``.<name>.<random>.tmp`` files under ``out_dir`` whose destination is a known output
    (or that output's ``.xmp`` sidecar). Returns the paths removed."""
    owned = {os.path.normcase(os.path.abspath(p)) for p in outputs}
    owned_stems = {os.path.splitext(p)[0] for p in owned}
    removed = []
    for folder, dirs, files in os.walk(out_dir):
        for name in files:
            if not name.endswith(".tmp"):
                continue
            path = os.path.join(folder, name)
            dest = temp_destination(path)
            if dest is None:
                continue
            key = os.path.normcase(os.path.abspath(dest))
            stem, ext = os.path.splitext(key)
            if key in owned or (ext == ".xmp" and stem in owned_stems):
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
    return removed
