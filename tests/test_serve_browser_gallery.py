"""The gallery in a real browser (headless Chromium, as test_serve_browser): search by prompt,
the full-size viewer with the settings beside the image (arrow keys move, Escape closes; the
whole picture shown at every screen size), a selection downloaded as a zip of its finished
images (hundreds of them too), cancel all queued, delete failed, and refreshes while a job runs
that keep the pages loaded and the scroll position."""

import io
import zipfile

import pytest
from PIL import Image

from test_serve_browser import browser  # noqa: F401 (the fixture)
from test_serve_crash import ServerProcess
from vqclip.generate.config import build_config
from vqclip.serve.store import JobStore

pytestmark = pytest.mark.slow

TOY = {"model": "toy", "size": [32, 32], "iterations": 4, "cutn": 4, "seed": 5}


def shown(page) -> list[str]:
    return page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => c.dataset.id)")


def data_with_done_jobs(tmp_path, jobs: list[tuple[str, tuple[int, int]]]):
    """A data folder holding a done toy job for each (prompt, (width, height)), oldest first,
    with the image.png a worker leaves (one colour, that size): a gallery of many pages
    without running a model. (data folder, job ids)."""
    data = tmp_path / "data"
    store = JobStore(data / "jobs.sqlite3")
    pngs: dict[tuple[int, int], bytes] = {}
    ids = []
    for seed, (prompt, size) in enumerate(jobs):
        if size not in pngs:
            image = io.BytesIO()
            Image.new("RGB", size, (200, 60, 40)).save(image, "PNG")
            pngs[size] = image.getvalue()
        config = build_config({**TOY, "prompt": prompt, "size": list(size), "seed": seed})
        row, _ = store.admit(config.to_dict(), model="toy")
        assert store.claim("worker-0").id == row.id
        store.finish(row.id, "done", TOY["iterations"])
        (data / "jobs" / row.id).mkdir(parents=True)
        (data / "jobs" / row.id / "image.png").write_bytes(pngs[size])
        ids.append(row.id)
    store.close()
    return data, ids


def cards(compared: str) -> str:
    """A test of how many cards the gallery shows, for wait_for_function: cards("=== 48")."""
    return f"() => document.querySelectorAll('#gallery .card').length {compared}"


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


# Where the picture in the viewer is drawn (its box scaled to fit, as object-fit: contain does),
# and whether each of its corners is on top there: not cut off by the dialog or the screen.
PICTURE = """() => {
  const img = document.querySelector('#viewer-img');
  const rect = (r) => ({ left: r.left, top: r.top, right: r.right, bottom: r.bottom });
  const box = img.getBoundingClientRect();
  const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
  const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
  const left = box.left + (box.width - w) / 2, top = box.top + (box.height - h) / 2;
  const corners = [[left + 2, top + 2], [left + w - 2, top + 2],
                   [left + 2, top + h - 2], [left + w - 2, top + h - 2]];
  return {
    picture: { left, top, right: left + w, bottom: top + h },
    pane: rect(img.parentElement.getBoundingClientRect()),
    dialog: rect(document.querySelector('#viewer').getBoundingClientRect()),
    screen: { left: 0, top: 0, right: innerWidth, bottom: innerHeight },
    corners: corners.map(([x, y]) => document.elementFromPoint(x, y) === img),
  };
}"""


def inside(inner: dict, outer: dict) -> bool:
    return (
        inner["left"] >= outer["left"] - 1
        and inner["top"] >= outer["top"] - 1
        and inner["right"] <= outer["right"] + 1
        and inner["bottom"] <= outer["bottom"] + 1
    )


def test_the_viewer_shows_the_whole_picture_at_every_screen_size(tmp_path, browser):  # noqa: F811
    sizes = [(32, 32), (32, 64), (96, 32)]  # square, tall, wide
    data, ids = data_with_done_jobs(tmp_path, [(f"a picture {w}x{h}", (w, h)) for w, h in sizes])
    with ServerProcess(data, "--workers", "0") as server:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector(f".card[data-id='{ids[0]}'] .expand", state="attached")
        page.click(f".card[data-id='{ids[-1]}'] .expand")
        page.wait_for_selector("#viewer[open]")
        for width, height in [(1280, 800), (1920, 1080), (1366, 600), (390, 844)]:
            page.set_viewport_size({"width": width, "height": height})
            for job_id, (w, h) in zip(ids[::-1], sizes[::-1], strict=True):
                page.wait_for_function(
                    "([id, w, h]) => { const img = document.querySelector('#viewer-img');"
                    " return img.dataset.id === id && img.complete"
                    " && img.naturalWidth === w && img.naturalHeight === h; }",
                    arg=[job_id, w, h],
                )
                at = page.evaluate(PICTURE)
                where = f"{w}x{h} image on a {width}x{height} screen: {at}"
                assert inside(at["picture"], at["dialog"]), where
                assert inside(at["picture"], at["screen"]), where
                assert inside(at["dialog"], at["screen"]), where
                assert all(at["corners"]), where
                # scaled to fill its pane one way, not shrunk
                pane, picture = at["pane"], at["picture"]
                fill = max(
                    (picture["right"] - picture["left"]) / (pane["right"] - pane["left"]),
                    (picture["bottom"] - picture["top"]) / (pane["bottom"] - pane["top"]),
                )
                assert fill > 0.98, where
                page.keyboard.press("ArrowRight")
            for _ in sizes:
                page.keyboard.press("ArrowLeft")
        assert errors == []


# The id of the first card wholly on the screen.
CARD_IN_VIEW = """() => [...document.querySelectorAll('#gallery .card')].find((c) => {
  const r = c.getBoundingClientRect();
  return r.top >= 0 && r.bottom <= innerHeight;
}).dataset.id"""
# The fewest cards the gallery shows from now on.
COUNT_FEWEST = """() => {
  const box = document.querySelector('#gallery');
  window.fewest = box.children.length;
  new MutationObserver(() => { window.fewest = Math.min(window.fewest, box.children.length); })
    .observe(box, { childList: true });
}"""


def test_refreshes_while_a_job_runs_keep_the_pages_loaded_and_the_scroll(tmp_path, browser):  # noqa: F811
    data, done = data_with_done_jobs(tmp_path, [(f"job {i}", (32, 32)) for i in range(150)])
    with ServerProcess(data) as server:
        long = server.submit({**TOY, "prompt": "a long run", "iterations": 20000})
        server.wait(long, done=lambda job: job["status"] == "running")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector(f".card[data-id='{long}']")
        page.wait_for_function(cards("=== 48"))
        for pages in (2, 3):
            page.click("#more-jobs")
            page.wait_for_function(cards(f"=== {48 * pages}"))
        page.evaluate(COUNT_FEWEST)
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        scrolled = page.evaluate("window.scrollY")
        assert scrolled > 3000, scrolled
        seen = page.evaluate(CARD_IN_VIEW)
        look = page.get_attribute(f".card[data-id='{long}']", "data-look")

        # A job submitted elsewhere: the event's refresh puts it on top; the running job's card
        # moves on with its steps; the 5-second refresh comes round too.
        new = server.submit({**TOY, "prompt": "a new job"})
        page.wait_for_selector(f"#gallery .card:first-child[data-id='{new}']", timeout=20_000)
        page.wait_for_function(
            "([id, look]) => document.querySelector(`.card[data-id='${id}']`).dataset.look"
            " !== look",
            arg=[long, look],
            timeout=30_000,
        )
        page.wait_for_timeout(6000)

        assert page.evaluate("window.fewest") >= 144  # no refresh dropped the pages loaded
        assert shown(page) == [new, long, *done[::-1][:143]]
        assert page.is_visible("#more-jobs")
        after = page.evaluate("window.scrollY")
        assert abs(after - scrolled) < 400, (scrolled, after)  # a row at most
        box = page.locator(f".card[data-id='{seen}']").bounding_box()
        assert box["y"] + box["height"] > 0 and box["y"] < 800, box  # still on the screen
        server.http.post(f"/api/jobs/{long}/cancel")
        server.http.post(f"/api/jobs/{new}/cancel")
        assert errors == []


def test_a_selection_of_hundreds_of_jobs_downloads_its_finished_images(tmp_path, browser):  # noqa: F811
    data, done = data_with_done_jobs(tmp_path, [(f"job {i}", (32, 32)) for i in range(230)])
    with ServerProcess(data, "--workers", "0") as server:
        queued = [server.submit({**TOY, "prompt": f"queued {i}"}) for i in range(3)]
        cancelled = server.submit({**TOY, "prompt": "cancelled"})
        assert server.http.post(f"/api/jobs/{cancelled}/cancel").status_code == 200
        page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector(f".card[data-id='{queued[0]}']")
        while page.is_visible("#more-jobs"):
            count = len(shown(page))
            page.click("#more-jobs")
            page.wait_for_function(cards(f"> {count}"))
        assert len(shown(page)) == 234
        page.check(f".card[data-id='{done[-1]}'] .pick")  # the selection's tools show up
        page.click("#select-shown")
        assert page.text_content("#selection-count") == "234 selected · 230 finished"

        with (
            page.expect_request("**/api/gallery/zip") as sent,
            page.expect_download(timeout=60_000) as download,
        ):
            page.click("#zip")
        assert sent.value.method == "POST"
        assert sent.value.post_data_json == {"ids": done[::-1]}  # the finished jobs only
        with zipfile.ZipFile(download.value.path()) as archive:
            names = archive.namelist()
            assert archive.testzip() is None
        assert names == [f"job-{i}-{job_id}.png" for i, job_id in reversed(list(enumerate(done)))]
        assert download.value.suggested_filename == "vqclip-230-images.zip"
        assert errors == []
