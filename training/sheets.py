"""What a training run leaves besides the model: a loss-curve PNG and a small before/after sheet."""
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


def before_after_sheet(net: torch.nn.Module, paths: list[Path], path: Path, *, count: int = 6,
                       long_side: int = 320, device="cpu") -> None:
    """Rows of input | result for the first ``count`` photos, at thumbnail size, as a JPEG."""
    rows = []
    net = net.eval()
    for p in paths:
        if len(rows) == count:
            break
        try:
            before = _small(p, long_side)
        except Exception as e:  # noqa: BLE001 - a sheet is a courtesy; one bad photo just isn't on it
            print(f"warning: {p}: left off the before/after sheet: {e}", file=sys.stderr)
            continue
        x = torch.from_numpy(before).permute(2, 0, 1)[None].float().div(255).to(device)
        with torch.no_grad():
            after = (x / net(x).clamp_min(1e-3)).clamp(0, 1)
        after = (after[0].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        rows.append((before, after))
    if not rows:
        return
    cell_w = long_side + 8
    heights = [max(b.shape[0], a.shape[0]) + 8 for b, a in rows]  # rows as tall as their photos
    sheet = Image.new("RGB", (2 * cell_w + 8, sum(heights) + 28), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((8 + cell_w // 2 - 20, 8), "before", fill=(220, 220, 220))
    draw.text((8 + cell_w + cell_w // 2 - 16, 8), "after", fill=(220, 220, 220))
    top = 28
    for (before, after), h in zip(rows, heights):
        for c, img in enumerate((before, after)):
            sheet.paste(Image.fromarray(img), (8 + c * cell_w + (long_side - img.shape[1]) // 2, top))
        top += h
    atomic_write(path, lambda f: sheet.save(f, format="JPEG", quality=88))
