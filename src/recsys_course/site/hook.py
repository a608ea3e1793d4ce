"""MkDocs hook (``hooks:`` in mkdocs.yml): execute every lesson and add its page to the site.

* ``on_config`` resolves the dataset once (``$COURSE_DATA``, else TFDS with a loud fallback
  to synthetic data), so every page says which data produced its numbers, and fills the
  "Lessons" navigation section from the catalog.
* ``COURSE_SITE_LESSONS=02,03`` limits the build to those lessons (for previews).
* ``on_files`` executes each ``solutions/NN_*.py`` (or reuses the cached execution when the
  lesson, the dataset and the support code are unchanged) and adds the rendered page and its
  figures as generated files. A failing cell fails the build.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import jupytext
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from recsys_course.catalog import load_catalog
from recsys_course.lessons import make_stub
from recsys_course.site.execute import LessonExecutionError, cache_key, execute, support_code_digest
from recsys_course.site.markdown import to_markdown

log = logging.getLogger("mkdocs.hooks.course")
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
    _STATE.update(catalog=catalog, data_spec=concrete, dataset=data.description)
    _add_scripts(config)
    lesson_pages = [{l.title: f"lessons/{l.slug}.md"} for l in catalog.lessons]
    for entry in config.nav or []:
        if isinstance(entry, dict) and "Lessons" in entry:
            entry["Lessons"] = lesson_pages
    return config


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


def on_page_markdown(markdown: str, page, config: MkDocsConfig, files: Files) -> str:
    """Replace the home page's marker with the lesson table, built from the catalog."""
    if LESSONS_TABLE not in markdown:
        return markdown
    rows = ["| lesson | expected CPU time | exercises | points |", "|---|---|---|---|"]
    for lesson in _STATE["catalog"].lessons:
        rows.append(
            f"| [{lesson.id} · {lesson.title}](lessons/{lesson.slug}.md) | about {lesson.minutes} min "
            f"| {len(lesson.exercises)} | {lesson.points} |"
        )
    return markdown.replace(LESSONS_TABLE, "\n".join(rows))


def on_files(files: Files, config: MkDocsConfig) -> Files:
    catalog = _STATE["catalog"]
    root = catalog.root
    digest = support_code_digest(Path(__file__).resolve().parents[1])
    references = ["# References", "", "What each lesson cites, collected from its *Further reading*."]
    for lesson in catalog.lessons:
        source = (root / "solutions" / lesson.filename).read_text(encoding="utf-8")
        key = cache_key(source, _STATE["data_spec"], digest)
        started = time.perf_counter()
        try:
            executed, cached = execute(
                source, name=lesson.slug, cwd=root, cache_dir=root / ".cache" / "site",
                key=key, data_spec=_STATE["data_spec"],
            )
        except LessonExecutionError as error:
            raise PluginError(str(error)) from error
        took = time.perf_counter() - started
        log.info("%s: %s in %.1f s", lesson.slug, "cached" if cached else "executed", took)
        stubs = jupytext.reads(make_stub(source, lesson), fmt="py:percent")
        page = to_markdown(lesson, executed, stubs, _STATE["dataset"])
        files.append(File.generated(config, f"lessons/{lesson.slug}.md", content=page.markdown))
        cited = further_reading(executed)
        if cited:
            references += ["", f"## [{lesson.id} · {lesson.title}](lessons/{lesson.slug}.md)", "", cited]
        for name, data in page.figures.items():
            files.append(File.generated(config, f"lessons/{name}", content=data))
    files.append(File.generated(config, "references.md", content="\n".join(references) + "\n"))
    return files


def further_reading(notebook) -> str:
    """The list under a lesson's "## Further reading" heading, without its closing "Next:"."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and "## Further reading" in cell.source:
            text = cell.source.split("## Further reading", 1)[1]
            return text.split("\nNext:", 1)[0].strip()
    return ""
