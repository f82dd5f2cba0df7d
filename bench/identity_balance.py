"""Identity vs guidance balance with the two identity towers: ViT-B-32 guidance blocks against RN101 (issue 17).

The reference tuned 22.5 (identity) against 1920 (RAVE) and 320 (CLIP-LIT) for five RN101 feature maps; our
default takes five blocks of the ViT-B-32 guidance tower instead. This measures, on the same photos and the
same enhanced outputs, the size of each term and the norm of its gradient (with respect to the network's
weights, i.e. what the optimiser sees) for both towers, so the ViT path can be rescaled to the RN101 balance.

CLIP weights are random (open_clip ``pretrained=None``) at the real sizes: no weights can be downloaded here.
The enhanced images come from a real enhancement network (``../shared/models/official/rave_unpaired.pth``
when present, else the embedded default model) applied to real backlit photos, so the identity term sees a
realistic change. Guidance directions are built in the same random embedding space: r = n(v_bright − v_in)
from a brightened copy of the batch, and the CLIP-LIT pair (backlit, well-lit) = (inputs, brightened).

    python bench/identity_balance.py [--batch 4] [--size 256] [--seeds 2]
    python bench/identity_balance.py --weights openai     # real weights, where they are cached: the calibration

Random weights turn out not to be enough (docs/training.md): a random RN101's BatchNorm statistics are the
identity, so its deep maps are orders of magnitude smaller than a trained one's. ``--weights`` (a tag or
``VIT_FILE,RN101_FILE``) runs the same measurement with real CLIPs; its ratio is the one to calibrate with.

Writes bench/out/identity_balance.json and prints a table; figures go to docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backlitfix.training.clip import load_random
from backlitfix.training.guidance import CLIP_WEIGHT, RAVE_WEIGHT, backlit_score
from backlitfix.training.identity import GUIDED_ALPHA, IdentityFeatures, Tower, identity_loss

OUT = Path(__file__).resolve().parent / "out"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return " ".join(sorted(set(re.findall(r"\bavx[^ \n]*", text))))


def photos(n: int, size: int) -> torch.Tensor:
    from PIL import Image

    files = sorted((SHARED / "data" / "backlit").glob("*.jpg"))[:n]
    if len(files) < n:
        torch.manual_seed(0)  # no photos: smooth random images, darker at the bottom
        return F.interpolate(torch.rand(n, 3, 8, 8), size=(size, size), mode="bilinear") * 0.6
    ims = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            ims.append(torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(ims)


def network():
    from backlitfix.model.checkpoint import load_model

    path = SHARED / "models" / "official" / "rave_unpaired.pth"
    if not path.exists():
        from backlitfix.model.registry import resolve

        path = resolve(None).path
    net, _ = load_model(path)
    return net.train(), path.name


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def measure(vit, rn, net, x) -> dict:
    params = [p for p in net.parameters() if p.requires_grad]
    L = net(x)
    y = (x / (L + 1e-9)).clamp(0, 1)
    with torch.no_grad():
        bright = x.clamp_min(1e-4).pow(0.5)
        e_in = vit.embed_images(x)
        e_br = vit.embed_images(bright)
        v_wl = F.normalize(e_br.mean(0), dim=0)
        r = F.normalize(v_wl - F.normalize(e_in.mean(0), dim=0), dim=0)
        thr = float(v_wl @ r)
        pair = torch.stack([e_in.mean(0), e_br.mean(0)])
    vit_tower = Tower(vit)
    emb, maps_vit = vit_tower(vit.prepare(y))
    with torch.no_grad():
        maps_vit_in = vit_tower(vit.prepare(x), embed=False)[1]
    rn_feat = IdentityFeatures(rn)
    maps_rn = rn_feat(y)
    with torch.no_grad():
        maps_rn_in = rn_feat(x)
    n = len(x)
    # per-image identity (the batch mean of the reference's per-image sum), guided alpha
    id_vit = identity_loss(maps_vit, maps_vit_in, GUIDED_ALPHA) / n
    id_rn = identity_loss(maps_rn, maps_rn_in, GUIDED_ALPHA) / n
    rave = ((emb.float() @ r) - thr).pow(2).mean()
    cliplit = backlit_score(emb, pair).mean()
    terms = {"identity_vit": id_vit, "identity_rn101": id_rn, "rave": rave, "clip_lit": cliplit}
    out = {}
    for name, t in terms.items():
        out[name] = {"value": float(t.detach()), "grad_norm": grad_norm(t, params)}
    out["layers_vit"] = [float((a - b).pow(2).mean()) for a, b in zip(maps_vit, maps_vit_in)]
    out["layers_rn101"] = [float((a - b).pow(2).mean()) for a, b in zip(maps_rn, maps_rn_in)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=2, help="random CLIP initialisations to average over")
    ap.add_argument("--weights", help="real CLIP weights instead of random: a pretrained tag (openai) or "
                                      "VIT_FILE,RN101_FILE")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    t0 = time.perf_counter()
    x = photos(args.batch, args.size)
    net, net_name = network()
    runs = []
    for seed in range(1 if args.weights else args.seeds):
        if args.weights:
            from backlitfix.training.clip import load_clip

            vw, rw = (args.weights.split(",") + [args.weights])[:2] if "," in args.weights else (args.weights,) * 2
            vit, rn = load_clip("ViT-B-32", vw), load_clip("RN101", rw)
        else:
            vit = load_random("ViT-B-32", seed=seed)
            rn = load_random("RN101", seed=seed)
        runs.append(measure(vit, rn, net, x))
        del vit, rn
    avg = lambda k, f: sum(r[k][f] for r in runs) / len(runs)
    ref_batch = 8  # the reference's identity weight multiplies a sum over its batch of 8
    id_w = 22.5 * ref_batch
    scale_value = avg("identity_rn101", "value") / avg("identity_vit", "value")
    scale_grad = avg("identity_rn101", "grad_norm") / avg("identity_vit", "grad_norm")
    summary = {
        "cpu_flags": cpu_flags(), "torch": torch.__version__, "batch": args.batch, "size": args.size,
        "seeds": args.seeds, "weights": args.weights or "random", "network": net_name,
        "seconds": round(time.perf_counter() - t0, 1),
        "per_seed": runs,
        "ratios": {
            # weighted identity : weighted guidance, value and gradient norm, as the reference balances them
            f"{tower}_vs_{g}_{f}": (id_w * avg(f"identity_{tower}", f)) / (w * avg(g, f))
            for tower in ("vit", "rn101") for g, w in (("rave", RAVE_WEIGHT), ("clip_lit", CLIP_WEIGHT))
            for f in ("value", "grad_norm")
        },
        "vit_scale_by_value": scale_value,
        "vit_scale_by_grad": scale_grad,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "identity_balance.json").write_text(json.dumps(summary, indent=2))
    print(f"CPU flags: {summary['cpu_flags']}\ntorch {torch.__version__}; batch {args.batch} of {args.size} px; "
          f"{args.seeds} random CLIP seeds; network {net_name}; {summary['seconds']} s")
    print(f"{'term':16s} {'value':>12s} {'grad norm':>12s}")
    for k in ("identity_vit", "identity_rn101", "rave", "clip_lit"):
        print(f"{k:16s} {avg(k, 'value'):12.4g} {avg(k, 'grad_norm'):12.4g}")
    for k, v in summary["ratios"].items():
        print(f"{k:32s} {v:10.4g}")
    print(f"RN101 / ViT identity: value x{scale_value:.4g}, gradient x{scale_grad:.4g}")


if __name__ == "__main__":
    main()
