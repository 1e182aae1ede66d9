"""The gallery in a real browser (headless Chromium, as test_serve_browser): search by prompt,
the full-size viewer with the settings beside the image (arrow keys move, Escape closes), a
selection downloaded as a zip of its finished images, cancel all queued, delete failed."""

import zipfile

import pytest

from test_serve_browser import browser  # noqa: F401 (the fixture)
from test_serve_crash import ServerProcess

pytestmark = pytest.mark.slow

TOY = {"model": "toy", "size": [32, 32], "iterations": 4, "cutn": 4, "seed": 5}


def shown(page) -> list[str]:
    return page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => c.dataset.id)")


def test_the_gallery_searches_views_zips_and_clears(tmp_path, browser):  # noqa: F811
    with ServerProcess(tmp_path / "data") as server:
        red = server.submit({**TOY, "prompt": "a red circle"})
        star = server.submit({**TOY, "prompt": "a red star", "seed": 6})
        blue = server.submit({**TOY, "prompt": "a blue square", "seed": 7})
        failed = server.submit({**TOY, "prompt": "a green square", "cuda_graphs": True})
        for job_id in (red, star, blue):
            server.wait(job_id)
        server.wait(failed, done=lambda job: job["status"] == "failed")
        long = server.submit({**TOY, "prompt": "a long run", "iterations": 20000})
        server.wait(long, done=lambda job: job["status"] == "running")
        queued = [server.submit({**TOY, "prompt": f"queued {i}"}) for i in range(2)]

        page = browser.new_page(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector(f".card[data-id='{red}'] img")
        assert shown(page) == [*queued[::-1], long, failed, blue, star, red]

        # Search: every word, any case, newest first; cleared, every job again.
        page.fill("#search", "RED")
        page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 2")
        assert shown(page) == [star, red]
        page.fill("#search", "square green")
        page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 1")
        assert shown(page) == [failed]
        page.fill("#search", "")
        page.wait_for_function("() => document.querySelectorAll('#gallery .card').length === 7")

        # The viewer: full size, the settings beside it; arrows move through the gallery.
        page.click(f".card[data-id='{red}'] .expand")
        page.wait_for_selector("#viewer[open]")
        viewed = "() => document.querySelector('#viewer-img').dataset.id"
        assert page.evaluate(viewed) == red
        assert f"/api/jobs/{red}/files/image.png" in page.get_attribute("#viewer-img", "src")
        assert page.text_content("#viewer-prompt") == "a red circle"
        settings = page.eval_on_selector_all(
            "#viewer-settings tr", "rs => rs.map(r => r.textContent)"
        )
        assert "seed5" in settings and "iterations4" in settings
        page.keyboard.press("ArrowLeft")
        assert page.evaluate(viewed) == star and "seed6" in page.text_content("#viewer-settings")
        page.keyboard.press("ArrowLeft")
        assert page.evaluate(viewed) == blue
        page.keyboard.press("ArrowRight")
        assert page.evaluate(viewed) == star
        assert page.text_content("#viewer-prompt") == "a red star"
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")

        # A selection: only the finished images of the ticked jobs go into the zip.
        for job_id in (red, star, failed):
            page.check(f".card[data-id='{job_id}'] .pick")
        assert page.text_content("#selection-count") == "3 selected · 2 finished"
        with page.expect_download() as download:
            page.click("#zip")
        with zipfile.ZipFile(download.value.path()) as archive:
            names = sorted(archive.namelist())
            image = archive.read(f"a-red-circle-{red}.png")
        assert names == sorted([f"a-red-circle-{red}.png", f"a-red-star-{star}.png"])
        assert image == server.http.get(f"/api/jobs/{red}/files/image.png").content

        # Cancel all queued: the running job goes on. Delete failed: gone, files and all.
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel-queued")
        page.wait_for_selector("#toast:has-text('Cancelled 2 queued jobs')")
        assert [server.job(j)["status"] for j in queued] == ["cancelled", "cancelled"]
        assert server.job(long)["status"] == "running"
        page.wait_for_selector("#cancel-queued", state="hidden")
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#delete-failed")
        page.wait_for_selector("#toast:has-text('Deleted 1 failed job')")
        page.wait_for_selector(f".card[data-id='{failed}']", state="detached")
        assert server.http.get(f"/api/jobs/{failed}").status_code == 404
        assert failed not in shown(page) and red in shown(page)
        server.http.post(f"/api/jobs/{long}/cancel")
        assert errors == []
