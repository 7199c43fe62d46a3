"""The studio page end to end in a real browser: Playwright driving Debian's headless Chromium.

Browser downloads are impossible here, so Playwright is given the system Chromium's path
(`apt-get install chromium`, done by .ci/run). Set PROGAN_STUDIO_SCREENSHOT=FILE.png to also save
a screenshot of the whole page (docs/images/studio.png comes from this test).
"""

import base64
import contextlib
import io
import os
import shutil
import socket
import threading
import time
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from helpers import served_app, tiny_run
from PIL import Image
from playwright import sync_api

from progan.directions import add_direction
from progan.studio.app import HostCheck, Studio, allowed_hosts, create_app

CHROMIUM = next((p for p in (os.environ.get("PROGAN_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p), None)  # fmt: skip
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(tmp_path, panels=()):
    """The studio of tmp_path/runs served by uvicorn on a free port as `progan serve` runs it (Host
    check included); yields its URL."""
    studio = Studio([tmp_path / "runs"], tmp_path / "state")
    port = free_port()
    app = create_app(studio, panels=panels)
    app.add_middleware(HostCheck, hosts=allowed_hosts("127.0.0.1", port))  # as `progan serve` runs it
    try:
        with served_app(app, port) as url:
            yield url
    finally:
        studio.close()


@pytest.fixture
def server(tmp_path):
    snap = tiny_run(tmp_path / "runs" / "00000-faces", resolution=32)
    add_direction(snap, "smile", torch.randn(16, generator=torch.Generator().manual_seed(1)), 16)
    add_direction(snap, "age", torch.randn(16, generator=torch.Generator().manual_seed(2)), 16)
    with serving(tmp_path) as url:
        yield url


ALL_FACES_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#grid img')];
  return imgs.length === 32 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""
BIG_LOADED = "() => { const i = document.getElementById('big'); return i.complete && i.naturalWidth > 0; }"


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


@contextlib.contextmanager
def browser_page(url: str):
    """(a headless Chromium page at url, the page's script errors so far)."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            yield page, errors
        finally:
            browser.close()


def wait_for_text(page, element_id: str, pattern: str, timeout: int = 30_000) -> None:
    """Wait until the element's text matches the regular expression (the element may be absent
    for a while: a reloaded page adds its panels when their scripts load)."""
    page.wait_for_function(
        f"() => /{pattern}/.test(document.getElementById('{element_id}')?.textContent ?? '')", timeout=timeout
    )


def test_browse_open_blend_keep_and_reload(server):
    with browser_page(server) as (page, errors):
        page.wait_for_function(ALL_FACES_LOADED, timeout=30_000)

        page.locator("#grid .face").nth(3).click()
        page.wait_for_function(BIG_LOADED)
        assert page.locator("#detail-title").inner_text() == "seed 3"
        before = pixels(page.locator("#big").screenshot())

        page.locator("#blend").fill("0.8")
        page.wait_for_function("() => document.getElementById('big').src.includes('t=0.8')")
        page.wait_for_function(BIG_LOADED)
        page.wait_for_timeout(100)
        after = pixels(page.locator("#big").screenshot())
        assert np.abs(after - before).mean() > 5  # the blend moved the face
        assert page.locator("#blend-seed").input_value() == "4"
        assert "blend=4" in page.locator("#permalink").get_attribute("href")

        page.locator("#keep").click()
        page.wait_for_selector("#favourite-list .face")
        page.wait_for_function("() => [...document.querySelectorAll('#favourite-list img')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)")  # fmt: skip
        shot = os.environ.get("PROGAN_STUDIO_SCREENSHOT")
        if shot:
            page.locator("[data-direction=smile]").fill("2.5")
            page.wait_for_function("() => document.getElementById('big').src.includes('smile')")
            page.wait_for_function(BIG_LOADED)
            page.wait_for_timeout(300)
            page.screenshot(path=shot, full_page=True)

        page.reload()  # the permalink in the address bar reopens the face; the favourite is still kept
        page.wait_for_selector("#favourite-list .face")
        assert page.locator("#favourite-list .face").count() == 1
        assert page.locator("#favourite-list .face span").inner_text().startswith("3")
        assert page.locator("#detail-title").inner_text().startswith("seed 3 \u2194 4")
        assert errors == []


def test_describe_panel_shows_progress_and_cancels_at_256(tmp_path, monkeypatch):
    """The describe box on a 256x256 network: the status line counts generated and measured faces
    with the best score while the run goes, the cancel button ends it, and the best faces so far
    are shown. (Measuring is the test's colour rule, slowed so that the run can be watched.)"""
    from faces_fakes import colour_measure

    from progan.faces import describe as d
    from progan.faces.studio_panel import describe_panel

    def slow_measure(images):
        time.sleep(0.1)
        return colour_measure(images)

    monkeypatch.setattr(d, "default_measure", slow_measure)
    tiny_run(tmp_path / "runs" / "00001-faces256", resolution=256)
    with serving(tmp_path, panels=[describe_panel()]) as url, browser_page(url) as (page, errors):
        page.wait_for_selector("#describe-form")
        page.locator("#describe-text").fill("red hair")
        page.locator("#describe-count").fill("1000")
        page.locator("#describe-form button[type=submit]").click()
        wait_for_text(page, "describe-status", "measured [1-9][0-9]* of 1000, best [0-9.]+", 60_000)
        assert page.locator("#describe-cancel").is_visible()
        page.locator("#describe-cancel").click()
        page.wait_for_function(
            "() => document.getElementById('describe-status').textContent.includes('cancelled')",
            timeout=60_000,
        )  # fmt: skip
        assert page.locator("#describe-results .face").count() == 16
        assert not page.locator("#describe-cancel").is_visible()
        assert errors == []


def test_the_first_page_fills_in_as_its_faces_are_rendered_at_256(tmp_path, monkeypatch):
    """A 256x256 network: the page asks for its 32 faces in one streamed request and shows each
    block of faces as it arrives (here while the block holding the last face is held in G), and
    every thumbnail is the full-size face box-downscaled to 128."""

    import progan.studio.app as app_module
    from progan.checkpoint import load_snapshot
    from progan.sampling import images_for_seeds

    calls: list[int] = []
    held, release = threading.Event(), threading.Event()
    real = app_module.images_for_latents

    def gated(G, z, *args, **kwargs):
        calls.append(len(z))
        if sum(calls) == 32:  # the G call that renders the page's last face waits for the test
            held.set()
            release.wait(60)
        return real(G, z, *args, **kwargs)

    monkeypatch.setattr(app_module, "images_for_latents", gated)
    snap = tiny_run(tmp_path / "runs" / "00002-faces256", resolution=256)
    loaded = "() => [...document.querySelectorAll('#grid img')].filter((i) => i.naturalWidth > 0).length"
    try:
        with serving(tmp_path) as url, browser_page(url) as (page, errors):
            assert held.wait(60), "the last block was never rendered"
            shown = 32 - calls[-1]
            assert 0 < shown < 32 and len(calls) >= 2
            page.wait_for_function(f"() => ({loaded})() === {shown}", timeout=30_000)
            page.wait_for_timeout(200)
            assert page.evaluate(loaded) == shown  # some faces are shown, the last block's not yet
            release.set()
            page.wait_for_function(ALL_FACES_LOADED, timeout=30_000)
            requests = page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
            faces = [unquote(u) for u in requests if "/api/models/" in u]
            assert len(faces) == 1 and "/faces?seeds=0,1,2," in faces[0] and "size=128" in faces[0]
            G = load_snapshot(snap).G_ema
            want = images_for_seeds(G, [0, 5, 31]).numpy().astype(np.float64)
            for i, seed in enumerate([0, 5, 31]):
                src = page.locator(f"#grid .face[data-seed='{seed}'] img").get_attribute("src")
                assert src.startswith("data:image/png;base64,")
                thumb = pixels(base64.b64decode(src.split(",", 1)[1])).transpose(2, 0, 1)
                box = np.round(want[i].reshape(3, 128, 2, 128, 2).mean(axis=(2, 4)))
                np.testing.assert_array_equal(thumb, box)
            page.locator("#grid .face").nth(5).click()  # the full-size face opens as before
            page.wait_for_function(BIG_LOADED)
            assert page.evaluate("document.getElementById('big').naturalWidth") == 256
            assert errors == []
    finally:
        release.set()


def test_open_a_photo_projects_it_with_progress_then_edits_it(tmp_path, monkeypatch):
    """The "open a photo" box: a small PNG uploaded through the page's file input is projected
    while the status line counts the steps (each step slowed so that the test can watch it), a
    reload while it runs follows it again, then the projected face opens in the detail view, and a
    direction slider edits it. Set PROGAN_STUDIO_PHOTO_SCREENSHOT=FILE.png to save the page
    (docs/images/studio-photo.png)."""
    from progan.projection import project as pr
    from progan.projection.studio_panel import photo_panel

    real = pr.project_images

    def slowed(*args, on_step, **kwargs):
        def step(done, total, best):
            time.sleep(0.02)
            on_step(done, total, best)

        return real(*args, on_step=step, **kwargs)

    monkeypatch.setattr(pr, "project_images", slowed)
    snap = tiny_run(tmp_path / "runs" / "00000-faces", resolution=32)
    add_direction(snap, "smile", torch.randn(16, generator=torch.Generator().manual_seed(1)), 16)
    # A photo the model can make: one of its own faces (a random network's faces are pixel noise,
    # which a resized copy would not keep; test_projection_studio.py sends photos to resize).
    import progan

    progan.load(snap, device="cpu").generate([11], as_pil=True)[0].save(tmp_path / "photo.png")
    with serving(tmp_path, panels=[photo_panel()]) as url, browser_page(url) as (page, errors):
        page.wait_for_selector("#photo-form")
        page.locator("#photo-file").set_input_files(str(tmp_path / "photo.png"))
        page.locator("#photo-steps").fill("200")
        page.locator("#photo-form button[type=submit]").click()
        wait_for_text(page, "photo-status", "projecting: step [1-9][0-9]* of 200, best loss [0-9.]+")
        assert page.locator("#photo-cancel").is_visible()
        page.reload()  # a page opened while the projection runs follows it (once its panel loads)
        wait_for_text(page, "photo-status", "projecting: step [1-9][0-9]* of 200")
        assert page.locator("#photo-cancel").is_visible()
        page.wait_for_function(
            "() => document.getElementById('photo-status').textContent.startsWith('projected')",
            timeout=60_000,
        )  # fmt: skip
        page.wait_for_function(BIG_LOADED)
        assert page.locator("#detail-title").inner_text().startswith("latent ")
        assert "latent=" in page.locator("#big").get_attribute("src")
        page.wait_for_timeout(100)
        before = pixels(page.locator("#big").screenshot())
        page.locator("[data-direction=smile]").fill("3")
        page.wait_for_function("() => document.getElementById('big').src.includes('smile')")
        page.wait_for_function(BIG_LOADED)
        page.wait_for_timeout(100)
        after = pixels(page.locator("#big").screenshot())
        assert np.abs(after - before).mean() > 2  # the slider moved the projected face
        assert not page.locator("#photo-cancel").is_visible()
        shot = os.environ.get("PROGAN_STUDIO_PHOTO_SCREENSHOT")
        if shot:
            page.screenshot(path=shot, full_page=True)
        page.reload()  # the permalink in the address bar reopens the projected face, edit included
        page.wait_for_function(BIG_LOADED)
        assert page.locator("#detail-title").inner_text().startswith("latent ")
        assert "smile" in page.locator("#big").get_attribute("src")
        assert errors == []


def test_hold_the_rest_button_opens_the_searched_face_of_the_edit(tmp_path):
    """`progan serve --keep-with FILE`: the face view's button is off until a slider moves, then
    runs the keep-with search on the edited face and opens its result (a stored latent, no edits:
    the sliders at 0), which the server renders as the search's latent. Set
    PROGAN_STUDIO_KEEP_SCREENSHOT=FILE.png to save the page (docs/images/studio-keep.png)."""
    from faces_fakes import snapshot_with_classifier

    from progan.checkpoint import load_snapshot
    from progan.directions import load_directions, move
    from progan.faces.attributes import load_attributes
    from progan.faces.edit import keep_unasked
    from progan.faces.studio_panel import keep_panel
    from progan.sampling import images_for_latents, latent_for_seed

    snap, clf = snapshot_with_classifier(
        tmp_path / "runs" / "00000-faces", tmp_path / "judge.attributes", ["smile", "red", "bright"], 32
    )
    with serving(tmp_path, panels=[keep_panel(str(clf))]) as url, browser_page(url) as (page, errors):
        page.wait_for_function(ALL_FACES_LOADED, timeout=30_000)
        page.locator("#grid .face").nth(5).click()
        page.wait_for_function(BIG_LOADED)
        page.wait_for_selector("#keep-run")
        assert page.locator("#keep-run").is_disabled()  # nothing asked yet
        page.locator("[data-direction=smile]").fill("3")
        page.wait_for_function("() => document.getElementById('big').src.includes('smile')")
        assert page.locator("#keep-run").is_enabled()
        page.locator("#keep-run").click()
        wait_for_text(page, "keep-status", "held: unasked change [0-9.]+ -> [0-9.]+", 60_000)
        page.wait_for_function("() => document.getElementById('big').src.includes('latent=')")
        page.wait_for_function(BIG_LOADED)
        assert page.locator("#detail-title").inner_text().startswith("latent ")
        assert "smile" not in page.locator("#big").get_attribute("src")
        assert page.locator("[data-direction=smile]").input_value() == "0"
        assert page.locator("#keep-run").is_disabled()
        page.wait_for_timeout(100)
        shot = os.environ.get("PROGAN_STUDIO_KEEP_SCREENSHOT")
        if shot:
            page.screenshot(path=shot, full_page=True)
        shown = page.evaluate("() => document.getElementById('big').src")
        png = page.request.get(shown).body()
        G = load_snapshot(snap).G_ema
        z0 = latent_for_seed(5, 16)[None]
        directions = load_directions(snap)
        want, _ = keep_unasked(G, z0, move(z0, directions, {"smile": 3.0}), {"smile": 3.0}, directions,
                               load_attributes(clf), seeds=[5])  # fmt: skip
        expected = images_for_latents(G, want)[0].permute(1, 2, 0).numpy().astype(np.int16)
        assert np.abs(pixels(png) - expected).max() <= 1  # the page shows the search's face
        assert errors == []
