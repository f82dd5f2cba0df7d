"""Where the network runs on the CPU: PyTorch eager, ONNX Runtime or OpenVINO (issue 15).

The network is exported once per process to ONNX with dynamic height and width, so one graph serves every
working size. The legacy exporter refuses ``adaptive_avg_pool2d`` at dynamic sizes, and the dynamo exporter
unrolls it for the example's size (measured: a 20 MB graph, 9 minutes to export, wrong at other sizes), so
the exported copy pools with `CellMean`: the same cells, [floor(i n / b), ceil((i + 1) n / b)), computed in
the graph from the input's shape. The live network is never changed. Exact mode's interior tiles (those that
touch no image border, so no convolution pads) run through the same runtimes as two more graphs with unpadded
convolutions (`TileRuntime`), in float32; its border tiles stay in PyTorch.

Measured side by side (bench/speed.py, docs/performance.md), the network at 0.5 MP on a shared 2-core CPU
took, with AVX-512 + native bf16: eager fp32 3.11 s, eager bf16 2.86 s, ONNX Runtime fp32 1.92 s, OpenVINO
f32 1.28 s, OpenVINO bf16 0.70 s; on an emulated AVX2 CPU: eager fp32 4.17 s, OpenVINO f32 1.90 s. So
``auto`` takes OpenVINO where it is installed, then ONNX Runtime, then PyTorch. (torch.compile was slower
than OpenVINO, compiles for 10-45 s per process, and gave a wrong map under the AVX2 emulation.)
Both packages are optional (``pip install backlitfix[fast]``); a backend that is missing or fails gives
way to PyTorch with one warning.
"""
from __future__ import annotations

import copy
import hashlib
import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model.network import EnhanceNet, PyramidPooling

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
AUTO_ORDER = ("openvino", "onnxruntime")  # fastest first, by measurement (module docstring); else torch
OPSET = 17


def cell_mean(x: torch.Tensor, dim: int, b: int) -> torch.Tensor:
    """Adaptive average pooling of ``x`` to ``b`` cells along ``dim``, with the cell bounds computed from
    ``x``'s size by tensor ops, so an ONNX trace keeps them dynamic (as index ranges, which every backend
    and every CPU ISA runs; a pooling matrix product failed in OpenVINO under an AVX2 cap)."""
    n = x.shape[dim]
    cells = []
    for i in range(b):
        start = torch.div(n * i, b, rounding_mode="floor")
        stop = torch.div(n * (i + 1) + (b - 1), b, rounding_mode="floor")
        cells.append(torch.index_select(x, dim, torch.arange(start, stop)).mean(dim, keepdim=True))
    return torch.cat(cells, dim)


class CellMean(nn.Module):
    """`PyramidPooling` with its adaptive pools written as `cell_mean`: equal to it (float rounding), and
    exportable with dynamic sizes. Shares the original's layers."""

    def __init__(self, ppm: PyramidPooling):
        super().__init__()
        self.ppm = ppm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ups = []
        for b, (_, conv, act) in zip(self.ppm.bins, self.ppm.features):
            p = act(conv(cell_mean(cell_mean(x, 2, b), 3, b)))
            ups.append(F.interpolate(p, size=(h, w), mode="bilinear", align_corners=True))
        return self.ppm.fuse(torch.cat([x, *ups], dim=1))


_EXPORTED: dict[tuple[str, str], bytes] = {}  # by weights: loading the same model again (the API, tests) skips it


def _cached(net: EnhanceNet, what: str, export: Callable[[EnhanceNet], bytes]) -> bytes:
    digest = hashlib.sha256(net.padding.encode())
    for k, v in net.state_dict().items():
        digest.update(k.encode())
        digest.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    key = (what, digest.hexdigest())
    if key not in _EXPORTED:
        if len(_EXPORTED) >= 6:
            _EXPORTED.pop(next(iter(_EXPORTED)))
        _EXPORTED[key] = export(net)
    return _EXPORTED[key]


def export_onnx(net: EnhanceNet) -> bytes:
    """The network as an ONNX model (input ``x``: 1 x 3 x h x w float32, output ``L``), h and w dynamic."""
    return _cached(net, "net", _export)


def _export(net: EnhanceNet) -> bytes:
    n = _plain(net)
    n.PPM1 = CellMean(n.PPM1)
    return _export_module(n, (torch.rand(1, 3, 64, 96),), ["x"], "L")


def _plain(net: EnhanceNet) -> EnhanceNet:
    """A float32, default-layout, eval-mode copy to export: the live network is never changed."""
    return copy.deepcopy(net).float().to(memory_format=torch.contiguous_format).eval()


def _export_module(module: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], out: str) -> bytes:
    """``module`` as ONNX, every input's and the output's height and width dynamic."""
    buf = io.BytesIO()
    axes = {n: {2: f"h{i}", 3: f"w{i}"} for i, n in enumerate([*names, out])}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic: intended here
        torch.onnx.export(module, example, buf, dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=[out], dynamic_axes=axes)
    return buf.getvalue()


def _valid(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias)  # no padding: the output is 1 px smaller on each side


def _valid_block(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = _valid(blk.conv2, F.leaky_relu(_valid(blk.conv1, x), 0.2))
    return F.leaky_relu(y + x[..., 2:-2, 2:-2], 0.2)


class ValidStem(nn.Module):
    """The stem (cond1 and two residual blocks) with every convolution unpadded: a window grown by
    `backlitfix.tiling.STEM_RADIUS` px comes out as exactly the tile's features, as tiling computes an
    interior tile (one that touches no image border). Shares the network's weights."""

    def __init__(self, net: EnhanceNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        return _valid_block(n.ResidualBlock2, _valid_block(n.ResidualBlock1, F.leaky_relu(_valid(n.cond1, x), 0.2)))


class ValidTile(nn.Module):
    """An interior tile's L: its input grown by `backlitfix.tiling.TOTAL_RADIUS` px and the four pyramid maps
    for the stem's output window, every convolution unpadded (`backlitfix.tiling.tile_output` without the
    border cases)."""

    def __init__(self, net: EnhanceNet):
        super().__init__()
        self.net, self.stem = net, ValidStem(net)

    def forward(self, x: torch.Tensor, ups: torch.Tensor) -> torch.Tensor:
        n = self.net
        r = torch.cat([self.stem(x), ups], dim=1)
        r = n.PPM1.fuse[1](_valid(n.PPM1.fuse[0], r))
        r = _valid_block(n.ResidualBlock4, _valid_block(n.ResidualBlock3, _valid(n.condx, r)))
        r = _valid_block(n.ResidualBlock6, _valid_block(n.ResidualBlock5, _valid(n.condy, r)))
        return F.relu(_valid(n.cond_add1, r))


def export_tile_graphs(net: EnhanceNet) -> tuple[bytes, bytes]:
    """Exact mode's two graphs for interior tiles: `ValidStem` (x -> 32 features) and `ValidTile` (x, ups -> L)."""
    x, ups = torch.rand(1, 3, 48, 52), torch.rand(1, 32, 38, 42)
    return (_cached(net, "stem", lambda n: _export_module(ValidStem(_plain(n)), (x,), ["x"], "features")),
            _cached(net, "tile", lambda n: _export_module(ValidTile(_plain(n)), (x, ups), ["x", "ups"], "L")))


class Runner:
    """Runs the exported network: (1, 3, h, w) float32 CPU tensor -> (1, 1, h, w) float32 tensor.

    One compiled model per thread count (and per input size where `static` is set), made when first
    needed and the last `KEEP` kept: ``one_thread`` inputs (small photos, see
    `backlitfix.enhance.ONE_THREAD_PIXELS`) run on one thread, as they do in PyTorch, and always on the
    dynamic-size model: small photos come in many sizes, and their buffers are small anyway.
    """

    name = ""
    static = False  # compile for each input size: fixed shapes let the runtime plan and reuse its buffers
    KEEP = 4  # compiled models kept: a batch's photos mostly share one or two working sizes

    def __init__(self, model: bytes, threads: int, precision: str = "fp32"):
        import onnx  # noqa: F401 - torch's exporter needs it: missing, this is "not installed", not a failure

        self.model, self.threads, self.precision = model, max(1, threads), precision
        self._compiled: dict[tuple, Callable[[np.ndarray], np.ndarray]] = {}

    def compiled(self, threads: int, shapes: tuple[tuple[int, ...], ...] | None = None) -> Callable[..., np.ndarray]:
        """The model compiled for ``threads`` (and for the inputs' ``shapes`` where `static`): called with the
        inputs as arrays, in the graph's order."""
        key = (threads, tuple(map(tuple, shapes)) if self.static and shapes else None)
        fn = self._compiled.pop(key, None) or self.compile(*key)
        self._compiled[key] = fn  # most recently used last
        while len(self._compiled) > self.KEEP:
            del self._compiled[next(iter(self._compiled))]
        return fn

    def compile(self, threads: int, shapes: tuple[tuple[int, ...], ...] | None) -> Callable[..., np.ndarray]:
        raise NotImplementedError

    def check(self) -> None:
        """Fail now, not on the first photo, where the runtime cannot take the model."""
        self.compiled(self.threads)

    def __call__(self, x: torch.Tensor, one_thread: bool = False) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        L = self.compiled(1, None)(x) if one_thread else self.compiled(self.threads, (x.shape,))(x)
        if L.shape != (1, 1, *x.shape[2:]):  # OpenVINO ran a graph made for 4 channels on 3 without a word
            raise RuntimeError(f"the runtime returned a {tuple(L.shape)} map for a {tuple(x.shape)} input")
        return torch.from_numpy(np.array(L, dtype=np.float32))  # a copy: the runtime may reuse its buffer


class OnnxRuntime(Runner):
    """ONNX Runtime's CPU provider, float32 (it has no bf16 convolutions on the CPU)."""

    name = "onnxruntime"

    def __init__(self, model: bytes, threads: int, precision: str = "fp32"):
        import onnxruntime  # noqa: F401 - fail here, before any work, when it is missing

        super().__init__(model, threads, "fp32")

    def compile(self, threads, shapes):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False  # its arena grew by 0.6 GB on each of the first 0.5 MP runs
        # Idle threads sleep instead of spinning: the cores are shared with decode/encode threads.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only
        sess = ort.InferenceSession(self.model, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return lambda *xs: sess.run(None, dict(zip(names, xs)))[0]


class OpenVINO(Runner):
    """OpenVINO's CPU plugin at the precision given: fp32, or bf16 (only where the caller found it native).

    Its precision is always set: OpenVINO's own default is bf16 on any CPU it thinks can do it."""

    name = "openvino"
    precision_used = ""  # the precision its last compiled model runs, as OpenVINO names it (f32, bf16)
    static = True  # at 0.5 MP, f32: 380 MB of working memory against 660 MB with dynamic sizes

    def __init__(self, model: bytes, threads: int, precision: str = "fp32"):
        import openvino  # noqa: F401

        super().__init__(model, threads, precision)

    def compile(self, threads, shapes):
        import openvino as ov

        core = ov.Core()
        hint = "bf16" if self.precision == "bf16" else "f32"
        model = core.read_model(self.model)
        if shapes:
            model.reshape({i.get_any_name(): list(s) for i, s in zip(model.inputs, shapes)})
        # No pinning (OpenVINO pins its threads by default): the cores are shared with decode/encode threads
        # and other programs. 30-photo batch, emulated AVX2, loaded machine: pinned 157 s, unpinned 122 s,
        # the same CPU seconds (the pinned threads waited for their busy core).
        cm = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False})
        self.precision_used = cm.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # what it will really run
        req = cm.create_infer_request()
        return lambda *xs: req.infer(dict(enumerate(xs)))[0]

    def check(self):
        """Parse the model only: a compiled model that no photo uses held ~80 MB."""
        import openvino as ov

        ov.Core().read_model(self.model)


RUNNERS = {"onnxruntime": OnnxRuntime, "openvino": OpenVINO}


class Guarded:
    """A runner that gives way to PyTorch for good, with one warning, the first time it raises.
    ``where`` goes into the warning (exact mode's tiles say so)."""

    def __init__(self, runner: Callable, warn: Callable[[str], None], where: str = ""):
        self.runner, self.warn, self.where, self.failed = runner, warn, where, False

    @property
    def name(self) -> str:
        return "torch" if self.failed else self.runner.name

    def __call__(self, *args) -> torch.Tensor | None:
        """The runner's answer, or None when it has failed (now or before): the caller runs PyTorch instead."""
        if self.failed:
            return None
        try:
            return self.runner(*args)
        except Exception as e:  # noqa: BLE001 - any failure of an optional runtime: PyTorch still works
            self.failed = True
            self.warn(f"backend {self.runner.name} failed{self.where} ({type(e).__name__}: {_short(e)}); "
                      "using PyTorch")
            return None


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def make_backend(name: str, net: EnhanceNet, dtype: torch.dtype, device: torch.device,
                 warn: Callable[[str], None] | None = None) -> Guarded | None:
    """The runner for ``name`` (a `BACKENDS` entry), or None for PyTorch eager.

    None also for a device other than the CPU, and for fp16 (a CPU runs it natively only with
    AVX512-FP16; the user who forces it gets PyTorch's). A requested backend that is missing or fails to
    build gives one warning and None; ``auto`` tries `AUTO_ORDER` quietly, since a missing optional
    package is the normal case there. bf16 reaches OpenVINO only as ``dtype``, which
    `backlitfix.enhance.pick_dtype` sets to bf16 only where the CPU has it natively.
    """
    warn = warn or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=3))
    if _check(name) == "torch" or device.type != "cpu" or dtype == torch.float16:
        return None
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"

    def build(kind: str) -> Guarded:
        runner = RUNNERS[kind](b"", torch.get_num_threads(), precision)  # imports the package: fails early
        runner.model = export_onnx(net)  # cached by weights: a second candidate does not export again
        runner.check()
        return Guarded(runner, warn)

    return _first_built(name, build, warn)


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    return name


def _first_built(name: str, build: Callable[[str], object], warn: Callable[[str], None]):
    """``build(kind)`` for ``name``'s runtime, or for each of `AUTO_ORDER` in turn for ``auto``; None when none
    builds. A runtime asked for by name that is missing or fails warns; ``auto`` says nothing of a missing
    package (the normal case) but does of a broken one."""
    for kind in (AUTO_ORDER if name == "auto" else (name,)):
        try:
            return build(kind)
        except ImportError:
            if name != "auto":
                warn(f"backend {kind} is not installed (pip install 'backlitfix[fast]'); using PyTorch")
        except Exception as e:  # noqa: BLE001 - a failed export or compile: installed but broken
            warn(f"backend {kind} failed ({type(e).__name__}: {_short(e)}); "
                 f"{'trying the next' if name == 'auto' and kind != AUTO_ORDER[-1] else 'using PyTorch'}")
    return None


class TileRuntime:
    """Exact mode's interior tiles (`backlitfix.tiling`) through ONNX Runtime or OpenVINO, always float32
    (exact mode's promise): the stem of pass 1 and the whole tile of pass 2. Tiles that touch the image
    border pad their convolutions and stay in PyTorch. The first failure gives one warning and PyTorch for
    every later tile (`Guarded`); a wrong output shape counts as a failure. `stem` and `tile` return None
    when PyTorch must do the work."""

    STEM_SHRINK, TILE_SHRINK = 5, 17  # px lost on each side: tiling.STEM_RADIUS, tiling.TOTAL_RADIUS

    def __init__(self, kind: str, net: EnhanceNet, threads: int, warn: Callable[[str], None]):
        self.name, self.threads = kind, max(1, threads)
        # The runners first: a missing package is an ImportError before any export.
        self.runners = (RUNNERS[kind](b"", threads, "fp32"), RUNNERS[kind](b"", threads, "fp32"))
        for runner, model in zip(self.runners, export_tile_graphs(net)):
            runner.model = model
            runner.check()
        self.guarded = Guarded(self, warn, " in exact mode")

    @property
    def failed(self) -> bool:
        return self.guarded.failed

    def __call__(self, which: int, inputs: list[torch.Tensor], shrink: int, channels: int) -> torch.Tensor:
        """Graph ``which``'s output for ``inputs``; raises on any failure (`guarded` catches it)."""
        arrays = [np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()) for t in inputs]
        h, w = arrays[0].shape[-2:]
        out = self.runners[which].compiled(self.threads, tuple(a.shape for a in arrays))(*arrays)
        if out.shape != (1, channels, h - 2 * shrink, w - 2 * shrink):
            raise RuntimeError(f"the runtime returned {tuple(out.shape)} for a {tuple(arrays[0].shape)} input")
        return torch.from_numpy(np.array(out, dtype=np.float32))

    def stem(self, x: torch.Tensor) -> torch.Tensor | None:
        """(1, 3, h, w) window -> (1, 32, h - 10, w - 10) features, or None."""
        return self.guarded(0, [x], self.STEM_SHRINK, 32)

    def tile(self, x: torch.Tensor, ups: torch.Tensor) -> torch.Tensor | None:
        """(1, 3, h, w) window and (1, 32, h - 10, w - 10) pyramid maps -> (1, 1, h - 34, w - 34) L, or None."""
        return self.guarded(1, [x, ups], self.TILE_SHRINK, 1)


def make_tile_runtime(name: str, net: EnhanceNet, device: torch.device,
                      warn: Callable[[str], None] | None = None) -> TileRuntime | None:
    """Exact mode's `TileRuntime` for ``name`` (a `BACKENDS` entry), or None for PyTorch alone: chosen as
    `make_backend` chooses, CPU only."""
    warn = warn or (lambda msg: warnings.warn(msg, RuntimeWarning, stacklevel=3))
    if _check(name) == "torch" or device.type != "cpu":
        return None
    return _first_built(name, lambda kind: TileRuntime(kind, net, torch.get_num_threads(), warn), warn)
