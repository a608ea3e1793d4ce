"""What the site adds around the lessons for readers: the home page's lesson cards and
exercise index, each page's reading time and edit link, and glossary links.

The hook (:mod:`recsys_course.tooling.site.hook`) calls these; each is a pure function of
the catalog, a page's Markdown or HTML, so they are tested without building the site.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from recsys_course.tooling.catalog import Catalog, Lesson
from recsys_course.tooling.site.markdown import exercise_anchor, format_duration

# ------------------------------------------------------------------------------ home page


def lesson_cards(catalog: Catalog, seconds: dict[str, float | None], dataset: str) -> str:
    """One card per lesson: title, one-line blurb, runtime measured by this build, exercises."""
    cards = []
    for lesson in catalog.lessons:
        took = seconds.get(lesson.id)
        runtime = f"runs in {format_duration(took)}" if took else "runtime not measured"
        exercises = (f"{len(lesson.exercises)} exercises, {lesson.points} points" if lesson.exercises
                     else "appendix, no exercises")
        cards.append(
            f"-   **[{lesson.id} · {lesson.title}](lessons/{lesson.slug}.md)**\n\n"
            + (f"    {lesson.blurb}\n\n" if lesson.blurb else "")
            + f"    :material-timer-outline: {runtime} · :material-pencil-outline: {exercises}"
        )
    note = (
        "Runtimes were measured when this site was built: each lesson run top to bottom with "
        f"{dataset}. Your machine and data will differ."
    )
    return '<div class="grid cards lesson-cards" markdown>\n\n' + "\n\n".join(cards) + "\n\n</div>\n\n" + note


def exercise_index(catalog: Catalog) -> str:
    """Every exercise with its points, linked to its task box, folded under one title."""
    exercises = catalog.exercises
    total = sum(e.points for e in exercises)
    by_id = {lesson.id: lesson for lesson in catalog.lessons}
    rows = ["| Exercise | Points |", "|---|--:|"]
    for exercise in exercises:
        lesson = by_id[exercise.lesson_id]
        link = f"lessons/{lesson.slug}.md#{exercise_anchor(exercise.id)}"
        rows.append(f"| [{exercise.id} · {exercise.title}]({link}) | {exercise.points} |")
    body = "\n".join(rows)
    title = f"Every exercise: {len(exercises)} exercises, {total} points"
    return f'??? abstract "{title}"\n\n' + "\n".join("    " + row for row in body.splitlines())


# --------------------------------------------------------------------------- reading time

WORDS_PER_MINUTE = 200  # prose: a careful reader of technical text
CODE_LINES_PER_MINUTE = 30  # code shown on the page (folded solutions and hints left out)
FENCE = re.compile(r"^(\s*)(```+|~~~+)")
FOLDED = re.compile(r'^(\s*)\?\?\?\+? (?:success|tip)\b')
HTML_BLOCK = re.compile(r"(?s)<div class=\"cell-output cell-table[^>]*>.*?</div>")
WORD = re.compile(r"[A-Za-z0-9][\w'’-]*")


def reading_minutes(markdown: str) -> int:
    """Minutes to read a page: its prose at :data:`WORDS_PER_MINUTE` plus the code it shows
    at :data:`CODE_LINES_PER_MINUTE` (tables, folded solutions and hints not counted)."""
    markdown = HTML_BLOCK.sub("", markdown)
    words = code = 0
    fence: str | None = None
    folded_indent: int | None = None
    for line in markdown.splitlines():
        indent = len(line) - len(line.lstrip())
        if folded_indent is not None:
            if not line.strip() or indent > folded_indent:
                continue
            folded_indent = None
        if fence is None and FOLDED.match(line):
            folded_indent = indent
            continue
        opening = FENCE.match(line)
        if opening:
            marker = opening[2]
            if fence is None:
                fence = marker
                continue
            if marker.startswith(fence):
                fence = None
                continue
        if fence is not None:
            code += bool(line.strip()) and not fence.startswith("```text")
            continue
        words += len(WORD.findall(re.sub(r"<[^>]+>|\]\([^)]*\)", " ", line)))
    return max(1, round(words / WORDS_PER_MINUTE + code / CODE_LINES_PER_MINUTE))


H1 = re.compile(r"(?m)^# .+$")


def with_reading_time(markdown: str) -> str:
    """``markdown`` with "About N min to read" under its title (unchanged without a title)."""
    title = H1.search(markdown)
    if title is None:
        return markdown
    minutes = reading_minutes(markdown)
    line = f'<p class="reading-time" markdown="span">:material-clock-outline: About {minutes} min to read</p>'
    return markdown[: title.end()] + "\n\n" + line + markdown[title.end():]


# ------------------------------------------------------------------------------ glossary

# Terms whose name does not split into the phrases a text uses.
ALIASES = {
    "Explicit / implicit feedback": ["explicit feedback", "implicit feedback"],
    "SavedModel / signature": ["SavedModel"],
    "Servable / version policy": ["servable", "version policy"],
    "Candidate generation / retrieval": ["candidate generation"],
}
TERM_LINE = re.compile(r"(?m)^\*\*(?P<term>[^*\n]+)\*\*(?: \([^)\n]*\))?\n: (?P<definition>(?:.+\n?)(?:  .+\n?)*)")


@dataclass(frozen=True)
class Term:
    name: str  # as the glossary writes it: "Recall@k"
    anchor: str  # its id on the glossary page: "recall-at-k"
    pattern: re.Pattern  # matches its mentions in a text
    summary: str  # the first sentence of its definition, for the link's tooltip


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("@", " at ")).strip("-")


def _phrase_pattern(phrase: str) -> str:
    """A regex for one phrase: ``@k`` optional (and any cutoff), plural optional,
    acronyms and CamelCase names matched with their case, other words in any case."""
    cutoff = phrase.endswith("@k")
    phrase = phrase.removesuffix("@k")
    plural = not cutoff and phrase[-1:] == "s" and not phrase.isupper() and len(phrase) > 4
    if plural:
        phrase = phrase[:-1]
    words = r"[\s-]+".join(re.escape(word) for word in phrase.split())
    cased = any(c.isupper() for c in phrase[1:])
    if cased:  # keep the case, but let the first letter start a sentence
        words = f"[{re.escape(phrase[0].upper())}{re.escape(phrase[0].lower())}]" + words[len(re.escape(phrase[0])):]
    else:
        words = "(?i:" + words + ")"
    suffix = r"(?:@(?:k|\d+))?" if cutoff else (r"s?" if plural else r"(?:s|es)?")
    return words + suffix


def _phrases(name: str) -> list[str]:
    if name in ALIASES:
        return ALIASES[name]
    phrases = []
    for part in name.split(" / "):
        expanded = re.match(r"^(?P<long>.*?) \((?P<short>[A-Z]+)\)(?P<rest>.*)$", part)
        if expanded:  # "Approximate nearest-neighbour (ANN) index": both spellings
            phrases += [expanded["long"] + expanded["rest"], expanded["short"] + expanded["rest"]]
        else:
            phrases.append(part)
    return [p.strip() for p in phrases if p.strip()]


def parse_glossary(markdown: str) -> list[Term]:
    """The terms of docs/glossary.md (``**Term** (lessons)`` then ``: definition``)."""
    terms = []
    for match in TERM_LINE.finditer(markdown):
        name = match["term"].strip()
        definition = " ".join(match["definition"].split())
        first = re.split(r"(?<=[.!?])\s+(?=[A-Z])", definition, maxsplit=1)[0]
        first = re.sub(r"\$[^$]*\$", "…", first).replace("`", "")
        alternatives = "|".join(_phrase_pattern(p) for p in sorted(_phrases(name), key=len, reverse=True))
        pattern = re.compile(r"(?<![\w@/-])(?:" + alternatives + r")(?![\w-])")
        terms.append(Term(name, slug(name), pattern, first))
    return terms


def load_glossary(docs_dir: str | Path) -> list[Term]:
    path = Path(docs_dir) / "glossary.md"
    return parse_glossary(path.read_text(encoding="utf-8")) if path.exists() else []


DT = re.compile(r"<dt>(?P<body>.*?)</dt>", re.DOTALL)


def glossary_anchors(page_html: str, terms: list[Term]) -> str:
    """The glossary page with an id on each term, so other pages can link to it."""
    by_name = {term.name: term for term in terms}

    def add_id(match: re.Match) -> str:
        strong = re.search(r"<strong>(.*?)</strong>", match["body"])
        term = by_name.get(html.unescape(strong[1])) if strong else None
        return f'<dt id="{term.anchor}">{match["body"]}</dt>' if term else match[0]

    return DT.sub(add_id, page_html)


TAG = re.compile(r"(<[^>]+>)")
VOID = {"br", "img", "hr", "input", "meta", "link", "wbr", "source", "col", "area"}
SKIPPED_TAGS = {"a", "code", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "table", "script", "style",
                "svg", "summary", "dt", "mjx-container", "button", "label"}
SKIPPED_CLASSES = {"arithmatex", "admonition-title", "mermaid", "reading-time"}


def link_terms(page_html: str, terms: list[Term], glossary_url: str) -> str:
    """Link the first mention of each glossary term in the page's prose to its entry.

    Mentions in code, maths, headings, tables, links, admonition titles and diagrams are
    left alone. ``glossary_url`` is the glossary page relative to this page.
    """
    parts = TAG.split(page_html)
    stack: list[bool] = []  # per open element: whether it (or an ancestor) is skipped
    linked: set[str] = set()
    for index, part in enumerate(parts):
        if index % 2:  # a tag
            name = re.match(r"</?\s*([\w-]+)", part)
            if not name:
                continue
            tag = name[1].lower()
            if part.startswith("</"):
                if stack:
                    stack.pop()
            elif tag not in VOID and not part.endswith("/>"):
                classes = set(re.findall(r'class="([^"]*)"', part)[0].split()) if 'class="' in part else set()
                skipped = tag in SKIPPED_TAGS or bool(classes & SKIPPED_CLASSES)
                stack.append(skipped or (stack[-1] if stack else False))
            continue
        if (stack and stack[-1]) or not part.strip():
            continue
        parts[index] = _link_first(part, terms, linked, glossary_url)
    return "".join(parts)


def _link_first(text: str, terms: list[Term], linked: set[str], glossary_url: str) -> str:
    spans: list[tuple[int, int, Term]] = []
    for term in terms:
        if term.anchor in linked:
            continue
        match = term.pattern.search(text)
        if match and not any(s < match.end() and match.start() < e for s, e, _ in spans):
            spans.append((match.start(), match.end(), term))
            linked.add(term.anchor)
    for start, end, term in sorted(spans, key=lambda s: s[0], reverse=True):
        link = (f'<a class="glossary-term" href="{glossary_url}#{term.anchor}" '
                f'title="{html.escape(term.summary, quote=True)}">{text[start:end]}</a>')
        text = text[:start] + link + text[end:]
    return text


# ------------------------------------------------------------------------------ edit links


def lesson_edit_url(repo_url: str, branch: str, lesson: Lesson) -> str:
    """Where "edit this page" goes for a lesson page: its source, ``solutions/NN_*.py``."""
    return f"{repo_url}/edit/{branch}/solutions/{lesson.filename}"
