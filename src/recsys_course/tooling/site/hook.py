"""MkDocs hook (``hooks:`` in mkdocs.yml): execute every lesson and add its page to the site.

* ``on_config`` resolves the dataset once (``$COURSE_DATA``, else TFDS with a loud fallback
  to synthetic data), so every page says which data produced its numbers, and fills the
  "Lessons" navigation section from the catalog.
* ``COURSE_SITE_LESSONS=02,03`` limits the build to those lessons (for previews).
* ``on_config`` also sets ``repo_url``, ``repo_name`` and ``site_url`` from the repository
  the build runs in (:mod:`recsys_course.tooling.site.repository`), so a fork publishes its
  own site with no edit.
* ``on_files`` reuses the cached execution of each ``solutions/NN_*.py`` whose lesson,
  dataset and library are unchanged and executes the others, several at once
  (``$COURSE_SITE_JOBS``, see :class:`~recsys_course.tooling.site.execute.Sharing`),
  logging each start and end. It adds the rendered page, its figures, the learner's file
  ``lessons/NN_*.py`` (for "download this lesson"), the lesson's two notebooks under
  ``notebooks/`` and one de-duplicated references page. A failing cell fails the build,
  naming the lesson.
* ``on_page_markdown`` fills the home page's lesson cards (blurb, runtime as measured when
  each lesson was executed) and exercise index and the clone command, links the glossary's
  lesson numbers, adds each page's reading time and points a lesson's "edit" at its source.
* ``on_page_content`` links the first mention of each glossary term on a page.
* ``on_post_build`` stamps the site so ``make browser-test`` can tell whether it is current.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path

import jupytext
import nbformat
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.lessons import make_stub
from recsys_course.tooling.site import notebooks, pages, references, repository, stamp
from recsys_course.tooling.site.execute import (
    Job, LessonExecutionError, Run, Sharing, cache_key, cache_path, execute_many, support_code_digest,
)
from recsys_course.tooling.site.markdown import Links, format_duration, reader_name, to_markdown
from recsys_course.paths import PACKAGE_DIR

log = logging.getLogger("mkdocs.hooks.course")
EDIT_BRANCH = "main"  # "edit this page" opens the source on this branch (as edit_uri does)
_STATE: dict = {}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    from recsys_course.data import DataSourceError, load_movielens, resolve_source

    catalog = load_catalog(Path(config.config_file_path).parent)
    only = [key for key in os.environ.get("COURSE_SITE_LESSONS", "").split(",") if key.strip()]
    if only:  # authors previewing one lesson: COURSE_SITE_LESSONS=02
        wanted = {catalog.lesson(key.strip()).id for key in only}
        catalog = type(catalog)(catalog.root, tuple(l for l in catalog.lessons if l.id in wanted))
    spec = resolve_source()
    try:
        data = load_movielens(spec)
    except DataSourceError as error:
        raise PluginError(f"cannot load the course data: {error}") from error
    concrete = data.source.removeprefix("local:")
    log.info("Lessons are executed with %s (COURSE_DATA=%s)", data.description, concrete)
    repo = _publishing(config, catalog.root)
    dataset = reader_name(data.source, data.description)
    _STATE.update(
        catalog=catalog, data_spec=concrete, runs={}, dataset=dataset,
        aliases={data.description: dataset},  # outputs name the data, not its path
        repo_url=repo.url if repo else "", repository=repo,
        glossary=pages.load_glossary(config.docs_dir),
    )
    _add_scripts(config)
    lesson_pages = [{f"{l.id} · {l.title}": f"lessons/{l.slug}.md"} for l in catalog.lessons]
    for entry in config.nav or []:
        if isinstance(entry, dict) and "Lessons" in entry:
            entry["Lessons"] = lesson_pages
    return config


def _publishing(config: MkDocsConfig, root: Path) -> repository.Repository | None:
    """Point the site at the repository the build runs in (a fork's own, in its workflow):
    ``repo_url``, ``repo_name``, the copyright's links into the repository and ``site_url``."""
    configured = (config.repo_url or "").rstrip("/")
    repo = repository.from_environment(configured, root)
    if repo is not None and repo.url != configured:
        config.repo_url, config.repo_name = repo.url, repo.name
        if configured and config.copyright:
            config.copyright = config.copyright.replace(configured + "/", repo.url + "/")
    config.site_url = repository.site_url(repo, config.site_url)
    if repo is not None:
        log.info("Repository %s at %s; site address %s", repo.url, repo.revision[:12], config.site_url or "not set")
    return repo


MATHJAX_CDN = "https://unpkg.com/mathjax@3.2.2/es5/tex-svg.js"


def _add_scripts(config: MkDocsConfig) -> None:
    """MathJax after its configuration; Mermaid from the vendored copy when it exists
    (Material then skips its CDN), so diagrams and maths work offline after `make vendor`."""
    vendor = Path(config.docs_dir) / "assets" / "vendor"
    scripts = ["assets/javascripts/mathjax-config.js"]
    if (vendor / "tex-svg.js").exists() and (vendor / "mermaid.min.js").exists():
        scripts += ["assets/vendor/tex-svg.js", "assets/vendor/mermaid.min.js"]
    else:
        log.info("Mermaid and MathJax are not vendored (run `make vendor`): pages use CDNs")
        scripts.append(MATHJAX_CDN)
    for script in scripts:
        if script not in [str(s) for s in config.extra_javascript]:
            config.extra_javascript.append(script)


LESSONS_TABLE = "<!-- lessons-table -->"
CLONE = "<!-- clone-command -->"
LESSON_LINK = re.compile(r"\[([^\]]+)\]\((?:\.\./)?lessons/(\d\d_\w+)\.md\)")
GLOSSARY_LESSONS = re.compile(r"(\*\*[^*\n]+\*\*) \((\d\d(?:, \d\d)*)\)")


def lesson_table() -> str:
    """The home page's lessons (blurb, runtime as measured by this build, exercises) and
    its index of every exercise with its points."""
    catalog, runs = _STATE["catalog"], _STATE["runs"]
    seconds = {key: run.seconds if run else None for key, run in runs.items()}
    return pages.lesson_cards(catalog, seconds, _STATE["dataset"]) + "\n\n" + pages.exercise_index(catalog)


def clone_command() -> str:
    url = _STATE["repo_url"]
    if not url:
        raise PluginError("mkdocs.yml has no repo_url: the home page's clone command needs it")
    return f"git clone {url}.git && cd {url.rsplit('/', 1)[-1]}"


def on_page_markdown(markdown: str, page, config: MkDocsConfig, files: Files) -> str:
    """Fill the home page's markers and link the glossary's lesson numbers."""
    if LESSONS_TABLE in markdown:
        markdown = markdown.replace(LESSONS_TABLE, lesson_table())
    if CLONE in markdown:
        markdown = markdown.replace(CLONE, clone_command())
    if page.file.src_uri == "glossary.md":
        markdown = GLOSSARY_LESSONS.sub(_link_lessons, markdown)
    _reader_affordances(page, markdown)
    if page.file.src_uri not in ("index.md", "glossary.md", "references.md"):
        markdown = pages.with_reading_time(markdown)
    built = {l.slug for l in _STATE["catalog"].lessons}
    # A preview build (COURSE_SITE_LESSONS) lacks some lessons: keep their links' text only.
    return LESSON_LINK.sub(lambda m: m[0] if m[2] in built else m[1], markdown)


def _link_lessons(match: re.Match) -> str:
    by_id = {l.id: l for l in _STATE["catalog"].lessons}  # lessons of this build only
    numbers = [
        f"[{n}](lessons/{by_id[n].slug}.md)" if n in by_id else n for n in match[2].split(", ")
    ]
    return f"{match[1]} ({', '.join(numbers)})"


def _reader_affordances(page, markdown: str) -> None:
    """"Edit this page" leads to a lesson's source (``solutions/NN_*.py``), not to the page
    generated from it; generated pages without a source of their own get no edit link."""
    by_page = {f"lessons/{l.slug}.md": l for l in _STATE["catalog"].lessons}
    lesson = by_page.get(page.file.src_uri)
    if lesson is not None and _STATE["repo_url"]:
        page.edit_url = pages.lesson_edit_url(_STATE["repo_url"], EDIT_BRANCH, lesson)
    elif page.file.generated_by is not None:
        page.edit_url = None


def on_page_content(html: str, page, config: MkDocsConfig, files: Files) -> str:
    """Glossary terms get anchors on their page and links from the first mention elsewhere."""
    from mkdocs.utils import get_relative_url

    terms = _STATE.get("glossary") or []
    if page.file.src_uri == "glossary.md":
        return pages.glossary_anchors(html, terms)
    if not terms or page.is_homepage or files.get_file_from_path("glossary.md") is None:
        return html  # the home page's cards and pipeline carry links enough
    target = files.get_file_from_path("glossary.md").url
    return pages.link_terms(html, terms, get_relative_url(target, page.url))


def on_files(files: Files, config: MkDocsConfig) -> Files:
    catalog = _STATE["catalog"]
    root = catalog.root
    executed = _execute_lessons(catalog)
    cited: list[tuple[str, str, str]] = []  # (lesson page, lesson label, Markdown list)
    repo: repository.Repository | None = _STATE["repository"]
    for lesson in catalog.lessons:
        source = (root / "solutions" / lesson.filename).read_text(encoding="utf-8")
        notebook = executed[lesson.slug]
        _STATE["runs"][lesson.id] = Run.from_notebook(notebook)
        stub_source = make_stub(source, lesson)
        stubs = jupytext.reads(stub_source, fmt="py:percent")
        links = _links(lesson, repo)
        page = to_markdown(lesson, notebook, stubs, _STATE["dataset"], links=links, root=root,
                           aliases=_STATE["aliases"])
        files.append(File.generated(config, f"lessons/{lesson.slug}.md", content=page.markdown))
        files.append(File.generated(config, f"lessons/{lesson.filename}", content=stub_source))
        for version, path in notebooks.notebook_paths(lesson).items():
            generated = notebooks.lesson_notebook(source, lesson, repo, learner=version == "learner")
            files.append(File.generated(config, f"notebooks/{path}", content=notebooks.write(generated)))
        further = further_reading(notebook)
        if further:
            cited.append((f"lessons/{lesson.slug}.md", lesson.id, further))
        for name, data in page.figures.items():
            files.append(File.generated(config, f"lessons/{name}", content=data))
    files.append(File.generated(config, "references.md", content=references.page(cited)))
    return files


def _links(lesson, repo: repository.Repository | None) -> Links:
    """What a lesson page links to: its files on this site, and the repository's copies."""
    paths = notebooks.notebook_paths(lesson)
    return Links(
        download=lesson.filename,
        source=repo.blob(f"solutions/{lesson.filename}") if repo else None,
        notebook=f"../notebooks/{paths['learner']}",
        solutions_notebook=f"../notebooks/{paths['solutions']}",
        colab=repo.colab(paths["learner"]) if repo else None,
    )


def _execute_lessons(catalog) -> dict:
    """Every lesson's executed notebook by slug: cached runs read, the others executed at
    once as ``$COURSE_SITE_JOBS`` allows, with a log line when each starts and ends."""
    root, data_spec = catalog.root, _STATE["data_spec"]
    cache_dir = root / ".cache" / "site"
    digest = support_code_digest(PACKAGE_DIR)
    executed, jobs = {}, []
    for lesson in catalog.lessons:
        source = (root / "solutions" / lesson.filename).read_text(encoding="utf-8")
        key = cache_key(source, data_spec, digest)
        cached = cache_path(cache_dir, lesson.slug, data_spec, key)
        if cached.exists():
            executed[lesson.slug] = nbformat.read(cached, as_version=4)
            run = Run.from_notebook(executed[lesson.slug])
            took = f" (it took {format_duration(run.seconds)} when executed)" if run else ""
            log.info("%s: unchanged, cached run reused%s", lesson.slug, took)
        else:
            jobs.append(Job(lesson.slug, source, key))
    if not jobs:
        return executed
    try:
        sharing = Sharing.choose(os.environ.get("COURSE_SITE_JOBS"), os.cpu_count() or 1, len(jobs))
    except ValueError as error:
        raise PluginError(str(error)) from None
    log.info("Executing %d lesson(s), %s: %s", len(jobs), sharing.describe(), ", ".join(j.name for j in jobs))
    progress = {"started": 0, "done": 0}
    lock = threading.Lock()

    def started(job: Job) -> None:
        with lock:
            progress["started"] += 1
            log.info("[%d/%d] %s: started", progress["started"], len(jobs), job.name)

    def finished(job: Job, notebook, seconds: float) -> None:
        with lock:
            progress["done"] += 1
            log.info("%s: executed in %s (%d of %d done)",
                     job.name, format_duration(seconds), progress["done"], len(jobs))

    began = time.perf_counter()
    try:
        executed.update(execute_many(
            jobs, cwd=root, cache_dir=cache_dir, data_spec=data_spec, sharing=sharing,
            on_start=started, on_done=finished,
        ))
    except LessonExecutionError as error:
        raise PluginError(str(error)) from error
    log.info("Executed %d lesson(s) in %s", len(jobs), format_duration(time.perf_counter() - began))
    return executed


def on_post_build(config: MkDocsConfig) -> None:
    catalog = _STATE["catalog"]
    stamp.write(Path(config.site_dir), catalog.root, _STATE["data_spec"], [l.id for l in catalog.lessons])


def further_reading(notebook) -> str:
    """The list under a lesson's "## Further reading" heading, without its closing "Next:"."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and "## Further reading" in cell.source:
            text = cell.source.split("## Further reading", 1)[1]
            return text.split("\nNext:", 1)[0].strip()
    return ""
