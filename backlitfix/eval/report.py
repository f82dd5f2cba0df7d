"""`run --report`: report.html in the output folder, one card per photo with a before/after slider.

The pipeline calls three hooks, so no photo is decoded twice: ``before`` after decoding (``correct``
later overwrites the pixels in place), ``illumination`` as the enhancer's callback for the small map L,
and ``after`` once the output is written. Each hook only downscales, and a hook that fails costs that
photo its thumbnail, never its correction.

Thumbnails are small sRGB JPEGs in a hidden ``.backlitfix-report/`` folder beside report.html (hidden
so photo libraries that import the output folder, and later ``backlitfix run -r``, skip them). Their
names are generated (index + hash), so user file names reach the page only HTML-escaped, and in links
only percent-encoded. A photo with a non-sRGB ICC profile is converted to sRGB, so the thumbnails
look right in any viewer and carry no profile. Everything is inline: the page works offline.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import html
import io
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageCms

from .. import __version__
from ..constants import L_FLOOR
from ..discover import DEFAULT_OUTPUT_DIRNAME, Job
from ..io.atomic import atomic_write_bytes
from ..photo import Photo, PhotoError
from ..strength import LEFT_ALONE

REPORT_NAME = "report.html"
THUMB_DIR = ".backlitfix-report"
THUMB_SIDE = 640  # long side in px: sharp in a two-column grid, ~30-60 KB per JPEG
THUMB_QUALITY = 80
_THUMB_NAME = re.compile(r"^\d{4,}-[0-9a-f]{10}-(before|after|light)\.jpg$")  # only these are ever deleted


@dataclass
class _Entry:
    """What the report knows about one photo, filled in by the hooks from the I/O threads and the model thread."""

    index: int
    stem: str  # generated: the thumbnail names' common part
    size: tuple[int, int] | None = None  # the photo's upright W x H
    thumb: tuple[int, int] | None = None  # the thumbnails' W x H
    files: dict[str, str] = field(default_factory=dict)  # kind -> thumbnail file name
    L: object = None  # the enhancer's small map, waiting for `after`
    gain: tuple[float, float] | None = None  # typical and 99th-percentile brightening at strength 1, in EV
    colour: str = ""  # the profile converted from, e.g. "Adobe RGB (1998) → sRGB"
    problems: list[str] = field(default_factory=list)


def report_folder(jobs: Sequence[Job], output_dir: Path | None) -> Path | None:
    """Where report.html goes: the -o folder, else the (first) default ``backlitfix/`` output folder."""
    if output_dir is not None:
        return Path(output_dir)
    if not jobs:
        return None
    parent = jobs[0].output.parent
    # with -r, outputs sit in sub-folders of <arg>/backlitfix/, a name discover never descends into
    for p in (parent, *parent.parents):
        if p.name.casefold() == DEFAULT_OUTPUT_DIRNAME:
            return p
    return parent


class Report:
    """Collects thumbnails during a batch and writes report.html at the end (see the module doc)."""

    def __init__(self, folder: Path, jobs: Sequence[Job], strength: float = 1.0, thumb_side: int = THUMB_SIDE):
        self.folder = Path(folder)
        self.thumbs = self.folder / THUMB_DIR
        self.strength = strength  # a number, or "auto": each Result then carries its photo's own
        self.side = thumb_side
        self._entries: dict[str, _Entry] = {}
        for i, job in enumerate(jobs, 1):
            key = os.fsencode(os.path.abspath(job.input))
            self._entries[str(job.input)] = _Entry(i, f"{i:04d}-{hashlib.sha1(key).hexdigest()[:10]}")
        self._lock = threading.Lock()
        self._transforms: dict[bytes, object] = {}

    # -- hooks, called by Pipeline ------------------------------------------------------------

    def before(self, photo: Photo) -> None:
        e = self._entries.get(str(photo.path))
        if e is None:
            return
        H, W = photo.pixels.shape[:2]
        e.size = (W, H)
        self._guard(e, "before", lambda: self._write(e, "before", self._thumbnail(photo, e)))

    def illumination(self, photo: Photo) -> Callable | None:
        """The enhancer's ``on_L`` for this photo. It runs on the model's thread, so it only keeps the
        small map; ``after`` turns it into a thumbnail on an I/O thread."""
        e = self._entries.get(str(photo.path))
        if e is None:
            return None

        def keep(L) -> None:
            e.L = L

        return keep

    def after(self, photo: Photo) -> None:
        e = self._entries.get(str(photo.path))
        if e is None:
            return
        self._guard(e, "after", lambda: self._write(e, "after", self._thumbnail(photo, e)))
        if e.L is not None:
            L, e.L = e.L, None
            self._guard(e, "illumination map", lambda: self._write(e, "light", self._light(e, L)))

    # -- the page -------------------------------------------------------------------------------

    def write(self, results: Sequence, errors: Sequence[PhotoError], settings: list[tuple[str, str]],
              seconds: float) -> Path:
        """Write report.html (atomically) and remove thumbnails of earlier runs that it no longer shows."""
        rows = [(r, self._entries.get(r.input)) for r in results]
        page = _page(self.folder, rows, errors, settings, seconds)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PhotoError(self.folder, f"cannot create the report folder: {e.strerror or e}") from None
        dest = self.folder / REPORT_NAME
        atomic_write_bytes(dest, page.encode("utf-8"))
        self._remove_stale()
        return dest

    # -- internals ----------------------------------------------------------------------------

    def _guard(self, e: _Entry, what: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - a thumbnail is never worth a photo
            reason = exc.reason if isinstance(exc, PhotoError) else f"{type(exc).__name__}: {exc}"
            e.problems.append(f"no {what} thumbnail: {reason}")

    def _thumbnail(self, photo: Photo, e: _Entry) -> Image.Image:
        px = photo.pixels
        if px.dtype == np.uint16:
            px = (px >> 8).astype(np.uint8)  # a thumbnail needs 8 bits; the shift is one cheap pass
        im = Image.fromarray(np.ascontiguousarray(px), "RGB")
        im = im.resize(_fit(im.width, im.height, self.side), Image.LANCZOS, reducing_gap=2.0)
        e.thumb = im.size
        return self._to_srgb(im, photo.meta.icc, e)

    def _light(self, e: _Entry, L) -> Image.Image:
        """L as a grey thumbnail of the photo thumbnails' size, and the brightening it means in EV."""
        m = np.asarray(L, dtype=np.float32)
        ev = -np.log2(np.maximum(m, L_FLOOR))  # at strength 1: the page scales it by the photo's strength
        e.gain = (float(np.median(ev)), float(np.percentile(ev, 99)))
        grey = Image.fromarray(m, "F").resize(e.thumb or _fit(m.shape[1], m.shape[0], self.side), Image.BILINEAR)
        return Image.fromarray((np.clip(np.asarray(grey), 0.0, 1.0) * 255 + 0.5).astype(np.uint8), "L")

    def _to_srgb(self, im: Image.Image, icc: bytes | None, e: _Entry) -> Image.Image:
        """Thumbnails are sRGB: a photo in another colour space is converted (perceptual intent)."""
        if not icc:
            return im
        with self._lock:  # one transform per profile, used by one thread at a time
            if icc not in self._transforms:
                self._transforms[icc] = _srgb_transform(icc)
            name, transform = self._transforms[icc]
            if transform is None:
                if name is None:
                    e.problems.append("unreadable colour profile: previews shown unconverted")
                return im
            e.colour = f"{name} → sRGB"
            return ImageCms.applyTransform(im, transform)

    def _write(self, e: _Entry, kind: str, im: Image.Image) -> None:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True, progressive=True)
        self.thumbs.mkdir(parents=True, exist_ok=True)
        name = f"{e.stem}-{kind}.jpg"
        atomic_write_bytes(self.thumbs / name, buf.getvalue())
        e.files[kind] = name

    def discard(self, inputs) -> None:
        """Forget photos that were not done (an interrupted batch): delete the thumbnails already made."""
        for key in inputs:
            e = self._entries.pop(str(key), None)
            for name in (e.files.values() if e else ()):
                try:
                    os.unlink(self.thumbs / name)
                except OSError:
                    pass

    def _remove_stale(self) -> None:
        keep = {n for e in self._entries.values() for n in e.files.values()}
        try:
            names = os.listdir(self.thumbs)
        except OSError:
            return
        for n in names:
            if _THUMB_NAME.match(n) and n not in keep:
                try:
                    os.unlink(self.thumbs / n)
                except OSError:
                    pass


def _srgb_transform(icc: bytes):
    """(profile name, transform to sRGB), with no transform for sRGB itself; (None, None) if unreadable."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = ImageCms.getProfileDescription(src).strip()
        if name.lower().startswith("srgb"):
            return name, None
        return name, ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                             ImageCms.Intent.PERCEPTUAL)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None, None


def _fit(w: int, h: int, side: int) -> tuple[int, int]:
    """(w, h) scaled so the long side is at most ``side``; never enlarged."""
    s = min(1.0, side / max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def settings_of(cfg, info, enhancer) -> list[tuple[str, str]]:
    """The run's settings as (label, value) rows for the page."""
    import torch

    model = info.name if info else str(cfg.model)
    if info and info.method not in ("", "unknown"):
        model += f" ({info.method})"
    if cfg.mode == "fast":
        mode = f"fast: network at {cfg.fast.working_megapixels:g} MP, guided upsampling to full size"
        names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
        prec = names.get(enhancer.dtype, str(enhancer.dtype))
        if cfg.precision == "auto":
            prec += " (auto)"
    else:
        mode = f"exact: full-resolution {cfg.exact.tile} px tiles"
        prec = "fp32 (exact mode)"
    fmt = cfg.output.format
    if cfg.output.format in ("auto", "jpeg"):
        fmt += f", JPEG quality {cfg.output.jpeg_quality}"
    rows = [
        ("Model", model),
        ("Mode", mode),
        ("Strength", "auto: each photo's light decides; a burst shares its first frame's"
         + (f" (auto.bias {cfg.auto.bias:+g})" if cfg.auto.bias else "") if cfg.strength == "auto"
         else f"{cfg.strength:g}"),
        ("Precision", prec),
        ("Device", str(enhancer.device)),
        ("Output", fmt + (f", suffix {cfg.output.suffix!r}" if cfg.output.suffix else "")),
        ("backlitfix", __version__),
        ("Date", _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()),
    ]
    return rows


# -- HTML ---------------------------------------------------------------------------------------


def _text(s) -> str:
    """A file name or message as HTML text. Undecodable bytes in names (surrogate escapes) show as U+FFFD."""
    s = str(s).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(s, quote=True)


def _url(target: Path, base: Path) -> str:
    """A relative URL from the folder ``base`` to ``target``, percent-encoded byte for byte."""
    target, base = os.path.abspath(target), os.path.abspath(base)
    try:
        rel = os.path.relpath(target, base)
    except ValueError:  # another drive (Windows): only an absolute file URL reaches it
        return html.escape(Path(target).as_uri())
    return "/".join(quote(os.fsencode(part), safe="") for part in Path(rel).parts)


def _ev(x: float) -> str:
    return f"{x:+.1f} EV".replace("-", "\u2212")


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _img(e: _Entry, kind: str, alt: str, cls: str = "") -> str:
    w, h = e.thumb or (3, 2)
    src = f"{THUMB_DIR}/{quote(e.files[kind])}"
    return (f'<img class="{cls or kind}" src="{src}" alt="{alt}" width="{w}" height="{h}" '
            f'loading="lazy" decoding="async">')


def _figure(e: _Entry | None, name: str) -> str:
    files = e.files if e else {}
    if "before" in files and "after" in files:
        parts = [_img(e, "before", f"Before: {name}"), _img(e, "after", f"After: {name}")]
        if "light" in files:
            parts.append(_img(e, "light", f"Illumination map: {name}", cls="map"))
            parts.append('<div class="legend" aria-hidden="true"><span>L 0 · brightened most</span><i></i>'
                         '<span>1 · unchanged</span></div>')
        parts += [
            '<span class="tag l">Before</span><span class="tag r">After</span>',
            '<span class="bar" aria-hidden="true"></span>',
            (f'<input class="slider" type="range" min="0" max="100" step="1" value="50" '
             f'aria-label="Before and after, {name}: left of the divider is the original, right the result">'),
        ]
        return f'<figure class="cmp">{"".join(parts)}</figure>'
    if "before" in files:
        return f'<figure class="cmp single">{_img(e, "before", f"Original: {name}")}</figure>'
    return '<div class="empty">No preview</div>'


def _card(r, e: _Entry | None, folder: Path) -> str:
    src = Path(r.input)
    name = _text(src.name)
    idx = e.index if e else 0
    facts, actions = [], []
    if e and e.size:
        w, h = e.size
        facts.append(f"<li><b>{w} × {h}</b> · {w * h / 1e6:.1f} MP</li>")
    if r.seconds:
        facts.append(f"<li><b>{r.seconds:.1f} s</b></li>")
    strength = getattr(r, "strength", None)
    if strength is not None and r.status == "done":
        facts.append(f'<li class="strength" title="Strength applied: 0 = left alone, 1 = the model\'s correction">'
                     f"Strength <b>{strength:.2f}</b>" + (" · left alone" if strength < LEFT_ALONE else "") + "</li>")
    group = getattr(r, "group", None)
    if group and r.status == "done":
        facts.append('<li class="burst" title="Frames of one burst share the strength of its first">'
                     f'Burst <b>{_text(group)}</b></li>')
    if e and e.gain and r.status == "done":
        s = 1.0 if strength is None else strength
        facts.append(f'<li title="Brightening from the illumination map: median, and 99th percentile">'
                     f"<b>{_ev(s * e.gain[0])}</b> typical · <b>{_ev(s * e.gain[1])}</b> max</li>")
    if e and e.colour:
        facts.append(f"<li>{_text(e.colour)} preview</li>")
    notes = list(r.warnings) + (e.problems if e else [])
    if e and "light" in e.files:
        actions.append('<button type="button" class="mapbtn" aria-pressed="false" '
                       'title="Show the illumination map (key M on the slider)">Illumination map</button>')
    if r.status == "done" and r.output:
        actions.append(f'<a href="{_url(Path(r.output), folder)}">Open result</a>')
    actions.append(f'<a href="{_url(src, folder)}">Original</a>')
    title = f'<a href="{_url(Path(r.output), folder)}">{name}</a>' if r.status == "done" and r.output else name
    out = [
        f'<article class="card {r.status}" id="p-{idx:04d}"' + (" data-warn" if notes else "")
        + (" data-alone" if _left_alone(r) else "") + ">",
        _figure(e, name),
        '<div class="info">',
        f'<div class="head"><h3 title="{_text(src)}">{title}</h3>'
        f'<span class="status {r.status}">{r.status}</span></div>',
        f'<div class="where">{_text(src.parent)}</div>',
    ]
    if r.status == "failed":
        out.append(f'<p class="reason">{_text(r.reason)}</p>')
    if facts:
        out.append(f'<ul class="facts">{"".join(facts)}</ul>')
    if notes:
        out.append('<ul class="notes">' + "".join(f"<li>{_text(n)}</li>" for n in notes) + "</ul>")
    out.append(f'<div class="actions">{"".join(actions)}</div></div></article>')
    return "\n".join(out)


def _left_alone(r) -> bool:
    s = getattr(r, "strength", None)
    return r.status == "done" and s is not None and s < LEFT_ALONE


def _tile(n, label: str, tone: str) -> str:
    tone = "zero" if n == 0 and tone in ("bad", "warn") else tone
    return f'<div class="tile {tone}"><b>{n}</b><span>{label}</span></div>'


def _page(folder: Path, rows, errors: Sequence[PhotoError], settings, seconds: float) -> str:
    shown = [(r, e) for r, e in rows if r.status in ("done", "failed")]
    skipped = [r for r, _ in rows if r.status == "skipped"]
    done = [r for r, _ in rows if r.status == "done"]
    failed = [(r, e) for r, e in rows if r.status == "failed"]
    warned = sum(1 for r, e in shown if r.warnings or (e and e.problems))
    processed = len(done) + len(failed)
    per_photo = seconds / processed if processed else 0.0  # throughput: photos overlap in the batch
    n_failed = len(failed) + len(errors)
    when = dict(settings).get("Date", "")

    body = [
        ('<header class="top"><div class="brand"><span class="sun" aria-hidden="true"></span>backlitfix '
         '<small>report</small></div>'
         f'<div class="when">{_text(when)} · {len(rows) + len(errors)} photos</div></header>'),
        '<div class="wrap">',
        '<section class="tiles" aria-label="Summary">',
        _tile(len(done), "corrected", "ok"),
        _tile(n_failed, "failed", "bad"),
        _tile(len(skipped), "skipped", "plain"),
        _tile(warned, "with warnings", "warn"),
        _tile(_duration(seconds), "total time", "plain"),
        _tile(f"{per_photo:.1f} s" if processed else "–", "per photo", "plain"),
        "</section>",
        '<details class="settings" open><summary>Settings</summary><dl>'
        + "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in settings)
        + "</dl></details>",
        (f'<p class="banner" role="alert">Some thumbnails could not be loaded: keep the {THUMB_DIR} folder '
         f"next to {REPORT_NAME} when you move or copy the report.</p>"),
    ]
    if n_failed:
        items = [f'<li><a href="#p-{e.index:04d}">{_text(Path(r.input).name)}</a>: '
                 f'<span class="r">{_text(r.reason)}</span></li>'
                 if e else f'<li>{_text(Path(r.input).name)}: <span class="r">{_text(r.reason)}</span></li>'
                 for r, e in failed]
        items += [f'<li>{_text(err.path)}: <span class="r">{_text(err.reason)}</span></li>' for err in errors]
        body.append(f'<section class="alert" aria-label="Failed photos"><h2>{n_failed} failed</h2>'
                    f'<ul>{"".join(items)}</ul></section>')
    if shown:
        with_maps = any(e and "light" in e.files for _, e in shown)
        body.append(
            '<nav class="toolbar" aria-label="View">'
            f'<button type="button" class="chip" data-show="all" aria-pressed="true">All {len(shown)}</button>'
            f'<button type="button" class="chip" data-show="warn" aria-pressed="false">Warnings {warned}</button>'
            f'<button type="button" class="chip" data-show="failed" aria-pressed="false">Failed {len(failed)}</button>'
            f'<button type="button" class="chip" data-show="alone" aria-pressed="false" '
            f'title="Photos whose light needed no correction (strength below {LEFT_ALONE:g})">'
            f"Left alone {sum(1 for r, _ in shown if _left_alone(r))}</button>"
            + ('<span class="sep"></span>'
               '<button type="button" class="chip" data-view="compare" aria-pressed="true">Before / after</button>'
               '<button type="button" class="chip" data-view="maps" aria-pressed="false">Illumination maps</button>'
               if with_maps else "")
            + '<span class="hint">Drag the divider, or focus it and use <kbd>←</kbd> <kbd>→</kbd>; '
            '<kbd>M</kbd> toggles the map</span>'
            "</nav>"
        )
        body.append('<main class="grid">' + "\n".join(_card(r, e, folder) for r, e in shown) + "</main>")
    if skipped:
        body.append(f'<details class="skipped"><summary>{len(skipped)} skipped: their outputs already exist '
                    "(run with --overwrite to redo them)</summary><ul>"
                    + "".join(f"<li>{_text(r.input)}</li>" for r in skipped) + "</ul></details>")
    body.append(f"<footer>backlitfix {_text(__version__)}. The illumination map L is what the model estimated; "
                "the result is the photo divided by L<sup>strength</sup>. Previews are sRGB thumbnails; "
                "open the result for full resolution.</footer></div>")

    template = resources.files(__package__).joinpath("report_template.html").read_text(encoding="utf-8")
    title = f"backlitfix report · {len(done)} corrected" + (f", {n_failed} failed" if n_failed else "")
    head, tail = template.split("{{body}}")
    return head.replace("{{title}}", html.escape(title)) + "\n".join(body) + tail
