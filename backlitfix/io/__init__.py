"""Photo file input and output: decode files to Photos, encode Photos to files, atomically."""
from .atomic import atomic_write, atomic_write_bytes
from .decode import decode
from .encode import encode
from .formats import IMAGE_EXTENSIONS, RAW_EXTENSIONS, SIDECAR_EXTENSIONS, format_of, output_extension
from .sidecars import copy_sidecars, find_sidecars

__all__ = [
    "IMAGE_EXTENSIONS", "RAW_EXTENSIONS", "SIDECAR_EXTENSIONS",
    "atomic_write", "atomic_write_bytes", "copy_sidecars", "decode", "encode", "find_sidecars",
    "format_of", "output_extension",
]
