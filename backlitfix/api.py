"""The Python API: ``backlitfix.load(...)`` once, then ``enhancer.enhance(image)`` for each image.

Pixels in, pixels out, exactly as ``backlitfix run`` corrects a photo (the same model loading, the same
`Pipeline.strength_for`, the same enhancer), without files, metadata or a configuration file. Importing
this module is cheap: torch, numpy and Pillow are imported when a model is loaded or an image enhanced.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .config import Config
    from .enhance import Enhancer as _Engine
    from .model.checkpoint import ModelInfo
    from .pipeline import Pipeline

Strength = float | Literal["auto"]


class BacklitfixError(Exception):
    """The model cannot be loaded (no such name or file, a damaged checkpoint) or an argument is invalid."""


_calls = itertools.count()  # a key per call: Pipeline records each photo's strength under its path


class Enhancer:
    """A loaded model and how to apply it; made by `backlitfix.load`. Safe to share between threads
    for reading, but it runs one image at a time at full speed (PyTorch uses all cores)."""

    def __init__(self, cfg: Config, engine: _Engine, info: ModelInfo):
        self._cfg = cfg
        self._engine = engine
        self.model: str = info.name  # the model's name (or the file's stem for a path)
        self.model_info = info
        self.mode: str = cfg.mode
        self.device: str = str(engine.device)
        self.strength: Strength = cfg.strength  # the default for `enhance`

    def __repr__(self) -> str:
        return (f"backlitfix.Enhancer(model={self.model!r}, mode={self.mode!r}, device={self.device!r}, "
                f"strength={self.strength!r})")

    @overload
    def enhance(self, image: Image.Image, *, strength: Strength | None = None,
                return_strength: Literal[False] = False) -> Image.Image: ...
    @overload
    def enhance(self, image: np.ndarray, *, strength: Strength | None = None,
                return_strength: Literal[False] = False) -> np.ndarray: ...
    @overload
    def enhance(self, image: Image.Image, *, strength: Strength | None = None,
                return_strength: Literal[True]) -> tuple[Image.Image, float]: ...
    @overload
    def enhance(self, image: np.ndarray, *, strength: Strength | None = None,
                return_strength: Literal[True]) -> tuple[np.ndarray, float]: ...

    def enhance(self, image, *, strength=None, return_strength=False):
        """Correct one image; the input is never changed.

        ``image``: a PIL image (RGB, RGBA, L, LA, P, CMYK; 8 bits a channel) or an H x W x 3 (or x 4, the
        last channel alpha) uint8 or uint16 array. An array comes back with its dtype and shape; a PIL
        image as RGB, or RGBA when it has transparency (converted to RGB as ``run`` converts a file: a
        CMYK or greyscale ICC profile through sRGB). Alpha is kept as it was; only the colour is corrected.
        A PIL image is first turned upright by its EXIF Orientation (``ImageOps.exif_transpose``), as
        ``run`` turns every photo, so an image straight from ``Image.open`` gives what ``run`` writes; the
        result carries the ICC profile that describes its pixels in ``info``.
        16-bit work goes through arrays (a PIL image cannot hold 16-bit RGB).

        ``strength``: 0 (unchanged) .. 2, or "auto" (decided per image, as ``run`` decides it);
        None = the strength given to `load`. ``return_strength=True`` returns ``(result, strength
        applied)``: for "auto", the strength it chose.
        """
        import numpy as np

        s = self.strength if strength is None else strength
        if isinstance(image, np.ndarray):
            out, applied = self._array(image, s)
        elif _is_pil(image):
            out, applied = self._pil(image, s)
        else:
            raise TypeError(f"expected a PIL.Image.Image or a numpy array, got {type(image).__name__}")
        return (out, applied) if return_strength else out

    # -- internals

    def _array(self, a, strength: Strength):
        import numpy as np

        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected an H x W x 3 (or x 4) uint8 or uint16 array, got {a.shape} {a.dtype}")
        out, s = self._correct(np.ascontiguousarray(a[..., :3]), strength)
        if a.shape[2] == 4:
            out = np.concatenate([out, a[..., 3:]], axis=2)
        return out, s

    def _pil(self, im, strength: Strength):
        from PIL import Image, ImageOps

        from .io.decode import _pixels

        im = ImageOps.exif_transpose(im)  # a new, loaded image: the caller's is left alone
        im.tile = []  # decoded already: _pixels' raw 16-bit file paths do not apply
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            raise ValueError(f"PIL mode {im.mode!r} (over 8 bits a channel): pass a uint16 numpy array instead")
        # run's own conversion to RGB: alpha apart, greyscale and CMYK through their ICC profile to sRGB
        pixels, alpha, icc, notes = _pixels(im, None, "image")
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=3)
        out, s = self._correct(pixels, strength)
        result = Image.fromarray(out, "RGB")
        if alpha is not None:
            result.putalpha(Image.fromarray(alpha, "L"))
        if icc:
            result.info["icc_profile"] = icc  # the profile that describes the corrected pixels
        return result, s

    def _correct(self, pixels, strength: Strength):
        """``run``'s own steps for one photo: `Pipeline.strength_for` then the enhancer."""
        from .photo import Metadata, Photo

        if strength != "auto":
            strength = float(strength)
            if not 0.0 <= strength <= 2.0:
                raise ValueError(f"strength must be 0..2 or 'auto', not {strength}")
        if pixels.shape[0] < 2 or pixels.shape[1] < 2:
            raise ValueError(f"image of {pixels.shape[1]}x{pixels.shape[0]} pixels is too small (at least 2x2)")
        pipeline = self._pipeline(strength)
        photo = Photo(Path(f"<image {next(_calls)}>"), pixels, Metadata())  # no EXIF: no burst
        rule = pipeline.strength_for(photo)
        out = self._engine.enhance(pixels, rule)  # a new array: the caller's is left alone
        s, _ = pipeline.applied.pop(str(photo.path))
        return out, s

    def _pipeline(self, strength: Strength) -> Pipeline:
        from dataclasses import replace

        from .pipeline import Pipeline

        cfg = self._cfg if strength == self._cfg.strength else replace(self._cfg, strength=strength)
        return Pipeline(cfg, self._engine)


def load(model: str | Path | None = None, *, device: str = "auto", mode: str = "fast",
         strength: Strength = "auto", precision: str = "auto", backend: str = "auto",
         auto_bias: float = 0.0) -> Enhancer:
    """Load a model for `Enhancer.enhance`; the settings are ``backlitfix run``'s options of the same names.

    ``model``: a model name (``backlitfix models``) or a checkpoint path; None = the default model.
    ``device``: auto | cpu | cuda | mps. ``mode``: fast | exact. ``strength``: 0..2 or "auto" (the
    default for each `enhance` call). ``precision``: auto | fp32 | bf16 | fp16 (fast mode on a GPU).
    ``backend``: auto | torch | onnxruntime | openvino (the CPU: fast mode, and exact mode's interior tiles).
    ``auto_bias``: -3..3, the lean of "auto" (``--auto-bias``): negative leaves more images alone.
    The user's configuration file is not read: a script gets the same result on every machine.
    Raises `BacklitfixError` with a one-line reason.
    """
    from .config import ConfigError, load_config
    from .model.checkpoint import CheckpointError

    overrides = {"model": None if model is None else str(model), "device": device, "mode": mode,
                 "strength": strength, "precision": precision, "backend": backend, "auto.bias": auto_bias}
    try:
        cfg = load_config(overrides={k: v for k, v in overrides.items() if v is not None}, user_config=None)
        return from_config(cfg)
    except (ConfigError, CheckpointError, ValueError) as e:
        raise BacklitfixError(str(e)) from None


def from_config(cfg: Config, warn: Callable[[str], None] | None = None) -> Enhancer:
    """An `Enhancer` for a full `Config` (the CLI's way in). ``warn`` hears of a precision problem;
    without it, Python's warnings do. Raises CheckpointError / ValueError."""
    from .backends import make_backend, make_tile_runtime
    from .enhance import Enhancer as Engine
    from .enhance import pick_device, pick_dtype, precision_warning
    from .model.checkpoint import load_model
    from .model.registry import resolve

    entry = resolve(cfg.model)
    net, info = load_model(entry.path)
    info.name = entry.name
    dev = pick_device(cfg.device)
    dtype = pick_dtype(cfg.precision, dev)
    # Exact mode: its interior tiles through the backend (float32), border tiles in PyTorch. Its strength
    # pass is one working-size run, not worth a second export.
    backend = make_backend(cfg.backend, net, dtype, dev, warn) if cfg.mode == "fast" else None
    tiles = make_tile_runtime(cfg.backend, net, dev, warn) if cfg.mode == "exact" else None
    engine = Engine(net, mode=cfg.mode, device=dev, dtype=dtype,
                    working_megapixels=cfg.fast.working_megapixels, guide_radius=cfg.fast.guide_radius,
                    guide_eps=cfg.fast.guide_eps, tile=cfg.exact.tile, backend=backend, tile_runtime=tiles)
    if cfg.mode == "fast" and (w := precision_warning(cfg.precision, dev)):  # exact mode is always fp32
        if warn is None:
            warnings.warn(w, RuntimeWarning, stacklevel=3)
        else:
            warn(w)
    return Enhancer(cfg, engine, info)


def _is_pil(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)
