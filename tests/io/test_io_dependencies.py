"""What photo I/O needs at run time (issue 16): piexif is a test tool, never imported by backlitfix."""
import subprocess
import sys

from conftest import shared_path


def test_decoding_and_encoding_every_format_never_imports_piexif(tmp_path):
    src = shared_path("data", "exif", "Canon_DIGITAL_IXUS_400.jpg")  # real camera EXIF, maker notes
    code = f"""
import sys
from backlitfix.cli import main
from backlitfix.io import decode, encode
photo = decode({str(src)!r}, max_pixels=10**9)
for fmt in ("jpeg", "png", "tiff", "webp"):
    encode(photo, {str(tmp_path)!r} + "/out." + fmt, fmt=fmt, software="t")
    decode({str(tmp_path)!r} + "/out." + fmt, max_pixels=10**9)
assert "piexif" not in sys.modules, "piexif was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
