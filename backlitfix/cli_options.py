"""Options and config handling shared by `run` and `watch`, so both take the same flags.

Exit codes: 0 every photo succeeded (or was skipped), 1 some failed, 2 usage or configuration error
(an output folder that cannot be written included), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def ensure_std_streams() -> None:
    """Give closed standard descriptors (``2>&-``) /dev/null. Else Python has no sys.stderr, and the
    next file opened (a photo's temporary file) would get descriptor 2: whatever anything wrote to
    stderr would land in the output."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115


def output_folder_problem(folder: Path) -> str | None:
    """Why outputs cannot be written in ``folder`` (which need not exist yet), or None. Read-only: looks
    at the nearest existing folder on the way, creates nothing, so a dry run can ask too."""
    folder = Path(os.path.abspath(folder))
    p = folder
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder" if p == folder else f"{p} is a file, not a folder"
    try:
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return f"read-only file system at {p}"
    except (OSError, AttributeError):
        pass
    if not os.access(p, os.W_OK | os.X_OK):
        return f"no permission to write in {p}"
    return None


def fail_usage(msg: str):
    from .display import shown

    click.echo(f"backlitfix: error: {shown(msg)}", err=True)
    sys.exit(EXIT_USAGE)


def photo_options(f):
    """The options `run` and `watch` share: where outputs go and how photos are corrected."""
    opts = [
        click.option("-r/-R", "--recursive/--no-recursive", default=None, help="Descend into sub-folders."),
        click.option("-o", "--output", type=click.Path(path_type=Path), help="Output folder [default: a backlitfix/ folder beside the inputs]."),
        click.option("--suffix", help="Text added to each output file name, e.g. _fixed."),
        click.option("--format", "fmt", type=click.Choice(["auto", "jpeg", "tiff", "png"]), help="Output format [default: auto = like the input; RAW -> 16-bit TIFF]."),
        click.option("--quality", type=int, help="JPEG quality 1-100 [default: 95]."),
        click.option("--skip-existing/--overwrite", "skip_existing", default=None, help="Skip outputs that exist (default), or replace them. Inputs are never written."),
        click.option("-j", "--jobs", type=int, help="Parallel decode/encode workers [default: one per core]."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where the network runs."),
        click.option("--model", help="Model name or checkpoint path [default: the embedded model]."),
        click.option("--strength", help="auto (default: each photo's light decides), or 0 = original .. 1 = the model's correction (up to 2)."),
        click.option("--auto-bias", type=float, help="Lean of --strength auto: negative leaves more photos alone, positive corrects more, -3..3 [default: 0]."),
        click.option("--mode", type=click.Choice(["fast", "exact"]), help="fast: estimate at working resolution; exact: full-resolution tiles."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="Network precision in fast mode."),
        click.option("--backend", type=click.Choice(["auto", "torch", "onnxruntime", "openvino"]), help="What runs the network on the CPU (fast mode; exact mode's interior tiles) [default: auto = OpenVINO, else ONNX Runtime where installed, else PyTorch]."),
        click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="A config file layered over the defaults and the user config."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def load_cli_config(opts: dict):
    """Config from the layers plus the flags in ``opts`` (photo_options' values); exits 2 on a bad one."""
    from .config import ConfigError, load_config

    skip = opts.get("skip_existing")
    overrides = {
        "input.recursive": opts.get("recursive"),
        "output.dir": opts.get("output"),
        "output.suffix": opts.get("suffix"),
        "output.format": opts.get("fmt"),
        "output.jpeg_quality": opts.get("quality"),
        "output.overwrite": None if skip is None else not skip,
        "auto.bias": opts.get("auto_bias"),
        **{k: opts.get(k) for k in ("jobs", "device", "model", "strength", "mode", "precision", "backend")},
    }
    try:
        return load_config(opts.get("config_file"), overrides)
    except ConfigError as e:
        fail_usage(str(e))
