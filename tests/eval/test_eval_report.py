"""`backlitfix run --report`: a real run on real photos with hostile names, checked in real headless Chromium."""
from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from backlitfix.config import load_config
from backlitfix.discover import Job
from backlitfix.enhance import Enhancer, to_float, working_size
from backlitfix.eval.report import THUMB_DIR, THUMB_SIDE, report_folder
from backlitfix.model.checkpoint import load_model
from backlitfix.model.network import EnhanceNet
from conftest import cli, model, shared_path

HOSTILE = ["$(touch PWNED).jpg", 'a "quote" #1 ?.jpg', "<script>alert(1)<\\script> é%41&amp;.jpg"]
THUMB_KB = 120  # a 640 px JPEG at quality 80 is 20-90 KB


def downsized(src: Path, dest: Path, side: int = 1024) -> None:
    with Image.open(src) as im:
        im.thumbnail((side, side), Image.LANCZOS)
        im.save(dest, quality=92)


@pytest.fixture
def shoot(tmp_path, monkeypatch) -> Path:
    """Real backlit photos (two larger than fast mode's working size), an Adobe RGB photo, an EXIF-rotated
    one, hostile names and a corrupt file. The current folder is tmp_path, where PWNED would appear."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "shoot"
    d.mkdir()
    backlit = lambda n: shared_path("data", "backlit", n)
    downsized(backlit("110_51093502029_o.jpg"), d / "beach day.jpg")
    downsized(backlit("akai-impl_img1.jpg"), d / HOSTILE[1])
    shutil.copy(backlit("ovd0312_4.jpg"), d / HOSTILE[0])
    shutil.copy(backlit("ovd0312_21.jpg"), d / HOSTILE[2])
    shutil.copy(shared_path("data", "exif", "chameleon_lime.jpg"), d / "adobe rgb.jpg")  # Adobe RGB (1998) ICC
    shutil.copy(shared_path("data", "exif", "landscape_6.jpg"), d / "rotated.jpg")  # stored portrait, EXIF 6
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 20)
    return d


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "needs chromium (Debian's chromium package; .ci/run installs it)"
        if os.environ.get("BACKLITFIX_REQUIRE_SHARED") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def browse(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on ``page`` (with #selftest: every image loads eagerly); returns stdout."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, page.as_uri() + "#selftest"]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def image_state(page: Path, profile: Path) -> dict[str, int]:
    """The counts the page's own script writes on <body> after loading: images, broken, pending."""
    dom = browse(page, profile, "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return {k: int(v) for k, v in re.findall(r'data-(images|broken|pending)="(\d+)"', body)}


def thumb_for(page_html: str, folder: Path, alt: str) -> Image.Image:
    src = re.search(rf'<img class="\w+" src="([^"]+)" alt="{re.escape(html.escape(alt))}"', page_html).group(1)
    return Image.open(folder / os.fsdecode(unquote_to_bytes(src)))


@pytest.mark.slow  # a real chromium
def test_run_report_end_to_end_in_chromium(shoot, tmp_path):
    r = cli("run", "--model", model(), "--report", "--json", "--strength", "1", str(shoot))  # a map for every photo
    assert r.exit_code == 1, r.output  # the corrupt file fails; the batch goes on
    summary = json.loads(r.stdout)
    assert summary["done"] == 6 and summary["failed"] == 1
    out = shoot / "backlitfix"
    page = Path(summary["report"])
    assert page == out / "report.html" and page.is_file()
    text = page.read_text(encoding="utf-8")
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()

    # Offline: no external references of any kind.
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", text.replace("http-equiv", ""))
    assert "@import" not in text and "url(" not in text

    # Hostile names only as escaped text; every link and image is relative and points at a real file.
    for name in HOSTILE:
        assert html.escape(name) in text
    assert "<script>alert(1)" not in text and 'a "quote"' not in text
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    files = [u for u in refs if not u.startswith("#")]
    assert len(files) >= 6 * 3 + 6 * 3  # thumbnails, plus the result and original links
    for u in files:
        parts = urlsplit(html.unescape(u))
        assert not parts.scheme and not parts.netloc and not parts.query and not parts.fragment, u
        assert (out / os.fsdecode(unquote_to_bytes(parts.path))).is_file(), u
    assert sum(1 for u in files if unquote_to_bytes(u).endswith(HOSTILE[1].encode())) >= 2  # result + original

    # The failed photo is listed with its reason.
    assert re.search(r"corrupt\.jpg</a>: <span class=\"r\">[^<]*(damaged|cannot|not)", text), text[:3000]

    # Thumbnails: small JPEGs with generated names, before/after/map per corrected photo.
    thumbs = sorted((out / THUMB_DIR).iterdir())
    assert len(thumbs) == 6 * 3
    for t in thumbs:
        assert re.fullmatch(r"\d{4}-[0-9a-f]{10}-(before|after|light)\.jpg", t.name)
        assert t.stat().st_size < THUMB_KB * 1024
        with Image.open(t) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_SIDE
    before, after = thumb_for(text, out, "Before: beach day.jpg"), thumb_for(text, out, "After: beach day.jpg")
    light = thumb_for(text, out, "Illumination map: beach day.jpg")
    assert before.size == after.size == light.size and max(before.size) == THUMB_SIDE
    assert light.mode == "L" and np.asarray(light).std() > 5
    # "before" really is before: taken ahead of the in-place correction, its shadows are darker
    b, a = (np.asarray(im.convert("L"), dtype=np.float32) for im in (before, after))
    dark = b <= np.percentile(b, 25)
    assert a[dark].mean() > b[dark].mean() + 10

    # Upright: the EXIF-rotated photo's thumbnail is landscape although its pixels are stored portrait.
    rotated = thumb_for(text, out, "Before: rotated.jpg")
    assert rotated.width > rotated.height

    # Colour: the Adobe RGB photo's thumbnail is converted to sRGB (and carries no profile).
    thumb = thumb_for(text, out, "Before: adobe rgb.jpg")
    assert "icc_profile" not in thumb.info
    with Image.open(shoot / "adobe rgb.jpg") as src:
        naive = src.convert("RGB").resize(thumb.size, Image.LANCZOS)
        srgb = ImageCms.profileToProfile(naive, ImageCms.ImageCmsProfile(io.BytesIO(src.info["icc_profile"])),
                                         ImageCms.createProfile("sRGB"))
    got = np.asarray(thumb, dtype=np.float32)
    off_converted = np.abs(got - np.asarray(srgb, dtype=np.float32)).mean()
    off_naive = np.abs(got - np.asarray(naive, dtype=np.float32)).mean()
    assert off_converted < 3 and off_naive > off_converted + 2, (off_converted, off_naive)

    # Real Chromium: every image resolves...
    profile = tmp_path / "chromium-profile"
    state = image_state(page, profile)
    assert state == {"images": 6 * 3, "broken": 0, "pending": 0}
    # ...and the check can fail: without the thumbnail folder every image is broken.
    (out / THUMB_DIR).rename(out / "moved")
    assert image_state(page, profile)["broken"] == 6 * 3
    (out / "moved").rename(out / THUMB_DIR)

    # A screenshot: a real, non-blank PNG of the dark page with photos on it.
    shot = tmp_path / "shot.png"
    browse(page, profile, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 2000)
        px = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert px[5, 5].max() < 60  # dark theme
    assert px.std() > 30 and (px.mean(axis=2) > 200).mean() > 0.01  # photos, not an empty page

    # The report stays small: thumbnails, not copies.
    report_bytes = page.stat().st_size + sum(t.stat().st_size for t in thumbs)
    assert report_bytes < 6 * 3 * THUMB_KB * 1024 and page.stat().st_size < 200 * 1024


@pytest.mark.slow  # two whole runs
def test_rerun_lists_skipped_photos_and_drops_stale_thumbnails(shoot):
    for p in list(shoot.iterdir()):
        if p.name not in (HOSTILE[0], HOSTILE[2]):
            p.unlink()
    assert cli("run", "--model", model(), "--mode", "exact", "--report", str(shoot)).exit_code == 0
    out = shoot / "backlitfix"
    assert len(list((out / THUMB_DIR).glob("*-light.jpg"))) == 2  # exact mode hands back its map too
    assert len(list((out / THUMB_DIR).iterdir())) == 2 * 3
    tile = load_config(None, user_config=None).exact.tile  # the run's own setting, whatever the default
    assert f"exact: full-resolution {tile} px tiles" in (out / "report.html").read_text(encoding="utf-8")
    (out / THUMB_DIR / "notes.txt").write_text("not ours")  # only the report's own names are removed

    r = cli("run", "--model", model(), "--report", "--json", str(shoot))
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == 2
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "2 skipped" in text and html.escape(HOSTILE[2]) in text
    assert [p.name for p in (out / THUMB_DIR).iterdir()] == ["notes.txt"]


def test_dry_run_writes_no_report(shoot):
    r = cli("run", "--model", model(), "--report", "--dry-run", "--strength", "1", str(shoot))
    # a fixed strength: a dry run decodes nothing, so the corrupt file is only planned
    assert r.exit_code == 0, r.output
    assert "no report" in r.stderr
    assert not (shoot / "backlitfix").exists()


def test_report_folder():
    job = lambda out: Job(Path("in.jpg"), Path(out), "jpeg", "jpeg")
    assert report_folder([job("a/backlitfix/x.jpg")], Path("out")) == Path("out")
    nested = [job("a/backlitfix/sub/deeper/x.jpg"), job("a/backlitfix/y.jpg")]
    assert report_folder(nested, None) == Path("a/backlitfix")
    assert report_folder([job("elsewhere/x.jpg")], None) == Path("elsewhere")
    assert report_folder([], None) is None


def test_enhancer_hands_back_a_small_illumination_map():
    net = load_model(shared_path("models", "official", "rave_unpaired.pth"))[0]
    px = np.array(Image.open(shared_path("reference", "golden", "ovd0312_18_360x386.png")).convert("RGB"))
    px = np.ascontiguousarray(px[100:230, 100:241])  # 141 x 130: 2 x 2 tiles, not a multiple of the block size
    H, W = px.shape[:2]
    with torch.no_grad():
        full = net(to_float(px))[0, 0].double()  # one full-resolution pass = exact mode's L
    got = []
    out = Enhancer(net, mode="exact", tile=128, working_megapixels=0.002).enhance(px, on_L=got.append)
    ref = np.floor(np.clip(px / 255.0 / full.clamp(min=1e-3).numpy()[..., None], 0, 1) * 255 + 0.5)
    assert np.abs(out - ref).max() <= 1  # the hook changes nothing: still exact mode's result
    (small,) = got
    h, w = working_size(H, W, 0.002)
    k = int(np.ceil(max(H / h, W / w)))
    assert k >= 2 and (H % k or W % k) and small.shape == (-(-H // k), -(-W // k))
    for i in range(small.shape[0]):  # each value is the mean of its k x k block (smaller at the edges)
        for j in range(small.shape[1]):
            block = full[i * k:(i + 1) * k, j * k:(j + 1) * k]
            assert abs(small[i, j].item() - block.mean().item()) < 1e-4

    got.clear()
    Enhancer(net, mode="fast", working_megapixels=0.005).enhance(px, on_L=got.append)
    assert got[0].shape == working_size(H, W, 0.005) != (H, W) and got[0].dtype == torch.float32
    got.clear()
    Enhancer(net, mode="fast", working_megapixels=1.0).enhance(px, on_L=got.append)
    assert torch.allclose(got[0].double(), full, atol=1e-4)  # no larger than the working size: L itself
    got.clear()
    Enhancer(net, mode="fast").enhance(px, 0.0, on_L=got.append)
    assert got == []  # strength 0 computes no L


@pytest.mark.slow  # a real chromium
def test_report_shows_strength_burst_and_filters_left_alone_in_chromium(tmp_path):
    """Auto strength (issue 12): each card says the strength applied and its burst, and the "Left alone"
    chip shows only the photos whose light needed nothing, in real Chromium."""
    from test_pipeline_auto_strength import burst

    d = tmp_path / "shoot"
    d.mkdir()
    burst(shared_path("data", "backlit", "ovd0312_4.jpg"), d, "backlit", 10, n=2)
    shutil.copy(shared_path("data", "welllit", "kodim01.jpg"), d / "welllit.jpg")
    r = cli("run", "--report", "--json", str(d))  # the embedded model, strength auto
    assert r.exit_code == 0, r.output
    files = {Path(f["input"]).name: f for f in json.loads(r.stdout)["files"]}
    assert files["welllit.jpg"]["strength"] < 0.05 and files["backlit_0.jpg"]["strength"] > 0.95
    group = files["backlit_0.jpg"]["group"]
    page = Path(json.loads(r.stdout)["report"])
    text = page.read_text(encoding="utf-8")
    assert text.count(f"Burst <b>{group}</b>") == 2
    assert "Strength <b>0.00</b> · left alone" in text and text.count("Strength <b>1.00</b>") == 2
    assert "Left alone 1</button>" in text and "Strength</dt><dd>auto" in text

    # Chromium: press the chip, then list the cards still displayed
    probe = page.with_name("probe.html")
    probe.write_text(text.replace("</body>", """<script>
document.querySelector('button[data-show="alone"]').click();
var shown = Array.prototype.filter.call(document.querySelectorAll('.card'),
  function (c) { return getComputedStyle(c).display !== 'none'; });
document.body.setAttribute('data-visible',
  shown.map(function (c) { return c.querySelector('h3').textContent; }).join('|'));
document.querySelector('button[data-show="all"]').click();
document.body.setAttribute('data-all', Array.prototype.filter.call(document.querySelectorAll('.card'),
  function (c) { return getComputedStyle(c).display !== 'none'; }).length);
</script></body>"""), encoding="utf-8")
    dom = browse(probe, tmp_path / "profile", "--dump-dom")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert re.search(r'data-visible="welllit\.jpg"', body), body
    assert re.search(r'data-all="3"', body), body


def test_settings_say_how_auto_leaned():
    """The page's settings name a non-default auto.bias, so a report says how its strengths were decided."""
    from backlitfix.eval.report import settings_of

    engine = Enhancer(EnhanceNet(), mode="fast")
    rows = {
        b: dict(settings_of(load_config(overrides={"auto.bias": b}, user_config=None), None, engine))["Strength"]
        for b in (0.0, -1.0)
    }
    assert rows[0.0].startswith("auto: ") and "bias" not in rows[0.0]
    assert rows[-1.0].endswith("(auto.bias -1)")
    fixed = settings_of(load_config(overrides={"strength": "0.5", "auto.bias": -1}, user_config=None), None, engine)
    assert dict(fixed)["Strength"] == "0.5"  # a fixed strength ignores the lean
