"""Precision: `auto` picks only what the hardware runs natively, and an emulated precision is named."""
from __future__ import annotations

import pytest
import torch

import backlitfix.enhance as enhance
from backlitfix.enhance import cpu_flags, native_dtypes, pick_dtype, precision_warning

CPU = torch.device("cpu")
ICE_LAKE = {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}  # AVX-512 without bf16/fp16 instructions
SAPPHIRE_RAPIDS = ICE_LAKE | {"avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"}


def with_flags(monkeypatch, flags):
    monkeypatch.setattr(enhance, "cpu_flags", lambda: set(flags))


def test_auto_never_picks_an_emulated_precision_on_a_cpu(monkeypatch):
    with_flags(monkeypatch, ICE_LAKE)  # oneDNN would call bf16 "supported" here, by emulation
    assert pick_dtype("auto", CPU) == torch.float32
    with_flags(monkeypatch, ICE_LAKE | {"avx512_bf16"})
    assert pick_dtype("auto", CPU) == torch.bfloat16
    with_flags(monkeypatch, set())  # no /proc/cpuinfo (macOS): fp32
    assert pick_dtype("auto", CPU) == torch.float32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_an_emulated_precision_is_named_in_one_line(monkeypatch, precision):
    with_flags(monkeypatch, ICE_LAKE)
    w = precision_warning(precision, CPU)
    assert w and precision in w and "CPU" in w and "\n" not in w
    assert pick_dtype(precision, CPU) == enhance.PRECISIONS[precision]  # asked for, still honoured
    with_flags(monkeypatch, SAPPHIRE_RAPIDS)
    assert precision_warning(precision, CPU) is None
    assert precision_warning("fp32", CPU) is None and precision_warning("auto", CPU) is None


def test_this_machines_flags_decide():
    flags = cpu_flags()
    assert (torch.bfloat16 in native_dtypes(CPU)) == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert (precision_warning("fp16", CPU) is None) == bool(flags & {"avx512_fp16", "amx_fp16", "asimdhp"})


def test_run_names_an_emulated_precision_once_on_stderr(monkeypatch, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from backlitfix.cli import main

    Image.new("RGB", (48, 40), (30, 40, 50)).save(tmp_path / "a.png")
    with_flags(monkeypatch, ICE_LAKE)
    r = CliRunner().invoke(main, ["run", "--precision", "bf16", "-o", str(tmp_path / "out"), str(tmp_path / "a.png")],
                           env={"XDG_CONFIG_HOME": "/nonexistent"})
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stderr.splitlines() if "bf16" in x]
    assert len(lines) == 1 and "warning" in lines[0] and "emulated" in lines[0]
    with_flags(monkeypatch, SAPPHIRE_RAPIDS)
    r = CliRunner().invoke(main, ["run", "--precision", "bf16", "--overwrite", "-o", str(tmp_path / "out"),
                                  str(tmp_path / "a.png")], env={"XDG_CONFIG_HOME": "/nonexistent"})
    assert r.exit_code == 0 and "bf16" not in r.stderr
