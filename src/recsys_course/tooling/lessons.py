"""Lesson files: their cell format, and generating lessons/ from solutions/.

Conventions (see docs/authoring.md):

* ``solutions/NN_slug.py`` is a percent-format script. Cells tagged ``setup`` hold imports and
  constants; a cell tagged ``exercise`` with ``exercise="N.M"`` defines that exercise's
  function, its reference code between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines.
* ``lessons/NN_slug.py`` is generated: each solution block becomes one ``raise
  NotImplementedError`` naming the exercise; every other line is identical.
* Grading executes only the ``setup`` and ``exercise`` cells (:data:`GRADED_TAGS`, run by
  :func:`recsys_course.tooling.grading.loader.load_lesson`), so training and plotting cells (and a
  learner's broken plot) never run and never cost points.

Authors regenerate lessons/ with :func:`sync`; ``course reset`` puts one stub back with
:func:`make_stub` and :func:`replace_exercise_cell`.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from recsys_course.tooling.catalog import Catalog, Lesson, load_catalog
from recsys_course.errors import Refused

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
CELL_HEADER = re.compile(r"^# %%(?P<rest>.*)$")
EXERCISE_META = re.compile(r'\bexercise="(?P<id>[^"]+)"')
GRADED_TAGS = {"setup", "exercise"}


class LessonFormatError(ValueError):
    """A solution file breaks the marker conventions; the message names file and line."""


def stub_line(indent: str, lesson: Lesson, exercise_id: str) -> str:
    title = next(e.title for e in lesson.exercises if e.id == exercise_id)
    message = f"Exercise {exercise_id} ({title}): not solved yet. Stuck? Run: course hint {exercise_id}"
    return f"{indent}raise NotImplementedError(\n{indent}    {json.dumps(message)}\n{indent})"


def make_stub(solution_text: str, lesson: Lesson, filename: str = "<solution>") -> str:
    """Return the learner's version of a solution file: each solution block becomes a stub.

    Raises :class:`LessonFormatError` for a block outside an exercise cell, a block without
    its end marker, an exercise id missing from the catalog, or a catalog exercise without
    exactly one solution block.
    """
    known = {e.id for e in lesson.exercises}
    blocks: dict[str, int] = {}
    out: list[str] = []
    current: str | None = None
    open_at: int | None = None
    for number, line in enumerate(solution_text.splitlines(), start=1):
        header = CELL_HEADER.match(line)
        if header and open_at is None:
            meta = EXERCISE_META.search(header["rest"])
            current = meta["id"] if meta else None
        stripped = line.strip()
        if stripped == BEGIN:
            where = f"{filename}:{number}"
            if open_at is not None:
                raise LessonFormatError(f"{where}: {BEGIN} inside another solution block")
            if current is None:
                raise LessonFormatError(f'{where}: {BEGIN} outside a cell with exercise="N.M"')
            if current not in known:
                raise LessonFormatError(f"{where}: exercise {current} is not in {lesson.slug}.yml")
            blocks[current] = blocks.get(current, 0) + 1
            open_at = number
            out.append(stub_line(line[: len(line) - len(line.lstrip())], lesson, current))
        elif stripped == END:
            if open_at is None:
                raise LessonFormatError(f"{filename}:{number}: {END} without {BEGIN}")
            open_at = None
        elif open_at is None:
            out.append(line)
    if open_at is not None:
        raise LessonFormatError(f"{filename}:{open_at}: {BEGIN} is never closed by {END}")
    wrong = sorted(e for e in known if blocks.get(e) != 1)
    if wrong:
        raise LessonFormatError(
            f"{filename}: exercises {', '.join(wrong)} need exactly one solution block each"
        )
    return "\n".join(out) + "\n"


def backup_lesson(root: Path, lesson: Lesson, text: str) -> Path:
    """Keep a copy of a learner's lesson file in ``.course/backups/`` before replacing it.

    Every call writes a new file (``SLUG.YYYYmmdd-HHMMSS.py``, then ``-2``, ``-3`` ... within
    the same second), created exclusively, so a backup never replaces an earlier one.
    """
    folder = root / ".course" / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for number in itertools.count(1):
        backup = folder / f"{lesson.slug}.{stamp}{'' if number == 1 else f'-{number}'}.py"
        try:
            with open(backup, "x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            continue
        return backup
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class SyncResult:
    lesson: Lesson
    path: Path
    changed: bool
    backup: Path | None = None
    # What the learner changed in the file since it was generated ("exercise 0.2 (edited)",
    # "a new code cell at line 120"); non-empty means the file was left alone (sync without
    # ``force``) or overwritten after a backup (``force``).
    edited: tuple[str, ...] = ()
    written: bool = False


class LearnerWorkError(Refused):
    """``sync`` would overwrite a learner's changes; the message names them, file by file."""

    def __init__(self, results: list[SyncResult]) -> None:
        self.results = results
        named = "; ".join(f"{r.path.name}: {', '.join(r.edited)}" for r in results)
        super().__init__(
            f"not overwriting lesson files you changed, which would lose {named}. "
            "`course sync --force` regenerates them anyway, after a backup in .course/backups/."
        )


def _cell_key(cell: Cell) -> tuple[str, ...]:
    return (cell.kind, *sorted(cell.tags), cell.exercise or "",
            *(line.rstrip() for line in cell.source.rstrip().splitlines()))


def _describe_cell(cell: Cell, edited: bool) -> str:
    if cell.exercise:
        return f"exercise {cell.exercise} ({'edited' if edited else 'a second copy'})"
    what = "markdown cell" if cell.kind == "markdown" else "code cell"
    line = cell.first_line - 1  # the header's line
    return f"the {what} at line {line} (edited)" if edited else f"a new {what} at line {line}"


def learner_changes(original: str, current: str) -> tuple[str, ...]:
    """What ``current`` adds to or changes in ``original``, cell by cell, in the learner's
    words ("exercise 0.2 (edited)", "a new markdown cell at line 40", "2 cells deleted").

    Cells are compared without trailing whitespace; any other difference counts, in an
    exercise cell or anywhere else (a learner's own notes are work too). Empty when the
    two hold the same cells.
    """
    before, after = parse_cells(original), parse_cells(current)
    preamble = [l.rstrip() for l in original.splitlines()[: before[0].first_line - 2]] if before else []
    mine = [l.rstrip() for l in current.splitlines()[: after[0].first_line - 2]] if after else []
    changes: list[str] = []
    if [l for l in preamble if l] != [l for l in mine if l]:
        changes.append("the lines before the first cell (edited)")
    matcher = difflib.SequenceMatcher(None, [_cell_key(c) for c in before], [_cell_key(c) for c in after],
                                      autojunk=False)
    deleted = 0
    for op, a, b, c, d in matcher.get_opcodes():
        if op == "equal":
            continue
        old = {(x.kind, x.exercise) for x in before[a:b]}
        for cell in after[c:d]:
            changes.append(_describe_cell(cell, edited=(cell.kind, cell.exercise) in old))
        deleted += max(0, (b - a) - (d - c))
    if deleted:
        changes.append(f"{deleted} cell{'s' if deleted > 1 else ''} deleted")
    return tuple(changes)


def _pristine(root: Path, lesson: Lesson) -> str | None:
    """The lesson file as generated from the solution committed at git ``HEAD`` (what a
    fresh clone's ``lessons/`` holds); ``None`` outside a git checkout or without one."""

    def show(relative: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{relative}"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    solution, yml = show(f"solutions/{lesson.filename}"), show(f"solutions/{lesson.slug}.yml")
    if solution is None or yml is None:
        return None
    from recsys_course.tooling.catalog import parse_lesson

    try:
        return make_stub(solution, parse_lesson(yml, lesson.slug, set()))
    except (LessonFormatError, KeyError, TypeError, ValueError):
        return None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sync(
    catalog: Catalog | None = None,
    check: bool = False,
    only: list[str] | None = None,
    force: bool = False,
) -> list[SyncResult]:
    """Regenerate ``lessons/`` from ``solutions/`` (an author's command); with ``check``,
    only report drift.

    ``only`` limits the work to those lesson ids or slugs. A lesson file is the learner's
    work unless it is exactly what a sync produced: what the previous sync wrote (hashes in
    ``.course/generated.json``), or what the solution committed at git ``HEAD`` generates
    (a fresh clone, or an author who just edited ``solutions/``). Any other content (an
    edited exercise, a new notes cell, a changed sentence; outside git and without a record,
    any difference from the fresh stub file) is not overwritten unless
    ``force``, and then only after a copy goes to ``.course/backups/``. Raises
    :class:`LearnerWorkError` naming those files and changes after writing every other file.
    """
    catalog = catalog or load_catalog()
    results = []
    record_path = catalog.root / ".course" / "generated.json"
    try:
        generated = json.loads(record_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        generated = {}
    lessons = [catalog.lesson(key) for key in only] if only else catalog.lessons
    for lesson in lessons:
        source = catalog.root / "solutions" / lesson.filename
        target = catalog.root / "lessons" / lesson.filename
        expected = make_stub(source.read_text(encoding="utf-8"), lesson, str(source))
        current = target.read_text(encoding="utf-8") if target.exists() else None
        changed = current != expected
        backup, edited, written = None, (), False
        if changed and current is not None and generated.get(lesson.filename) != _digest(current):
            pristine = _pristine(catalog.root, lesson)
            if current != pristine:  # neither the last sync's output nor a fresh clone's
                # Only whitespace at line ends differs: nothing would be lost.
                edited = learner_changes(pristine or expected, current)
        if changed and not check and (force or not edited):
            if edited:
                backup = backup_lesson(catalog.root, lesson, current)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected, encoding="utf-8")
            generated[lesson.filename] = _digest(expected)
            written = True
        elif not check and not changed:
            generated[lesson.filename] = _digest(expected)
        results.append(SyncResult(lesson, target, changed, backup, edited, written))
    if not check:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(generated, indent=2, sort_keys=True), encoding="utf-8")
        refused = [r for r in results if r.changed and not r.written]
        if refused:
            raise LearnerWorkError(refused)
    return results


def _exercise_cell_span(lines: list[str], exercise_id: str) -> tuple[int, int]:
    """[start, end) line indices of the cell whose header has ``exercise="<id>"``."""
    start = None
    for index, line in enumerate(lines):
        header = CELL_HEADER.match(line)
        if header and start is not None:
            return start, index
        if header and (meta := EXERCISE_META.search(header["rest"])) and meta["id"] == exercise_id:
            start = index
    if start is None:
        raise LessonFormatError(f'no cell with exercise="{exercise_id}"')
    return start, len(lines)


def exercise_cell(text: str, exercise_id: str) -> str | None:
    """The cell of ``exercise_id`` in ``text``, without trailing whitespace on any line or
    blank lines at its end; ``None`` when there is no such cell."""
    lines = text.splitlines()
    try:
        a, b = _exercise_cell_span(lines, exercise_id)
    except LessonFormatError:
        return None
    return "\n".join(line.rstrip() for line in lines[a:b]).rstrip()


def still_stubs(text: str, stub: str, exercise_ids: list[str]) -> set[str]:
    """Those of ``exercise_ids`` whose cell in the learner's ``text`` is still the cell the
    generated ``stub`` file has (trailing whitespace aside): unsolved for certain, since
    that cell raises ``NotImplementedError``, so no test needs to run to say so."""
    return {e for e in exercise_ids if (cell := exercise_cell(text, e)) is not None
            and cell == exercise_cell(stub, e)}


def replace_exercise_cell(text: str, source: str, exercise_id: str) -> str:
    """``text`` with the cell of ``exercise_id`` replaced by that cell of ``source``."""
    lines, new = text.splitlines(), source.splitlines()
    a, b = _exercise_cell_span(lines, exercise_id)
    c, d = _exercise_cell_span(new, exercise_id)
    return "\n".join(lines[:a] + new[c:d] + lines[b:]) + "\n"


@dataclass(frozen=True)
class Cell:
    """One ``# %%`` cell of a percent-format lesson: its kind, tags and source lines."""

    kind: str  # "code" or "markdown"
    tags: frozenset[str]
    exercise: str | None  # the N.M of an exercise cell
    source: str  # the cell's lines after its header
    first_line: int  # 1-based line number of the first source line in the file


def parse_cells(text: str) -> list[Cell]:
    """Split a percent-format script into cells (lines before the first header are skipped).

    Only the header syntax the course uses is understood: ``# %%``, ``# %% [markdown]``,
    ``tags=[...]`` (JSON list) and ``exercise="N.M"``. Reading it here keeps grading and
    ``course run`` free of a notebook library's import time and gives exact line numbers.
    """
    cells: list[Cell] = []
    header: re.Match | None = None
    body: list[str] = []
    start = 0

    def close() -> None:
        if header is None:
            return
        rest = header["rest"]
        kind = "markdown" if "[markdown]" in rest else "code"
        tags_match = re.search(r"\btags=(\[[^\]]*\])", rest)
        tags = frozenset(json.loads(tags_match[1])) if tags_match else frozenset()
        meta = EXERCISE_META.search(rest)
        cells.append(Cell(kind, tags, meta["id"] if meta else None, "\n".join(body), start))

    for number, line in enumerate(text.splitlines(), start=1):
        match = CELL_HEADER.match(line)
        if match:
            close()
            header, body, start = match, [], number + 1
        elif header is not None:
            body.append(line)
    close()
    return cells
