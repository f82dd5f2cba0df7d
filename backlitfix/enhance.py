"""Pixels in, corrected pixels out: the two inference modes, strength, and image formation.

- ``exact``: tiled two-pass inference (`backlitfix.tiling`), equal to one full-resolution pass, with
  memory set by the tile size. Always float32, because "exact" is a promise.
- ``fast``: estimate L at a working resolution, then bring it to full resolution guided by the
  full-resolution luminance Y: L = up(L_s) + up(a) * (Y - up(Y_s)), where a is the local slope dL/dY
  of a guided filter (He et al.) fitted at working resolution. It keeps the network's L and adds back
  only the detail that downscaling removed, with the local sign and size of L's response to it.
  Measured against exact (bench/fast_vs_exact.py), this beat the classic fast guided filter
  (L ~ up(a) Y + up(b)) by 1.5 dB at 0.5 MP and 5 dB at 1 MP, and keeps local contrast. The result
  is kept within the working-resolution map's local range, so the guide adds detail, never halos.
The division I / L is done at full resolution in float32, strip by strip, straight into the output
array (which may be the input: exact mode keeps the original rows its later tiles still read), so a
24 MP photo never exists as a full float32 copy on the CPU. Strength s <= 1 is I / L**s; above 1 the
extra gain rolls off in highlights. A strength may also be decided per photo (`StrengthRule`).
"""
from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .constants import L_FLOOR
from .constants import LUMA_REC601 as LUMA  # the upsampler's guide: Rec. 601 luma of the encoded values
from .model.network import EnhanceNet
from .tiling import InPlaceTiles, exact_L

STRIP_ROWS = 256  # rows per full-resolution strip on the CPU: a few MB per temporary
# A network input below this many pixels runs on one CPU thread. Its ops are too short to share, and each
# waits at a barrier for a thread that a busy core has descheduled. 2 cores, `run` on 0.04-0.07 MP photos,
# median per photo, 2 threads -> 1: beside a decode/encode thread on a loaded machine 1.92 -> 0.24 s; one core
# busy 0.21 -> 0.15 s; idle cores 0.10 -> 0.13 s (the price: the tail is what a batch feels).
ONE_THREAD_PIXELS = 150_000

# Decides a photo's strength from (small, L): the (1, 3, h, w) float32 CPU input in [0, 1] at the working
# resolution and the network's (h, w) float32 CPU illumination map for it (before floor and strength).
StrengthRule = Callable[[torch.Tensor, torch.Tensor], float]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available to this PyTorch build")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple's Metal backend is not available here")
    return torch.device(name)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision in PRECISIONS:
        return PRECISIONS[precision]
    # auto: reduced precision only where the hardware runs it natively; emulated, it is several times slower.
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and torch.bfloat16 in native_dtypes(device):
        return torch.bfloat16
    return torch.float32


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from /proc/cpuinfo; empty where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


# oneDNN ISA caps without bf16/fp16 instructions: ONEDNN_MAX_CPU_ISA set to one of these makes them emulated
# (bench/speed.py emulates an AVX2 CPU so; OpenVINO's CPU plugin obeys it too).
CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def isa_capped() -> bool:
    """Whether the environment holds oneDNN or ATen below the CPU's reduced-precision instructions."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in CAPS_WITHOUT_BF16
            or os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"))


def native_dtypes(device: torch.device) -> set[torch.dtype]:
    """Reduced precisions the device computes in hardware (float32 always).

    oneDNN's own bf16 check also says yes on AVX-512 CPUs without bf16 instructions, where it emulates
    them, so the CPU's flags decide: AVX512-BF16 or AMX for bf16, AVX512-FP16 or AMX-FP16 for fp16
    (Arm: the bf16 and half-precision SIMD features).
    """
    out = {torch.float32}
    if device.type == "cuda":
        out.add(torch.float16)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            out.add(torch.bfloat16)
    elif device.type == "mps":
        out.add(torch.float16)
    elif device.type == "cpu":
        flags = set() if isa_capped() else cpu_flags()
        if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
            out.add(torch.bfloat16)
        if flags & {"avx512_fp16", "amx_fp16", "asimdhp"}:
            out.add(torch.float16)
    return out


def precision_warning(precision: str, device: torch.device) -> str | None:
    """One line when ``--precision`` asks for arithmetic the device only emulates (measured 5-7x slower
    than fp32 for fp16 on an AVX-512 CPU without AVX512-FP16); None when it is fine."""
    dtype = PRECISIONS.get(precision)
    if dtype is None or dtype in native_dtypes(device):
        return None
    where = {"cpu": "this CPU", "cuda": "this GPU", "mps": "this Mac's GPU"}.get(device.type, device.type)
    return (f"--precision {precision}: {where} has no native {precision} arithmetic, so it is emulated and "
            f"several times slower than fp32; use --precision auto or fp32")


@contextmanager
def one_thread(when: bool = True) -> Iterator[None]:
    """torch's intra-op threads set to 1 inside, then restored (process-wide, and measured free to switch)."""
    threads = torch.get_num_threads()
    if not when or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def to_float(block: np.ndarray, device=None) -> torch.Tensor:
    """H x W x 3 uint8/uint16 -> (1, 3, H, W) float32 in [0, 1], as a view (channels-last strides)."""
    return to_hwc(block, device).permute(2, 0, 1)[None]


def to_hwc(block: np.ndarray, device=None) -> torch.Tensor:
    """H x W x 3 uint8/uint16 -> H x W x 3 float32 in [0, 1]: the layout of the file, no transpose."""
    scale = 1.0 / np.iinfo(block.dtype).max
    # np.require copies read-only arrays (Pillow's), which torch refuses to wrap silently.
    return torch.from_numpy(np.require(block, requirements=("C", "W"))).to(device=device).float().mul_(scale)


LUMA_T = torch.tensor(LUMA)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """Luma of (N, 3, H, W) images, as (N, 1, H, W)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r * LUMA[0] + g * LUMA[1] + b * LUMA[2]


def luminance_hwc(img: torch.Tensor) -> torch.Tensor:
    """Luma of an H x W x 3 image, as H x W (one matrix product: fast on the interleaved layout)."""
    return img @ LUMA_T.to(img.device)


def apply_gain(img: torch.Tensor, L: torch.Tensor, strength: float) -> torch.Tensor:
    """E = clamp(I / L**strength, 0, 1) for an H x W x 3 image and an H x W map, in place on ``img``.

    Strength 0 is the original and 1 the model, in exposure stops. A non-finite L is no correction (1.0),
    and L is floored, so E is never NaN or inf. Above 1, the gain beyond strength 1 rolls off in what is
    already bright (`extrapolate`), so extrapolating lifts shadows without blowing highlights.
    """
    L = torch.nan_to_num(L, nan=1.0, posinf=1.0, neginf=1.0).clamp_(min=L_FLOOR)
    if strength <= 1.0:
        if strength != 1.0:
            L = L.pow_(strength)
        return img.div_(L[..., None]).clamp_(0.0, 1.0)
    extra = L.pow(1.0 - strength)  # the gain beyond strength 1
    return extrapolate(img.div_(L[..., None]).clamp_(0.0, 1.0), extra)


def extrapolate(E: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Apply ``gain`` (H x W) to E (H x W x 3, in [0, 1]) as m -> 1 - (1 - m)**gain on the brightest channel m.

    That is ``gain`` x m for dark pixels (the shadows get the full extra exposure) and approaches white
    only as m does, so what strength 1 left below white stays below it; all three channels are scaled by
    the same ratio, so hue is kept and no channel passes white. In place on E.
    """
    m = E.amax(dim=-1)
    f = torch.expm1(gain * torch.log1p(-m)).neg_()  # 1 - (1 - m)**gain, accurate for small m
    ratio = torch.where(m > 0, f / m, gain)
    return E.mul_(ratio[..., None]).clamp_(0.0, 1.0)


class NonFinite:
    """Counts the non-finite values of a photo's illumination maps, for one warning per photo.

    fp16 can overflow to inf or NaN on a GPU; a NaN divides into a black pixel without a word.
    """

    def __init__(self):
        self.bad = self.total = 0

    def __call__(self, L: torch.Tensor) -> torch.Tensor:
        ok = torch.isfinite(L)
        self.total += ok.numel()
        if bool(ok.all()):
            return L
        self.bad += int(ok.numel() - ok.sum())
        return torch.where(ok, L, 1.0)

    def warning(self) -> str | None:
        if not self.bad:
            return None
        return (f"the network's illumination map was NaN or infinite at {100 * self.bad / self.total:.2g} % of "
                "the photo (numeric overflow; try --precision fp32): those parts are left uncorrected")


def quantise(E: torch.Tensor, dtype) -> np.ndarray:
    """An H x W x 3 image in [0, 1] as ``dtype`` integers (round half up, like the reference)."""
    top = float(np.iinfo(dtype).max)
    q = E.mul_(top).add_(0.5).floor_()  # E is in [0, 1], so q fits the type
    return q.to("cpu", torch.uint8 if dtype == np.uint8 else torch.int32).numpy().astype(dtype, copy=False)


def store(out: np.ndarray, rows: slice, cols: slice, E: torch.Tensor) -> None:
    """Quantise an H x W x 3 image in [0, 1] into ``out[rows, cols]``."""
    out[rows, cols] = quantise(E, out.dtype)


def working_size(H: int, W: int, megapixels: float) -> tuple[int, int]:
    """The size at which fast mode runs the network; never larger than the photo."""
    s = math.sqrt(megapixels * 1e6 / (H * W))
    if s >= 1.0:
        return H, W
    return max(2, round(H * s)), max(2, round(W * s))


def downscale(pixels: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Antialiased resize to (h, w) -> (1, 3, h, w) float32. Pillow's reduce+bilinear is fast and exact in geometry."""
    top = float(np.iinfo(pixels.dtype).max)
    if pixels.dtype == np.uint8:
        small = np.asarray(Image.fromarray(pixels).resize((w, h), Image.BILINEAR, reducing_gap=2.0))
        return to_float(small)
    chans = [
        np.asarray(Image.fromarray(pixels[..., c].astype(np.float32)).resize((w, h), Image.BILINEAR, reducing_gap=2.0))
        for c in range(3)
    ]
    return torch.from_numpy(np.stack(chans))[None].div_(top)


def box(x: torch.Tensor, r: int) -> torch.Tensor:
    return F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)


def guided_coefficients(
    guide: torch.Tensor, src: torch.Tensor, r: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean linear coefficients (a, b) of the guided filter of ``src`` by ``guide`` (He et al.)."""
    r = max(1, min(r, (min(guide.shape[-2:]) - 1) // 2))
    mI, mp = box(guide, r), box(src, r)
    cov = box(guide * src, r) - mI * mp
    var = box(guide * guide, r) - mI * mI
    a = cov / (var + eps)
    b = mp - a * mI
    return box(a, r), box(b, r)


def _bilinear_axis(n_out: int, n_in: int, start: int, stop: int):
    """Indices and weights for align_corners=False bilinear upsampling of output positions [start, stop)."""
    pos = (torch.arange(start, stop, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5
    pos = pos.clamp_(0, n_in - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, pos - i0


class ColumnUpsampled:
    """A small map already upsampled along columns (h x W), so each strip needs only a row blend."""

    def __init__(self, m: torch.Tensor, W: int):
        x0, x1, wx = _bilinear_axis(W, m.shape[-1], 0, W)
        m = m[0, 0]
        self.m = torch.lerp(m[:, x0.to(m.device)], m[:, x1.to(m.device)], wx.to(m.device))

    def rows(self, H: int, r0: int, r1: int) -> torch.Tensor:
        y0, y1, wy = (t.to(self.m.device) for t in _bilinear_axis(H, self.m.shape[0], r0, r1))
        return self.m.index_select(0, y0).lerp_(self.m.index_select(0, y1), wy[:, None])


class GuidedUpsampler:
    """L = up(L_s) + up(a) * (Y - up(Y_s)), evaluated strip by strip at full resolution.

    The detail term can overshoot next to strong edges (measured up to 6 % of L), so the result is kept
    within the range of L_s over each working-resolution pixel's 3 x 3 neighbourhood, upsampled the same
    way: the network's own values bound what the guide may add.
    """

    def __init__(self, L: torch.Tensor, Ys: torch.Tensor, a: torch.Tensor, W: int, bounded: bool = True):
        self.L, self.Ys, self.a = (ColumnUpsampled(m, W) for m in (L, Ys, a))
        self.lo = self.hi = None
        if bounded:
            hi = F.max_pool2d(L, 3, stride=1, padding=1)
            lo = -F.max_pool2d(-L, 3, stride=1, padding=1)
            self.lo, self.hi = ColumnUpsampled(lo, W), ColumnUpsampled(hi, W)

    def rows(self, Y: torch.Tensor, H: int, r0: int, r1: int) -> torch.Tensor:
        detail = Y.sub_(self.Ys.rows(H, r0, r1))  # what downscaling removed (Y is consumed)
        L = detail.mul_(self.a.rows(H, r0, r1)).add_(self.L.rows(H, r0, r1))
        if self.lo is not None:
            L = torch.maximum(L, self.lo.rows(H, r0, r1), out=L)
            L = torch.minimum(L, self.hi.rows(H, r0, r1), out=L)
        return L


class BlockMean:
    """A full-resolution map averaged over k x k blocks, filled tile by tile: a small L in exact mode."""

    def __init__(self, H: int, W: int, h: int, w: int):
        self.H, self.W = H, W
        self.k = max(1, math.ceil(max(H / h, W / w)))
        self.sum = torch.zeros(-(-H // self.k), -(-W // self.k), dtype=torch.float64)

    def add(self, y0: int, x0: int, m: torch.Tensor) -> None:
        m = m.to("cpu", torch.float64)
        ys = torch.arange(y0, y0 + m.shape[0]) // self.k
        xs = torch.arange(x0, x0 + m.shape[1]) // self.k
        rows = torch.zeros(self.sum.shape[0], m.shape[1], dtype=torch.float64).index_add_(0, ys, m)
        self.sum.index_add_(1, xs, rows)

    def mean(self) -> torch.Tensor:
        k = self.k
        ny = torch.tensor([min(k, self.H - i * k) for i in range(self.sum.shape[0])], dtype=torch.float64)
        nx = torch.tensor([min(k, self.W - j * k) for j in range(self.sum.shape[1])], dtype=torch.float64)
        return (self.sum / (ny[:, None] * nx[None])).float()


@dataclass
class Enhancer:
    """A loaded network plus how to run it. Maps pixels to pixels; knows nothing of files."""

    net: EnhanceNet
    mode: str = "fast"
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    working_megapixels: float = 0.3  # config.yaml's fast.working_megapixels (docs/performance.md: why)
    guide_radius: int = 2
    guide_eps: float = 1e-3
    tile: int = 384  # config.yaml's exact.tile
    # Fast mode's full-resolution rows per block: None takes the photo in one block. "auto" is what the
    # device wants (a GPU one block, the CPU STRIP_ROWS strips); tests force None on the CPU to check a GPU's path.
    strip_rows: int | None | str = "auto"
    # Fast mode's network outside PyTorch on the CPU (`backlitfix.backends.make_backend`); None: PyTorch eager.
    # Called as backend(x, one_thread); it returns None once it has failed and given way to PyTorch.
    backend: Callable[[torch.Tensor, bool], torch.Tensor | None] | None = None
    # Exact mode's interior tiles outside PyTorch (`backlitfix.backends.TileRuntime`); None: PyTorch for all.
    tile_runtime: object | None = None

    def __post_init__(self):
        if self.mode not in ("fast", "exact"):
            raise ValueError(f"mode must be 'fast' or 'exact', not {self.mode!r}")
        if self.strip_rows == "auto":
            self.strip_rows = STRIP_ROWS if self.device.type == "cpu" else None
        elif self.strip_rows is not None and (not isinstance(self.strip_rows, int) or self.strip_rows < 1):
            raise ValueError(f"strip_rows must be a positive number of rows, None or 'auto', not {self.strip_rows!r}")
        self.net = self.net.to(self.device).eval()
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)  # oneDNN's fast layout

    @torch.no_grad()
    def illumination(self, x: torch.Tensor) -> torch.Tensor:
        """L for a (1, 3, h, w) float image, in one pass, at this enhancer's precision."""
        x = x.to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        small = self.device.type == "cpu" and x.shape[-2] * x.shape[-1] < ONE_THREAD_PIXELS
        if self.backend is not None and (L := self.backend(x, small)) is not None:
            return L
        with one_thread(small), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.net(x).float()

    @torch.no_grad()
    def enhance(self, pixels: np.ndarray, strength: float | StrengthRule = 1.0, out: np.ndarray | None = None,
                on_L: Callable[[torch.Tensor], None] | None = None,
                warn: Callable[[str], None] | None = None) -> np.ndarray:
        """Correct H x W x 3 uint8/uint16 pixels; returns an array of the same type (``out`` may be ``pixels``).

        ``strength`` is a number, or a `StrengthRule` called once per photo, before any output pixel is
        written, with the working-resolution input and its raw L; what it returns (clamped to [0, 2]) is
        applied. ``on_L``, if given, receives the illumination map at about the working resolution (h x w
        float32 on the CPU, block-averaged in exact mode; read-only) for previews such as the report. Not
        called at strength 0. Without it, nothing extra is computed. ``warn`` receives at most one line per
        photo about something the caller should hear of (a NaN map); without it, Python's warnings get it.
        """
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected H x W x 3 uint8 or uint16 pixels, got {pixels.shape} {pixels.dtype}")
        H, W = pixels.shape[:2]
        if H < 2 or W < 2:
            raise ValueError(f"image of {W}x{H} pixels is too small (at least 2x2)")
        out = np.empty_like(pixels) if out is None else out
        if self.mode == "exact" and callable(strength):
            # One cheap pass at the working resolution decides; the tiled passes then apply it.
            strength = _decide(strength, *self.working_pass(pixels))
        finite = NonFinite()
        if strength == 0.0:
            out[...] = pixels
        elif self.mode == "exact":
            self._exact(pixels, strength, out, on_L, finite)
        else:
            self._fast(pixels, strength, out, on_L, finite)
        if msg := finite.warning():
            if warn is None:
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
            else:
                warn(msg)
        return out

    @torch.no_grad()
    def working_pass(self, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(small, L) as a `StrengthRule` is given them: for a caller deciding a strength without correcting
        (a dry run). Non-finite values of L are replaced by 1.0 (no correction), as in `enhance`."""
        small = self._small(pixels)
        return small, NonFinite()(self.illumination(small)[0, 0].cpu())

    @functools.cached_property
    def _exact_net(self) -> EnhanceNet:
        """The network in the default memory layout, for exact tiling: a copy made once, so that the
        channels-last network of fast mode and of the working pass (an auto decision, a dry run) stays
        as it was (``Module.to`` changes a module in place)."""
        return copy.deepcopy(self.net).to(memory_format=torch.contiguous_format).float()

    def _small(self, pixels: np.ndarray) -> torch.Tensor:
        """The photo at the working resolution, (1, 3, h, w) float32 on the CPU: what fast mode's network sees."""
        H, W = pixels.shape[:2]
        h, w = working_size(H, W, self.working_megapixels)
        return to_float(pixels) if (h, w) == (H, W) else downscale(pixels, h, w)

    def _exact(self, pixels, strength, out, on_L, finite):
        net = self._exact_net
        dev = self.device
        src = InPlaceTiles(pixels, out)  # out may be pixels: tiles must still see the original halo
        get = lambda y0, y1, x0, x1: to_float(src.read(y0, y1, x0, x1), dev)
        H, W = pixels.shape[:2]
        small = BlockMean(H, W, *working_size(H, W, self.working_megapixels)) if on_L else None
        for (y0, y1, x0, x1), L in exact_L(net, get, H, W, tile=self.tile, runtime=self.tile_runtime):
            rows, cols, L = slice(y0, y1), slice(x0, x1), finite(L)
            if small is not None:
                small.add(y0, x0, L[0, 0])
            E = apply_gain(to_hwc(src.read(y0, y1, x0, x1), dev), L[0, 0], strength)
            src.write(rows, cols, quantise(E, out.dtype))
        src.flush()
        if small is not None:
            on_L(small.mean())

    def _fast(self, pixels, strength, out, on_L, finite):
        H, W = pixels.shape[:2]
        small = self._small(pixels)
        h, w = small.shape[-2:]
        L = finite(self.illumination(small))  # before the guided filter, whose box sums would spread a NaN
        if callable(strength):
            strength = _decide(strength, small, L[0, 0].cpu())
            if strength == 0.0:
                out[...] = pixels
                return
        if on_L:
            on_L(L[0, 0].cpu())
        step = H if self.strip_rows is None else self.strip_rows
        if (h, w) == (H, W):  # the photo is no larger than the working size: one pass is exact already
            L = L[0, 0]
            for r0 in range(0, H, step):
                rows = slice(r0, min(H, r0 + step))
                store(out, rows, slice(None), apply_gain(to_hwc(pixels[rows], self.device), L[rows], strength))
            return
        small = small.to(self.device)
        Ys = luminance(small)
        a, _ = guided_coefficients(Ys, L, self.guide_radius, self.guide_eps)  # local slope dL/dY
        up = GuidedUpsampler(L, Ys, a, W)
        for r0 in range(0, H, step):
            r1 = min(H, r0 + step)
            img = to_hwc(pixels[r0:r1], self.device)
            store(out, slice(r0, r1), slice(None), apply_gain(img, up.rows(luminance_hwc(img), H, r0, r1), strength))


def _decide(rule: StrengthRule, small: torch.Tensor, L: torch.Tensor) -> float:
    """Ask a strength rule once; a number outside [0, 2] is clamped, a non-number is a bug worth naming."""
    s = float(rule(small, L))
    if not math.isfinite(s):
        raise ValueError(f"the strength rule returned {s}")
    return min(2.0, max(0.0, s))
