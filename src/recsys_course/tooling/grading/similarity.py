"""Similarity flags for instructors: exercise code identical, after normalisation, to the
reference solution or to another submission.

Normalisation: the exercise function's syntax tree (``ast``, parsed, never executed) with
docstrings, comments, formatting and names of local variables kept as written but line
numbers dropped. Identical short functions happen honestly (a one-line answer), so only
functions of at least ``MIN_NODES`` syntax nodes are compared, and a match is a flag for a
human to look at, never a change of grade.
"""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from pathlib import Path

from recsys_course.tooling.catalog import Catalog

MIN_NODES = 40


def fingerprints(text: str, functions: dict[str, str]) -> dict[str, str]:
    """exercise id -> digest of its function's normalised tree (for ``functions``: name -> id)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in functions:
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
            if sum(1 for _ in ast.walk(node)) < MIN_NODES:
                continue
            if any(isinstance(n, ast.Raise) and "NotImplementedError" in ast.dump(n) for n in ast.walk(node)):
                continue  # an untouched stub
            digest = hashlib.sha256(ast.dump(node, include_attributes=False).encode()).hexdigest()
            found[functions[node.name]] = digest
    return found


def flag(submissions: list, catalog: Catalog, solutions: Path) -> None:
    """Append flags to each submission's ``flags`` (an ``intake.Submission``)."""
    for lesson in catalog.lessons:
        functions = {e.function: e.id for e in lesson.exercises if e.function}
        reference_file = solutions / lesson.filename
        reference = fingerprints(reference_file.read_text(encoding="utf-8"), functions) \
            if reference_file.exists() else {}
        seen: dict[tuple[str, str], list] = defaultdict(list)
        for sub in submissions:
            path = sub.lessons_dir / lesson.filename
            if not path.exists():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for exercise_id, digest in fingerprints(text, functions).items():
                if reference.get(exercise_id) == digest:
                    sub.flags.append(f"exercise {exercise_id} is identical to the reference solution")
                seen[(exercise_id, digest)].append(sub)
        for (exercise_id, digest), group in sorted(seen.items(), key=lambda kv: kv[0]):
            if len(group) > 1 and reference.get(exercise_id) != digest:
                for sub in group:
                    others = ", ".join(o.label for o in group if o is not sub)
                    sub.flags.append(f"exercise {exercise_id} is identical to {others}")
