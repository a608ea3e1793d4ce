"""The built site in a real headless Chromium: every page loads without console errors,
images and plots load, Mermaid diagrams render, search finds lessons, solutions unfold, and
the navigation reaches every lesson. Screenshots land in screenshots/ (ignored by git).

Run after `mkdocs build` (``make browser-test`` does both); uses Debian's chromium.
"""

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from recsys_course.catalog import load_catalog

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

CATALOG = load_catalog()
SITE = Path(os.environ.get("COURSE_SITE_DIR", CATALOG.root / "site"))
SHOTS = CATALOG.root / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without these, Chromium keeps calling Google services that this network refuses.
QUIET = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

PAGES = sorted(
    p.parent.relative_to(SITE).as_posix() for p in SITE.rglob("index.html")
    if "search" not in p.parts and p.parent != SITE / "assets"
) if SITE.exists() else []


@pytest.fixture(scope="module")
def base_url():
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site in {SITE}: run `make site-build` first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SITE))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield instance
        instance.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    return page, problems


@pytest.mark.parametrize("path", PAGES or ["<no site>"])
def test_page_loads_cleanly_with_images_and_diagrams(browser, base_url, path):
    page, problems = open_page(browser, base_url + (path + "/" if path != "." else ""))
    if page.locator(".mermaid").count():
        # Material draws each diagram into a closed shadow root of a div that replaces the
        # <pre class="mermaid"> holding the source: wait for every one to be replaced.
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.mermaid'))"
            ".every(e => e.tagName === 'DIV' && e.getBoundingClientRect().height > 20)",
            timeout=15000,
        )
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"
    )
    SHOTS.mkdir(exist_ok=True)
    name = "home" if path == "." else path.replace("/", "_")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    page.close()
    assert not broken, f"images that did not load on {path}: {broken}"
    assert not problems, f"{path}: " + "; ".join(problems)


def test_navigation_reaches_every_lesson(browser, base_url):
    page, problems = open_page(browser, base_url)
    for lesson in CATALOG.lessons:
        link = page.locator(f'nav a[href*="lessons/{lesson.slug}/"]').first
        assert link.count(), f"no navigation link to {lesson.slug}"
        page.goto(link.get_attribute("href") if link.get_attribute("href").startswith("http")
                  else base_url + link.get_attribute("href").lstrip("./"), wait_until="networkidle")
        assert lesson.title.split(":")[0] in page.title() or page.locator("h1").count()
        assert page.locator(".admonition.question").count() == len(lesson.exercises), (
            f"{lesson.slug}: expected one task box per exercise"
        )
        page.goto(base_url, wait_until="networkidle")
    page.close()
    assert not problems, problems


def test_search_finds_the_lesson(browser, base_url):
    annoy = [l.slug for l in CATALOG.lessons if "annoy" in l.slug]
    query, expected = ("annoy", annoy[0]) if annoy else ("sparsity", "00_introduction")
    page, _ = open_page(browser, base_url)
    page.click("input[data-md-component=search-query]")
    page.keyboard.type(query)
    page.wait_for_selector(".md-search-result__item", state="attached", timeout=15000)
    links = page.eval_on_selector_all(".md-search-result__item a", "els => els.map(e => e.href)")
    page.close()
    assert any(expected in link for link in links), f"searching {query!r} gave {links[:5]}"


def test_a_solution_unfolds_on_click(browser, base_url):
    lesson = CATALOG.lessons[0]
    page, _ = open_page(browser, f"{base_url}lessons/{lesson.slug}/")
    details = page.locator("details.success").first
    assert details.get_attribute("open") is None, "solutions start folded"
    details.locator("summary").click()
    page.wait_for_function("d => d.open", arg=details.element_handle())
    assert details.locator("code").first.is_visible()
    page.close()
