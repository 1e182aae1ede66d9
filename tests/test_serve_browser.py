"""The page in a real browser: headless Chromium (Debian's `chromium`, else Playwright's own)
submits a toy prompt, sees previews arrive while the job runs, and finds the result in the
gallery. Skipped where neither Playwright nor a Chromium is installed.

`VQCLIP_SCREENSHOT=docs/web.png` also saves a screenshot of the page with the finished job.
"""

import os
import shutil

import pytest

from test_serve_crash import ServerProcess

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
        with page.expect_response("**/api/jobs") as posted:
            page.click("#submit")
        job_id = posted.value.json()["id"]

        # Previews replace the canvas while the job runs (a done job shows image.png).
        page.wait_for_function(
            "() => document.querySelector('#canvas').src.includes('preview.png')",
            timeout=180_000,
        )
        page.wait_for_selector("#job-status.done", timeout=300_000)
        assert "image.png" in page.get_attribute("#canvas", "src")
        steps = 100 if screenshot else 24
        assert page.text_content("#job-steps") == f"step {steps} / {steps}"
        assert page.is_visible("#act-png") and page.is_visible("#act-video")

        card = page.wait_for_selector(f".card[data-id='{job_id}'] img[src*='thumb.jpg']")
        assert card.evaluate("img => img.complete && img.naturalWidth > 0")
        assert server.job(job_id)["status"] == "done"
        assert errors == []
        if screenshot:
            page.wait_for_timeout(500)
            page.screenshot(path=screenshot)
