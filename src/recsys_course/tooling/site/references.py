"""The course's one references page, built from every lesson's *Further reading* list.

Each lesson keeps its own list (a learner reading the script sees it); the site collects
them, merges entries that cite the same work in several lessons, and writes each entry the
same way: one list item, on one line, followed by the lessons that cite it.
"""

from __future__ import annotations

import re

ITEM = re.compile(r"^- ", re.MULTILINE)
TITLE = re.compile(r"\*([^*]+)\*")
URL = re.compile(r"<(https?://[^>]+)>|\((https?://[^)]+)\)")
AUTHOR_KEY = re.compile(r"[^a-z0-9]+")


def entries(markdown_list: str) -> list[str]:
    """The items of a Markdown bullet list, each joined into one line."""
    items = ITEM.split(markdown_list.strip())
    return [" ".join(line.strip() for line in item.splitlines()).strip() for item in items if item.strip()]


def work_key(entry: str) -> str:
    """What identifies the cited work: its italic title, else its first link, else the text."""
    title = TITLE.search(entry)
    if title:
        return AUTHOR_KEY.sub(" ", title[1].lower()).strip()
    url = URL.search(entry)
    if url:
        return (url[1] or url[2]).rstrip("/").lower()
    return AUTHOR_KEY.sub(" ", entry.lower()).strip()


def page(cited: list[tuple[str, str, str]]) -> str:
    """Markdown of the references page.

    ``cited`` holds, per lesson, its page path (``lessons/NN_slug.md``), its number and its
    Further-reading list. Of several entries for one work the fullest is kept (a link and
    every author's name beat "et al."), and it lists every lesson that cites it.
    """
    works: dict[str, dict] = {}
    for page_path, lesson_id, markdown_list in cited:
        for entry in entries(markdown_list):
            work = works.setdefault(work_key(entry), {"entry": entry, "lessons": []})
            if _fullness(entry) > _fullness(work["entry"]):
                work["entry"] = entry
            if (lesson_id, page_path) not in work["lessons"]:
                work["lessons"].append((lesson_id, page_path))
    lines = [
        "# References",
        "",
        "Every work the lessons cite in their *Further reading*, once each, with the lessons "
        "that cite it.",
        "",
    ]
    for work in sorted(works.values(), key=lambda w: w["entry"].lower()):
        where = ", ".join(f"[{lesson}]({path})" for lesson, path in sorted(work["lessons"]))
        entry = work["entry"].rstrip()
        entry += "" if entry.endswith((".", ">", ")")) else "."
        lines.append(f"- {entry} *Cited in lesson{'s' if len(work['lessons']) > 1 else ''} {where}.*")
    return "\n".join(lines) + "\n"


def _fullness(entry: str) -> tuple[int, int]:
    return (bool(URL.search(entry)) + ("et al." not in entry), len(entry))
