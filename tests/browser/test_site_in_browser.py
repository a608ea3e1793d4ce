"""The built site in a real headless Chromium: every page loads without console errors,
images and plots load, Mermaid diagrams render, search finds lessons, solutions unfold, and
the navigation reaches every lesson. Each page's layout is checked at 1280 px (no code block
or output wider than its column, figures sharp and described) and at 390 px (nothing wider
than the phone, every formula visibly wide, figures not white panels in dark mode), and its
text for NaN cells, paths and descriptions of the build machine. The home page's lesson
cards and exercise index, and a lesson's reading time, edit link and glossary links, are
checked too. With COURSE_SCREENSHOTS=1, full-page screenshots at both widths land in
screenshots/ (ignored by git).

Run after `mkdocs build` (``make browser-test`` does both); uses Debian's chromium.
"""

import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

from recsys_course.tooling.catalog import Catalog, load_catalog
from recsys_course.tooling.site import stamp

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

SITE = Path(os.environ.get("COURSE_SITE_DIR", load_catalog().root / "site"))
SHOTS = load_catalog().root / "screenshots"
# The lessons the site was built with (all of them, or a preview's COURSE_SITE_LESSONS).
_BUILT = set((stamp.read(SITE) or {}).get("lessons") or [l.id for l in load_catalog().lessons])
CATALOG = Catalog(load_catalog().root, tuple(l for l in load_catalog().lessons if l.id in _BUILT))
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


def open_page(browser, url, width=1280):
    page = browser.new_page(viewport={"width": width, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(  # a request the browser cancels because the test navigates on is no defect
        "requestfailed",
        lambda r: problems.append(f"request failed: {r.url}") if r.failure != "net::ERR_ABORTED" else None,
    )
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    # Measure the typeset page: raw TeX is wider than the formula MathJax draws from it.
    page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")
    return page, problems


def screenshot(page, name: str) -> None:
    """A full-page screenshot in screenshots/ when COURSE_SCREENSHOTS=1 (for a human to look
    at; ``make browser-test`` otherwise skips them: each costs a second or two of CPU)."""
    if os.environ.get("COURSE_SCREENSHOTS") == "1":
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def lesson_at(path: str):
    """The catalogue's lesson a page path shows, or None."""
    return next((l for l in CATALOG.lessons if path == f"lessons/{l.slug}"), None)


def test_navigation_links_every_lesson_to_a_built_page(browser, base_url):
    """The navigation links every lesson, and each link lands on a page that
    test_page_loads_fits_and_leaks_nothing loads and checks."""
    page, problems = open_page(browser, base_url)
    hrefs = page.eval_on_selector_all("nav a[href]", "els => els.map(e => e.href)")
    page.close()
    assert not problems, problems
    for lesson in CATALOG.lessons:
        targets = [h for h in hrefs if f"lessons/{lesson.slug}/" in h]
        assert targets, f"no navigation link to {lesson.slug}"
        path = targets[0].split("#")[0].removeprefix(base_url).rstrip("/")
        assert path in PAGES, f"{lesson.slug}: the navigation links {targets[0]}, which is not a built page"


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


# Elements of the article that stick out of their column: code blocks and outputs that
# scroll sideways, or anything wider than the page that no scrolling box contains. A table
# with more columns than the column has room for scrolls in its own box instead of breaking
# its words.
OVERFLOWING_BLOCKS = """() => Array.from(document.querySelectorAll(
    'article pre > code, article .cell-output:not(.cell-table)'))
  .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
  .map(e => `${e.scrollWidth}px in ${e.clientWidth}px: ${e.textContent.trim().slice(0, 60)}`)"""
STICKING_OUT = """() => {
  const out = [];
  for (const e of document.querySelectorAll('.md-main *')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= innerWidth + 1) continue;
    // MathJax's copy for screen readers is clipped to nothing: invisible, and the
    // page-width check below still catches it if it ever widens the page again.
    if (e.closest('mjx-assistive-mml')) continue;
    let inScroller = false;
    for (let p = e.parentElement; p && !p.classList.contains('md-main'); p = p.parentElement) {
      const overflow = getComputedStyle(p).overflowX;
      if ((overflow === 'auto' || overflow === 'scroll') && p.getBoundingClientRect().right <= innerWidth + 1) {
        inScroller = true; break;
      }
    }
    if (!inScroller) out.push(`${e.tagName}.${e.className} right=${Math.round(r.right)}`);
  }
  return out.slice(0, 5);
}"""
FIGURES = """() => Array.from(document.querySelectorAll('article img')).map(i => ({
  src: i.getAttribute('src'), alt: (i.getAttribute('alt') || '').trim(),
  natural: i.naturalWidth, shown: i.getBoundingClientRect().width}))"""
# Every formula MathJax drew, with its drawn width and (display maths) its box's width.
FORMULAS = """() => Array.from(document.querySelectorAll('article .arithmatex mjx-container')).map(c => {
  const svg = c.querySelector('svg');
  return {display: c.getAttribute('display') === 'true', drawn: svg ? svg.getBoundingClientRect().width : 0,
          box: c.clientWidth, tex: (c.closest('.arithmatex').getAttribute('data-tex') || c.textContent).slice(0, 50)};
})"""
# Under the dark scheme, what a figure is drawn with: not a white panel.
DARK_FIGURES = """() => { document.body.setAttribute('data-md-color-scheme', 'slate');
  return Array.from(document.querySelectorAll('article img[src$=".png"]')).map(i => getComputedStyle(i).filter); }"""
BUILD_PATH = re.compile(r"(?<![\w.~$])/(?:tmp|root|work|home|Users|private/var)/")
MACHINE = re.compile(r"\d+ CPU cores|load average|\$TMPDIR")  # the build machine's cores, load, paths
NAN = re.compile(r"(?<![\w-])(?:NaN|nan)(?![\w-])")


@pytest.mark.parametrize("path", PAGES or ["<no site>"])
def test_page_loads_fits_and_leaks_nothing(browser, base_url, path):
    """Every built page, once at 1280 px and once at 390 px."""
    url = base_url + (path + "/" if path != "." else "")
    name = "home" if path == "." else path.replace("/", "_")
    page, problems = open_page(browser, url)
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
    task_boxes = page.locator(".admonition.question").count()
    screenshot(page, name)
    page.evaluate("document.querySelectorAll('article details').forEach(d => d.open = true)")
    too_wide = page.evaluate(OVERFLOWING_BLOCKS)
    figures = page.evaluate(FIGURES)
    text = page.evaluate("document.querySelector('article').textContent")
    outputs = page.evaluate(  # prose may name NaN; a result shown to the reader may not
        "[...document.querySelectorAll('article .cell-output, article .output')].map(e => e.textContent).join(' ')"
    )
    page.close()
    assert not broken, f"images that did not load on {path}: {broken}"
    assert not problems, f"{path}: " + "; ".join(problems)
    lesson = lesson_at(path)
    if lesson is not None:
        assert task_boxes == len(lesson.exercises), f"{path}: expected one task box per exercise"
    assert not too_wide, f"{path}: blocks wider than the column at 1280 px: {too_wide[:3]}"
    for figure in figures:
        assert figure["alt"], f"{path}: figure {figure['src']} has no alt text"
        if not figure["src"].endswith(".svg"):
            assert figure["natural"] >= 2 * figure["shown"] - 1, (
                f"{path}: {figure['src']} is {figure['natural']} px wide, shown at "
                f"{figure['shown']:.0f} px: not 2x"
            )
    paths = sorted(set(m.group(0) for m in BUILD_PATH.finditer(text)))
    assert not paths, f"{path}: absolute build-machine paths in the text: {paths}"
    machine = sorted(set(text[max(0, m.start() - 40):m.end() + 10] for m in MACHINE.finditer(text)))
    assert not machine, f"{path}: the page describes the build machine: {machine[:3]}"
    nans = [outputs[max(0, m.start() - 40):m.end() + 10] for m in NAN.finditer(outputs)]
    assert not nans, f"{path}: NaN shown to readers: {nans[:3]}"

    phone, _ = open_page(browser, url, width=390)
    sticking_out = phone.evaluate(STICKING_OUT)
    scroll = phone.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    formulas = phone.evaluate(FORMULAS)
    screenshot(phone, f"{name}-390")
    dark_filters = phone.evaluate(DARK_FIGURES)
    phone.close()
    assert scroll[0] <= scroll[1], f"{path}: the page scrolls sideways at 390 px ({scroll})"
    assert not sticking_out, f"{path}: wider than a 390 px phone: {sticking_out}"
    invisible = [f for f in formulas if f["drawn"] < 3 or (f["display"] and f["box"] < min(f["drawn"], 300) - 1)]
    assert not invisible, f"{path}: formulas without a visible width at 390 px: {invisible[:3]}"
    white = [f for f in dark_filters if "invert" not in f]
    assert not white, f"{path}: figures shown as white panels in dark mode: {len(white)}"


def test_home_page_cards_index_and_pipeline_fit_a_phone(browser, base_url):
    page, _ = open_page(browser, base_url, width=390)
    page.evaluate("document.querySelectorAll('article details').forEach(d => d.open = true)")
    widths = page.evaluate(
        """() => [...document.querySelectorAll('article table, article ol.pipeline, article .lesson-cards')]
          .map(e => [e.tagName, e.scrollWidth, e.clientWidth])"""
    )
    cards = page.evaluate("[...document.querySelectorAll('article .lesson-cards li')].map(e => e.textContent)")
    exercises = page.evaluate("[...document.querySelectorAll('article details table a')].map(e => e.href)")
    clone = page.evaluate("document.querySelector('article').textContent")
    page.close()
    assert any(tag == "TABLE" for tag, *_ in widths) and any(tag == "OL" for tag, *_ in widths)
    assert all(scroll <= client + 1 for _, scroll, client in widths), widths
    assert len(cards) == len(CATALOG.lessons), cards
    for card, lesson in zip(cards, CATALOG.lessons):  # an appendix has no exercises to count
        assert ("points" if lesson.exercises else "appendix, no exercises") in card, card
    assert len(exercises) == len(CATALOG.exercises) and all("#exercise-" in href for href in exercises)
    assert "git clone https://" in clone and "<this repository>" not in clone


def test_lesson_pages_offer_reading_time_edit_link_and_glossary_links(browser, base_url):
    lesson = CATALOG.lessons[0]
    page, _ = open_page(browser, f"{base_url}lessons/{lesson.slug}/")
    reading = page.locator(".reading-time").first.text_content()
    edit = page.locator('a[rel="edit"]').first.get_attribute("href")
    glossary = page.eval_on_selector_all("a.glossary-term", "els => els.map(e => [e.textContent, e.href, e.title])")
    page.goto(glossary[0][1], wait_until="networkidle")
    target = page.evaluate("(id => !!document.getElementById(id))", glossary[0][1].split("#")[1])
    page.close()
    assert re.match(r"About \d+ min to read", reading.strip()), reading
    assert edit.endswith(f"/solutions/{lesson.filename}"), edit
    assert glossary and all(title for _, _, title in glossary), glossary
    assert len({href for _, href, _ in glossary}) == len(glossary), "one link per term and page"
    assert target, f"the glossary has no entry {glossary[0][1]}"
