"""Training speed: our RAVE step against a faithful re-creation of the reference's per-image structure (§6.1).

Both run RAVE guided iterations on the same batches (batch 8 of 512² images by default) with randomly
initialised CLIPs of the real sizes (ViT-B-32 guidance, RN101 identity): weights do not change speed. The
reference structure: fp32 network; CLIP loss one image at a time through ViT-B-32; identity loss one image at
a time through RN101, for the output and again for the input (16 RN101 forwards per step), attention pool
included. Ours: the trainer's own step (batched, input features under no_grad, bf16 autocast where the CPU
has it), once with the RN101 identity (like for like) and once with the default guidance-tower identity.
The variants are interleaved (A B C A B C ...) so machine noise hits them alike.

    python bench/train_speed.py [--batch 8] [--size 512] [--iters 3] [--device cpu|cuda]
    python bench/train_speed.py --estimate cpu     # the trainer's own estimate for `train --preset cpu`

``--estimate PRESET`` runs the real training loop (RAVE, RN101 identity: the defaults) with that preset's
settings until it prints its estimate (after 1 + 3 network steps), and stops there.
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
from backlitfix.training.clip import load_random
from backlitfix.training.data import Augment, ImageSet
from backlitfix.training.guidance import RaveObjective
from backlitfix.training.trainer import Trainer, TrainSettings

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
    ap.add_argument("--estimate", metavar="PRESET", help="print the trainer's estimate for `train --preset PRESET` "
                                                          "(or 'default') and stop")
    ap.add_argument("--compare-preset", metavar="PRESET", help="time a step of the default settings against a "
                                                                "preset's, interleaved, RN101 identity")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.estimate:
        return estimate(args.estimate, dev, args.precision)
    if args.compare_preset:
        return compare_preset(args.compare_preset, dev, args.precision, args.iters)
    torch.manual_seed(0)
    vit = load_random("ViT-B-32", dev)
    rn = load_random("RN101", dev)
    r = torch.randn(vit.dim)
    n = max(args.batch * 2, 16)
    pixels = (torch.rand(n, 3, args.size, args.size) * 255).to(torch.uint8)
    images = ImageSet(pixels, [Path(f"{i}") for i in range(n)], [])
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
    for f in variants.values():  # warm-up: allocations, autocast caches, thread pools
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


def compare_preset(preset: str, dev: torch.device, precision: str, iters: int) -> None:
    """Seconds per network step at the default settings and at ``preset``'s, interleaved so that machine load
    hits both alike: their ratio carries a quiet machine's default timing over to the preset."""
    from backlitfix.config import load_config
    from backlitfix.training.cli_train import PRESETS

    torch.manual_seed(0)
    vit, rn = load_random("ViT-B-32", dev), load_random("RN101", dev)
    steps = {}
    for name, over in (("default", {}), (preset, PRESETS[preset])):
        tc = load_config(None, {f"training.{k}": v for k, v in over.items()}).training
        n = max(2 * tc.batch_size, 8)
        images = ImageSet((torch.rand(n, 3, tc.image_size, tc.image_size) * 255).to(torch.uint8),
                          [Path(f"{i}") for i in range(n)], [])
        s = TrainSettings(steps=tc.steps, batch_size=tc.batch_size, image_size=tc.image_size, device=str(dev),
                          precision=precision, checkpoint_every=10 ** 9)
        tr = Trainer(EnhanceNet(padding="zeros"), RaveObjective(vit, torch.randn(vit.dim), 0.1, identity_clip=rn),
                     images, s, OUT / "train_speed_tmp", progress=False)
        steps[name] = (tc, tr)
    times = {k: [] for k in steps}
    for _, tr in steps.values():
        tr._net_step("enhance")  # warm-up
    for _ in range(iters):
        for k, (_, tr) in steps.items():
            t = time.perf_counter()
            tr._net_step("enhance")
            times[k].append(time.perf_counter() - t)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"interleaved, {iters} timed steps each, load average {load}, {torch.get_num_threads()} threads")
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for k, (tc, _) in steps.items():
        print(f"{k:8s} batch {tc.batch_size} x {tc.image_size} px, {tc.steps} steps: {med[k]:.1f} s/step (median of "
              f"{[round(t, 1) for t in times[k]]}) -> {tc.steps * med[k] / 3600:.1f} h at this load")
    print(f"a {preset} step costs {med[preset] / med['default']:.3f} of a default step")


class _Told(Exception):
    pass


def estimate(preset: str, dev: torch.device, precision: str) -> None:
    """Run the trainer with a preset's settings until it states its estimate; print it with the CPU flags."""
    import re

    from backlitfix.config import load_config
    from backlitfix.training.cli_train import PRESETS

    tc = load_config(None, {f"training.{k}": v for k, v in PRESETS.get(preset, {}).items()}).training
    torch.manual_seed(0)
    vit, rn = load_random("ViT-B-32", dev), load_random("RN101", dev)
    n = 16
    images = ImageSet((torch.rand(n, 3, tc.image_size, tc.image_size) * 255).to(torch.uint8),
                      [Path(f"{i}") for i in range(n)], [])
    settings = TrainSettings(steps=tc.steps, batch_size=tc.batch_size, image_size=tc.image_size, device=str(dev),
                             precision=precision, checkpoint_every=10 ** 9)
    obj = RaveObjective(vit, torch.randn(vit.dim), 0.1, identity_clip=rn)
    told = []

    def log(m):
        told.append(m)
        if m.startswith("estimate:"):
            raise _Told

    tr = Trainer(EnhanceNet(padding="zeros"), obj, images, settings, OUT / "train_speed_tmp", progress=False,
                 log=log)
    cpu, step = [], tr._net_step

    def timed(phase):  # process CPU time per step: what a quiet machine would need, whatever the load now
        c = time.process_time()
        out = step(phase)
        cpu.append(time.process_time() - c)
        return out

    tr._net_step = timed
    try:
        tr.run(resume=False)
    except _Told:
        pass
    load = Path("/proc/loadavg").read_text().split()[0]
    per_cpu = sum(cpu[1:]) / max(len(cpu) - 1, 1)
    flags = " ".join(sorted(set(re.findall(r"\bavx[^ \n]*", Path("/proc/cpuinfo").read_text()))))
    print(f"preset {preset}: {tc.steps} steps, batch {tc.batch_size} x {tc.image_size} px, identity RN101, "
          f"precision {precision} -> {tr.amp or torch.float32}, layout {tr.layout}, {torch.get_num_threads()} threads")
    print(told[-1])
    print(f"load average {load}; process CPU time {per_cpu:.2f} s per network step (steps 2-{len(cpu)}): on an idle "
          f"machine with {torch.get_num_threads()} cores about {per_cpu / torch.get_num_threads():.1f} s per step "
          f"if both cores were fully used, i.e. {tc.steps * per_cpu / torch.get_num_threads() / 60:.0f} min")
    print(f"CPU flags: {flags}")


if __name__ == "__main__":
    main()
