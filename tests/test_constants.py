"""backlitfix.constants is the one home of the shared numbers and tables; nothing keeps a second copy."""
import re
from pathlib import Path

import yaml

from backlitfix import constants as C
from backlitfix.config import load_config

REPO = Path(__file__).resolve().parents[1]

# Files that still hold a copy, each with its reason; this list only shrinks (an entry without a copy fails).
NOT_YET: dict[str, str] = {}
COPIES = {
    "Rec. 709 weights": re.compile(r"0\.2126"),
    "Rec. 601 weights": re.compile(r"0\.299\s*,\s*0\.587"),
    "the pixel limit": re.compile(r"\b(?:250_?000_?000|200_?000_?000)\b"),
    "the illumination floor": re.compile(r"^\s*L_FLOOR\s*=", re.M),
    "an extension table": re.compile(r"\"\.jpe?g\"\s*:\s*\"jpeg\"|\"cr2 |\.xmp \.xmp~"),
}


def test_the_config_default_is_the_constant():
    import inspect

    from backlitfix.eval.evaluate import evaluate

    assert load_config(user_config=None).input.max_pixels == C.MAX_PIXELS
    assert inspect.signature(evaluate).parameters["max_pixels"].default == C.MAX_PIXELS  # was 200 MP
    for f in ("backlitfix/config.yaml", "config.yaml"):  # the shipped defaults and the documented example
        assert yaml.safe_load((REPO / f).read_text())["input"]["max_pixels"] == C.MAX_PIXELS, f


def test_the_format_tables_agree():
    readable = set(C.PILLOW_READABLE.values()) | {"raw"}
    assert set(C.IMAGE_EXTENSIONS.values()) == readable
    assert all(ext == ext.lower() and ext.startswith(".") for ext in C.IMAGE_EXTENSIONS)
    assert set(C.OUTPUT_EXTENSIONS) == set(C.WRITABLE_FORMATS)
    assert set(C.OUTPUT_FORMAT_CHOICES) - {"auto"} <= set(C.WRITABLE_FORMATS)
    assert not set(C.IMAGE_EXTENSIONS) & set(C.SIDECAR_EXTENSIONS)
    assert sum(C.LUMA_REC709) == 1.0 and abs(sum(C.LUMA_REC601) - 1.0) < 1e-12


def copies_in(path: Path) -> list[str]:
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    return [what for what, pattern in COPIES.items() if pattern.search(code)]


def test_no_second_copy_of_the_shared_numbers():
    found = []
    for folder in ("backlitfix", "training", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name != "backlitfix/constants.py" and name not in NOT_YET:
                found += [f"{name}: {what}" for what in copies_in(path)]
    assert found == []
    assert [f for f in NOT_YET if not copies_in(REPO / f)] == []  # done: remove it from NOT_YET
