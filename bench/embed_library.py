"""Library embedding throughput: `embed_library` end to end against the bare CLIP forward pass.

    nice python bench/embed_library.py [--photos 200] [--device cpu|cuda] [--workers N]

Makes ``--photos`` distinct 12 MP JPEGs once (real photos from ../shared/data upscaled to 4000 x 3000 with
film-like grain, quality 90: they cost what camera JPEGs cost to decode), kept in bench/out/embed_library/.
Then, in one run: (1) the bare forward throughput of a randomly initialised ViT-B-32 (weights do not change
speed), batch 32, on preprocessed tensors already in memory; (2) `embed_library` on the files, no cache:
read + hash + reduced decode + CLIP preprocessing + the same forward. Half of (1) runs before (2) and half
after, so that the changing load of a shared machine weighs on both alike. Prints both, their ratio (the
target is <= 1.3: decoding is not the bottleneck), the wall times and the peak RSS; writes
bench/out/embed_library.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("BACKLITFIX_SHARED") or REPO.parent / "shared")
OUT = REPO / "bench" / "out"
SIZE = (4000, 3000)  # 12 MP


def make_photos(n: int, folder: Path) -> list[Path]:
    import numpy as np
    from PIL import Image, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((SHARED / "data" / "welllit").glob("*.jpg")) + sorted((SHARED / "data" / "backlit").glob("*.jpg"))
    if not sources:
        sys.exit(f"needs ../shared/data ({SHARED}) for realistic photos")
    paths = []
    for i in range(n):
        dest = folder / f"photo_{i:04d}.jpg"
        paths.append(dest)
        if dest.is_file():
            continue
        src = ImageOps.exif_transpose(Image.open(sources[i % len(sources)])).convert("RGB")
        size = SIZE if src.width >= src.height else SIZE[::-1]
        img = src.resize(size, Image.BICUBIC)
        grain = np.random.default_rng(i).integers(-4, 5, (size[1], size[0], 1), dtype=np.int16)  # distinct files
        arr = (np.asarray(img, dtype=np.int16) + grain).clip(0, 255).astype(np.uint8)
        tmp = dest.with_suffix(".tmp")
        Image.fromarray(arr).save(tmp, format="JPEG", quality=90)
        os.replace(tmp, dest)
        if (i + 1) % 20 == 0:
            print(f"  made {i + 1}/{n} test photos", file=sys.stderr)
    return paths


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="decode threads [default: embed_library's]")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import torch

    from backlitfix.training.clip import load_random
    from backlitfix.training.library import embed_library

    paths = make_photos(args.photos, OUT / "embed_library" / "photos")
    mb = sum(p.stat().st_size for p in paths) / 1e6
    clip = load_random("ViT-B-32", device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    # The bare forward runs half before and half after embed_library, so the load of this shared machine
    # drifts over both alike: (1) the bare forward on as many images as there are photos, tensors ready in
    # memory; (2) embed_library end to end over all the photos in one call, no cache.
    x = torch.randn(args.batch_size, 3, clip.input_size, clip.input_size, device=args.device)

    def bare_pass(n_images: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            n = 0
            while n < n_images:
                clip.embed_prepared(x[: min(args.batch_size, n_images - n)])
                n += args.batch_size
        sync()
        return time.perf_counter() - t0

    bare_pass(args.batch_size)  # warm-up
    half = len(paths) // 2
    bare_s = bare_pass(half)
    t0 = time.perf_counter()
    lib = embed_library(clip, paths, cache=None, batch_size=args.batch_size, workers=args.workers)
    sync()
    e2e_s = time.perf_counter() - t0
    assert not lib.skipped and lib.n_embedded == len(paths), lib.skipped[:3]
    bare_s += bare_pass(len(paths) - half)
    done = len(paths)
    bare, e2e = done / bare_s, lib.n_embedded / e2e_s

    # the decoding side alone, one thread: read + hash + draft decode + CLIP crop
    from backlitfix.training.library import clip_crop, load_reduced

    c0 = time.process_time()
    for p in paths[:20]:
        data = p.read_bytes()
        hashlib.sha256(data).hexdigest()
        clip_crop(load_reduced(p, data, 448, clip.input_size), clip.input_size)
    decode_cpu_ms = (time.process_time() - c0) / min(20, len(paths)) * 1000

    result = {
        "device": args.device, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "photos": len(paths), "megabytes": round(mb, 1), "photo_size": f"{SIZE[0]}x{SIZE[1]}",
        "bare_forward_img_per_s": round(bare, 2), "bare_forward_s": round(bare_s, 2),
        "embed_library_img_per_s": round(e2e, 2), "embed_library_s": round(e2e_s, 2),
        "decode_cpu_ms_per_photo": round(decode_cpu_ms, 1),
        "ratio_bare_over_e2e": round(bare / e2e, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average": os.getloadavg(),
    }
    print(f"bare CLIP forward (ViT-B-32, batch {args.batch_size}, {args.device}): {bare:.1f} img/s "
          f"({done} images in {bare_s:.1f} s, half before and half after the next line)")
    print(f"embed_library end to end ({len(paths)} x 12 MP JPEG, {mb:.0f} MB, no cache): {e2e:.1f} img/s "
          f"({e2e_s:.1f} s)")
    print(f"decoding alone (read, hash, draft decode, crop; one thread): {decode_cpu_ms:.0f} ms CPU per photo")
    print(f"ratio bare / end-to-end: {bare / e2e:.2f} (target <= 1.3); peak RSS {peak_rss_mb():.0f} MB; "
          f"load average {os.getloadavg()[0]:.1f}")
    (OUT / "embed_library.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
