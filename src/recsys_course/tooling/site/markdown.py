"""Turn an executed lesson notebook into Material-for-MkDocs Markdown plus figure files.

What a learner sees of a cell's outputs:

* text (prints, results) in a labelled "Output" block without a copy button, apart from the
  code above it; Keras epoch logs shortened to one line per epoch, and anything longer than
  :data:`FOLD_LINES` lines folded into a collapsed box;
* DataFrames as the styled HTML tables :mod:`recsys_course.tooling.site.kernel_setup` produces;
* figures as 2x PNGs shown at their natural size, with alt text from their titles (side by
  side panels scroll sideways on a phone instead of shrinking);
* ``say()`` sentences as Markdown, and a cell that only writes prose without its code;
* no TensorFlow log noise, no absolute path of the build machine, and the dataset named as
  readers know it.
"""

from __future__ import annotations

import base64
import re
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from recsys_course.tooling.catalog import Lesson
from recsys_course.tooling.lessons import BEGIN, END
from recsys_course.tooling.quiet import is_noise
from recsys_course.tooling.site.execute import Run

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STYLE = re.compile(r"<style.*?</style>", re.DOTALL)
# Column names such as user_occupation_label may break after an underscore, not elsewhere.
HEADER_CELL = re.compile(r"(<th[^>]*>)([^<]*)(</th>)")
FOLD_LINES = 25  # longer text outputs start folded
# Keras progress bars: "10/10 [=====] - 1s 5ms/step - loss: 0.5" (Keras 2) or
# "10/10 ━━━━ 1s 5ms/step - loss: 0.5" (Keras 3); the metrics are what matter.
PROGRESS = re.compile(r"^\s*\d+/\d+ (?:\[[=>.]*\]|[━─]+)\s*(?:-\s*)?(?:ETA: \S+\s*)?(?:\S+ \S+/step)?\s*(?:-\s*)?(.*)$")
# verbose=2 prints one line per epoch: "26/26 - 1s - loss: 1.47 - 8s/epoch - 303ms/step".
SUMMARY = re.compile(r"^\s*\d+/\d+ - (.*)$")
TIMING = re.compile(r"^(?:ETA: )?\d+(?:\.\d+)?(?:s|ms|us|µs)(?:/(?:epoch|step))?$")
EPOCH = re.compile(r"^Epoch (\d+)/(\d+)\s*$")
# A list item's continuation line that starts with "2020." would begin a new ordered list.
NUMBER_START = re.compile(r"^( {1,3})(\d+)\. ", re.MULTILINE)


@dataclass
class Page:
    markdown: str
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes


@dataclass(frozen=True)
class Links:
    """Where a lesson's page points: its learner file (a site file) and its source online."""

    download: str  # relative to the page's Markdown file, e.g. "00_introduction.py"
    source: str | None = None  # URL of solutions/NN_*.py in the repository
    references: str = "../references.md"
    notebook: str | None = None  # the learner's notebook on this site (relative)
    solutions_notebook: str | None = None  # the reference notebook on this site (relative)
    colab: str | None = None  # Colab's address of the learner's notebook


def indent(text: str, spaces: int = 4) -> str:
    return textwrap.indent(text, " " * spaces, lambda line: True)


def fence(code: str, language: str = "python") -> str:
    ticks = "````" if "```" in code else "```"
    return f"{ticks}{language}\n{code.rstrip()}\n{ticks}"


def short_paths(text: str, root: Path | None = None) -> str:
    """Replace the build machine's absolute paths by what a reader can use.

    The course root becomes ``.`` (``$PWD`` right after ``=``, as in a docker command's
    ``source=``), its parent ``..``, the home directory ``~`` and the temporary directory
    ``$TMPDIR``, so pages show neither user names nor build paths.
    """
    places: list[tuple[str, str]] = []
    if root is not None:
        root = Path(root).resolve()
        # An option value (`source=/abs/clone/...` in a docker command) must stay absolute.
        text = re.sub(r"(?<==)" + re.escape(str(root)) + r"(?=/|$)", "$PWD", text)
        places += [(str(root), "."), (str(root.parent), "..")]
    places += [(str(Path.home()), "~"), (tempfile.gettempdir(), "$TMPDIR"), ("/tmp", "$TMPDIR")]
    for path, short in sorted(places, key=lambda p: -len(p[0])):
        if len(path) > 1:
            text = re.sub(r"(?<![\w/.~$])" + re.escape(path) + r"(?![\w.-])", short, text)
    return text


def reader_name(source: str, description: str) -> str:
    """The dataset as readers know it, never a path: "MovieLens 100K (GroupLens)",
    "MovieLens 100K (TFDS)", "MovieLens ml-latest-small (GroupLens)", "synthetic
    MovieLens-shaped data (100k)".

    ``source`` and ``description`` are those of :class:`recsys_course.data.MovieLens`.
    """
    from recsys_course.data.sources import TFDS_SIZES, tfds_size

    source = source.removeprefix("local:")
    if tfds_size(source) is not None:
        return f"{TFDS_SIZES[tfds_size(source)]} (TFDS)"
    if source.startswith("synthetic"):
        size = source.partition(":")[2] or "small"
        return f"synthetic MovieLens-shaped data ({size})"
    kind = description.split(" from ", 1)[0].removesuffix(" with demographics")
    if kind.startswith("MovieLens (") and kind.endswith(")"):  # a GroupLens folder's own name
        kind = f"MovieLens {kind[len('MovieLens ('):-1]}"
    return f"{kind} (GroupLens)"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def compact_progress(lines: list[str]) -> list[str]:
    """Keras ``fit``/``evaluate`` logs: one line per epoch with its final metrics."""
    out: list[str] = []
    epoch = None
    after_bar = False  # consecutive bars without "Epoch" (evaluate, predict): keep the last
    for line in lines:
        line = line.split("\r")[-1].replace("\b", "")  # a bar redraws itself after \r
        match = EPOCH.match(line)
        if match:
            epoch = f"epoch {match[1]:>{len(match[2])}}/{match[2]}"
            continue
        bar = PROGRESS.match(line) or SUMMARY.match(line)
        if bar:
            parts = [part.strip() for part in bar[1].split(" - ")]
            metrics = " · ".join(part for part in parts if part and not TIMING.match(part))
            text = f"{epoch}  {metrics}" if epoch else metrics
            if epoch is None and after_bar:
                out[-1] = text
            else:
                out.append(text)
            epoch, after_bar = None, epoch is None
            continue
        after_bar = False
        if epoch is not None:
            out.append(epoch)
            epoch = None
        out.append(line)
    if epoch is not None:
        out.append(epoch)
    return out


def clean_stream(text: str) -> str:
    text = text.replace("\r\n", "\n")
    lines = [ANSI.sub("", line) for line in text.split("\n")]
    lines = [line for line in lines if not is_noise(line.split("\r")[-1])]  # TensorFlow's C++ logs
    return "\n".join(compact_progress(lines)).strip("\n")


def text_output(text: str) -> str:
    """A labelled output block; long ones start folded."""
    lines = text.count("\n") + 1
    block = fence(text, "text")
    if lines > FOLD_LINES:  # "no-copy": Material adds no copy button inside it
        return f'??? output no-copy "Output ({lines} lines)"\n\n' + indent(block)
    return f'<div class="cell-output no-copy" markdown>\n\n{block}\n\n</div>'


def image_markdown(name: str, alt: str, metadata: dict) -> str:
    alt = re.sub(r"[\[\]\n]", " ", alt).strip() or "Figure"
    width = metadata.get("width") if isinstance(metadata, dict) else None
    size = f'{{ width="{int(width)}" }}' if width else ""
    return f"![{alt}]({name}){size}"


def image_is_wide(metadata: dict) -> bool:
    """Side-by-side panels: a figure more than twice as wide as it is tall."""
    if not isinstance(metadata, dict):
        return False
    width, height = metadata.get("width"), metadata.get("height")
    return bool(width and height and width > 2 * height)


def render_outputs(outputs: list, figure_prefix: str, page: Page, root: Path | None = None,
                   aliases: dict[str, str] | None = None) -> list[str]:
    """Markdown blocks for one cell's outputs: text, HTML tables and PNG figures.

    ``aliases`` replaces strings of the build machine in every output (the dataset's
    description with its path becomes the dataset's name) before paths are shortened.
    """
    blocks: list[str] = []
    stream = ""

    def short(text: str) -> str:
        for machine, reader in (aliases or {}).items():
            if machine:
                text = text.replace(machine, reader)
        return short_paths(text, root)

    def flush() -> None:
        text = short(clean_stream(stream))
        if text.strip():
            blocks.append(text_output(text))

    for output in outputs:
        if output.output_type == "stream":
            stream += output.text
            continue
        flush()
        stream = ""
        data = output.get("data", {})
        if "image/png" in data:
            name = f"{figure_prefix}-{len(page.figures)}.png"
            page.figures[name] = base64.b64decode(data["image/png"])
            alt = "".join(data.get("text/plain", "")).strip()
            if not alt or alt.startswith("<Figure"):
                alt = f"Figure {len(page.figures)}"
            metadata = output.get("metadata", {}).get("image/png", {})
            image = image_markdown(name, alt, metadata)
            # Side-by-side panels keep a readable size on a phone and scroll sideways there.
            if image_is_wide(metadata):
                image = f'<div class="figure-wide" markdown>\n\n{image}\n\n</div>'
            blocks.append(image)
        elif "text/markdown" in data:  # a sentence generated by claims.say()
            blocks.append(short("".join(data["text/markdown"]).strip()))
        elif "text/html" in data:
            html = STYLE.sub("", "".join(data["text/html"])).strip()
            html = short("\n".join(line for line in html.splitlines() if line.strip()))
            html = HEADER_CELL.sub(lambda m: m[1] + m[2].replace("_", "_<wbr>") + m[3], html)
            blocks.append(f'<div class="cell-output cell-table no-copy" markdown="0">\n{html}\n</div>')
        elif "text/plain" in data:
            text = short("".join(data["text/plain"]))
            if text.strip():
                blocks.append(text_output(text))
    flush()
    return blocks


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
    anchor = f'<span id="{exercise_anchor(exercise.id)}"></span>\n\n'  # the home page's index links here
    return anchor + f'!!! question "{title}"\n\n' + indent("\n\n".join(body))


def exercise_anchor(exercise_id: str) -> str:
    """The id of an exercise's box on its lesson page: ``exercise-1-3``."""
    return "exercise-" + exercise_id.replace(".", "-")


def how_measured(run: Run) -> str:
    """How the build shared the machine while it timed this lesson ("" when it ran alone): a
    runtime measured beside other lessons is longer than a learner's. Pages describe the
    measurement, never the machine."""
    if run.alongside <= 1:
        return ""
    others = run.alongside - 1
    return f", while {others} other lesson{'s' if others != 1 else ''} ran alongside"


def link_actions(lesson: Lesson, links: Links) -> list[str]:
    """The banner's links: the lesson as a script and as notebooks, Colab, GitHub, references."""
    notebook = f"{lesson.slug}.ipynb"
    actions = [f'[:material-download: Download this lesson]({links.download}){{ download="{lesson.filename}" }}']
    if links.notebook:
        actions.append(f'[:material-notebook-outline: Download notebook]({links.notebook}){{ download="{notebook}" }}')
    if links.solutions_notebook:
        actions.append(
            f'[:material-notebook-check-outline: Notebook with solutions]({links.solutions_notebook})'
            f'{{ download="{lesson.slug}_solutions.ipynb" }}'
        )
    if links.colab:
        actions.append(f"[:simple-googlecolab: Open in Colab]({links.colab})")
    if links.source:
        actions.append(f"[:material-github: View on GitHub]({links.source})")
    actions.append(f"[:material-bookshelf: References]({links.references})")
    return actions


def banner(lesson: Lesson, dataset: str, run: Run | None, links: Links | None = None) -> str:
    """The box under the title: data, measured runtime, how to run it, download and source."""
    if run is not None:
        timing = (
            f"Running the whole lesson took **{format_duration(run.seconds)}** when this page "
            f"was built ({run.finished[:10]}{how_measured(run)})."
        )
    else:
        timing = "Its runtime was not measured."
    lines = [
        f"Outputs were produced when the site was built, with **{dataset}**. {timing}",
        f"Run it yourself with `python lessons/{lesson.filename}` or cell by cell in your editor"
        + (f"; check your exercises with `course check {lesson.id}`." if lesson.exercises else "."),
    ]
    if links is not None:
        lines.append(" · ".join(link_actions(lesson, links)))
    return '!!! info "About this page"\n\n' + indent("\n\n".join(lines))


def prose(source: str, links: Links | None) -> str:
    """A Markdown cell as the page shows it."""
    source = NUMBER_START.sub(lambda m: f"{m[1]}{m[2]}\\. ", source)
    if links is not None and "## Further reading" in source:
        source = source.replace(
            "## Further reading",
            "## Further reading\n\nEvery work the course cites is also on one page: "
            f"[References]({links.references}).",
            1,
        )
    return source


HIDDEN_TAGS = {"check"}  # claim guards: executed at build time, never shown
PROSE_TAG = "prose"


def writes_prose(cell: nbformat.NotebookNode) -> bool:
    """A cell that only writes prose: its code is hidden and its sentences shown.

    Either tagged ``prose`` (for a cell that only defines what writes sentences, or whose
    other outputs may stay), or a cell whose outputs are all Markdown, such as ``say()``'s
    sentences: the reader gets the sentence, not the code that words it.
    """
    if PROSE_TAG in cell.metadata.get("tags", []):
        return True
    outputs = cell.get("outputs", [])
    return bool(outputs) and all(
        output.output_type in ("display_data", "execute_result")
        and set(output.get("data", {})) <= {"text/markdown", "text/plain"}
        and "text/markdown" in output.get("data", {})
        for output in outputs
    )


def to_markdown(
    lesson: Lesson, executed: nbformat.NotebookNode, stubs: nbformat.NotebookNode, dataset: str,
    *, links: Links | None = None, root: Path | None = None, aliases: dict[str, str] | None = None,
) -> Page:
    """Render ``executed`` (the solution notebook with outputs) as one lesson page.

    ``stubs`` is the learner version of the same lesson; it has the same cells in the same
    order, and supplies what exercise boxes show before the solution is unfolded. ``root``
    is the course root, whose absolute path is shortened wherever an output shows it;
    ``aliases`` replaces other strings of the build machine in outputs (see
    :func:`render_outputs`).
    """
    page = Page("")
    parts: list[str] = []
    banner_done = False
    run = Run.from_notebook(executed)
    for index, (cell, stub) in enumerate(zip(executed.cells, stubs.cells)):
        if cell.cell_type == "markdown":
            parts.append(prose(cell.source, links))
            if not banner_done and cell.source.lstrip().startswith("# "):
                parts.append(banner(lesson, short_paths(dataset, root), run, links))
                banner_done = True
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        if HIDDEN_TAGS & set(cell.metadata.get("tags", [])):
            continue  # claim guards (claims.claim) run at build time but are not shown
        if "exercise" in cell.metadata:
            parts.append(exercise_box(lesson, str(cell.metadata["exercise"]), cell.source, stub.source))
        elif not writes_prose(cell):
            parts.append(fence(cell.source))
        parts.extend(render_outputs(cell.get("outputs", []), f"{lesson.slug}-cell{index}", page, root, aliases))
    page.markdown = "\n\n".join(parts) + "\n"
    return page
