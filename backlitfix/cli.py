"""Command line: thin click glue over config, discover, pipeline and runner.

Exit codes: 0 every photo succeeded (or was skipped), 1 some failed, 2 usage or configuration error.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from training.cli_residual import explain, residual
from training.cli_train import train

from . import __version__
from .cli_options import (
    EXIT_FAILED,
    EXIT_OK,
    fail_usage,
    load_cli_config,
    photo_options,
)
from .eval.command import eval_cmd
from .plugins.command import plugins
from .watch.command import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backlitfix")
def main():
    """Fix backlit photos: brighten the dark subject, keep the bright background."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@photo_options
@click.option("--dry-run", is_flag=True, help="Show what would be done; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--report", "with_report", is_flag=True,
              help="Also write report.html (before/after previews) into the output folder.")
def run(paths, dry_run, as_json, with_report, **opts):
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
        fail_usage(str(e))

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

    rep = None
    if with_report:
        from .eval.report import Report, report_folder

        folder = report_folder(work.jobs, cfg.output.dir)
        if dry_run or folder is None:
            click.echo(f"note: no report: {'a dry run processes nothing' if dry_run else 'no photos'}", err=True)
        else:
            rep = Report(folder, work.jobs, strength=cfg.strength)

    results = run_batch(work.jobs, Pipeline(cfg, enhancer, rep), workers=cfg.jobs, dry_run=dry_run, on_result=report)
    if bar:
        bar.close()

    counts = {s: sum(r.status == s for r in results) for s in ("done", "failed", "skipped", "planned")}
    counts["failed"] += len(work.errors)
    elapsed = time.perf_counter() - t0
    report_path = None
    if rep is not None:
        from .eval.report import settings_of
        from .photo import PhotoError

        try:
            report_path = rep.write(results, work.errors, settings_of(cfg, info, enhancer), elapsed)
        except PhotoError as e:  # the photos are done; a report that cannot be written is not a failed photo
            click.echo(f"error: {e.path}: {e.reason}", err=True)
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
            **({"report": str(report_path) if report_path else None} if with_report else {}),
            "files": [r.to_json() for r in results]
            + [{"input": str(e.path), "output": None, "status": "failed", "reason": e.reason} for e in work.errors],
        }
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        parts = [f"{counts[k]} {k}" for k in ("done", "planned", "skipped", "failed") if counts[k]]
        click.echo(f"backlitfix: {', '.join(parts) or 'no photos found'} in {elapsed:.1f} s", err=True)
        if report_path:
            click.echo(f"backlitfix: report: {report_path}", err=True)
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


main.add_command(watch)
main.add_command(plugins)
main.add_command(train)
main.add_command(eval_cmd)
main.add_command(residual)
main.add_command(explain)

if __name__ == "__main__":
    main()
