"""The subject's whole journey in a real browser: Chromium (Debian's package) driven by
Playwright, against a real uvicorn server on 127.0.0.1.

Upload a selfie, see the photos found with their provenance and the other faces blurred,
select, ask for removal, read the letter listing the exact URLs, download the request, search
again: the photos are gone. A screenshot of each step is kept in ``tests/artifacts/browser/``
(or ``$FACEAUDIT_TEST_ARTIFACTS/browser/``) and its path printed.

Playwright's own browser download is not used: it launches Debian's ``chromium``
(``$FACEAUDIT_CHROMIUM``, default ``/usr/bin/chromium``). Without it the test is skipped with
a line saying how to install it, except in CI (``CI`` set), where it fails. Outside CI,
``FACEAUDIT_BROWSER_TESTS=0`` skips it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFilter

from faceaudit.imaging import decode_image
from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings
from tests.live_server import serve
from tests.photos import photos_of
from tests.preconditions import CHROMIUM, require_browser

ARTIFACTS = Path(os.environ.get("FACEAUDIT_TEST_ARTIFACTS")
                 or Path(__file__).parent / "artifacts") / "browser"
# What works in a container without a display, a sandbox or the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
CONTACT = "maintainer@example.org"  # the demo dataset's contact, as an operator configures it
SUBJECT = "yao@example.org"
TIMEOUT_MS = 20_000


@pytest.fixture
def playwright_api() -> Any:
    """The sync Playwright module. Without Playwright or Chromium the test is skipped, saying
    how to install them (in CI it fails); outside CI, FACEAUDIT_BROWSER_TESTS=0 skips it."""
    return require_browser()


class Shots:
    """Numbered full-page screenshots of the journey's steps."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page, self.folder = page, folder
        self.paths: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()

    def take(self, name: str) -> None:
        path = self.folder / f"{len(self.paths) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)


@pytest.fixture
def base_url(built_index: Path, engine: FaceEngine, tmp_path: Path) -> Iterator[str]:
    settings = ServiceSettings(index=built_index, device="cpu", rate_limit=None,
                               daily_limit=None, state_dir=tmp_path / "state",
                               dataset_contacts={"faceaudit-demo": CONTACT})
    with serve(create_app(settings, engine=engine)) as base:
        yield base


def _faces_in(jpeg: bytes, engine: FaceEngine) -> list[tuple[float, float, float, float]]:
    return [face.bbox for face in engine.detect_all(decode_image(jpeg))]


def _as_thumbnail(photo: Path, size: tuple[int, int]) -> bytes:
    """The photo at the thumbnail's size, without blurring: what the page would show without
    it."""
    out = io.BytesIO()
    Image.open(photo).convert("RGB").resize(size, Image.Resampling.LANCZOS).save(out, "JPEG")
    return out.getvalue()


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def _check_bystanders_blurred(match: dict[str, Any], thumbnail: bytes, photo: Path,
                              engine: FaceEngine) -> int:
    """Asserts that the detector finds no face but the matched one in the thumbnail the page
    showed; returns how many faces it finds in the same photo (the file ``photo``) unblurred at
    that size."""
    size = Image.open(io.BytesIO(thumbnail)).size
    scale = size[0] / match["width"]
    matched = tuple(v * scale for v in match["bbox"])
    found = _faces_in(thumbnail, engine)
    strangers = [box for box in found if _overlap(box, matched) < 0.5]
    assert not strangers, f"{photo}: faces of other people not blurred at {strangers}"
    return len(_faces_in(_as_thumbnail(photo, size), engine))


def _card_texts(page: Any) -> list[dict[str, Any]]:
    return list(page.eval_on_selector_all("#grid .card", """cards => cards.map(c => ({
        key: c.querySelector('code').title,
        meaning: c.querySelector('.meaning').textContent,
        provenance: c.querySelector('.provenance').innerText,
        link: c.querySelector('.provenance a')?.href ?? null,
        checked: c.querySelector('input[type=checkbox]')?.checked ?? null,
    }))"""))


def _until(page: Any, expression: str) -> None:
    """Wait until ``expression`` is truthy in the page. Not page.wait_for_function: its
    polling evaluates strings inside the page, which the page's CSP (rightly) forbids."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {TIMEOUT_MS / 1000:.0f} s: {expression}")
        time.sleep(0.05)


def _search(page: Any, action: Any) -> dict[str, Any]:
    with page.expect_response(lambda r: r.url.endswith("/api/search")) as searched:
        action()
    response = searched.value
    assert response.status == 200, response.text()
    result: dict[str, Any] = response.json()
    _until(page, "document.getElementById('status').textContent.startsWith('Searched')")
    return result


def _all_images_loaded(page: Any) -> None:
    for img in page.query_selector_all("#grid img"):
        img.scroll_into_view_if_needed()
    _until(page, """[...document.querySelectorAll('#grid img')]
        .every(i => i.complete && i.naturalWidth > 0)""")
    page.evaluate("window.scrollTo(0, 0)")


def _letters_urls(match: dict[str, Any]) -> list[str]:
    source = match["provenance"]
    return [url for url in (source["page_url"], source["image_url"]) if url]


def test_the_subjects_journey_in_a_real_browser(
        playwright_api: Any, base_url: str, collection: tuple[Path, Path], engine: FaceEngine,
        built_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    photos, selfies = collection
    selfie = selfies / "yaoming.jpg"
    elsewhere: list[str] = []  # any request to another origin: the page must need none
    problems: list[str] = []  # console errors and uncaught exceptions of the page
    thumbnails: dict[str, Any] = {}  # path -> the response the page got

    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, accept_downloads=True, viewport={"width": 1280, "height": 900},
            permissions=["clipboard-read", "clipboard-write"])
        try:
            def route(request_route: Any) -> None:
                if request_route.request.url.startswith(("data:", "blob:", base_url)):
                    request_route.continue_()
                else:
                    elsewhere.append(request_route.request.url)
                    request_route.abort()

            context.route("**/*", route)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("response", lambda r: thumbnails.__setitem__(r.url[len(base_url):], r)
                    if "/api/thumbnails/" in r.url else None)
            shots = Shots(page, ARTIFACTS)

            # 1. The page: the camera first.
            page.goto(f"{base_url}/")
            _until(page, "document.getElementById('threshold-guide').textContent")
            pickers = page.eval_on_selector_all(".pickers input[type=file]", """inputs =>
                inputs.map(i => [i.id, i.getAttribute('capture')])""")
            assert pickers[0] == ["camera", "user"]
            shots.take("page")
            # On a phone's screen the pickers stack, the camera on top.
            page.set_viewport_size({"width": 390, "height": 844})
            camera = page.locator("label[for=camera]").bounding_box()
            chooser = page.locator("label[for=file]").bounding_box()
            assert camera and chooser and camera["y"] + camera["height"] <= chooser["y"]
            shots.take("phone")
            page.set_viewport_size({"width": 1280, "height": 900})

            # 2. A selfie: nothing is sent until Search; then the photos found, each with its
            # provenance and what it means.
            page.set_input_files("#camera", str(selfie))
            assert page.get_attribute("#selfies .chip img", "src").startswith("blob:")
            result = _search(page, lambda: page.click("#again"))
            matches = result["matches"]
            found = photos_of(matches, built_index)  # the results name no path: keys only
            assert set(found) == {
                "team/players.jpg", "street/group_with_yao_behind.jpg",
                "portraits/yao_flipped.jpg", "portraits/yao_bright_small.jpg"}
            assert all(m["match_id"] for m in matches)
            _all_images_loaded(page)
            cards = _card_texts(page)
            assert [c["key"] for c in cards] == [m["image_key"] for m in matches]
            for card, match in zip(cards, matches, strict=True):
                source = match["provenance"]
                assert source["dataset"] in card["provenance"]
                assert source["uploader_name"] in card["provenance"]
                assert card["link"] == (source["page_url"] or source["image_url"])
                expected = match.get("meaning") or {
                    "strong": "This is very likely you",
                    "possible": "Possibly you: check the photo"}[match["strength"]]
                assert card["meaning"] == expected
                assert card["checked"] is True  # all selected by default
            # The slider shows the threshold used, unrounded, and asks for nothing yet.
            used = page.input_value("#threshold")
            assert float(used) == result["threshold"]
            assert page.text_content("#threshold-value") == \
                f"{result['threshold']:.3f}".rstrip("0").ljust(4, "0")
            assert "Search again" not in page.text_content("#threshold-guide")
            shots.take("results")

            # 3. Every face but the matched one blurred, in what the page received.
            unblurred = [
                _check_bystanders_blurred(m, thumbnails[m["thumbnail"]].body(), photos / photo,
                                          engine)
                for m, photo in zip(matches, found, strict=True)]
            assert max(unblurred) >= 2, "no photo with other faces: the check proved nothing"

            # 4. Keep one photo out of the request, ask for removal of the others.
            kept = matches[-1]
            page.uncheck("#grid .card:last-child input[type=checkbox]")
            assert page.text_content("#selection") == f"{len(matches) - 1} of " \
                f"{len(matches)} photos selected."
            page.fill("#contact", SUBJECT)
            shots.take("selected")
            with page.expect_response(lambda r: r.url.endswith("/api/removals")) as asked:
                page.click("#remove")
            assert asked.value.status == 201, asked.value.text()
            removal = asked.value.json()
            page.wait_for_selector("#removal-done:not([hidden])")
            removed = [m for m in matches if m is not kept]
            assert {p["image_key"] for d in removal["datasets"] for p in d["photos"]} == \
                {m["image_key"] for m in removed}
            letter = page.input_value("#letters textarea")
            for match in removed:
                for url in _letters_urls(match):
                    assert url in letter, f"the letter does not list {url}"
            assert SUBJECT in letter
            mailto = page.get_attribute("#letters a[href^='mailto:']", "href")
            assert mailto is not None and mailto.startswith(f"mailto:{CONTACT}")
            assert "hidden from every search" in page.text_content("#removal-summary")
            page.click("#letters button")
            _until(page, "document.querySelector('#letters .copied').textContent")
            assert page.text_content("#letters .copied") == "Copied."
            assert page.evaluate("navigator.clipboard.readText()") == letter
            # The link to follow the request, with words telling to keep it; it opens.
            assert page.is_visible("#status-link")
            assert "Keep this link" in page.text_content("#status-keep")
            status_url = page.get_attribute("#status-link", "href")
            assert status_url == f"{base_url}{removal['status_url']}"
            assert page.text_content("#status-link") == status_url
            shots.take("removal-requested")
            with context.expect_page() as opened:
                page.click("#status-link")
            status_page = opened.value
            status_page.wait_for_load_state()
            assert status_page.url == status_url
            assert status_page.text_content("h2") == "Status: received"
            shown = status_page.text_content("dl")
            assert removal["request_id"] in shown and f"Photos{len(removed)}" in shown
            assert SUBJECT not in status_page.content()
            status_page.close()

            # 5. The request as files: JSON and CSV, both listing the photos.
            files = {}
            for kind in ("json", "csv"):
                with page.expect_download() as downloaded:
                    page.click(f"#download-{kind}")
                saved = ARTIFACTS / downloaded.value.suggested_filename
                downloaded.value.save_as(saved)
                files[kind] = saved.read_text(encoding="utf-8")
            assert removal["request_id"] in json.dumps(json.loads(files["json"]))
            rows = list(csv.DictReader(io.StringIO(files["csv"])))
            assert {row["image_key"] for row in rows} == {m["image_key"] for m in removed}

            # 6. Search again: only the photo kept out of the request comes back.
            again = _search(page, lambda: page.click("#again"))
            assert [m["image_key"] for m in again["matches"]] == [kept["image_key"]]
            _all_images_loaded(page)
            shots.take("searched-again")

            # 7. Remove that one too: nothing left to find.
            with page.expect_response(lambda r: r.url.endswith("/api/removals")) as asked:
                page.click("#remove")
            assert asked.value.status == 201
            page.wait_for_selector("#removal[hidden]", state="attached")
            last = _search(page, lambda: page.click("#again"))
            assert last["matches"] == []
            assert "No photo" in page.text_content("#results-title")
            # The slider goes no lower than the default threshold, the lowest the server
            # searches at; moving it away from the threshold used asks to search again.
            info = page.evaluate("fetch('/api/info').then(r => r.json())")
            assert float(page.get_attribute("#threshold", "min")) == \
                info["default_threshold"] == info["min_threshold"] == last["threshold"]
            page.focus("#threshold")
            for key in ("Home", "ArrowLeft", "PageDown"):
                page.keyboard.press(key)
                assert float(page.input_value("#threshold")) == info["default_threshold"], key
            page.keyboard.press("ArrowRight")
            assert "Search again to apply it." in page.text_content("#threshold-guide")
            shots.take("all-gone")

            # 8. The API's documentation, offline.
            page.goto(f"{base_url}/docs")
            page.locator(".opblock-summary-path", has_text="/api/search").first.wait_for()
            assert "Unable to render" not in page.content()
            shots.take("docs")
        finally:
            context.close()

    assert not elsewhere, f"the page asked for other origins: {elsewhere}"
    assert not problems, f"the page logged errors: {problems}"
    with capsys.disabled():
        print(f"\nbrowser journey: {time.monotonic() - started:.1f} s; screenshots:")
        for path in shots.paths:
            print(f"  {path}")


@pytest.fixture
def operated_url(built_index: Path, engine: FaceEngine, tmp_path: Path) -> Iterator[str]:
    """A service whose operator raised the threshold to 0.5: blurred selfies of Yao Ming then
    miss one of his photos, which the photos he confirms find."""
    settings = ServiceSettings(index=built_index, device="cpu", rate_limit=None,
                               daily_limit=None, state_dir=tmp_path / "state", threshold=0.5)
    with serve(create_app(settings, engine=engine)) as base:
        yield base


def _blurred(portrait: Image.Image, folder: Path) -> list[Path]:
    """Two blurred selfies of one person (the second cropped): (a blurred photo of a person
    scores lower against their other photos)."""
    w, h = portrait.size
    crop = portrait.crop((w // 10, h // 10, w - w // 10, h - h // 20))
    paths = [folder / "blurred.jpg", folder / "blurred-crop.jpg"]
    for image, path in zip((portrait, crop), paths, strict=True):
        image.filter(ImageFilter.GaussianBlur(4)).save(path, quality=90)
    return paths


def test_several_selfies_and_confirmed_photos_in_a_real_browser(
        playwright_api: Any, operated_url: str, collection: tuple[Path, Path],
        built_index: Path, tmp_path: Path) -> None:
    photos, given = collection
    first, second = _blurred(Image.open(given / "yaoming.jpg").convert("RGB"), tmp_path)
    sent: list[str] = []  # the searches the page made (their multipart bodies of Blobs are
    # not readable here: what they held is what the server answers it counted)
    problems: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: sent.append(r.url)
                    if r.url.endswith("/api/search") else None)
            shots = Shots(page, ARTIFACTS.parent / "browser-templates")
            page.goto(f"{operated_url}/")
            _until(page, "document.getElementById('threshold-guide').textContent")

            # 1. One blurred selfie: three of Yao's four photos.
            page.set_input_files("#file", str(first))
            one = _search(page, lambda: page.click("#again"))
            assert one["template"]["selfies"] == 1
            # ...and the fourth, found by the automatic expansion (the three joined it), marked.
            joined = one["template"]["expanded"]
            assert joined >= 1
            expanded = {path for path, m in zip(photos_of(one["matches"], built_index),
                                                one["matches"], strict=True) if m["expanded"]}
            assert expanded == {"team/players.jpg"}
            assert page.locator("#grid .card.expanded").count() == 1
            assert page.text_content("#grid .card.expanded .badge") == (
                "Found with your other photos")
            assert f"and {joined} photo" in page.text_content("#status")

            # 2. A second selfie and a third that is removed again: chips, nothing sent.
            page.set_input_files("#file", [str(second), str(given / "tom_hanks.png")])
            assert page.locator("#selfies .chip").count() == 3 and len(sent) == 1
            page.click("#selfies .chip:last-child .remove")
            chips = page.eval_on_selector_all("#selfies .chip img", "i => i.map(x => x.src)")
            assert len(chips) == 2 and all(src.startswith("blob:") for src in chips)
            shots.take("two-selfies")
            two = _search(page, lambda: page.click("#again"))
            assert two["template"] == {**two["template"], "selfies": 2, "confirmed": 0}
            assert len(sent) == 2
            assert "with 2 selfies," in page.text_content("#status")

            # 3. "This is me" on one photo only, and search again with it: the photo his
            # selfies missed is found, and marked new.
            found = photos_of(two["matches"], built_index)
            mine = found.index("portraits/yao_flipped.jpg")
            for number, box in enumerate(page.query_selector_all("#grid .card .pick input")):
                if number != mine:
                    box.uncheck()
            assert page.text_content("#selection").startswith("1 of ")
            again = _search(page, lambda: page.click("#confirm-search"))
            assert again["template"] == {**again["template"], "selfies": 2, "confirmed": 1,
                                         "confirmed_sent": 1}
            assert "with 2 selfies and 1 photo you confirmed" in page.text_content("#status")
            new = {path for path, m in zip(photos_of(again["matches"], built_index),
                                           again["matches"], strict=True) if m["new"]}
            assert new == {"team/players.jpg"}
            _all_images_loaded(page)
            marked = page.eval_on_selector_all(
                "#grid .card.new code", "codes => codes.map(c => c.title)")
            assert marked == [m["image_key"] for m in again["matches"] if m["new"]]
            assert page.locator("#grid .card.new .badge").count() == 1
            shots.take("confirmed")
        finally:
            context.close()
    assert not problems, f"the page logged errors: {problems}"
