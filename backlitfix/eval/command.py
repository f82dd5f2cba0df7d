"""`backlitfix eval`: metrics of a folder of results, as a table, JSON or CSV.

Exit codes: 0 every image was scored, 1 some image (or a match for it) failed, 2 usage error.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import click

from .. import __version__
from ..cli_options import EXIT_FAILED, EXIT_OK, fail_usage
from ..io.formats import format_of

HEADERS = {
    "niqe": "NIQE", "crushed": "crushed %", "clipped": "clipped %", "dark30": "dark30 %",
    "local_contrast": "local contrast %", "dark30_gain": "dark30 gain pts", "dark30_stops": "dark30 stops",
    "psnr": "PSNR dB", "ssim": "SSIM", "lpips": "LPIPS",
}
DIGITS = {"niqe": 3, "ssim": 4, "lpips": 4, "dark30_stops": 2}

_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def _fmt(col: str, v: float | None) -> str:
    if v is None:
        return "-"
    return "inf" if math.isinf(v) else f"{v:.{DIGITS.get(col, 2)}f}"


def _finite(v):
    """JSON has no infinity: PSNR of identical images is written as null."""
    return v if v is None or math.isfinite(v) else None


def table(ev) -> str:
    head = ["image"] + [HEADERS[c] for c in ev.columns]
    body = [[r.name] + [_fmt(c, r.values.get(c)) for c in ev.columns] for r in ev.rows]
    body.append([f"mean ({len(ev.rows)})"] + [_fmt(c, ev.mean.get(c)) for c in ev.columns])
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths]), *(line(b) for b in body)]
    if ev.fid is not None:
        out.append(f"FID {ev.fid:.2f} ({ev.fid_sets[0]} results vs {ev.fid_sets[1]} references)")
    return "\n".join(out)


def as_json(ev, settings: dict) -> str:
    doc = {
        "version": __version__,
        **settings,
        "columns": ev.columns,
        "images": [{"name": r.name, "result": str(r.result), "gt": r.gt and str(r.gt),
                    "input": r.input and str(r.input),
                    **{c: _finite(r.values.get(c)) for c in ev.columns},
                    **({"input_exposure": r.input_values} if r.input_values else {}),
                    "errors": r.errors} for r in ev.rows],
        "mean": {c: _finite(v) for c, v in ev.mean.items()},
        "fid": ev.fid,
        "fid_images": list(ev.fid_sets) if ev.fid_sets else None,
        "notes": ev.notes,
        "errors": ev.errors,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


def as_csv(ev) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "result", "gt", "input", *ev.columns, "error"])
    for r in ev.rows:
        w.writerow([r.name, r.result, r.gt or "", r.input or "",
                    *(repr(r.values[c]) if c in r.values else "" for c in ev.columns), " | ".join(r.errors)])
    w.writerow(["mean", "", "", "", *(repr(ev.mean[c]) if c in ev.mean else "" for c in ev.columns), ""])
    if ev.fid is not None:
        w.writerow(["fid", "", "", "", repr(ev.fid)])
    return buf.getvalue()


@click.command("eval")
@click.argument("results_dir", type=_dir)
@click.option("--gt", "gt_dir", type=_dir, help="Ground-truth folder: PSNR, SSIM, LPIPS, FID (matched by name).")
@click.option("--input", "input_dir", type=_dir,
              help="The inputs of the results: how much the dark regions were raised.")
@click.option("--suffix", default="", help="Suffix to strip from result names before matching, e.g. _fixed.")
@click.option("--niqe-params", type=click.Path(dir_okay=False, path_type=Path),
              help="NIQE pristine model (niqe_image_params.mat of the NIQE release) [default: "
                   "config eval.niqe_params, else $BACKLITFIX_NIQE_PARAMS].")
@click.option("--json", "as_json_flag", is_flag=True, help="Print JSON on stdout instead of the table.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows and the mean to this CSV file (the table still prints).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="A config file layered over the defaults and the user config (eval.lpips_backbone, "
                   "eval.inception_weights).")
def eval_cmd(results_dir, gt_dir, input_dir, suffix, niqe_params, as_json_flag, csv_file, config_file):
    """Measure the images in RESULTS_DIR.

    Always: NIQE (no reference) and exposure statistics: crushed % (luma < 2 %), clipped % (> 98 %),
    dark30 (mean luma of the darkest 30 %) and local contrast. With --input: the gain over the
    input's darkest 30 %. With --gt: PSNR, SSIM, and LPIPS and FID when their weights are configured.
    Unreadable files and bad matches are one line each on stderr; the rest go on (exit 1).
    """
    from ..config import ConfigError, load_config

    try:
        from .evaluate import evaluate
    except ModuleNotFoundError as e:  # a base install: scipy (NIQE, SSIM) comes with the eval extra
        if not e.name or e.name.split(".")[0] not in ("scipy", "lpips", "pytorch_fid"):
            raise
        fail_usage(f"backlitfix eval needs the {e.name.split('.')[0]} package: pip install 'backlitfix[eval]'")
    if as_json_flag and csv_file:
        fail_usage("--json and --csv are alternatives; give one")
    if csv_file and format_of(csv_file):  # never write a table over a photo
        fail_usage(f"--csv {csv_file}: that is an image file name; give a .csv file")
    try:
        cfg = load_config(config_file, {})
    except ConfigError as e:
        fail_usage(str(e))
    try:
        ev = evaluate(results_dir, gt_dir=gt_dir, input_dir=input_dir, suffix=suffix,
                      niqe_params=niqe_params or cfg.eval.niqe_params,
                      lpips_backbone=cfg.eval.lpips_backbone, inception_weights=cfg.eval.inception_weights,
                      max_pixels=cfg.input.max_pixels, on_error=lambda line: click.echo(f"error: {line}", err=True))
    except OSError as e:  # a folder that cannot be listed
        fail_usage(f"cannot read folder {e.filename}: {e.strerror or e}")
    for note in ev.notes:
        click.echo(f"note: {note}", err=True)
    if not ev.rows:
        click.echo(f"note: no images in {results_dir}", err=True)
    if as_json_flag:
        settings = {"results": str(results_dir), "gt": gt_dir and str(gt_dir), "input": input_dir and str(input_dir)}
        click.echo(as_json(ev, settings))
    else:
        click.echo(table(ev))
    if csv_file:
        from ..io import atomic_write_bytes
        from ..photo import PhotoError

        try:
            atomic_write_bytes(csv_file, as_csv(ev).encode("utf-8"))
        except PhotoError as e:
            click.echo(f"error: {e.path}: {e.reason}", err=True)
            sys.exit(EXIT_FAILED)
    sys.exit(EXIT_FAILED if ev.errors else EXIT_OK)
