"""The exposure report in a real browser, offline: Chromium (Debian's package) driven by
Playwright opens ``index.html`` from file:// with every network request refused, and its
charts must render (SVG with a non-zero size and bars) with no console error. A screenshot
is kept in ``tests/artifacts/browser/`` (or ``$FACEAUDIT_TEST_ARTIFACTS/browser/``).

Like tests/test_browser.py: ``$FACEAUDIT_CHROMIUM`` (default ``/usr/bin/chromium``); skipped
without Chromium or Playwright, saying how to install them (failed instead in CI), and
``FACEAUDIT_BROWSER_TESTS=0`` skips it outside CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from faceaudit.research.report import make_report, write_report
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from tests.test_browser import playwright_api as playwright_api  # noqa: F401 (fixture)


def test_the_report_opens_offline_and_its_charts_render(
        playwright_api: Any, built_index: Path, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    _, html_path = write_report(make_report([built_index]), tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    requested: list[str] = []
    problems: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900},
                                          offline=True)

            def route(request_route: Any) -> None:
                url = request_route.request.url
                if url == html_path.as_uri():
                    request_route.continue_()
                else:
                    requested.append(url)
                    request_route.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(html_path.as_uri())
            charts = page.eval_on_selector_all("svg.chart", """svgs => svgs.map(s => {
                const box = s.getBoundingClientRect();
                return {id: s.id, width: box.width, height: box.height,
                        bars: [...s.querySelectorAll('rect.bar')]
                            .filter(r => r.getBBox().width > 0).length,
                        withheld: s.querySelectorAll('text.withheld').length,
                        title: s.querySelector('title')?.textContent ?? ''};
            })""")
            headline = page.inner_text(".headline")
            path = ARTIFACTS / "report" / "report.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
        finally:
            browser.close()

    assert not requested, f"the report asked for resources: {requested}"
    assert not problems, f"the report logged errors: {problems}"
    by_id = {chart["id"]: chart for chart in charts}
    # Every histogram and count table of the report is a chart, each titled for screen readers.
    assert {"all-faces-per-image", "all-face-sizes", "all-scores", "all-licences",
            "all-licence-kinds", "all-uploaders", "all-identities"} <= set(by_id)
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 10, chart
        assert chart["title"], chart
    # Bars are drawn for published counts, "<5" written for withheld ones.
    sizes = report["face_sizes"]["bins"]
    assert by_id["all-face-sizes"]["bars"] == sum(1 for b in sizes if b["count"])
    assert by_id["all-face-sizes"]["withheld"] == sum(1 for b in sizes if b["count"] is None)
    assert by_id["all-licences"]["withheld"] >= 1
    assert f"{report['faces']:,} faces" in headline
    with capsys.disabled():
        print(f"\nreport screenshot: {path}")
