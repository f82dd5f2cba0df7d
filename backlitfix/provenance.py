"""Whether a file is an output of backlitfix, so a run never takes its own results as inputs.

Asked only of files that sit in the output folder. Two signs, either one enough:

* the Software tag we write (EXIF in JPEG/TIFF/PNG/WebP, PNG ``tEXt``) starts with ``backlitfix``:
  read from the header only (Pillow opens lazily; no pixels are decoded);
* the name is ``<stem><suffix>.<ext>`` with the run's suffix, and ``<stem>`` is another photo in the
  same folder: what the run would have made of it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

SOFTWARE_TAG = 0x0131
MARK = "backlitfix"


def software_of(path: Path) -> str:
    """The file's Software tag, or "" when it has none or cannot be read (header only)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                sw = im.info.get("Software") or im.getexif().get(SOFTWARE_TAG) or ""
    except Exception:  # noqa: BLE001 - unreadable here means "not known to be ours"; decode will say why
        return ""
    if isinstance(sw, bytes):
        sw = sw.decode("latin-1", "replace")
    return str(sw).strip("\0 ")


def made_by_us(path: Path, suffix: str = "", stems_beside: set[str] | frozenset = frozenset()) -> str | None:
    """Why ``path`` is a backlitfix output ("Software tag", "suffix"), or None when it is not one."""
    path = Path(path)
    if suffix and path.stem.endswith(suffix) and path.stem[: -len(suffix)] in stems_beside:
        return f"named like the output of {path.stem[: -len(suffix)]} (suffix {suffix!r})"
    if software_of(path).startswith(MARK):
        return "written by backlitfix (Software tag)"
    return None
