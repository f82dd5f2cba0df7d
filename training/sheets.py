"""What a training run leaves besides the model: a loss-curve PNG and a small before/after sheet (the input,
the starting model and the trained one, on photos kept out of training first)."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from backlitfix.io.atomic import atomic_write, atomic_write_bytes


def loss_curve(history, path: Path, title: str = "") -> None:
    """One line per phase, log-scaled when the losses span more than two decades."""
    import matplotlib

    matplotlib.use("Agg")  # no display; never pick an interactive backend from a CLI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    phases = list(dict.fromkeys(history.phases))
    for phase in phases:  # x: position in the run, so phases follow one another as they happened
        pts = [(i + 1, v) for i, (p, v) in enumerate(zip(history.phases, history.losses)) if p == phase]
        if not pts:
            continue
        s, v = np.array(pts).T
        ax.plot(s, v, lw=0.6, alpha=0.35)
        k = max(1, min(len(v) // 20, 50))  # a moving average shows the trend under the per-batch noise
        if len(v) >= k > 1:
            ax.plot(s[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid"), lw=1.6,
                    color=ax.lines[-1].get_color(), label=f"{phase} ({k}-step mean)")
        else:
            ax.lines[-1].set_label(phase)
    vals = [v for v in history.losses if v > 0]
    if vals and max(vals) / min(vals) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("iteration (network and prompt phases in the order they ran)")
    ax.set_ylabel("loss")
    ax.set_title(title or "training loss")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _small(path: Path, long_side: int) -> np.ndarray:
    from .library import load_reduced

    im = load_reduced(path, path.read_bytes(), embed_size=long_side, min_short=0)
    im.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return np.array(im)


def held_out(paths: list[Path], *, per: int = 8, most: int = 3) -> list[Path]:
    """Photos kept out of training for the sheet: one in ``per`` (at most ``most``), spread over the list, so
    the sheet shows what the style does to photos it never saw. None below ``per`` photos: all are needed."""
    k = min(most, len(paths) // per)
    if k == 0:
        return []
    step = len(paths) / k
    return [paths[int(step * i + step / 2)] for i in range(k)]


def _enhance(net: torch.nn.Module, before: np.ndarray, device) -> np.ndarray:
    x = torch.from_numpy(before).permute(2, 0, 1)[None].float().div(255).to(device)
    with torch.no_grad():
        after = (x / net(x).clamp_min(1e-3)).clamp(0, 1)
    return (after[0].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def before_after_sheet(net: torch.nn.Module, paths: list[Path], path: Path, *, start: torch.nn.Module | None = None,
                       unseen: list[Path] = (), count: int = 6, long_side: int = 320, device="cpu") -> None:
    """Rows of input | starting model | trained model at thumbnail size, as a JPEG. Photos kept out of
    training (``unseen``) come first and are marked so; training photos fill the remaining rows. Without
    ``start`` (training from scratch) the middle column is left out."""
    rows = []
    nets = [n.eval() for n in (start, net) if n is not None]
    unseen_set = set(unseen)
    for p in list(unseen) + [q for q in paths if q not in unseen_set]:
        if len(rows) == count:
            break
        try:
            before = _small(p, long_side)
        except Exception as e:  # noqa: BLE001 - a sheet is a courtesy; one bad photo just isn't on it
            print(f"warning: {p}: left off the before/after sheet: {e}", file=sys.stderr)
            continue
        rows.append(([before] + [_enhance(n, before, device) for n in nets], p in unseen_set))
    if not rows:
        return
    titles = ["before"] + (["starting model"] if start is not None else []) + ["trained"]
    cols = len(titles)
    cell_w = long_side + 8
    heights = [max(img.shape[0] for img in imgs) + 22 for imgs, _ in rows]  # rows as tall as their photos
    sheet = Image.new("RGB", (cols * cell_w + 8, sum(heights) + 28), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(titles):
        draw.text((8 + c * cell_w + cell_w // 2 - 3 * len(title), 8), title, fill=(220, 220, 220))
    top = 28
    for (imgs, unseen_photo), h in zip(rows, heights):
        label = "not trained on" if unseen_photo else "a training photo"
        draw.text((8, top), label, fill=(140, 200, 140) if unseen_photo else (160, 160, 160))
        for c, img in enumerate(imgs):
            sheet.paste(Image.fromarray(img), (8 + c * cell_w + (long_side - img.shape[1]) // 2, top + 14))
        top += h
    atomic_write(path, lambda f: sheet.save(f, format="JPEG", quality=88))
