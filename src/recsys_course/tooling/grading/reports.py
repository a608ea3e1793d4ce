"""Report writers of batch grading: CSV, JSON, learner feedback, JUnit and the summary.

Every report is built from one record per submission, :func:`entry`, which is also what
``grades.json`` stores: the grades, and every string a submission could influence (its name,
the names in its zip, its code's messages, notes) made safe once, with :mod:`.text`:
control characters and escape sequences escaped, messages truncated to a few KB, notes
de-duplicated in linear time and capped per submission, the grader's own paths replaced
by placeholders. Each format then escapes what it must on top: CSV cells that a spreadsheet
would run as a formula get a leading ``'``, Markdown cells lose their ``|`` and ``<``, XML
gets only characters XML allows. ``course merge`` rebuilds every report of a class from
its shards' ``grades.json`` with the same functions, so the result is the same bytes as a
single run's (apart from ``graded_at`` and the time per lesson).

Every file is written to a temporary name in the output folder and renamed into place, so
a report is either complete or absent. Instructor files (``grades.csv``, ``grades.json``,
``exercises.csv``) hold hidden tests' names, messages and points; learner files
(``feedback/``, ``junit/``) hold only visible tests and, per exercise, "hidden checks:
passed/failed" when ``Options.hidden_summary`` allows it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

from recsys_course.tooling.catalog import Catalog
from recsys_course.tooling.grading.results import ExerciseResult
from recsys_course.tooling.grading.text import MAX_MESSAGE, MAX_NAME, Scrubber, clean, csv_cell, dedupe, one_line

MAX_FEEDBACK_MESSAGE = 300  # characters of a failure in a feedback table cell
MAX_JUNIT_MESSAGE = 500


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # backslashreplace: a stray lone surrogate can never stop a report from being written
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def max_points(grades: list, catalog: Catalog) -> dict[str, int]:
    if grades:
        return {i: e.points for i, e in grades[0].exercises.items()}
    return {e.id: e.points for e in catalog.exercises}


def header(catalog: Catalog, maxima: dict[str, int], warnings: list[str], isolation: dict | None = None,
           calibration: dict | None = None, graded_at: str | None = None) -> dict:
    """What ``grades.json`` says about the whole run: the exercises with their maxima and
    first hints (feedback needs nothing else), the isolation and calibration in force."""
    exercises = []
    for ex_id, points in maxima.items():
        try:
            known = catalog.exercise(ex_id)
            title, hint = known.title, (known.hints[0] if known.hints else "")
        except KeyError:  # not in this catalog: empty texts
            title, hint = "", ""
        exercises.append({"id": ex_id, "title": title, "max": points, "hint": hint})
    return {
        "graded_at": graded_at or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exercises": exercises,
        "max_points": dict(maxima),
        "possible": sum(maxima.values()),
        "isolation": isolation or {},
        "calibration": calibration or {},
        "warnings": [clean(w) for w in warnings],
    }


def entry(grade, possible: int, scrub: Scrubber) -> dict:
    """The safe, bounded record of one graded submission (a ``batch.SubmissionGrade``), as
    ``grades.json`` stores it and every other report reads it. Deterministic: flags sorted,
    notes in lesson order, whatever order the lessons finished in."""
    sub = grade.submission

    message = scrub.message
    runs = sorted(grade.lessons.items())
    lessons = {
        lesson_id: {"seconds": round(run.seconds, 3), "mode": run.mode, "notes": dedupe(run.notes, transform=message)}
        for lesson_id, run in runs
    }
    exercises = []
    for ex in grade.exercises.values():
        row = ex.to_json()
        row["title"] = one_line(row["title"], 300)
        row["first_failure"] = message(row["first_failure"])
        row["notes"] = dedupe(row["notes"], transform=message)
        for test in row["tests"]:
            test["failure"] = message(test["failure"])
        exercises.append(row)
    return {
        "name": sub.name,
        "source": one_line(sub.label, MAX_NAME),
        "lesson_files": {one_line(k, 300): one_line(scrub(v), 300) for k, v in sub.found.items()},
        "total": grade.total,
        "possible": possible,
        "percent": round(100 * grade.total / possible, 2) if possible else 0.0,
        "flags": dedupe(sorted({one_line(scrub(f[:MAX_MESSAGE * 4])) for f in sub.flags})),
        "notes": dedupe([*sub.problems, *(n for _, run in runs for n in run.notes)], transform=message),
        "problems": dedupe(sub.problems, transform=message),
        "lessons": lessons,
        "exercises": exercises,
    }


def write_reports(grades: list, catalog: Catalog, options, warnings: list[str], isolation: dict | None = None,
                  calibration: dict | None = None, maxima: dict[str, int] | None = None) -> list[dict]:
    """Write every report of ``grades`` (``batch.SubmissionGrade``) to ``options.out``;
    returns the submissions' :func:`entry` records, in order. ``maxima`` (exercise ->
    calibrated maximum) defaults to the first submission's, or the catalog's points."""
    maxima = maxima or max_points(grades, catalog)
    head = header(catalog, maxima, warnings, isolation, calibration)
    scrub = Scrubber(catalog.root)
    entries = [entry(g, head["possible"], scrub) for g in grades]
    write_entries(Path(options.out), head, entries, junit=options.junit,
                  hidden_summary=getattr(options, "hidden_summary", True))
    return entries


def write_entries(out: Path, head: dict, entries: list[dict], junit: bool, hidden_summary: bool) -> None:
    """Write grades.csv, exercises.csv, grades.json, feedback/ (and junit/) from records."""
    maxima = head["max_points"]
    possible = head["possible"]

    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["submission", "source", *maxima, "total", "max", "flags", "notes"])
    writer.writerow(["(maximum)", "", *maxima.values(), possible, possible, "", ""])
    for e in entries:
        earned = {row["id"]: row["earned"] for row in e["exercises"]}
        writer.writerow([csv_cell(e["name"]), csv_cell(e["source"]), *(earned.get(i, 0) for i in maxima),
                         e["total"], possible, csv_cell(" | ".join(e["flags"])), csv_cell(" | ".join(e["notes"]))])
    write_atomic(out / "grades.csv", table.getvalue())

    sidecar = io.StringIO()
    writer = csv.writer(sidecar)
    writer.writerow(["exercise", "title", "max"])
    for ex in head["exercises"]:
        writer.writerow([csv_cell(ex["id"]), csv_cell(ex["title"]), ex["max"]])
    write_atomic(out / "exercises.csv", sidecar.getvalue())

    write_atomic(out / "grades.json", json.dumps({**head, "submissions": entries}, indent=2, ensure_ascii=False))
    for e in entries:
        write_atomic(out / "feedback" / f"{e['name']}.md", feedback(e, head, hidden_summary))
    if junit:
        for e in entries:
            buffer = io.BytesIO()
            junit_tree(e).write(buffer, encoding="utf-8", xml_declaration=True)
            write_atomic(out / "junit" / f"{e['name']}.xml", buffer.getvalue().decode())


def _md(text: str, limit: int = MAX_FEEDBACK_MESSAGE) -> str:
    """Text for one Markdown table cell or heading: one line, no table or HTML syntax."""
    text = one_line(text.replace("\n", " ").replace("\t", " "), limit)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def feedback(record: dict, head: dict, hidden_summary: bool = True) -> str:
    """Learner-facing Markdown: points, first visible failure and a hint per exercise.

    Only visible tests are counted here: the names, messages, data and points of hidden
    tests never appear (the maximum with hidden tests is not used, so it cannot give them
    away). With ``hidden_summary`` the learner reads, per exercise, whether its hidden
    checks passed."""
    rows = [ExerciseResult.from_json(row) for row in record["exercises"]]
    hints = {ex["id"]: ex.get("hint", "") for ex in head["exercises"]}
    earned = sum(ex.visible_points[0] for ex in rows)
    visible = sum(ex.visible_points[1] or (ex.points if not ex.tests else 0) for ex in rows)
    lines = [f"# Feedback for {_md(record['source'], 1200)}", "",
             f"**Total: {earned} / {visible} points**", ""]
    if hidden_summary and any(ex.hidden_status for ex in rows):
        lines += ["Your instructor also ran checks that are not shown here; the table says, per "
                  "exercise, whether they passed.", ""]
    for problem in record["problems"]:
        lines.append(f"- Note: {_md(problem, 1000)}")
    lines += ["", "| exercise | points | status | what to look at |", "|---|---|---|---|"]
    for ex in rows:
        got, out_of = ex.visible_points if ex.tests else (0, ex.points)
        hint = ""
        if (got < out_of or ex.hidden_status == "failed") and hints.get(ex.id):
            hint = f"Hint: {_md(hints[ex.id], 1000)}"
        message = _md(ex.first_failure)
        if hidden_summary and ex.hidden_status:
            message = (message + f" (hidden checks: {ex.hidden_status})").strip()
        status = ex.status if not ex.hidden_status else ("passed" if got == out_of else "partial" if got else "failed")
        lines.append(f"| {ex.id} {_md(ex.title)} | {got} / {out_of} | {status} | {message} {hint} |")
    return "\n".join(lines) + "\n"


def junit_tree(record: dict) -> ET.ElementTree:
    """One test case per visible test; hidden tests are one anonymous case per exercise.
    Every text is :func:`~.text.clean` already, so only characters XML allows remain."""
    suite = ET.Element("testsuite", name=record["name"])
    count = failures = 0
    for ex in (ExerciseResult.from_json(row) for row in record["exercises"]):
        visible = [t for t in ex.tests if not t.hidden]
        cases = [(t.name, t.passed, t.failure) for t in visible]
        if ex.hidden_status:
            cases.append(("hidden_checks", ex.hidden_status == "passed", "hidden checks failed"))
        if not ex.tests:
            cases = [("lesson", False, ex.first_failure)]
        for name, passed, failure in cases:
            count += 1
            case = ET.SubElement(suite, "testcase", classname=f"exercise_{ex.id}", name=one_line(name, 300))
            if not passed:
                failures += 1
                ET.SubElement(case, "failure", message=clean(failure, MAX_JUNIT_MESSAGE))
    suite.set("tests", str(count))
    suite.set("failures", str(failures))
    return ET.ElementTree(suite)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def summary_table(entries: list[dict], possible: int) -> str:
    """The closing table of ``course grade`` (from :func:`entry` records); a ``!`` marks
    every flagged submission. Names and notes are single lines: no name can draw a row."""
    labels = [_short(one_line(e["source"]), 40) for e in entries]
    width = max([len(label) for label in labels] + [10])
    lines = [f"  {'submission':<{width}}  {'points':>11}  notes"]
    for e, label in zip(entries, labels):
        percent = 100 * e["total"] / possible if possible else 0
        remarks = [f"FLAG: {f}" for f in e["flags"]] + e["notes"]
        note = _short(one_line(remarks[0]), 70) + (f" (+{len(remarks) - 1} more)" if len(remarks) > 1 else "") \
            if remarks else ""
        mark = "!" if e["flags"] else " "
        lines.append(f"{mark} {label:<{width}}  {e['total']:>4}/{possible:<3} {percent:3.0f}%  {note}")
    if any(e["flags"] for e in entries):
        lines.append("! = flagged for a closer look (similarity or provenance): see grades.csv, column flags")
    return "\n".join(lines)
