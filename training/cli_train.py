"""`backlitfix train`: fine-tune (or train from scratch) the enhancer on the user's own photos.

Heavy imports live inside the command so `backlitfix --help` stays fast and works without the train extra.
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

import click

METHODS = ("rave", "clip-lit", "clip-lit-latent")


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


@click.command("train")
@click.option("--method", type=click.Choice(METHODS), required=True, help="Guidance: RAVE residual, CLIP-LIT prompts, or CLIP-LIT-Latent vectors.")
@click.option("--backlit", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder of backlit photos the network learns to fix.")
@click.option("--welllit", type=click.Path(path_type=Path, file_okay=False), help="Folder of well-lit photos in your style (the target).")
@click.option("--paired", is_flag=True, help="The well-lit folder holds fixed versions of the backlit photos, same names.")
@click.option("--residual", "residual_file", type=click.Path(path_type=Path, dir_okay=False), help="RAVE: a residual from `backlitfix residual` instead of computing one.")
@click.option("--from", "from_model", help="Model to start from [default: the embedded default model].")
@click.option("--scratch", is_flag=True, help="Start from random weights (with a 1000-step warm-up unless --warmup-steps).")
@click.option("-o", "--output", "out", required=True, help="Output model file, or a bare name to save in the user model folder.")
@click.option("--steps", type=int, help="Guided network iterations.")
@click.option("--warmup-steps", type=int, help="Identity-only iterations first.")
@click.option("--batch-size", type=int, help="Images per iteration.")
@click.option("--image-size", type=int, help="Training images are resized to this square.")
@click.option("--lr", type=float, help="Learning rate of the network.")
@click.option("--clip-model", help="open_clip architecture [default: ViT-B-32].")
@click.option("--clip-pretrained", help="open_clip pretrained tag or weights file [default: openai].")
@click.option("--identity", type=click.Choice(["guidance", "RN101"]), help="Image tower of the identity loss.")
@click.option("--order", type=click.Choice(["paper", "code"]), default="paper", show_default=True, help="CLIP-LIT ranking order: the paper's Eq. 5 or the released code's.")
@click.option("--prompt-init", type=click.Choice(["random", "x"]), default="random", show_default=True, help="CLIP-LIT prompt start: the paper's random or the code's 'X X ... X'.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where to train.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="Autocast precision.")
@click.option("--seed", type=int, help="Seed for data order, augmentation and initialisation.")
@click.option("--restart", is_flag=True, help="Ignore an interrupted run's checkpoint and start again.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), help="A config file layered over the defaults.")
def train(method, backlit, welllit, paired, residual_file, from_model, scratch, out, steps, warmup_steps, batch_size,
          image_size, lr, clip_model, clip_pretrained, identity, order, prompt_init, device, precision, seed, restart,
          config_file):
    """Train a personal style from your own photos: backlit ones to fix, well-lit ones to aim for.

    Starts from the default model, so a style is a short fine-tune. Progress shows the loss and ETA; an
    interrupted run resumes where it stopped. At the end it writes the model, a loss curve and a
    before/after sheet; the model loads with `backlitfix run --model`.
    """
    from backlitfix.config import ConfigError, load_config

    t = {"clip_model": clip_model, "clip_pretrained": clip_pretrained, "identity": identity, "steps": steps,
         "warmup_steps": warmup_steps, "batch_size": batch_size, "image_size": image_size, "lr": lr, "seed": seed}
    try:
        cfg = load_config(config_file, {**{f"training.{k}": v for k, v in t.items()}, "device": device,
                                        "precision": precision})
    except ConfigError as e:
        _fail(str(e))
    try:
        run_training(cfg, method=method, backlit=backlit, welllit=welllit, paired=paired, residual_file=residual_file,
                     from_model=from_model, scratch=scratch, out=output_path(out), order=order,
                     prompt_init=prompt_init, restart=restart, warmup_given=warmup_steps is not None)
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", 130)


def run_training(cfg, *, method, backlit, welllit, paired, residual_file, from_model, scratch, out: Path, order,
                 prompt_init, restart, warmup_given):
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
    from .sheets import before_after_sheet, loss_curve
    from .trainer import Trainer, TrainingError, TrainSettings, init_weights

    tc = cfg.training
    log = lambda m: click.echo(m, err=True)
    try:
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
        clip = load_clip(tc.clip_model, tc.clip_pretrained, device)
        id_clip = load_clip("RN101", tc.identity_pretrained, device) if tc.identity == "RN101" else None
    except ClipUnavailable as e:
        _fail(str(e))

    extra = {"steps": tc.steps, "warmup_steps": warmup, "seed": tc.seed, "batch_size": tc.batch_size,
             "image_size": tc.image_size, "lr": tc.lr, "identity": tc.identity, "paired": paired,
             "from": "scratch" if scratch else (info0.name or info0.source or str(from_model))}
    if method == "rave":
        from .residual import ResidualError, load_residual, residual_from_folders

        try:
            if residual_file is not None:
                res = load_residual(residual_file, expect_model=clip.name)
            else:
                res = residual_from_folders(clip, welllit, backlit, shift_tokens=tc.shift_tokens,
                                            embed_size=tc.embed_size, log=log)
        except (ResidualError, ValueError) as e:
            _fail(str(e))
        objective = RaveObjective(clip, res.r, res.thr, identity_clip=id_clip)
        extra.update(residual_model=res.model, n_welllit=res.n_welllit, n_backlit=res.n_backlit,
                     shift_tokens=res.shift_tokens)
    else:
        pair = PromptPair(clip, init=prompt_init, generator=gen) if method == "clip-lit" else LatentPair(clip, gen)
        objective = PairObjective(clip, pair, method, identity_clip=id_clip, order=order)
        extra.update(order=order, prompt_init=prompt_init if method == "clip-lit" else "randn",
                     prompt_init_steps=tc.prompt_init_steps, round_steps=tc.round_steps, refine_steps=tc.refine_steps)

    log(f"loading {len(b_paths)} backlit" + (f" and {len(w_paths)} well-lit" if w_paths else "") +
        f" photos at {tc.image_size} px")
    try:
        images = load_image_set(b_paths, tc.image_size, what=f"backlit folder {backlit}", log=log)
        welllit_set = (load_image_set(w_paths, min(tc.image_size, 256), what=f"well-lit folder {welllit}", log=log)
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
    trainer = Trainer(net, objective, images, settings, workdir, welllit=welllit_set, log=log)
    log(f"training {method} with {clip.name}: {settings.warmup_steps} warm-up + {settings.steps} steps; "
        f"checkpoints in {workdir}")
    try:
        trainer.run(resume=True)
    except TrainingError as e:
        _fail(str(e), 1)

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
    before_after_sheet(net, images.paths, sheet)
    log(f"wrote {out}\n  loss curve: {curve}\n  before/after: {sheet}\n"
        f"  use it: backlitfix run --model {out} PHOTOS")
    click.echo(json.dumps({"model": str(out), "loss_curve": str(curve), "sheet": str(sheet),
                           "seconds": round(trainer.history.seconds, 1)}))


def _images(folder: Path, flag: str, list_images) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"{flag} {folder}: not a folder")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"{flag} {folder}: no images in this folder")
    if len(paths) < 2:
        raise ValueError(f"{flag} {folder}: only {len(paths)} image; training needs at least 2")
    return paths
