"""The form in a real browser (headless Chromium, as test_serve_browser): how the prompt was
read, shown as it is typed and before Generate; Generate with a count, whose jobs (one seed
each) show together in a grid; and a notification when a job of the page ends while the tab
is hidden, asked for on a click only, and never shown when permission is denied."""

import pytest

from test_serve_browser import browser  # noqa: F401 (the fixture)
from test_serve_crash import ServerProcess
from test_serve_gallery import COLOURS

pytestmark = pytest.mark.slow

# The Notification API as a recorder (headless Chromium shows none), and a tab that the test
# hides and shows. `requestPermission` records whether a user's gesture was under way.
FAKE_NOTIFICATIONS = """
window.__notes = []; window.__asked = []; window.__visibility = "visible";
class FakeNotification {
  constructor(title, options) { window.__notes.push({ title, body: options && options.body }); }
  static requestPermission() {
    window.__asked.push(navigator.userActivation.isActive);
    FakeNotification.permission = window.__answer;
    return Promise.resolve(window.__answer);
  }
}
FakeNotification.permission = "default";
window.Notification = FakeNotification;
Object.defineProperty(document, "visibilityState", { get: () => window.__visibility });
Object.defineProperty(document, "hidden", { get: () => window.__visibility === "hidden" });
"""
TOY = {"#width": "32", "#height": "32", "#iterations": "4"}


def open_page(browser, server, answer):  # noqa: F811
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.add_init_script(FAKE_NOTIFICATIONS + f"window.__answer = {answer!r};")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("#model option[value=toy]", state="attached")
    page.select_option("#model", "toy")
    return page, errors


def test_the_prompt_is_read_as_it_is_typed_before_generate(tmp_path, browser):  # noqa: F811
    with ServerProcess(tmp_path / "data", "--workers", "0") as server:
        page, errors = open_page(browser, server, "default")
        asked = []
        page.on("request", lambda r: r.url.endswith("/api/prompts/parse") and asked.append(r))
        typed = "a red barn:2|fog:-0.5:0.3 ^ a castle"
        page.type("#prompt", typed, delay=20)
        page.wait_for_selector(".read-part:nth-child(2) .read-prompt")
        parts = page.eval_on_selector_all(
            ".read-part",
            "ps => ps.map(p => [...p.querySelectorAll('.read-prompt .t')].map(t => t.textContent))",
        )
        assert parts == [["a red barn", "fog"], ["a castle"]]
        found = page.eval_on_selector_all(
            ".read-prompt", "ps => ps.map(p => [p.dataset.weight, p.dataset.stop])"
        )
        assert found == [["2", ""], ["-0.5", "0.3"], ["1", ""]]
        assert "pushes away" in page.text_content(".read-prompt.negative")
        assert page.text_content(".read-label") == "part 1 of 2"
        assert len(asked) < len(typed) / 3, "debounced: not one request per key"
        assert server.http.get("/api/jobs").json()["jobs"] == [], "read before Generate"

        # 30 tokens: the toy CLIPs read 22 and the page says what is kept; ViT-B/32 reads all.
        page.fill("#prompt", " ".join(COLOURS))
        warning = page.wait_for_selector(".read-warn")
        assert "CLIP reads 22 of the 30 tokens" in warning.text_content()
        assert f"it keeps “{' '.join(COLOURS[:22])}”" in warning.text_content()
        page.select_option("#model", "default")
        page.wait_for_selector(".read-ok")
        assert page.query_selector(".read-warn") is None
        assert "within CLIP's 75 tokens" in page.text_content(".read-ok")

        page.fill("#prompt", "a cat:1|")
        error = page.wait_for_selector(".read-error")
        assert "is empty; remove the extra '|'" in error.text_content()
        page.fill("#prompt", "")
        page.wait_for_selector("#prompt-read", state="hidden")
        assert errors == []


def test_generate_with_a_count_makes_a_set_and_notifies_when_hidden(tmp_path, browser):  # noqa: F811
    with ServerProcess(tmp_path / "data") as server:
        page, errors = open_page(browser, server, "granted")
        assert page.evaluate("window.__asked") == [], "not asked without a click"
        page.click("#notify")
        page.wait_for_selector("#notify.on")
        assert page.evaluate("window.__asked") == [True], "asked within the click"

        page.fill("#prompt", "a red circle on a blue background")
        for field, value in {**TOY, "#seed": "100", "#count": "3"}.items():
            page.fill(field, value)
        posted = []
        page.on(
            "response",
            lambda r: (
                r.request.method == "POST" and r.url.endswith("/api/jobs") and posted.append(r)
            ),
        )
        page.evaluate("window.__visibility = 'hidden'")
        page.click("#submit")
        page.wait_for_selector(".set-cell:nth-child(3)")
        assert [r.json()["seed"] for r in posted] == ["100", "101", "102"]
        ids = [r.json()["id"] for r in posted]
        cells = page.eval_on_selector_all(".set-cell", "cs => cs.map(c => c.dataset.id)")
        assert cells == ids

        # All three finish in the grid (a done cell has its image and no status badge).
        page.wait_for_function(
            "() => document.querySelectorAll('.set-cell img').length === 3"
            " && !document.querySelector('.set-cell .status')",
            timeout=300_000,
        )
        assert page.text_content("#set-title") == "3 images · seeds 100 to 102 · 3 of 3 finished"
        srcs = page.eval_on_selector_all(".set-cell img", "is => is.map(i => i.src)")
        assert all(f"/api/jobs/{i}/files/image.png" in s for i, s in zip(ids, srcs, strict=True))
        page.wait_for_function("() => window.__notes.length === 3")
        notes = page.evaluate("window.__notes")
        assert {n["title"] for n in notes} == {"vqclip: done"}
        assert sorted(n["body"].rsplit("seed ", 1)[1] for n in notes) == ["100", "101", "102"]

        page.evaluate("window.__visibility = 'visible'")
        page.click(f".set-cell[data-id='{ids[1]}']")
        page.wait_for_function(
            "() => document.querySelector('#job-meta').textContent.includes('seed 101')"
        )
        assert page.get_attribute(".set-cell.selected", "data-id") == ids[1]

        # Seen while visible: no notification.
        page.fill("#count", "1")
        with page.expect_response("**/api/jobs") as one:
            page.click("#submit")
        page.wait_for_selector(f".card[data-id='{one.value.json()['id']}'] img[src*='thumb.jpg']")
        page.wait_for_selector("#job-status.done")
        assert len(page.evaluate("window.__notes")) == 3
        assert errors == []


def test_no_notification_when_permission_is_denied(tmp_path, browser):  # noqa: F811
    with ServerProcess(tmp_path / "data") as server:
        page, errors = open_page(browser, server, "denied")
        page.click("#notify")
        page.wait_for_function(
            "() => document.querySelector('#notify').textContent.includes('blocked')"
        )
        assert page.evaluate("window.__asked") == [True]
        page.fill("#prompt", "a red circle on a blue background")
        for field, value in TOY.items():
            page.fill(field, value)
        page.evaluate("window.__visibility = 'hidden'")
        with page.expect_response("**/api/jobs") as posted:
            page.click("#submit")
        job_id = posted.value.json()["id"]
        page.wait_for_selector(f".card[data-id='{job_id}'] img[src*='thumb.jpg']", timeout=300_000)
        page.wait_for_selector("#job-status.done")
        assert page.evaluate("window.__notes") == []
        assert errors == []
