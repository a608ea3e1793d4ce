"""Turn an executed lesson notebook into Material-for-MkDocs Markdown plus figure files."""

from __future__ import annotations

import base64
import re
import textwrap
from dataclasses import dataclass, field

import nbformat

from recsys_course.catalog import Lesson
from recsys_course.lessons import BEGIN, END

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# TensorFlow and absl write these to stderr; they say nothing to a learner.
LOG_NOISE = re.compile(
    r"^([IWE]\d{4} \d|WARNING: All log messages before absl|WARNING:absl:|.*oneDNN custom operations"
    r"|.*cuda|.*rebuild TensorFlow with the appropriate compiler flags|To enable the following)",
    re.IGNORECASE,
)
STYLE = re.compile(r"<style.*?</style>", re.DOTALL)


@dataclass
class Page:
    markdown: str
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes


def indent(text: str, spaces: int = 4) -> str:
    return textwrap.indent(text, " " * spaces, lambda line: True)


def fence(code: str, language: str = "python") -> str:
    ticks = "````" if "```" in code else "```"
    return f"{ticks}{language}\n{code.rstrip()}\n{ticks}"


def clean_stream(text: str) -> str:
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    return "\n".join(line for line in lines if not LOG_NOISE.match(line)).strip("\n")


def render_outputs(outputs: list, figure_prefix: str, page: Page) -> list[str]:
    """Markdown blocks for one cell's outputs: text, HTML tables and PNG figures."""
    blocks: list[str] = []
    stream = ""
    for output in outputs:
        if output.output_type == "stream":
            stream += output.text
            continue
        if stream.strip():
            blocks.append(fence(clean_stream(stream), "text"))
        stream = ""
        data = output.get("data", {})
        if "image/png" in data:
            name = f"{figure_prefix}-{len(page.figures)}.png"
            page.figures[name] = base64.b64decode(data["image/png"])
            blocks.append(f"![Figure {len(page.figures)}]({name})")
        elif "text/html" in data:
            html = STYLE.sub("", "".join(data["text/html"])).strip()
            html = "\n".join(line for line in html.splitlines() if line.strip())
            blocks.append(f'<div class="cell-output" markdown="0">\n{html}\n</div>')
        elif "text/plain" in data:
            blocks.append(fence("".join(data["text/plain"]), "text"))
    if clean_stream(stream).strip():
        blocks.append(fence(clean_stream(stream), "text"))
    return [b for b in blocks if b.strip() not in ("```text\n\n```", "")]


def without_markers(source: str) -> str:
    return "\n".join(l for l in source.splitlines() if l.strip() not in (BEGIN, END))


def exercise_box(lesson: Lesson, exercise_id: str, solution: str, stub: str) -> str:
    """The task box: id, points, the local check command, hints one by one, solution folded."""
    exercise = next(e for e in lesson.exercises if e.id == exercise_id)
    body = [
        f"Implement it in `lessons/{lesson.filename}`, then check it locally with "
        f"`course check {exercise.id}`.",
        fence(stub),
    ]
    for number, hint in enumerate(exercise.hints, start=1):
        body.append(f'??? tip "Hint {number} of {len(exercise.hints)}"\n' + indent(hint))
    body.append('??? success "Solution"\n' + indent(fence(without_markers(solution))))
    title = f"Exercise {exercise.id} · {exercise.title} · {exercise.points} points"
    return f'!!! question "{title}"\n\n' + indent("\n\n".join(body))


def banner(lesson: Lesson, dataset: str) -> str:
    return (
        '!!! info "About this page"\n\n'
        + indent(
            f"Outputs were produced when the site was built, with **{dataset}**. "
            f"Expected runtime: about {lesson.minutes} min on 2 CPU cores.\n"
            f"Run it yourself with `python lessons/{lesson.filename}` or cell by cell in your "
            f"editor; check your exercises with `course check {lesson.id}`."
        )
    )


def to_markdown(
    lesson: Lesson, executed: nbformat.NotebookNode, stubs: nbformat.NotebookNode, dataset: str
) -> Page:
    """Render ``executed`` (the solution notebook with outputs) as one lesson page.

    ``stubs`` is the learner version of the same lesson; it has the same cells in the same
    order, and supplies what exercise boxes show before the solution is unfolded.
    """
    page = Page("")
    parts: list[str] = []
    banner_done = False
    for index, (cell, stub) in enumerate(zip(executed.cells, stubs.cells)):
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            if not banner_done and cell.source.lstrip().startswith("# "):
                parts.append(banner(lesson, dataset))
                banner_done = True
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if "exercise" in cell.metadata:
            parts.append(exercise_box(lesson, str(cell.metadata["exercise"]), cell.source, stub.source))
        else:
            parts.append(fence(cell.source))
        parts.extend(render_outputs(cell.get("outputs", []), f"{lesson.slug}-cell{index}", page))
    page.markdown = "\n\n".join(parts) + "\n"
    return page
