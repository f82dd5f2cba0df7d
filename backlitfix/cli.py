"""Command line: thin click glue over config, discover, pipeline and runner.

Exit codes: 0 every photo succeeded (or was skipped), 1 some failed, 2 usage or configuration error.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import click

from . import __version__
from .cli_options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ensure_std_streams,
    fail_usage,
    load_cli_config,
    output_folder_problem,
    photo_options,
)
from .display import shown
from .eval.command import eval_cmd
from .plugins.command import plugins
from .watch.command import watch

# The training commands, imported when one of them is asked for (or listed by --help): `run` and `watch` never
# load backlitfix.training, nor what it pulls in (open_clip, matplotlib).
_LAZY_COMMANDS = {
    "train": "backlitfix.training.cli_train:train",
    "residual": "backlitfix.training.cli_residual:residual",
    "explain": "backlitfix.training.cli_residual:explain",
}


class _LazyGroup(click.Group):
    """click's "lazily loading subcommands" pattern: names listed up front, modules imported on first use."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx, cmd_name):
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            import importlib

            module, attr = self.lazy_commands[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, lazy_commands=_LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="backlitfix")
def main():
    """Fix backlit photos: brighten the dark subject, keep the bright background."""
    ensure_std_streams()


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
    from .runner import few_malloc_arenas

    few_malloc_arenas()  # before torch starts its threads

    t0 = time.perf_counter()
    work = plan(list(paths), recursive=cfg.input.recursive, output_dir=cfg.output.dir,
                suffix=cfg.output.suffix, fmt=cfg.output.format)
    for e in work.errors:
        click.echo(f"error: {shown(e.path)}: {shown(e.reason)}", err=True)

    from .pipeline import Pipeline, Result, load_enhancer
    from .runner import Interrupted, run_batch

    enhancer, info = None, None
    try:
        if dry_run or work.jobs:  # a dry run loads and checks the model as the real run would
            enhancer, info = load_enhancer(cfg)
    except (CheckpointError, ValueError) as e:
        fail_usage(str(e))

    pipeline = Pipeline(cfg, enhancer)
    todo = [j for j in work.jobs if not pipeline.should_skip(j)]
    for folder in dict.fromkeys(j.output.parent for j in todo):  # once, before any work
        problem = output_folder_problem(folder)
        if problem:
            fail_usage(f"output folder {shown(folder)}: {problem}")
    if not dry_run and work.jobs:
        from .io.atomic import remove_stale_temps

        stale = remove_stale_temps(j.output for j in work.jobs)
        if stale:
            click.echo(f"note: removed {len(stale)} temporary file(s) an interrupted run left", err=True)

    show_progress = bool(sys.stderr and sys.stderr.isatty()) and not dry_run and len(work.jobs) > 0
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(work.jobs), unit="photo", file=sys.stderr, dynamic_ncols=True)

    def report(r: Result):
        say = bar.write if bar else (lambda m: click.echo(m, err=True))
        if r.status == "failed":
            say(f"error: {shown(r.input)}: {shown(r.reason)}")
        for w in r.warnings:
            say(f"warning: {shown(w)}")
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
    pipeline.report = rep

    interrupted = 0
    try:
        results = run_batch(work.jobs, pipeline, workers=cfg.jobs, dry_run=dry_run, on_result=report,
                            memory_budget=cfg.memory_budget_mb * 2**20)
    except Interrupted as stop:  # Ctrl-C: what was finished is kept and summarised; the rest is not started
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the summary short
        results = [r for r in stop.results if r is not None]
        interrupted = len(stop.results) - len(results)
        if rep is not None:
            rep.discard(str(j.input) for j, r in zip(work.jobs, stop.results) if r is None)
    if bar:
        bar.close()
    if dry_run:  # the strengths it would use: one working-resolution network pass per photo
        pipeline.previews(work.jobs, results, on_result=report)
    pipeline.annotate(results)
    if dry_run and not as_json:
        for r in results:
            click.echo(f"{shown(r.input)} -> {shown(r.output)}"
                       + (" (exists, skipped)" if r.status == "skipped" else "")
                       + (f"  strength {r.strength:.2f}" if r.strength is not None else "")
                       + (f"  burst {r.group}" if r.group else ""))

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
            click.echo(f"error: {shown(e.path)}: {shown(e.reason)}", err=True)
    if as_json:
        summary = {
            "version": __version__,
            "model": info.name if info else cfg.model,
            "mode": cfg.mode,
            "strength": cfg.strength,
            **({"auto_bias": cfg.auto.bias} if cfg.strength == "auto" else {}),
            "dry_run": dry_run,
            **counts,
            **({"interrupted": interrupted} if interrupted else {}),
            "ignored": work.ignored,
            "ignored_files": [{"input": str(p), "reason": why} for p, why in work.ignored_files],
            "subfolders_not_searched": [str(p) for p in work.subfolders],
            "seconds": round(elapsed, 3),
            **({"report": str(report_path) if report_path else None} if with_report else {}),
            "files": [r.to_json() for r in results]
            + [{"input": str(e.path), "output": None, "status": "failed", "reason": e.reason} for e in work.errors],
        }
        try:
            click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        except OSError as e:  # a full disk or a closed pipe: one line, not a traceback
            _drop_stdout()
            click.echo(f"backlitfix: error: cannot write the --json summary: {e.strerror or e}", err=True)
            sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_FAILED)
    else:
        parts = [f"{counts[k]} {k}" for k in ("done", "planned", "skipped", "failed") if counts[k]]
        if interrupted:
            parts.append(f"{interrupted} not done (interrupted)")
        sorted_ = [r for r in results if r.strength is not None and r.status in ("done", "planned")]
        how = ""
        if cfg.strength == "auto" and sorted_:  # how auto sorted the shoot, for a glance before the report
            from .strength import sorted_shoot

            how = (f"; {sorted_shoot([r.strength for r in sorted_], [r.group for r in sorted_])}"
                   + (f" (--auto-bias {cfg.auto.bias:+g})" if cfg.auto.bias else ""))
        click.echo(f"backlitfix: {', '.join(parts) or 'no photos found'} in {elapsed:.1f} s{how}", err=True)
        if work.subfolders:
            n, names = len(work.subfolders), ", ".join(shown(p.name) for p in work.subfolders[:3])
            click.echo(f"backlitfix: {n} sub-folder{'s' * (n > 1)} not searched ({names}{', ...' * (n > 3)}); "
                       "-r searches them", err=True)
        if report_path:
            click.echo(f"backlitfix: report: {shown(report_path)}", err=True)
    sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_FAILED if counts["failed"] else EXIT_OK)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what could not be written
    does not print a traceback of its own."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


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
main.add_command(eval_cmd)

if __name__ == "__main__":
    main()
