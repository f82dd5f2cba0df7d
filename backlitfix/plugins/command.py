"""`backlitfix plugins`: list and install the editor plugins, and the two helpers that hosts call
(`lightroom`, also installed as the `backlitfix-lightroom` program, and `digikam`)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..cli_options import EXIT_FAILED, EXIT_OK, fail_usage, load_cli_config
from .hosts import HOSTS, InstallError, install, plan_install


@click.group("plugins")
def plugins():
    """Plugins for darktable, GIMP, Lightroom Classic, digiKam, ART and RawTherapee."""


@plugins.command("list")
def list_cmd():
    """The hosts, and where each plugin goes on this system."""
    for host, what in HOSTS.items():
        p = plan_install(host)
        where = p.placements[0].dest if p.placements else "(a setting in the host, see 'install')"
        click.echo(f"{host:<12} {what}\n{'':<12} -> {where}")


@plugins.command("install")
@click.argument("host", type=click.Choice(list(HOSTS)))
@click.option("--dry-run", is_flag=True, help="Show where the files would go; write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing file that differs from backlitfix's copy.")
def install_cmd(host, dry_run, force):
    """Copy HOST's plugin to its standard per-user location and print where it went."""
    try:
        written = install(host, dry_run=dry_run, force=force)
    except InstallError as e:
        fail_usage(str(e))
    for dest in written:
        click.echo(f"{'would install' if dry_run else 'installed'}: {dest}")
    for note in plan_install(host).notes:
        click.echo(note)
    if host == "digikam" and not dry_run:
        click.echo("--- the script to paste ---\n" + written[0].read_text(encoding="utf-8").rstrip("\n"))


def _correct(pairs, model, strength, config_file) -> None:
    from ..model.checkpoint import CheckpointError
    from .inplace import correct_into

    cfg = load_cli_config({"model": model, "strength": strength, "config_file": config_file})
    try:
        failed = correct_into(pairs, cfg, say=lambda m: click.echo(m, err=True), done=lambda d: click.echo(str(d)))
    except (CheckpointError, ValueError) as e:
        fail_usage(str(e))
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


_model = click.option("--model", help="Model name or checkpoint path [default: the embedded model].")
_strength = click.option("--strength", type=float, help="0 = original, 1 = the model's correction (up to 2).")
_config = click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
                       help="A config file layered over the defaults and the user config.")


@plugins.command("lightroom")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model
@_strength
@_config
def lightroom_cmd(files, model, strength, config_file):
    """Correct FILES in place (Lightroom's -Edit.tif, or exported files); prints each file done.

    Only for copies a host made for this purpose: the file is replaced by its correction.
    """
    _correct([(f, f) for f in files], model, strength, config_file)


@plugins.command("digikam")
@click.option("--input", "input_", type=click.Path(path_type=Path), help="The photo (Windows; else read stdin).")
@click.option("--output", type=click.Path(path_type=Path), help="Where digiKam wants the result.")
@_model
@_strength
@_config
def digikam_cmd(input_, output, model, strength, config_file):
    """digiKam BQM helper: read "INPUT" and "OUTPUT" lines from stdin, write the correction to OUTPUT."""
    from .inplace import parse_bqm_paths

    if (input_ is None) != (output is None):
        fail_usage("give both --input and --output, or neither (then stdin holds the two paths)")
    if input_ is None:
        try:
            input_, output = parse_bqm_paths(sys.stdin.buffer.read())
        except ValueError as e:
            fail_usage(str(e))
    _correct([(input_, output)], model, strength, config_file)


def lightroom_main():
    """The `backlitfix-lightroom` program: what Lightroom launches, with file paths as arguments."""
    lightroom_cmd.main(prog_name="backlitfix-lightroom")
