"""The page in a real browser: headless Chromium (Debian's `chromium`, else Playwright's own)
submits a toy prompt, sees previews arrive while the job runs, and finds the result in the
gallery. Skipped where neither Playwright nor a Chromium is installed.

`VQCLIP_SCREENSHOT=$PWD/docs/web.png` also saves a screenshot of the page with the finished job,
and `docs/web-phone.png` at 390 px (an absolute path: each test runs in its own folder).
"""

import os
import shutil

import pytest

from extras import require

require("fastapi", "web")
require("uvicorn", "web")

from test_serve_crash import ServerProcess  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_api.sync_playwright() as p:
        try:
            launched = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        except Exception as e:  # no browser binary: Playwright's own was never installed
            pytest.skip(f"no Chromium to drive: {e}")
        yield launched
        launched.close()


GALLERY = (
    "a large yellow star on a black background",
    "a green square on a grey background",
    "a purple triangle on a white background",
    "a white circle on a blue background",
    "a small red star on a grey background",
)


def test_the_page_makes_a_toy_image_with_live_previews(tmp_path, browser):
    screenshot = os.environ.get("VQCLIP_SCREENSHOT")
    with ServerProcess(tmp_path / "data", "--preview-every", "2") as server:
        if screenshot:  # a gallery to show beside the job made in the page
            done = [server.submit({"prompt": p, "model": "toy", "seed": 1}) for p in GALLERY]
            for job_id in done:
                server.wait(job_id, timeout=900)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector("#model option[value=toy]", state="attached")
        page.select_option("#model", "toy")
        page.fill("#prompt", "a red circle on a blue background")
        page.fill("#iterations", "100" if screenshot else "24")
        page.fill("#seed", "7")
        if screenshot:  # a set of four seeds beside the gallery
            page.fill("#count", "4")
        with page.expect_response("**/api/jobs") as posted:
            page.click("#submit")
        job_id = posted.value.json()["id"]

        # Previews replace the canvas while the job runs (a done job shows image.png).
        page.wait_for_function(
            "() => document.querySelector('#canvas').src.includes('preview.png')",
            timeout=180_000,
        )
        assert page.title().endswith("% · vqclip") or server.job(job_id)["status"] == "done"
        page.wait_for_selector("#job-status.done", timeout=300_000)
        assert "image.png" in page.get_attribute("#canvas", "src")
        steps = 100 if screenshot else 24
        assert page.text_content("#job-steps") == f"step {steps} / {steps}"
        assert page.is_visible("#act-png") and page.is_visible("#act-video")

        card = page.wait_for_selector(f".card[data-id='{job_id}'] img[src*='thumb.jpg']")
        assert card.evaluate("img => img.complete && img.naturalWidth > 0")
        assert server.job(job_id)["status"] == "done"
        assert errors == []
        if screenshot:  # the set finished, two cards ticked for a zip
            page.wait_for_function(
                "() => document.querySelectorAll('.set-cell img').length === 4"
                " && !document.querySelector('.set-cell .status')",
                timeout=900_000,
            )
            for ticked in done[:2]:
                page.check(f".card[data-id='{ticked}'] .pick")
            page.mouse.move(0, 0)
            page.evaluate("window.scrollTo(0, 0)")
            page.wait_for_timeout(500)
            page.screenshot(path=screenshot, full_page=True)


BIG_SEED = 2**63 - 1  # above 2**53: a JavaScript number would round it
NO_STORAGE = """Object.defineProperty(window, "localStorage", {
  get() { throw new DOMException("storage is off", "SecurityError"); } });"""


def test_the_page_keeps_big_seeds_shows_images_again_fits_a_phone_and_copies(tmp_path, browser):
    toy = {"model": "toy", "size": [32, 32], "iterations": 4, "cutn": 4}
    with ServerProcess(tmp_path / "data") as server:
        done = server.submit({**toy, "prompt": "a red circle", "seed": BIG_SEED})
        failed = server.submit({**toy, "prompt": "a blue square", "cuda_graphs": True})
        command = server.wait(done)["command"]
        server.wait(failed, done=lambda job: job["status"] == "failed")

        context = browser.new_context(
            viewport={"width": 1300, "height": 1000},
            permissions=["clipboard-read", "clipboard-write"],
        )
        page = context.new_page()
        page.add_init_script(NO_STORAGE)  # the page must build without localStorage
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector("#model option[value=toy]", state="attached")

        # A finished job selected again after a failed one shows its image again.
        canvas_shown = "() => !document.querySelector('#canvas').hidden"
        page.click(f".card[data-id='{done}']")
        page.wait_for_function(canvas_shown)
        page.click(f".card[data-id='{failed}']")
        page.wait_for_selector("#job-status.failed")
        assert page.is_hidden("#canvas") and page.is_visible("#empty")
        page.click(f".card[data-id='{done}']")
        page.wait_for_selector("#job-status.done")
        page.wait_for_function(canvas_shown, timeout=5000)
        assert page.is_hidden("#empty")

        # The seed is shown and sent again exactly.
        assert f"seed {BIG_SEED}" in page.text_content("#job-meta")
        with page.expect_response("**/api/jobs") as posted:
            page.click("#act-rerun")
        assert posted.value.status == 201 and posted.value.json()["seed"] == str(BIG_SEED)

        page.click(f".card[data-id='{done}']")
        page.wait_for_selector("#job-status.done")
        page.click("#act-cli")
        assert page.evaluate("navigator.clipboard.readText()") == command
        page.click("#act-copy-seed")
        page.wait_for_selector("#toast:has-text('Seed copied')")
        assert page.evaluate("navigator.clipboard.readText()") == str(BIG_SEED)

        # Use as init image: the result is uploaded and the form's next job starts from it.
        page.click("#act-init")
        page.wait_for_selector("#init-thumb", state="visible")
        assert page.input_value("#seed") == str(BIG_SEED)
        with page.expect_response("**/api/jobs") as posted:
            page.click("#submit")
        settings = posted.value.json()["settings"]
        assert posted.value.status == 201, posted.value.text()
        assert settings["init"] == "image" and settings["init_image"].startswith("uploads/")

        # A phone: nothing wider than the screen; a light system theme gives a light page.
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.emulate_media(color_scheme="light")
        phone.goto(server.url + "/")
        phone.wait_for_selector(f".card[data-id='{done}'] img")
        phone.wait_for_selector("#job:not([hidden])")
        phone.fill("#prompt", "a lighthouse:1|fog:-0.5 ^ a storm at sea")
        phone.wait_for_selector(".read-part:nth-child(2) .read-prompt")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
        assert sum(int(c) for c in background[4:-1].split(",")) > 600, background
        shots = os.environ.get("VQCLIP_SCREENSHOT")
        if shots:
            phone.emulate_media(color_scheme="dark")
            phone.wait_for_timeout(300)
            phone.screenshot(path=shots.replace(".png", "-phone.png"), full_page=True)
        assert errors == []
