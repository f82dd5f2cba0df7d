"""backlitfix: fix backlit photos with the CLIP-LIT / RAVE enhancement network.

From Python::

    import backlitfix
    enh = backlitfix.load()          # the default model, fast mode, strength "auto"
    out = enh.enhance(image)         # PIL.Image -> PIL.Image; H x W x 3 uint8/uint16 array -> the same

The names below are the public API; every submodule is internal and may change between releases.
Importing backlitfix is light: torch is imported by `load`.
"""
__version__ = "0.1.0"

TYPE_CHECKING = False  # as typing.TYPE_CHECKING (type checkers read it so), without importing typing

if TYPE_CHECKING:
    from .api import BacklitfixError, Enhancer, load

__all__ = ["BacklitfixError", "Enhancer", "__version__", "load"]


def __getattr__(name: str):
    # The API module on first use, so that `import backlitfix` (every CLI start) stays as light as before.
    if name in ("BacklitfixError", "Enhancer", "load"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'backlitfix' has no attribute {name!r}")
