"""Exact mode, whatever the file type: the issue-13 seam bug, measured before and after in one run.

The same upright 500 x 400 pixels as an 8-bit PNG, a 16-bit TIFF and an Orientation-6 JPEG go through
`backlitfix run --mode exact` (tile 128, strength 1, PNG out) with this checkout's code and with an older
commit's (``--before``, default the commit before the fix), each in its own process. The 16-bit TIFF and
the rotated JPEG are corrected in place; their results should equal the 8-bit PNG's to within 1 level.

    python bench/exact_inplace.py [--before REV]
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")
GOLDEN = SHARED / "reference" / "golden" / "110_51093502029_o_1152x864.png"


def write_inputs(folder: Path) -> None:
    src = Image.open(GOLDEN).convert("RGB").resize((500, 400), Image.LANCZOS)
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns it 90 degrees clockwise
    src.transpose(Image.Transpose.ROTATE_90).save(folder / "rot6.jpg", quality=95, exif=exif.tobytes())
    with Image.open(folder / "rot6.jpg") as im:  # the upright pixels, as decoded from the JPEG
        from PIL import ImageOps

        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    Image.fromarray(upright).save(folder / "upright8.png")
    tifffile.imwrite(folder / "deep16.tif", upright.astype(np.uint16) * 257, photometric="rgb")


def run(code_root: Path, inputs: Path, outputs: Path, cfg: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(code_root), XDG_CONFIG_HOME="/nonexistent")
    subprocess.run([sys.executable, "-c", "import sys; from backlitfix.cli import main; sys.exit(main())",
                    "run", "--mode", "exact", "--strength", "1", "--config", str(cfg), "--format", "png",
                    "-o", str(outputs), "--", str(inputs)], check=True, env=env, cwd=code_root,
                   capture_output=True)


def differences(outputs: Path) -> dict[str, str]:
    ref = np.asarray(Image.open(outputs / "upright8.png")).astype(np.float64)
    with Image.open(outputs / "deep16.png") as im:
        deep = np.asarray(im)
    if deep.dtype != np.uint16:  # Pillow reads 16-bit RGB PNG as 8-bit: decode through our reader
        from backlitfix.io import decode

        deep = decode(outputs / "deep16.png", max_pixels=10**9).pixels
    found = {}
    for name, got in (("16-bit TIFF", deep.astype(np.float64) / 257),
                      ("Orientation-6 JPEG", np.asarray(Image.open(outputs / "rot6.png")).astype(np.float64))):
        d = np.abs(got - ref)
        found[name] = f"max {d.max():6.2f} levels, {np.count_nonzero(d > 1):6d} values over 1 level"
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="7484339", help="the older commit to compare with")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = tmp / "in"
        inputs.mkdir()
        write_inputs(inputs)
        cfg = tmp / "cfg.yaml"
        cfg.write_text("exact:\n  tile: 128\n")
        old = tmp / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before], check=True,
                                 capture_output=True).stdout
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(old, filter="data")
        for label, root in ((f"before ({args.before})", old), ("now", REPO)):
            out = tmp / f"out-{root.name}"
            run(root, inputs, out, cfg)
            for name, line in differences(out).items():
                print(f"{label:<18} {name:<20} {line}")


if __name__ == "__main__":
    main()
