"""`backlitfix residual` and `backlitfix explain`: a library's RAVE residual, and what it means in words.

Heavy imports (torch, open_clip) happen inside the commands so `backlitfix --help` stays fast.
Exit codes: 0 done, 2 usage, configuration, model or input error (one line `backlitfix: error: ...`).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from backlitfix.cli_options import fail_usage


def _config(config_file, overrides: dict):
    from backlitfix.config import ConfigError, load_config

    try:
        return load_config(config_file, {k: v for k, v in overrides.items() if v is not None})
    except ConfigError as e:
        fail_usage(str(e))


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _load_clip(model: str, pretrained: str, device: str, seed: int):
    import torch

    from .clip import ClipUnavailable, load_clip

    torch.manual_seed(seed)  # only matters for random test models: the same one in every run
    try:
        return load_clip(model, pretrained, device)
    except ClipUnavailable as e:
        fail_usage(str(e))


def _say(msg: str) -> None:
    click.echo(msg, err=True)


def _clip_options(f):
    f = click.option("--clip-pretrained", help="open_clip pretrained tag or weights file [default: config "
                                               "training.clip_pretrained].")(f)
    f = click.option("--clip-model", help="open_clip architecture [default: config training.clip_model].")(f)
    return f


@click.command("residual")
@click.option("--welllit", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of photos in the look you want (your library).")
@click.option("--backlit", type=click.Path(path_type=Path, file_okay=False),
              help="Folder of backlit photos [default: picked from --welllit by exposure statistics].")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Residual file to write (.safetensors).")
@_clip_options
@click.option("--shift-tokens", type=int, help="Bias correction: tokens from each end of the vocabulary "
                                                "(0 = off; the RAVE paper's shifted model: 15) [default: config].")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="A config file layered over the defaults and the user config.")
@click.option("--cache/--no-cache", default=True, help="Reuse and store embeddings (keyed by file content).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def residual(welllit, backlit, output, clip_model, clip_pretrained, shift_tokens, config_file, cache, as_json):
    """Compute the RAVE residual of your photos: the direction from backlit to your well-lit look."""
    if shift_tokens is not None and shift_tokens < 0:
        fail_usage(f"--shift-tokens must be >= 0, got {shift_tokens}")
    cfg = _config(config_file, {"training.clip_model": clip_model, "training.clip_pretrained": clip_pretrained,
                                "training.shift_tokens": shift_tokens})
    t = cfg.training
    if output.exists():  # replace an older residual, never a photo or anything else
        from .residual import ResidualError, load_residual

        try:
            load_residual(output)
        except ResidualError:
            fail_usage(f"{output}: exists and is not a residual file; not overwritten (choose another -o)")
    from backlitfix.photo import PhotoError

    from .embedding_cache import EmbeddingCache
    from .residual import ResidualError, residual_from_folders, save_residual

    t0 = time.perf_counter()
    clip = _load_clip(t.clip_model, t.clip_pretrained, _device(cfg.device), t.seed)
    store = EmbeddingCache(log=lambda m: _say(f"warning: {m}")) if cache else None
    try:
        res = residual_from_folders(clip, welllit, backlit, embed_size=t.embed_size, shift_tokens=t.shift_tokens,
                                    cache=store, clip_pretrained=t.clip_pretrained,
                                    log=None if as_json else _say, max_pixels=cfg.input.max_pixels)
        save_residual(res, output)
    except (ResidualError, PhotoError) as e:
        fail_usage(str(e))
    finally:
        if store is not None:
            store.close()
    run = res.run
    for path, reason in run.skipped:
        _say(f"warning: {path}: skipped: {reason}")
    elapsed = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({
            "output": str(output), "model": res.model, "date": res.date, "thr": res.thr,
            "n_welllit": res.n_welllit, "n_backlit": res.n_backlit, "backlit_source": res.backlit_source,
            "shift_tokens": res.shift_tokens, "embedded": run.n_embedded, "from_cache": run.n_cached,
            "skipped": [{"path": str(p), "reason": r} for p, r in run.skipped],
            "backlit": [{"path": str(p), **({"score": round(s, 3)} if run.selected_scores else {})}
                        for p, s in zip(run.backlit, run.selected_scores or [None] * len(run.backlit))],
            "shift_top": res.info.get("shift_top"), "shift_bottom": res.info.get("shift_bottom"),
            "seconds": round(elapsed, 3),
        }, indent=2, ensure_ascii=False))
    else:
        if res.backlit_source == "selected":
            _say(f"selected {len(run.backlit)} backlit photos from {welllit} (exposure score, threshold 1.5):")
            for p, s in zip(run.backlit, run.selected_scores):
                _say(f"  {s:5.2f}  {p}")
        if res.shift_tokens:
            _say(f"bias correction: projected out the direction of {res.shift_tokens} top tokens "
                 f"({', '.join(repr(x) for x in res.info['shift_top'][:5])}, ...) and {res.shift_tokens} bottom "
                 f"tokens ({', '.join(repr(x) for x in res.info['shift_bottom'][:5])}, ...)")
        _say(f"embedded {run.n_embedded} photos, {run.n_cached} from the cache, {len(run.skipped)} skipped "
             f"as unreadable")
        _say(f"wrote {output}: CLIP {res.model}, {res.n_welllit} well-lit / {res.n_backlit} backlit "
             f"({res.backlit_source}), thr {res.thr:.4f}, in {elapsed:.1f} s")


def _printable(tok: str) -> str:
    """A token as a user reads it: a trailing space marks a whole word, which the table need not show."""
    shown = tok.strip()
    return shown if shown and shown.isprintable() else repr(tok)


@click.command("explain")
@click.argument("residual_file", metavar="RESIDUAL", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--top", type=click.IntRange(1, 1000), default=15, show_default=True,
              help="How many tokens from each end.")
@_clip_options
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="A config file layered over the defaults and the user config.")
@click.option("--json", "as_json", is_flag=True, help="Print the ranking as JSON on stdout.")
def explain(residual_file, top, clip_model, clip_pretrained, config_file, as_json):
    """Rank the CLIP vocabulary against a residual: the words it pulls towards and away from."""
    from .residual import ResidualError, load_residual
    from .vocabulary import rank, vocabulary

    try:
        res = load_residual(residual_file)
    except ResidualError as e:
        fail_usage(str(e))
    cfg = _config(config_file, {})
    if clip_model is None and clip_pretrained is None and res.info.get("clip_pretrained"):
        arch = res.model.split("/", 1)[0]  # the residual's own model, by default
        clip_model, clip_pretrained = arch, res.info["clip_pretrained"]
    clip = _load_clip(clip_model or cfg.training.clip_model, clip_pretrained or cfg.training.clip_pretrained,
                      _device(cfg.device), cfg.training.seed)
    try:
        load_residual(residual_file, expect_model=clip.name)
    except ResidualError as e:
        fail_usage(str(e))
    tokens, emb = vocabulary(clip, log=None if as_json else _say)
    ranking = rank(res.r, tokens, emb, top)
    if as_json:
        click.echo(json.dumps({
            "residual": str(residual_file), "model": res.model, "date": res.date, "thr": res.thr,
            "n_welllit": res.n_welllit, "n_backlit": res.n_backlit, "backlit_source": res.backlit_source,
            "shift_tokens": res.shift_tokens, "vocabulary_size": len(tokens),
            "top": [{"token": t, "cosine": c} for t, c in ranking["top"]],
            "bottom": [{"token": t, "cosine": c} for t, c in ranking["bottom"]],
        }, indent=2, ensure_ascii=False))
        return
    shift = f", shifted by {res.shift_tokens} tokens" if res.shift_tokens else ""
    click.echo(f"{residual_file}: CLIP {res.model}, {res.n_welllit} well-lit / {res.n_backlit} backlit "
               f"({res.backlit_source}){shift}, {res.date}")
    click.echo(f"{len(tokens)} vocabulary tokens ranked by cosine with the residual.")
    width = max([len(_printable(t)) for t, _ in ranking["top"]] + [24])
    click.echo(f"{'#':>3}  {'towards (well-lit side)':<{width}}  {'cos':>7}    "
               f"{'away from (backlit side)':<{width}}  {'cos':>7}")
    for i, ((ta, ca), (tb, cb)) in enumerate(zip(ranking["top"], ranking["bottom"]), 1):
        click.echo(f"{i:>3}  {_printable(ta):<{width}}  {ca:+.4f}    {_printable(tb):<{width}}  {cb:+.4f}")
    if sys.stdout.isatty():
        click.echo("Content words (places, subjects) at either end are biases of the photo sets, not lighting; "
                   "--shift-tokens removes their common direction.")
