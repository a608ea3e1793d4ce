"""Report writers of batch grading: CSV, JSON, learner feedback, JUnit and the summary.

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


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def max_points(grades: list, catalog: Catalog) -> dict[str, int]:
    if grades:
        return {i: e.points for i, e in grades[0].exercises.items()}
    return {e.id: e.points for e in catalog.exercises}


def write_reports(grades: list, catalog: Catalog, options, warnings: list[str], isolation: dict | None = None) -> None:
    out = Path(options.out)
    maxima = max_points(grades, catalog)
    possible = sum(maxima.values())
    titles = {e.id: e.title for e in catalog.exercises}

    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["submission", "source", *maxima, "total", "max", "flags", "notes"])
    writer.writerow(["(maximum)", "", *maxima.values(), possible, possible, "", ""])
    for g in grades:
        writer.writerow([g.submission.name, g.submission.label, *(g.exercises[i].earned for i in maxima),
                         g.total, possible, " | ".join(g.flags), " | ".join(g.notes)])
    write_atomic(out / "grades.csv", table.getvalue())

    sidecar = io.StringIO()
    writer = csv.writer(sidecar)
    writer.writerow(["exercise", "title", "max"])
    for ex_id, points in maxima.items():
        writer.writerow([ex_id, titles.get(ex_id, ""), points])
    write_atomic(out / "exercises.csv", sidecar.getvalue())

    payload = {
        "graded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "exercises": [{"id": i, "title": titles.get(i, ""), "max": p} for i, p in maxima.items()],
        "max_points": maxima,
        "possible": possible,
        "isolation": isolation or {},
        "warnings": warnings,
        "submissions": [
            {
                "name": g.submission.name,
                "source": g.submission.label,
                "lesson_files": g.submission.found,
                "total": g.total,
                "possible": possible,
                "percent": round(100 * g.total / possible, 2) if possible else 0.0,
                "flags": g.flags,
                "notes": g.notes,
                "lessons": {k: vars(v) for k, v in sorted(g.lessons.items())},
                "exercises": [e.to_json() for e in g.exercises.values()],
            }
            for g in grades
        ],
    }
    write_atomic(out / "grades.json", json.dumps(payload, indent=2, ensure_ascii=False))
    for g in grades:
        write_atomic(out / "feedback" / f"{g.submission.name}.md",
                     feedback(g, catalog, possible, getattr(options, "hidden_summary", True)))
    if options.junit:
        for g in grades:
            buffer = io.BytesIO()
            junit(g).write(buffer, encoding="utf-8", xml_declaration=True)
            write_atomic(out / "junit" / f"{g.submission.name}.xml", buffer.getvalue().decode())


def feedback(grade, catalog: Catalog, possible: int, hidden_summary: bool = True) -> str:
    """Learner-facing Markdown: points, first visible failure and a hint per exercise.

    Only visible tests are counted here: the names, messages, data and points of hidden
    tests never appear (``possible`` is not used, so a larger maximum cannot give them
    away). With ``hidden_summary`` the learner reads, per exercise, whether its hidden
    checks passed."""
    earned = sum(ex.visible_points[0] for ex in grade.exercises.values())
    visible = sum(ex.visible_points[1] or (ex.points if not ex.tests else 0) for ex in grade.exercises.values())
    lines = [f"# Feedback for {grade.submission.label}", "",
             f"**Total: {earned} / {visible} points**", ""]
    if hidden_summary and any(ex.hidden_status for ex in grade.exercises.values()):
        lines += ["Your instructor also ran checks that are not shown here; the table says, per "
                  "exercise, whether they passed.", ""]
    for problem in grade.submission.problems:
        lines.append(f"- Note: {problem}")
    lines += ["", "| exercise | points | status | what to look at |", "|---|---|---|---|"]
    for ex_id, ex in grade.exercises.items():
        got, out_of = ex.visible_points if ex.tests else (0, ex.points)
        hint = ""
        if got < out_of or ex.hidden_status == "failed":
            hint = f"Hint: {catalog.exercise(ex_id).hints[0]}"
        message = ex.first_failure.replace("|", "\\|").replace("\n", " ")[:300]
        if hidden_summary and ex.hidden_status:
            message = (message + f" (hidden checks: {ex.hidden_status})").strip()
        status = ex.status if not ex.hidden_status else ("passed" if got == out_of else "partial" if got else "failed")
        lines.append(f"| {ex_id} {ex.title} | {got} / {out_of} | {status} | {message} {hint} |")
    return "\n".join(lines) + "\n"


def junit(grade) -> ET.ElementTree:
    """One test case per visible test; hidden tests are one anonymous case per exercise."""
    suite = ET.Element("testsuite", name=grade.submission.name)
    count = failures = 0
    for ex in grade.exercises.values():
        visible = [t for t in ex.tests if not t.hidden]
        cases = [(t.name, t.passed, t.failure) for t in visible]
        if ex.hidden_status:
            cases.append(("hidden_checks", ex.hidden_status == "passed", "hidden checks failed"))
        if not ex.tests:
            cases = [("lesson", False, ex.first_failure)]
        for name, passed, failure in cases:
            count += 1
            case = ET.SubElement(suite, "testcase", classname=f"exercise_{ex.id}", name=name)
            if not passed:
                failures += 1
                ET.SubElement(case, "failure", message=failure[:500])
    suite.set("tests", str(count))
    suite.set("failures", str(failures))
    return ET.ElementTree(suite)


def summary_table(grades: list, possible: int) -> str:
    """The closing table of ``course grade``; a ``!`` marks every flagged submission."""
    width = max([len(g.submission.label) for g in grades] + [10])
    lines = [f"  {'submission':<{width}}  {'points':>11}  notes"]
    for g in grades:
        percent = 100 * g.total / possible if possible else 0
        remarks = [f"FLAG: {f}" for f in g.flags] + g.notes
        note = remarks[0][:70] + (f" (+{len(remarks) - 1} more)" if len(remarks) > 1 else "") if remarks else ""
        mark = "!" if g.flags else " "
        lines.append(f"{mark} {g.submission.label:<{width}}  {g.total:>4}/{possible:<3} {percent:3.0f}%  {note}")
    if any(g.flags for g in grades):
        lines.append("! = flagged for a closer look (similarity or provenance): see grades.csv, column flags")
    return "\n".join(lines)
