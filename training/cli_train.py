"""`backlitfix train`: fine-tune (or train from scratch) the enhancer on the user's own photos.

Heavy imports live inside the command so `backlitfix --help` stays fast and works without the train extra.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import sys
from pathlib import Path

import click

METHODS = ("rave", "clip-lit", "clip-lit-latent")
# --preset: settings chosen for a kind of machine; values given on the command line still win.
# cpu: 256 px (the network and the RN101 identity see 4x fewer pixels; CLIP sees 224 px either way), batch 4,
# 350 steps. Run end to end on 2 idle cores: 21 min with native bf16 (its estimate said 22), about 32 min
# estimated in fp32; a default step costs 6.8x a preset step (docs/training.md: measurements, what it gives up).
PRESETS = {"cpu": {"image_size": 256, "batch_size": 4, "steps": 350}}


def _fail(msg: str, code: int = 2):
    click.echo(f"backlitfix: error: {msg}", err=True)
    sys.exit(code)


def output_path(out: str) -> Path:
    """``-o mystyle`` (a bare name) goes to the user model folder, so ``--model mystyle`` finds it."""
    from backlitfix.model.registry import user_model_dir

    p = Path(out)
    if p.suffix == "" and len(p.parts) == 1:
        return user_model_dir() / f"{out}.safetensors"
    return p if p.suffix else p.with_suffix(".safetensors")


def check_pairs(backlit: list[Path], welllit: list[Path]) -> None:
    """--paired: every backlit photo needs a well-lit photo of the same name (extension aside), and back."""
    b = {p.stem: p for p in backlit}
    w = {p.stem: p for p in welllit}
    lonely = sorted(set(b) ^ set(w))
    if lonely:
        names = [str(b.get(s) or w.get(s)) for s in lonely[:5]]
        more = f" and {len(lonely) - 5} more" if len(lonely) > 5 else ""
        raise ValueError(f"--paired: {len(lonely)} photo(s) have no partner of the same name: "
                         f"{', '.join(names)}{more}")


def _defaults() -> dict:
    """The shipped config's values, for --help (a user config may change them; the run log shows the values)."""
    try:
        from backlitfix.config import _package_defaults

        return _package_defaults()
    except Exception:  # noqa: BLE001 - help must never fail
        return {}


_D = _defaults()


def _dflt(key: str, note: str = "") -> str:
    """' [default: 2000 (config training.steps)]' for --help; click would bracket a show_default string."""
    value = _D.get(key)
    return f"  [default: {value} (config {key}){note}]" if value is not None else f"  [default: config {key}]"


@click.command("train")
@click.option("--method", type=click.Choice(METHODS), required=True, help="Guidance: RAVE residual, CLIP-LIT prompts, or CLIP-LIT-Latent vectors.")
@click.option("--backlit", type=click.Path(path_type=Path, file_okay=False), help="Folder of backlit photos the network learns to fix [default with --residual: the residual's own backlit photos; required otherwise].")
@click.option("--welllit", type=click.Path(path_type=Path, file_okay=False), help="Folder of well-lit photos in your style (the target).")
@click.option("--paired", is_flag=True, help="The well-lit folder holds fixed versions of the backlit photos, same names.")
@click.option("--residual", "residual_file", type=click.Path(path_type=Path, dir_okay=False), help="RAVE: a residual from `backlitfix residual` instead of computing one; its CLIP model and backlit photos are reused unless named here.")
@click.option("--shift-tokens", type=int, help="RAVE bias correction when the residual is computed here: tokens from each end of the vocabulary (0 = off; the paper's shifted model: 15)." + _dflt("training.shift_tokens"))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Settings for the machine: 'cpu' trains smaller images, fewer steps (20-35 min on 2 cores, within an hour on a slow laptop; see docs/training.md for what it gives up). Flags given here still win.")
@click.option("--from", "from_model", help="Model to start from [default: the embedded default model].")
@click.option("--scratch", is_flag=True, help="Start from random weights (with a 1000-step warm-up unless --warmup-steps).")
@click.option("-o", "--output", "out", required=True, help="Output model file, or a bare name to save in the user model folder.")
@click.option("--steps", type=int, help="Guided network iterations." + _dflt("training.steps"))
@click.option("--warmup-steps", type=int, help="Identity-only iterations first." + _dflt("training.warmup_steps", "; 1000 with --scratch"))
@click.option("--batch-size", type=int, help="Images per iteration." + _dflt("training.batch_size"))
@click.option("--image-size", type=int, help="Training images are resized to this square." + _dflt("training.image_size"))
@click.option("--lr", type=float, help="Learning rate of the network." + _dflt("training.lr"))
@click.option("--clip-model", help="open_clip architecture." + _dflt("training.clip_model", "; a --residual's own"))
@click.option("--clip-pretrained", help="open_clip pretrained tag or weights file (OpenAI's ViT-B-32.pt works)." + _dflt("training.clip_pretrained", "; a --residual's own"))
@click.option("--identity", type=click.Choice(["guidance", "RN101"]), help="Image tower of the identity loss (RN101: the reference's, whose balance the loss weights were tuned for)." + _dflt("training.identity"))
@click.option("--order", type=click.Choice(["paper", "code"]), default="paper", show_default=True, help="CLIP-LIT ranking order: the paper's Eq. 5 or the released code's.")
@click.option("--prompt-init", type=click.Choice(["random", "x"]), default="random", show_default=True, help="CLIP-LIT prompt start: the paper's random or the code's 'X X ... X'.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where to train." + _dflt("device"))
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="Autocast precision (auto: bf16 only where the CPU has it natively, fp16 on CUDA)." + _dflt("precision"))
@click.option("--seed", type=int, help="Seed for data order, augmentation and initialisation." + _dflt("training.seed"))
@click.option("--restart", is_flag=True, help="Ignore an interrupted run's checkpoint and start again.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="A config file layered over the defaults.")
def train(method, backlit, welllit, paired, residual_file, shift_tokens, preset, from_model, scratch, out, steps,
          warmup_steps, batch_size, image_size, lr, clip_model, clip_pretrained, identity, order, prompt_init, device,
          precision, seed, restart, config_file):
    """Train a personal style from your own photos: backlit ones to fix, well-lit ones to aim for.

    Starts from the default model. The cost: minutes on a GPU; on a CPU the defaults (2000 steps of 8
    images at 512 px) take many hours (about 14 h on 2 cores with native bf16, 27 h or more without),
    --preset cpu 20-35 min there. The run prints its own estimate after the first steps. An interrupted run
    resumes where it stopped. At the end it writes the model, a loss curve and a before/after sheet; the
    model loads with `backlitfix run --model`.
    """
    from backlitfix.config import ConfigError, load_config

    if shift_tokens is not None and shift_tokens < 0:
        _fail(f"--shift-tokens must be >= 0, got {shift_tokens}")
    if shift_tokens is not None and method != "rave":
        _fail("--shift-tokens is RAVE's bias correction; it does not apply to --method " + method)
    if shift_tokens is not None and residual_file is not None:
        _fail("--shift-tokens applies when the residual is computed here; the --residual file has its own "
              "(recompute it with `backlitfix residual --shift-tokens N`)")
    if backlit is None and residual_file is None:
        _fail("--backlit is required (a folder of backlit photos), unless a --residual file chose them")
    t = {"clip_model": clip_model, "clip_pretrained": clip_pretrained, "identity": identity, "steps": steps,
         "warmup_steps": warmup_steps, "batch_size": batch_size, "image_size": image_size, "lr": lr, "seed": seed,
         "shift_tokens": shift_tokens}
    if preset:  # under the command line's own values, over the config's
        t.update({k: v for k, v in PRESETS[preset].items() if t.get(k) is None})
    try:
        cfg = load_config(config_file, {**{f"training.{k}": v for k, v in t.items()}, "device": device,
                                        "precision": precision})
    except ConfigError as e:
        _fail(str(e))
    try:
        run_training(cfg, method=method, backlit=backlit, welllit=welllit, paired=paired, residual_file=residual_file,
                     from_model=from_model, scratch=scratch, out=output_path(out), order=order,
                     prompt_init=prompt_init, restart=restart, warmup_given=warmup_steps is not None,
                     clip_given=clip_model is not None or clip_pretrained is not None, preset=preset)
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", 130)


def run_training(cfg, *, method, backlit, welllit, paired, residual_file, from_model, scratch, out: Path, order,
                 prompt_init, restart, warmup_given, clip_given=True, preset=None):
    import torch

    from backlitfix.enhance import pick_device
    from backlitfix.model.checkpoint import (
        CheckpointError,
        ModelInfo,
        load_model,
        save_model,
    )
    from backlitfix.model.network import EnhanceNet
    from backlitfix.model.registry import resolve

    from .clip import ClipUnavailable, load_clip
    from .data import DataError, load_image_set
    from .guidance import LatentPair, PairObjective, PromptPair, RaveObjective
    from .library import list_images
    from .sheets import before_after_sheet, held_out, loss_curve
    from .trainer import Trainer, TrainingError, TrainSettings, duration, init_weights

    tc = cfg.training
    log = lambda m: click.echo(m, err=True)
    res = None
    if residual_file is not None:
        from .residual import ResidualError, load_residual

        if method != "rave":
            _fail(f"--residual is RAVE's guidance; --method {method} learns its own")
        try:
            res = load_residual(residual_file)
        except ResidualError as e:
            _fail(str(e))
    clip_model, clip_pretrained = tc.clip_model, tc.clip_pretrained
    if res is not None and not clip_given:  # the residual's embedding space, not the config's
        clip_model = res.model.split("/", 1)[0]
        clip_pretrained = res.info.get("clip_pretrained") or res.model.split("/", 1)[1]
    try:
        if backlit is None:  # the residual chose: its backlit folder, or the photos it picked from the library
            b_paths, backlit = residual_backlit(res, residual_file)
        else:
            b_paths = _images(backlit, "--backlit", list_images)
        w_paths = _images(welllit, "--welllit", list_images) if welllit else []
        if method != "rave" and not w_paths:
            raise ValueError(f"--method {method} needs --welllit: its prompts learn what well-lit looks like")
        if method == "rave" and not w_paths and residual_file is None:
            raise ValueError("--method rave needs --welllit (or a --residual file from `backlitfix residual`)")
        if paired:
            if not w_paths:
                raise ValueError("--paired needs --welllit")
            check_pairs(b_paths, w_paths)
    except ValueError as e:
        _fail(str(e))

    gen = torch.Generator().manual_seed(tc.seed)
    try:
        if scratch:
            net, info0 = EnhanceNet(padding="zeros"), None
            init_weights(net, gen)
        else:
            entry = resolve(from_model)
            net, info0 = load_model(entry.path)  # keeps the padding it was trained with
            info0.name = entry.name
    except CheckpointError as e:
        _fail(f"{e} (or train from random weights with --scratch)")
    warmup = tc.warmup_steps if (warmup_given or not scratch) else max(tc.warmup_steps, 1000)

    device = pick_device(cfg.device)
    try:
        clip = load_clip(clip_model, clip_pretrained, device)
        id_clip = None
        if tc.identity == "RN101":
            try:
                id_clip = load_clip(*identity_model(clip_model, tc.identity_pretrained), device)
            except ClipUnavailable as e:
                raise ClipUnavailable(f"{e} Or train without RN101: --identity guidance (the guidance tower's "
                                      f"blocks; the loss balance is then uncalibrated, docs/training.md).") from None
        else:
            log("identity loss from the guidance tower's blocks: the loss weights were tuned for RN101 maps and "
                "are not calibrated for these (docs/training.md); --identity RN101 is the reference's balance")
    except ClipUnavailable as e:
        _fail(str(e))

    extra = {"steps": tc.steps, "warmup_steps": warmup, "seed": tc.seed, "batch_size": tc.batch_size,
             "image_size": tc.image_size, "lr": tc.lr, "identity": tc.identity, "paired": paired,
             "from": "scratch" if scratch else (info0.name or info0.source or str(from_model))}
    if preset:
        extra["preset"] = preset
    if method == "rave":
        from .residual import ResidualError, residual_from_folders

        try:
            if res is not None:
                if res.model != clip.name:
                    raise ResidualError(f"{residual_file}: the residual was computed with CLIP {res.model}, but this "
                                        f"run uses CLIP {clip.name}; use the same model (--clip-model/--clip-pretrained"
                                        f") or recompute the residual with `backlitfix residual`")
            else:
                res = residual_from_folders(clip, welllit, backlit, shift_tokens=tc.shift_tokens,
                                            embed_size=tc.embed_size, log=log)
        except (ResidualError, ValueError) as e:
            _fail(str(e))
        objective = RaveObjective(clip, res.r, res.thr, identity_clip=id_clip)
        extra.update(residual_model=res.model, n_welllit=res.n_welllit, n_backlit=res.n_backlit,
                     shift_tokens=res.shift_tokens)
        if residual_file is not None:
            extra.update(residual_file=str(Path(residual_file).resolve()), residual_date=res.date,
                         residual_backlit_source=res.backlit_source)
    else:
        pair = PromptPair(clip, init=prompt_init, generator=gen) if method == "clip-lit" else LatentPair(clip, gen)
        objective = PairObjective(clip, pair, method, identity_clip=id_clip, order=order)
        extra.update(order=order, prompt_init=prompt_init if method == "clip-lit" else "randn",
                     prompt_init_steps=tc.prompt_init_steps, round_steps=tc.round_steps, refine_steps=tc.refine_steps)

    unseen = held_out(b_paths)
    if unseen:  # the sheet shows what the style does to photos it never saw
        log(f"keeping {len(unseen)} of {len(b_paths)} backlit photos out of training for the before/after sheet: "
            + ", ".join(p.name for p in unseen))
        extra["held_out"] = [str(p) for p in unseen]
        b_paths = [p for p in b_paths if p not in set(unseen)]
    log(f"loading {len(b_paths)} backlit" + (f" and {len(w_paths)} well-lit" if w_paths else "") +
        f" photos at {tc.image_size} px")
    try:
        limit = cfg.input.max_pixels  # the pixel limit `run` applies
        images = load_image_set(b_paths, tc.image_size, what=f"backlit folder {backlit}", log=log, max_pixels=limit)
        welllit_set = (load_image_set(w_paths, min(tc.image_size, 256), what=f"well-lit folder {welllit}", log=log,
                                      max_pixels=limit)
                       if method != "rave" else None)
    except DataError as e:
        _fail(str(e))

    settings = TrainSettings(
        steps=tc.steps, warmup_steps=warmup, batch_size=tc.batch_size, image_size=tc.image_size, lr=tc.lr,
        checkpoint_every=tc.checkpoint_every, seed=tc.seed, device=str(device), precision=cfg.precision,
        prompt_init_steps=tc.prompt_init_steps if method != "rave" else 0, round_steps=tc.round_steps,
        refine_steps=tc.refine_steps, views=tc.views, pair_lr=5e-6 if method == "clip-lit" else 5e-4)
    workdir = out.with_name(out.stem + ".training")
    if restart and (workdir / "state.pt").exists():
        (workdir / "state.pt").unlink()
    start_net = None if scratch else copy.deepcopy(net).eval()  # for the sheet: before / start / trained
    trainer = Trainer(net, objective, images, settings, workdir, welllit=welllit_set, log=log)
    log(f"training {method} with {clip.name}: {settings.warmup_steps} warm-up + {settings.steps} steps; "
        f"checkpoints in {workdir}")
    try:
        trainer.run(resume=True)
    except TrainingError as e:
        _fail(str(e), 1)

    seconds = trainer.history.seconds
    estimated = trainer.estimate.total
    if estimated:
        log(f"took {duration(seconds)} (estimated {duration(estimated)} after the first steps)")
        extra["estimated_seconds"] = round(estimated, 1)
    net = trainer.net.eval().cpu()
    info = ModelInfo(method=method, guidance=clip.name,
                     training_data=f"{len(images)} backlit from {backlit}" +
                                   (f", {len(w_paths)} well-lit from {welllit}" if w_paths else "") +
                                   (" (paired)" if paired else ""),
                     date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     padding=net.padding, extra={**extra, "seconds": round(trainer.history.seconds, 1)})
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, out, info)
    curve = out.with_name(out.stem + ".loss.png")
    sheet = out.with_name(out.stem + ".sheet.jpg")
    loss_curve(trainer.history, curve, title=f"{method} · {clip.name} · {out.stem}")
    before_after_sheet(net, images.paths, sheet, start=start_net, unseen=unseen)
    log(f"wrote {out}\n  loss curve: {curve}\n  before/after: {sheet}\n"
        f"  use it: backlitfix run --model {out} PHOTOS")
    click.echo(json.dumps({"model": str(out), "loss_curve": str(curve), "sheet": str(sheet),
                           "seconds": round(trainer.history.seconds, 1)}))


def identity_model(clip_model: str, identity_pretrained: str) -> tuple[str, str]:
    """The RN101 identity tower to load; the tiny test CLIPs pair with the tiny ResNet, random like them."""
    from .clip import RANDOM, TINY, TINY_RN

    if clip_model.startswith(TINY):
        return TINY_RN, RANDOM
    return "RN101", identity_pretrained


def residual_backlit(res, residual_file: Path) -> tuple[list[Path], Path]:
    """The backlit photos a residual file was computed from: its --backlit folder, or the photos it picked
    from the library (paths relative to the library folder). Raises ValueError naming what is missing."""
    from .library import list_images

    info = res.info or {}
    if res.backlit_source == "selected":
        root = Path(info.get("welllit_folder") or "")
        names = info.get("selected") or []
        paths = [root / n for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if not names or missing:
            raise ValueError(f"--residual {residual_file}: the backlit photos it picked from {root} are not all "
                             f"there ({len(missing)} missing, e.g. {missing[0] if missing else 'none recorded'}); "
                             f"name a folder with --backlit")
        if len(paths) < 2:
            raise ValueError(f"--residual {residual_file}: only {len(paths)} backlit photo recorded; name --backlit")
        return paths, root
    folder = info.get("backlit_folder")
    if not folder:
        raise ValueError(f"--residual {residual_file}: it does not record its backlit folder; name it with --backlit")
    return _images(Path(folder), f"--backlit (from {residual_file})", list_images), Path(folder)


def _images(folder: Path, flag: str, list_images) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder}: not a folder")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"{flag} {folder}: no images in this folder")
    if len(paths) < 2:
        raise ValueError(f"{flag} {folder}: only {len(paths)} image; training needs at least 2")
    return paths
