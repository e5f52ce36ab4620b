"""The report in a real browser: Debian's ``chromium`` driven headless by Playwright.  Every page
loads without a console error, no request leaves the report's directory, the timeline's filters
and zoom and the graph's nodes respond to clicks, and no hostile string of the evidence runs
(``window.__pwned`` is never set).  Screenshots go to the test's temporary directory.

Skipped when Playwright (pip ``playwright``) or the ``chromium`` binary is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_case import make_case

from pensieve.report import build

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian package chromium)")


@pytest.fixture(scope="module")
def report(overlay2_root, tmp_path_factory) -> Path:
    case = make_case(overlay2_root, tmp_path_factory.mktemp("case") / "case.duckdb")
    out = tmp_path_factory.mktemp("browser") / "rep"
    build(str(case), str(out))
    return out


class Watch:
    """What a page did: every request (none is let out), console errors, uncaught exceptions."""

    def __init__(self, page, top: Path) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.top = top.as_uri() + "/"
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.route("**/*", self._route)

    def _route(self, route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith(self.top):
            route.continue_()
        else:
            route.abort()

    def outside(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(self.top)]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, report):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    watch = Watch(pg, report)
    yield pg, watch
    context.close()


def _open(pg, path: Path) -> None:
    pg.goto(path.as_uri())
    pg.wait_for_load_state("load")


def _not_pwned(pg) -> None:
    assert pg.evaluate("window.__pwned") is None


def test_every_page_loads_offline_and_nothing_runs(page, report, tmp_path):
    pg, watch = page
    pages = sorted(report.rglob("*.html"))
    assert len(pages) > 15
    for path in pages:
        _open(pg, path)
        assert pg.title().endswith("pensieve report")
        pg.hover("h1")
        _not_pwned(pg)
        if path.name in (
            "index.html",
            "findings.html",
            "timeline.html",
            "graph.html",
        ) or path.name.startswith("c-"):
            if path.name == "graph.html":
                pg.wait_for_selector("body[data-graph-ready='1']", timeout=30_000)
            pg.screenshot(path=str(tmp_path / f"{path.stem}.png"), full_page=True)
    assert not watch.errors, watch.errors
    assert not watch.outside(), watch.outside()
    assert any(u.endswith("/assets/report.css") for u in watch.requests)


def test_the_summary_filters_containers(page, report):
    pg, watch = page
    _open(pg, report / "index.html")
    rows = pg.locator("#containers tbody tr")
    total = rows.count()
    pg.fill("#container-filter", "c-modified")
    assert pg.locator("#containers tbody tr:not([hidden])").count() == 1 < total
    pg.fill("#container-filter", "")
    assert pg.locator("#containers tbody tr:not([hidden])").count() == total
    assert not watch.errors and not watch.outside()


def _status(pg) -> int:
    return int(pg.text_content("#tl-status").split()[0])


def _wait_status(pg, ok, seconds: float = 10) -> int:
    """The timeline's count once OK(count) holds (the page's CSP forbids wait_for_function's eval)."""
    for _ in range(int(seconds * 20)):
        n = _status(pg)
        if ok(n):
            return n
        pg.wait_for_timeout(50)
    raise AssertionError(f"timeline count stayed {n}")


def test_the_timeline_filters_and_zooms(page, report, tmp_path):
    pg, watch = page
    _open(pg, report / "timeline.html")
    assert _status(pg) == 200
    assert pg.locator("#tl-list tbody tr").count() == 200
    pg.uncheck("input.tl-kind[data-kind='file']")
    assert _status(pg) == 150
    pg.fill("#tl-search", "event 1")
    searched = _wait_status(pg, lambda n: n < 150)  # the search waits for typing to pause
    assert 0 < searched < 150
    pg.click("#tl-reset")
    assert _status(pg) == 200
    pg.click("#tl-zoom-in")
    zoomed = _status(pg)
    assert 0 < zoomed < 200
    box = pg.locator("#tl-track").bounding_box()
    pg.mouse.move(box["x"] + 5, box["y"] + 40)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] / 4, box["y"] + 40, steps=5)
    pg.mouse.up()
    dragged = _status(pg)
    assert 0 < dragged < zoomed
    pg.click("#tl-reset")
    pg.locator("#tl-track rect.bin").first.click()
    assert 0 < _status(pg) < 200
    pg.fill("#tl-from", "2026-11-28T20:33:20Z")
    pg.fill("#tl-to", "2026-11-28T20:33:29.5Z")
    pg.click("#tl-apply")
    assert _status(pg) == 10
    link = pg.locator("#tl-list tbody tr a").first
    href = link.get_attribute("href")
    assert href.startswith("containers/")
    link.click()
    pg.wait_for_load_state("load")
    assert pg.url.endswith(href)
    pg.screenshot(path=str(tmp_path / "timeline-to-container.png"))
    _not_pwned(pg)
    assert not watch.errors, watch.errors
    assert not watch.outside(), watch.outside()


def test_the_graph_highlights_and_navigates(page, report, tmp_path):
    pg, watch = page
    _open(pg, report / "graph.html")
    pg.wait_for_selector("body[data-graph-ready='1']", timeout=30_000)
    # the hostile container: linked to a hash, an address and another container
    index = pg.evaluate(
        "(() => { const d = Report.data(); return d.nodes.findIndex(n => n[0] === 'container' && "
        "n[1].indexOf('alert(1)') >= 0); })()"
    )
    assert index >= 0
    pg.locator(f"#g-node-{index}").dispatch_event("click")
    assert "focus" in pg.get_attribute("#g-svg", "class")
    assert "sel" in pg.get_attribute(f"#g-node-{index}", "class")
    assert pg.locator("#g-svg circle.hl").count() >= 3
    assert "alert(1)" in pg.text_content("#g-panel h3")
    pg.screenshot(path=str(tmp_path / "graph-selected.png"))
    pg.locator("#g-panel a.g-neighbour").first.click()
    assert "sel" not in pg.get_attribute(f"#g-node-{index}", "class")
    pg.uncheck("#g-kind-layer")
    assert pg.locator("#g-svg circle.k-layer").first.is_hidden()
    pg.click("#g-clear")
    assert "focus" not in (pg.get_attribute("#g-svg", "class") or "")
    pg.locator(f"#g-node-{index}").dispatch_event("click")
    href = pg.get_attribute("#g-open", "href")
    pg.click("#g-open")
    pg.wait_for_load_state("load")
    assert pg.url.endswith(href) and "/containers/c-" in pg.url
    _not_pwned(pg)
    assert not watch.errors, watch.errors
    assert not watch.outside(), watch.outside()


def test_a_node_takes_a_real_click(page, report):
    pg, watch = page
    _open(pg, report / "graph.html")
    pg.wait_for_selector("body[data-graph-ready='1']", timeout=30_000)
    box = pg.locator("#g-node-0").bounding_box()
    target = pg.evaluate(
        f"document.elementFromPoint({box['x'] + box['width'] / 2}, {box['y'] + box['height'] / 2}).id"
    )
    pg.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert "sel" in (pg.get_attribute(f"#{target}", "class") or "")
    assert not watch.errors and not watch.outside()
