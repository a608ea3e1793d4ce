"""Static checks of a lesson's prose: what ``tests/dev/test_prose.py`` runs on every lesson.

The claims of a page are checked at build time (``claims.claim``); these checks read the
lesson's source instead, and find what no build can: a number written by hand into a
Markdown cell, a comparison decided without a noise threshold, a number formatted outside
the vocabulary of :mod:`recsys_course.claims`. docs/authoring.md states the rules; in short:

* :func:`unguarded_numbers`: a *data-shaped* number in a Markdown cell (a decimal, a
  percentage, or an integer of three digits or more) must be a year, a reference to a
  lesson, section, exercise or chapter, a literal the lesson's code also fixes (``20 %``
  beside ``test_fraction=0.2``), part of the further reading, or part of a phrase (or a
  pattern) on the lesson's allow-list of facts. Small integers (``top 10``, ``k = 32``,
  ``3 stars``) are explanation and pass; so do numbers inside code spans, code blocks and
  link targets.
* :func:`noiseless_comparisons`: a ``pick(...)`` or ``claim(...)`` whose condition orders
  two computed values (``a > b``), or tests the sign of one (``gain > 0``), without a stated
  margin (``a > 1.5 * b``, ``a > b + 0.01``) or ``claims.compare``; a fixed threshold, a
  number or a named constant (``share >= 0.3``, ``cost <= MAX_LOSS``), passes. Conditions
  assigned to a name first (``beats = a > b``) are followed one step.
* :func:`hand_formatted_numbers`: a number formatted inside a ``say(...)``/``pick(...)``
  f-string with a format spec (``{x:.3f}``, ``{d:+.1%}``) instead of ``claims.fmt`` or
  ``claims.signed``, so one page never writes "0.2590" and "0.259" for the same kind of
  number, nor a sign in two conventions.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# A number as prose writes it: 943, 1,682, 0.913, −0.0230, 12.3 %, .5 is not used.
NUMBER = re.compile(
    r"(?<![\w.,/])(?P<sign>[-+\u2212])?(?P<digits>\d{1,3}(?:,\d{3})+|\d+)(?P<fraction>\.\d+)?"
    r"(?P<percent>\s?%)?(?!\.?\d)"
)
YEAR = re.compile(r"^(?:19|20)\d\d$")
# "lesson 02", "lessons 01, 02 and 07", "section 6", "exercise 1.3", "exercises (6.1 to 6.5)",
# "chapters 1-2", "§5", "issue 619", "pull request 628".
REFERENCE = re.compile(
    r"(?i)(?:\b(?:lessons?|sections?|exercises?|chapters?|steps?|panels?|figures?|tables?|issues?"
    r"|pull\s+requests?|PRs?)\s+\(?|§\s?)"
    r"\d+(?:\.\d+)?(?:\s*(?:,|and|or|to|-|–)\s*\d+(?:\.\d+)?)*"
)
HEADING_NUMBER = re.compile(r"(?m)^#{1,6}\s+\d+(?:\.\d+)*\.?")
CUTOFF = re.compile(r"@\d+")  # recall@10, NDCG@10
# Names that contain numbers: datasets (MovieLens 100K) and versions (Python 3.10, Keras 2).
NAMES = re.compile(
    r"(?i)\b(?:movielens\s+\d+[km]\b|ml-\d+[km]\b|(?:python|tensorflow|keras|numpy|pandas|tfrs|annoy|faiss"
    r"|scann|mkdocs|version|v)\s?\d+(?:\.\d+)*(?:\s?[-–]\s?\d+(?:\.\d+)*)?)"
)
# Stretches of a Markdown cell that are not prose: code, diagrams, link targets, HTML.
NOT_PROSE = [
    re.compile(r"(?ms)^(?P<fence>```+|~~~+).*?^(?P=fence)"),  # fenced blocks (code, mermaid)
    re.compile(r"`[^`\n]+`"),  # inline code
    re.compile(r"\]\([^)\s]*\)"),  # link targets
    re.compile(r"<https?://[^>]+>|https?://\S+"),  # bare links
    re.compile(r"<[^>\n]+>"),  # HTML tags and comments
    re.compile(r"\{[^}\n]*(?:width|class|download)[^}\n]*\}"),  # attribute lists
]
FURTHER_READING = re.compile(r"(?m)^#{2,3}\s+Further reading\b")
MARKDOWN_CELL = re.compile(r"^# %% \[markdown\]")
CELL = re.compile(r"^# %%")


@dataclass(frozen=True)
class Finding:
    """One problem: where it is (line in the lesson file), what it is, and its context."""

    line: int
    text: str
    context: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.text!r} in: …{self.context}…"


@dataclass(frozen=True)
class Fact:
    """An allow-list entry: a phrase of the lesson whose numbers are facts, and why.

    With ``regex=True`` the phrase is a regular expression for a family of facts (the HTTP
    status codes of a serving lesson), so one rule with one reason replaces many entries.
    """

    phrase: str
    reason: str
    regex: bool = False

    def pattern(self) -> re.Pattern:
        if self.regex:
            return re.compile(self.phrase)
        words = [re.escape(word) for word in self.phrase.split()]
        return re.compile(r"\s+(?:#\s*)?".join(words))


def markdown_cells(source: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of every Markdown cell of a percent-format script,
    with the comment prefix ``# `` removed (line numbers are 1-based and point at the text)."""
    lines = source.splitlines()
    cells: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        if MARKDOWN_CELL.match(lines[index]):
            start, body = index + 2, []
            index += 1
            while index < len(lines) and not CELL.match(lines[index]):
                line = lines[index]
                body.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
                index += 1
            cells.append((start, "\n".join(body)))
        else:
            index += 1
    return cells


def code_constants(source: str) -> set[float]:
    """Every numeric literal of the lesson's code (negated ones too), as floats."""
    constants: set[float] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            constants.add(float(node.value))
        elif (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
              and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
            constants.add(-float(node.operand.value))
    return constants


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        for position in range(start, end):
            if chars[position] != "\n":
                chars[position] = " "
    return "".join(chars)


def _value(match: re.Match) -> float:
    number = float(match["digits"].replace(",", "") + (match["fraction"] or ""))
    return -number if match["sign"] in ("-", "\u2212") else number


def data_shaped(match: re.Match) -> bool:
    """Decimals, percentages and integers of three digits or more; years are not."""
    if match["fraction"] or match["percent"]:
        return True
    digits = match["digits"]
    if "," in digits:
        return True
    return len(digits) >= 3 and not YEAR.match(digits)


def _fixed_by_code(match: re.Match, constants: set[float]) -> bool:
    value = abs(_value(match))
    candidates = {value, -value}
    if match["percent"]:
        candidates |= {value / 100, -value / 100}
    return any(abs(c - k) <= 1e-9 * max(1.0, abs(k)) for c in candidates for k in constants)


def unguarded_numbers(source: str, facts: list[Fact] = ()) -> list[Finding]:
    """Data-shaped numbers in the Markdown cells of ``source`` that no rule allows."""
    constants = code_constants(source)
    findings: list[Finding] = []
    for first_line, text in markdown_cells(source):
        reading = FURTHER_READING.search(text)
        if reading:
            text = text[: reading.start()]  # citations: volumes, pages and years are facts
        spans = [m.span() for pattern in NOT_PROSE for m in pattern.finditer(text)]
        spans += [m.span() for pattern in (REFERENCE, HEADING_NUMBER, CUTOFF, NAMES) for m in pattern.finditer(text)]
        spans += [m.span() for fact in facts for m in fact.pattern().finditer(text)]
        prose = _mask(text, spans)
        for match in NUMBER.finditer(prose):
            if not data_shaped(match) or _fixed_by_code(match, constants):
                continue
            line = first_line + text.count("\n", 0, match.start())
            context = " ".join(text[max(0, match.start() - 50): match.end() + 30].split())
            findings.append(Finding(line, match[0].strip(), context))
    return findings


def stale_facts(source: str, facts: list[Fact]) -> list[Fact]:
    """Allow-list entries whose phrase is no longer in any Markdown cell of ``source``."""
    texts = [text for _, text in markdown_cells(source)]
    return [fact for fact in facts if not any(fact.pattern().search(text) for text in texts)]


# ------------------------------------------------------------------------ the code checks

PROSE_CALLS = {"pick", "claim"}
ORDERING = (ast.Lt, ast.Gt, ast.LtE, ast.GtE)
MARGIN_OPS = (ast.Mult, ast.Add, ast.Sub, ast.Div)


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _number(node: ast.AST) -> float | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _number(node.operand)
        return None if inner is None else -inner
    return None


def _has_margin(node: ast.AST) -> bool:
    """``1.5 * b``, ``b + 0.01``, ``(1 - LOSS) * b``: a side that states a tolerance."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, MARGIN_OPS):
        for side in (node.left, node.right):
            value = _number(side)
            if value is not None and value not in (0.0, 1.0) or _has_margin(side):
                return True
            if isinstance(side, ast.BinOp) or (isinstance(side, ast.Name) and side.id.isupper()):
                return True  # a named constant such as MAX_PRECISION_LOSS
    return False


def _assignments(tree: ast.AST) -> dict[str, ast.AST]:
    """The last value assigned to each simple name anywhere in the module."""
    values: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = node.value
    return values


def _compares(node: ast.AST, assigned: dict[str, ast.AST], depth: int = 0):
    """Compare nodes inside a condition, following names assigned elsewhere one step."""
    for child in ast.walk(node):
        if isinstance(child, ast.Compare):
            yield child
        elif isinstance(child, ast.Name) and depth == 0 and child.id in assigned:
            yield from _compares(assigned[child.id], assigned, depth + 1)


EXACT_CALLS = {"len", "idxmin", "idxmax", "argmin", "argmax", "nunique", "count"}


def _exact(node: ast.AST) -> bool:
    """A side built from counts or positions (``len(x)``, ``s.idxmin()``): exact, no noise."""
    return any(isinstance(n, ast.Call) and _call_name(n) in EXACT_CALLS for n in ast.walk(node))


def _threshold(node: ast.AST) -> float | None:
    """A fixed threshold: a number, or a named constant (``K``, ``MAX_PRECISION_LOSS``)."""
    if isinstance(node, ast.Name) and node.id.isupper():
        return float("nan")  # fixed by the code, not computed from the data
    return _number(node)


def _noiseless(compare: ast.Compare) -> bool:
    sides = [compare.left, *compare.comparators]
    for op, left, right in zip(compare.ops, sides, sides[1:]):
        if not isinstance(op, ORDERING) or _exact(left) or _exact(right):
            continue
        numbers = [_threshold(left), _threshold(right)]
        if _has_margin(left) or _has_margin(right):
            continue
        if numbers == [None, None]:
            return True  # two computed values ordered without a threshold
        if 0.0 in numbers:
            return True  # a sign test: a difference compared with zero
    return False


def _cell_of(line: int, cell_lines: list[int]) -> int:
    return max((start for start in cell_lines if start <= line), default=1)


def noiseless_comparisons(source: str) -> list[Finding]:
    """``pick``/``claim`` conditions that order two computed values with no noise threshold."""
    tree = ast.parse(source)
    assigned = _assignments(tree)
    lines = source.splitlines()
    findings: list[Finding] = []
    seen: set[tuple[int, int]] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _call_name(node) in PROSE_CALLS and node.args):
            continue
        for compare in _compares(node.args[0], assigned):
            key = (compare.lineno, compare.col_offset)
            if key in seen or not _noiseless(compare):
                continue
            seen.add(key)
            text = ast.unparse(compare)
            findings.append(Finding(node.lineno, text, lines[node.lineno - 1].strip()[:90]))
    return findings


NUMERIC_SPEC = re.compile(r"[,dfeEgGn%]")


def hand_formatted_numbers(source: str) -> list[Finding]:
    """Format specs such as ``{x:.3f}`` inside the f-strings of ``say``/``pick`` calls."""
    tree = ast.parse(source)
    lines = source.splitlines()
    findings: list[Finding] = []
    seen: set[int] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _call_name(node) in {"say", "pick"}):
            continue
        for child in ast.walk(node):
            if not isinstance(child, ast.FormattedValue) or child.format_spec is None or id(child) in seen:
                continue
            seen.add(id(child))
            spec = "".join(
                part.value if isinstance(part, ast.Constant) else "{…}" for part in child.format_spec.values
            )
            if not NUMERIC_SPEC.search(spec):
                continue
            text = "{" + ast.unparse(child.value) + ":" + spec + "}"
            # Before Python 3.12, the parts of an f-string carry the position of the call.
            line = getattr(child, "lineno", node.lineno)
            findings.append(Finding(line, text, lines[line - 1].strip()[:90]))
    return findings


def lesson_sources(root: Path) -> dict[str, Path]:
    """``{"00": solutions/00_introduction.py, ...}``."""
    return {path.name[:2]: path for path in sorted((root / "solutions").glob("[0-9][0-9]_*.py"))}
