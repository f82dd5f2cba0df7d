"""Command line: thin click glue over config, discover, pipeline and runner.

Exit codes: 0 every photo succeeded (or was skipped), 1 some failed, 2 usage or configuration error.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _fail_usage(msg: str):
    click.echo(f"backlitfix: error: {msg}", err=True)
    sys.exit(EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backlitfix")
def main():
    """Fix backlit photos: brighten the dark subject, keep the bright background."""


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
        click.option("--strength", type=float, help="0 = original, 1 = the model's correction (up to 2)."),
        click.option("--mode", type=click.Choice(["fast", "exact"]), help="fast: estimate at working resolution; exact: full-resolution tiles."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="Network precision in fast mode."),
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
        **{k: opts.get(k) for k in ("jobs", "device", "model", "strength", "mode", "precision")},
    }
    try:
        return load_config(opts.get("config_file"), overrides)
    except ConfigError as e:
        _fail_usage(str(e))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@photo_options
@click.option("--dry-run", is_flag=True, help="Show what would be done; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def run(paths, dry_run, as_json, **opts):
    """Correct the photos in PATHS (files or folders); originals are never touched."""
    from .discover import plan
    from .model.checkpoint import CheckpointError

    cfg = load_cli_config(opts)

    t0 = time.perf_counter()
    work = plan(list(paths), recursive=cfg.input.recursive, output_dir=cfg.output.dir,
                suffix=cfg.output.suffix, fmt=cfg.output.format)
    for e in work.errors:
        click.echo(f"error: {e}", err=True)

    from .pipeline import Pipeline, Result, load_enhancer
    from .runner import run_batch

    enhancer, info = None, None
    try:
        if dry_run:
            from .model.registry import resolve

            resolve(cfg.model)  # a wrong --model is still worth knowing before the real run
        elif work.jobs:
            enhancer, info = load_enhancer(cfg)
    except (CheckpointError, ValueError) as e:
        _fail_usage(str(e))

    show_progress = sys.stderr.isatty() and not dry_run and len(work.jobs) > 0
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(work.jobs), unit="photo", file=sys.stderr, dynamic_ncols=True)

    def report(r: Result):
        say = bar.write if bar else (lambda m: click.echo(m, err=True))
        if r.status == "failed":
            say(f"error: {r.input}: {r.reason}")
        for w in r.warnings:
            say(f"warning: {w}")
        if dry_run and not as_json:
            click.echo(f"{r.input} -> {r.output}" + (" (exists, skipped)" if r.status == "skipped" else ""))
        if bar:
            bar.update(1)

    results = run_batch(work.jobs, Pipeline(cfg, enhancer), workers=cfg.jobs, dry_run=dry_run, on_result=report)
    if bar:
        bar.close()

    counts = {s: sum(r.status == s for r in results) for s in ("done", "failed", "skipped", "planned")}
    counts["failed"] += len(work.errors)
    elapsed = time.perf_counter() - t0
    if as_json:
        summary = {
            "version": __version__,
            "model": info.name if info else cfg.model,
            "mode": cfg.mode,
            "strength": cfg.strength,
            "dry_run": dry_run,
            **counts,
            "ignored": work.ignored,
            "seconds": round(elapsed, 3),
            "files": [r.to_json() for r in results]
            + [{"input": str(e.path), "output": None, "status": "failed", "reason": e.reason} for e in work.errors],
        }
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        parts = [f"{counts[k]} {k}" for k in ("done", "planned", "skipped", "failed") if counts[k]]
        click.echo(f"backlitfix: {', '.join(parts) or 'no photos found'} in {elapsed:.1f} s", err=True)
    sys.exit(EXIT_FAILED if counts["failed"] else EXIT_OK)


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def models_cmd(as_json):
    """List the models known by name: the embedded default and user-trained ones."""
    from .model.checkpoint import CheckpointError, load_checkpoint
    from .model.registry import available, user_model_dir

    rows = []
    for entry in available():
        try:
            info = load_checkpoint(entry.path)[1]
            rows.append({"name": entry.name, "kind": entry.kind, "path": str(entry.path), "method": info.method,
                         "date": info.date})
        except CheckpointError as e:
            rows.append({"name": entry.name, "kind": entry.kind, "path": str(entry.path), "error": str(e)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no models yet; trained models go in {user_model_dir()}")
    for r in rows:
        click.echo(f"{r['name']:<24} {r['kind']:<9} {r.get('method', 'unreadable'):<16} {r['path']}")


def _register_watch():
    """`backlitfix watch` lives in backlitfix/watch/; registered here so `--help` lists it."""
    try:
        from .watch.command import watch
    except ImportError:  # the daemon is being built; run works without it
        return
    main.add_command(watch)


_register_watch()

if __name__ == "__main__":
    main()
