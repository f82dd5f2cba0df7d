"""Temporary files a killed daemon left behind in the output folder.

Every output is written as ``.<name>.<8 random chars>.tmp`` beside its destination and renamed
over it (`backlitfix.io.atomic`). A ``kill -9`` between the two leaves the temporary file. At
start-up the daemon removes those that are provably its own: the destination ``<name>`` is an
output recorded in the journal, released or not (or the ``.xmp`` sidecar of one), and no live
writer holds its lock. Temporary files of anything else writing into the same folder (another
``backlitfix run``, an editor) are left alone.
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
    """Delete the temporary files a killed daemon left for known outputs (or their ``.xmp``
    sidecars): `backlitfix.io.atomic.remove_stale_temps`, which also leaves alone a temporary file
    whose writer is still alive (it holds a lock on it). Returns the paths removed."""
    from ..io.atomic import remove_stale_temps as remove

    return [str(p) for p in remove(outputs)]
