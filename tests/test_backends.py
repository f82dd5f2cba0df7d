"""Fast mode's network outside PyTorch (backlitfix.backends): the golden oracle's tolerances per available
backend, the exported pooling at every size, the fall-back to PyTorch, and precision on an AVX2-capped CPU."""
from __future__ import annotations

import importlib.util
import io
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from backlitfix.api import load
from backlitfix.backends import OpenVINO, cell_mean, export_onnx, make_backend
from backlitfix.enhance import Enhancer, native_dtypes, pick_dtype
from backlitfix.model.checkpoint import load_model
from conftest import model, shared_path
from test_enhance import golden_pixels
from test_network import check_against_golden, golden, golden_input

INSTALLED = [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b)]
CPU = torch.device("cpu")


def net():
    return load_model(model())[0]


@pytest.fixture(scope="module")
def runners():
    """One built runner per installed backend (export and compile once for the module)."""
    n = net()
    return {b: make_backend(b, n, torch.float32, CPU, warn=pytest.fail) for b in INSTALLED}


def installed(backend: str):
    if backend not in INSTALLED:
        pytest.skip(f"{backend} is not installed (pip install 'backlitfix[fast]')")


@pytest.mark.parametrize("n", [2, 3, 7, 13, 36, 97, 386])
def test_cell_mean_is_adaptive_average_pooling(n):
    x = torch.rand(1, 4, n, n + 5, dtype=torch.float64)
    for b in (1, 2, 3, 6):
        ref = torch.nn.functional.adaptive_avg_pool2d(x, b)
        assert torch.allclose(cell_mean(cell_mean(x, 2, b), 3, b), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_meets_golden_tolerances(backend, runners):
    """One export serves every size: the golden inputs at their own (not multiple-of-6) sizes."""
    installed(backend)
    g = golden()
    for name in ["ovd0312_18_360x386.png"]:  # the slow test below takes every input
        x = golden_input(name)
        L = runners[backend](x)
        assert L.shape == x[:, :1].shape and L.dtype == torch.float32
        check_against_golden(L, x, g["results"][name]["rave_unpaired"], np.array(g["inputs"][name]["coords"]))
    assert runners[backend].name == backend  # it did not give way


@pytest.mark.slow  # every golden input through two more checkpoints, one export each
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("ckpt", ["rave_unpaired", "clip_lit_original"])
def test_backend_meets_golden_tolerances_everywhere(backend, ckpt):
    installed(backend)
    g = golden()
    run = make_backend(backend, load_model(shared_path("models", "official", f"{ckpt}.pth"))[0], torch.float32, CPU,
                       warn=pytest.fail)
    for name, meta in g["inputs"].items():
        x = golden_input(name)
        check_against_golden(run(x), x, g["results"][name][ckpt], np.array(meta["coords"]))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("dtype", [np.uint8, pytest.param(np.uint16, marks=pytest.mark.slow)])
def test_enhancer_result_same_with_backend(backend, dtype, runners):
    """Through fast mode (a downscaled photo and the guided upsampler): same shape and type as PyTorch's
    result, within one level; and the one-thread path (a small input) runs the backend too."""
    installed(backend)
    px = golden_pixels("110_51093502029_o_1152x864.png")
    if dtype == np.uint16:
        px = px.astype(np.uint16) * 257
    n = net()
    ref = Enhancer(n, working_megapixels=0.2).enhance(px)
    out = Enhancer(n, working_megapixels=0.2, backend=runners[backend]).enhance(px)
    assert out.shape == ref.shape and out.dtype == ref.dtype == dtype
    assert np.abs(out.astype(np.int64) - ref).max() <= (1 if dtype == np.uint8 else 257)
    small = Enhancer(n, working_megapixels=0.05, backend=runners[backend])
    assert small.illumination(small._small(px)).shape[-2:] == (194, 258)  # under ONE_THREAD_PIXELS
    assert any(k[0] == 1 for k in runners[backend].runner._compiled) and runners[backend].name == backend


def test_missing_package_falls_back_to_torch_with_one_warning(monkeypatch):
    if INSTALLED:  # onnx alone missing (torch's exporter needs it) is "not installed" too
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "onnx", None)
            heard = []
            assert make_backend(INSTALLED[0], net(), torch.float32, CPU, warn=heard.append) is None
            assert heard == [f"backend {INSTALLED[0]} is not installed (pip install 'backlitfix[fast]'); using PyTorch"]
    for name in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as where it is absent
    heard = []
    n = net()
    assert make_backend("openvino", n, torch.float32, CPU, warn=heard.append) is None
    assert len(heard) == 1 and "openvino is not installed" in heard[0] and "PyTorch" in heard[0]
    assert make_backend("auto", n, torch.float32, CPU, warn=heard.append) is None
    assert len(heard) == 1  # auto without the optional packages is the normal case: no word
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API's auto default neither warns nor fails
        enh = load(model(), device="cpu")
    assert enh._engine.backend is None


def wrong_graph() -> bytes:
    """A real ONNX model that builds but refuses the network's 3-channel input."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(nn.Conv2d(4, 1, 1), (torch.rand(1, 4, 8, 8),), buf, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}})
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_failing_at_run_time_gives_way_once(backend):
    """The first failure warns and hands over to PyTorch for good: the photo still comes out, equal to
    PyTorch's own result, and later photos neither warn again nor retry the backend."""
    installed(backend)
    heard = []
    n = net()
    run = make_backend(backend, n, torch.float32, CPU, warn=heard.append)
    run.runner.model, run.runner._compiled = wrong_graph(), {}
    px = golden_pixels()
    out = Enhancer(n, backend=run).enhance(px)
    assert np.array_equal(out, Enhancer(n).enhance(px))
    assert len(heard) == 1 and f"backend {backend} failed" in heard[0] and run.name == "torch"
    Enhancer(n, backend=run).enhance(px)
    assert len(heard) == 1


def test_backend_failing_to_build_warns_and_auto_tries_the_next(monkeypatch):
    installed("openvino")
    monkeypatch.setattr("backlitfix.backends.export_onnx", lambda n: b"not an onnx model")
    heard = []
    assert make_backend("openvino", net(), torch.float32, CPU, warn=heard.append) is None
    assert len(heard) == 1 and "backend openvino failed" in heard[0] and heard[0].endswith("using PyTorch")
    heard.clear()
    assert make_backend("auto", net(), torch.float32, CPU, warn=heard.append) is None
    assert any("trying the next" in h for h in heard) or len(INSTALLED) == 1


def test_torch_backend_and_other_devices_and_fp16_are_pytorch():
    n = net()
    assert make_backend("torch", n, torch.float32, CPU) is None
    assert make_backend("auto", n, torch.float32, torch.device("meta")) is None
    assert make_backend("auto", n, torch.float16, CPU) is None
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("tvm", n, torch.float32, CPU)


def test_avx2_cap_means_no_native_bf16_for_any_backend(monkeypatch):
    """An AVX2-only CPU (emulated by oneDNN's cap, as bench/speed.py does): auto precision is fp32, and
    OpenVINO is told f32 (its own default is bf16 wherever it believes the CPU has it)."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert torch.bfloat16 not in native_dtypes(CPU) and pick_dtype("auto", CPU) == torch.float32
    installed("openvino")
    run = make_backend("openvino", net(), pick_dtype("auto", CPU), CPU, warn=pytest.fail)
    run(torch.rand(1, 3, 40, 60))
    assert run.runner.precision_used == "f32"


def test_openvino_bf16_only_where_asked():
    installed("openvino")
    run = OpenVINO(export_onnx(net()), 1, "bf16")
    run.compiled(1)
    assert run.precision_used == "bf16"


def test_export_is_reused_for_the_same_weights_only():
    """Loading the same model again (the API, a test suite) skips the 1-2 s export; other weights do not."""
    a, b = export_onnx(net()), export_onnx(net())
    assert a is b
    other = net()
    with torch.no_grad():
        other.cond1.bias.add_(1e-3)
    assert export_onnx(other) != a
