"""`backlitfix watch`: the click command. Checks, journal, model, signals; the work is in daemon.py."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import click

from ..cli_options import EXIT_OK, EXIT_USAGE, load_cli_config, photo_options
from ..discover import DEFAULT_OUTPUT_DIRNAME


def _usage(msg: str):
    click.echo(f"backlitfix: error: {msg}", err=True)
    sys.exit(EXIT_USAGE)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@click.command()
@click.argument("in_dir", type=click.Path(path_type=Path))
@photo_options
@click.option("--polling", is_flag=True,
              help="Scan the folder every watch.polling_interval seconds instead of using OS events "
                   "(for network shares: SMB, NFS).")
@click.option("--once", is_flag=True,
              help="Process what is in the folder now, then exit with run's exit codes.")
@click.option("--status", "show_status", is_flag=True,
              help="Print the journal's counts (done, failed, pending) and failures, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --status: print JSON on stdout.")
@click.option("--quiet-seconds", type=click.FloatRange(min=0, min_open=True),
              help="A file is complete once unchanged this long [default: watch.quiet_seconds = 2].")
@click.option("--journal", "journal_setting",
              help="Journal location: output (in the output folder), state (~/.local/state/backlitfix) or a file.")
@click.option("-q", "--quiet", is_flag=True, help="Log only errors, warnings and start/stop lines.")
def watch(in_dir, polling, once, show_status, as_json, quiet_seconds, journal_setting, quiet, **opts):
    """Watch IN_DIR and correct every photo that lands there, once, when it is complete.

    Outputs go where `backlitfix run IN_DIR` puts them. A journal (SQLite) remembers what was
    done, so after a restart nothing is processed twice and nothing is missed. Stop with Ctrl-C
    or SIGTERM: the photo in hand is finished first (a second Ctrl-C stops at once). Errors are
    logged as `error: PATH: reason`. With --once: exit 0 if every photo succeeded, 1 if some
    failed, 2 on a usage error.
    """
    from .journal import Journal, JournalError, JournalLock, journal_path

    cfg = load_cli_config(opts)
    w = cfg.watch
    if quiet_seconds is not None:
        w = dataclasses.replace(w, quiet_seconds=quiet_seconds)
    if journal_setting is not None:
        if not journal_setting.strip():
            _usage("--journal must not be empty")
        w = dataclasses.replace(w, journal=journal_setting)
    cfg = dataclasses.replace(cfg, watch=w)

    in_abs = os.path.abspath(in_dir)
    out_abs = os.path.abspath(cfg.output.dir) if cfg.output.dir is not None else os.path.join(
        in_abs, DEFAULT_OUTPUT_DIRNAME)
    jpath = journal_path(cfg.watch.journal, Path(out_abs))

    if show_status:
        sys.exit(_print_status(jpath, as_json))
    if as_json:
        _usage("--json goes with --status")

    if not os.path.isdir(in_abs):
        _usage(f"{in_dir}: not a folder" if os.path.exists(in_abs) else f"{in_dir}: no such folder")
    in_real, out_real = os.path.realpath(in_abs), os.path.realpath(out_abs)
    if _inside(in_real, out_real):
        _usage(f"the output folder {out_abs} is the watched folder or contains it; outputs would be "
               "watched as inputs: choose an output folder outside it or inside it")
    try:
        os.makedirs(out_abs, exist_ok=True)
    except OSError as e:
        _usage(f"cannot create the output folder {out_abs}: {e.strerror or e}")

    lock = JournalLock(jpath)
    try:
        if not lock.acquire():
            _usage(f"another backlitfix watch is using the journal {jpath}")
        journal = Journal(jpath)
    except JournalError as e:
        _usage(str(e))
    except OSError as e:
        _usage(f"cannot lock the journal {jpath}: {e.strerror or e}")

    from ..io.atomic import remove_stale_temps
    from ..model.checkpoint import CheckpointError
    from ..pipeline import load_enhancer
    from .daemon import Daemon, Log

    log = Log(quiet=quiet)
    daemon = None
    try:
        # temporary files first: the outputs of rows released next are still known then
        removed = remove_stale_temps(journal.outputs())
        vanished = journal.forget_vanished()
        interrupted = len(journal.entries("processing"))
        if interrupted:
            log.note(f"{interrupted} photo(s) interrupted last time will be processed again")
        if removed:
            log.note(f"removed {len(removed)} temporary file(s) left by an interrupted run")
        if vanished:
            log.note(f"forgot {vanished} waiting photo(s) that are gone")

        try:
            enhancer, info = load_enhancer(cfg)
        except (CheckpointError, ValueError) as e:
            _usage(str(e))

        daemon = Daemon(cfg, Path(in_abs), Path(out_abs), journal, enhancer, once=once, polling=polling, log=log)
        signals_seen = []

        def on_signal(signum, frame):
            signals_seen.append(signum)
            if len(signals_seen) > 1:  # a second Ctrl-C: stop now (outputs are atomic; the journal redoes it)
                os._exit(128 + signum)
            # A flag only: the daemon logs the stop. Logging here could wait forever for the log's
            # lock, held by the very code this signal interrupted.
            daemon.request_stop(signum)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

        how = "polling" if polling else "events"

        def ready(found: int):
            if once:
                log.note(f"processing {in_abs} -> {out_abs} once: {found} photo(s) (model {info.name}, "
                         f"journal {jpath})")
            else:
                log.note(f"watching {in_abs} -> {out_abs} ({how}, quiet {cfg.watch.quiet_seconds:g} s, "
                         f"{found} photo(s) there, model {info.name}, journal {jpath})")

        t0 = time.perf_counter()
        try:
            code = daemon.run(on_ready=ready)
        except OSError as e:  # the observer could not start (e.g. the inotify watch limit)
            hint = "; raise fs.inotify.max_user_watches or use --polling" if e.errno == 28 else ""
            _usage(f"cannot watch {in_abs}: {e.strerror or e}{hint}")
        c = daemon.counts  # from the journal too: the rows this session changed, in their final state
        totals = journal.counts()
        log.note(
            f"{'finished' if once and code != 130 else 'stopped'}: {c.done} done, {c.kept} kept existing, "
            f"{c.failed} failed in {time.perf_counter() - t0:.1f} s; journal: {totals['done']} done, "
            f"{totals['failed']} failed, {totals['pending'] + totals['processing']} pending")
    finally:
        if daemon is not None:
            daemon.bursts.close()
        journal.close()
        lock.release()
    sys.exit(code)


def _print_status(jpath: Path, as_json: bool) -> int:
    from .journal import STATES, Journal, JournalError

    counts = dict.fromkeys(STATES, 0)
    failures = []
    exists = jpath.exists()
    if exists:
        try:
            j = Journal(jpath, readonly=True)
            try:
                counts = j.counts()
                failures = [{"input": e.path, "reason": e.reason, "at": e.updated_at} for e in j.entries("failed")]
            finally:
                j.close()
        except JournalError as e:
            _usage(str(e))
    waiting = counts["pending"] + counts["processing"]
    if as_json:
        click.echo(json.dumps({"journal": str(jpath), "exists": exists, "done": counts["done"],
                               "failed": counts["failed"], "pending": waiting,
                               "in_progress": counts["processing"], "failures": failures},
                              indent=2, ensure_ascii=False))
    else:
        if not exists:
            click.echo(f"no journal yet at {jpath}", err=True)
        click.echo(f"done {counts['done']}, failed {counts['failed']}, pending {waiting}"
                   + (f" ({counts['processing']} in progress)" if counts["processing"] else ""))
        for f in failures:
            click.echo(f"failed: {f['input']}: {f['reason']}")
    return EXIT_OK
