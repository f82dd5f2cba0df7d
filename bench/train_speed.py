"""Training speed: our RAVE step against a faithful re-creation of the reference's per-image structure (§6.1).

Both run RAVE guided iterations on the same batches (batch 8 of 512² images by default) with randomly
initialised CLIPs of the real sizes (ViT-B-32 guidance, RN101 identity): weights do not change speed. The
reference structure: fp32 network; CLIP loss one image at a time through ViT-B-32; identity loss one image at
a time through RN101, for the output and again for the input (16 RN101 forwards per step), attention pool
included. Ours: the trainer's own step (batched, input features under no_grad, bf16 autocast where the CPU
has it), once with the RN101 identity (like for like) and once with the default guidance-tower identity.
The variants are interleaved (A B C A B C ...) so machine noise hits them alike.

    python bench/train_speed.py [--batch 8] [--size 512] [--iters 3] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backlitfix.model.network import EnhanceNet
from training.clip import load_random
from training.data import Augment, ImageSet
from training.guidance import RaveObjective
from training.trainer import Trainer, TrainSettings

OUT = Path(__file__).resolve().parent / "out"


class ReferenceStep:
    """One RAVE iteration the way the reference code structures it (fp32, CLIP per image in a loop)."""

    def __init__(self, vit, rn, r, thr, device):
        self.vit, self.rn, self.r, self.thr = vit, rn, F.normalize(r, dim=0).to(device), thr
        self.net = EnhanceNet(padding="zeros").to(device).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=2e-5, weight_decay=1e-3)

    def _rn_maps(self, x):
        v = self.rn.model.visual
        maps = []
        for blk in (v.stem, v.layer1, v.layer2, v.layer3, v.layer4):
            x = blk(x)
            maps.append(x)
        v.attnpool(x)  # computed and unused, as in the reference
        return maps

    def __call__(self, x):
        L = self.net(x)
        y = (x / (L + 1e-9)).clamp(0, 1)
        res = 0
        for i in range(len(y)):  # clip_score.get_clip_score_from_feature: one image per forward
            e = self.vit.model.encode_image(self.vit.prepare(y[i:i + 1]), normalize=True)
            res = res + ((e @ self.r) - self.thr).pow(2).sum()
        res = res / len(y)
        lid = 0
        for i in range(len(y)):  # get_clip_score_MSE: output and input through RN101, one image each
            mo = self._rn_maps(self.rn.prepare(y[i:i + 1]))
            mi = self._rn_maps(self.rn.prepare(x[i:i + 1]))
            for a, fo, fi in zip((1, 1, 1, 1, 0.5), mo, mi):
                lid = lid + a * F.mse_loss(fo, fi)
        loss = 1920 * res + 22.5 * lid
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3, help="timed iterations per variant (after one warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    vit = load_random("ViT-B-32", dev)
    rn = load_random("RN101", dev)
    r = torch.randn(vit.dim)
    n = max(args.batch * 2, 16)
    images = ImageSet((torch.rand(n, 3, args.size, args.size) * 255).to(torch.uint8), [Path(f"{i}") for i in range(n)], [])
    settings = TrainSettings(steps=10 ** 6, batch_size=args.batch, image_size=args.size, device=str(dev),
                             precision=args.precision, checkpoint_every=10 ** 9)

    def ours(identity):
        obj = RaveObjective(vit, r, 0.1, identity_clip=rn if identity == "RN101" else None)
        tr = Trainer(EnhanceNet(padding="zeros"), obj, images, settings, OUT / "train_speed_tmp", progress=False)
        return lambda: tr._net_step("enhance")[0]

    ref = ReferenceStep(vit, rn, r, 0.1, dev)
    gen = torch.Generator().manual_seed(0)

    def reference():
        idx = torch.randint(n, (args.batch,), generator=gen)
        x = images.batch(idx, dev)
        return ref(Augment.apply(x, Augment().draw(len(idx), gen)))

    variants = {"reference structure (RN101 identity, fp32, per image)": reference,
                "ours, RN101 identity": ours("RN101"),
                "ours, default (guidance-tower identity)": ours("guidance")}
    times = {k: [] for k in variants}
    for k, f in variants.items():  # warm-up: allocations, autocast caches, thread pools
        f()
    for _ in range(args.iters):
        for k, f in variants.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            f()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    base = next(iter(times))
    ref_s = sorted(times[base])[len(times[base]) // 2]
    print(f"RAVE training step, batch {args.batch} × {args.size}², device {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'variant':<48} {'s/it (median)':>14} {'it/s':>8} {'speed-up':>9}")
    rows = {}
    for k, ts in times.items():
        med = sorted(ts)[len(ts) // 2]
        rows[k] = {"seconds_per_it": med, "it_per_s": 1 / med, "speedup": ref_s / med, "all": ts}
        print(f"{k:<48} {med:>14.2f} {1 / med:>8.3f} {ref_s / med:>8.2f}x")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    OUT.mkdir(exist_ok=True)
    (OUT / "train_speed.json").write_text(json.dumps({"args": vars(args), "rows": rows, "peak_rss_mb": rss}, indent=2))


if __name__ == "__main__":
    main()
