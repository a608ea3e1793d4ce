"""Similarity and provenance flags for instructors: exercise code that is the reference
solution (or another submission's) under new names, and code that loads code at run time.

**Similarity.** Each exercise function is parsed (``ast``, never executed) and normalised
before it is compared: docstring, comments, formatting and type annotations dropped; every
name the function binds itself (arguments, local variables, loop and comprehension
variables, nested functions) replaced by a placeholder numbered in order of first use
(``v0``, ``v1``...); every string and number replaced by one placeholder each. Names it
does not bind (``np``, ``len``, a method such as ``.groupby``) are kept: they carry the
approach. The normalised code is split into tokens (``tokenize``), and:

* a function whose token sequence equals the reference's, or another submission's, is
  flagged as identical (renaming variables, reformatting or rewording strings changes
  nothing);
* a function that shares at least :data:`NEAR` of its :data:`K`-token sequences with the
  reference's (Jaccard index of the two sets) is flagged as nearly identical: a copy with a
  line added, removed or reordered.

Honest answers to a short exercise coincide, so functions of fewer than :data:`MIN_NODES`
syntax nodes are not compared. Between submissions only identical code is flagged (a linear
pass); for near copies among learners, run a dedicated tool (MOSS, Dolos, copydetect) on
the lesson files. A flag is a reason for a human to look, never a change of grade.

**Provenance.** A lesson file that loads code at run time can carry the reference in any
disguise (compressed, encoded, downloaded), so the tree of the whole file is searched for
the ways to do it: ``exec``, ``eval``, ``compile`` and ``__import__`` called by name or
through ``builtins``, and imports of ``marshal``, ``importlib``, ``runpy``, ``zipimport``,
``pickle`` and of the decoders that hide source (``base64``, ``binascii``, ``codecs``,
``zlib``, ``lzma``, ``bz2``, ``gzip``). This is best effort: code that hides even these
names (``getattr`` on a computed string) escapes it, which is why the sandbox, not this
check, is what keeps the reference out of reach at grading time.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import tokenize
from collections import defaultdict
from pathlib import Path

from recsys_course.tooling.catalog import Catalog

MIN_NODES = 40  # smaller functions are not compared: short honest answers coincide
K = 5  # tokens per shingle for near-copy detection
NEAR = 0.8  # Jaccard index of shingles at or above which a function nearly matches the reference
DYNAMIC_CALLS = {"exec", "eval", "compile", "__import__"}
LOADER_MODULES = {"marshal", "importlib", "runpy", "zipimport", "imp", "pickle", "builtins"}
DECODER_MODULES = {"base64", "binascii", "codecs", "zlib", "lzma", "bz2", "gzip"}


class Fingerprint:
    """One exercise function, normalised: its exact ``digest`` and its ``shingles``."""

    def __init__(self, tokens: list[str]) -> None:
        self.digest = hashlib.sha256("\x00".join(tokens).encode()).hexdigest()
        grams = ("\x00".join(tokens[i:i + K]) for i in range(max(1, len(tokens) - K + 1)))
        self.shingles = {hashlib.blake2b(g.encode(), digest_size=8).digest() for g in grams}

    def resemblance(self, other: Fingerprint) -> float:
        """Jaccard index of the two functions' shingle sets, in [0, 1]."""
        union = len(self.shingles | other.shingles)
        return len(self.shingles & other.shingles) / union if union else 0.0


class _Normaliser(ast.NodeTransformer):
    """Renames the names a function binds to placeholders in order of first use, and
    replaces strings and numbers by placeholders; drops annotations."""

    def __init__(self, local: set[str]) -> None:
        self.local = local
        self.names: dict[str, str] = {}

    def _name(self, name: str) -> str:
        if name not in self.local:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._name(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg, node.annotation = self._name(node.arg), None
        return node

    def visit_FunctionDef(self, node):
        node.returns = None
        node.name = self._name(node.name)
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.ExceptHandler:
        if node.name:
            node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> ast.alias:
        if node.asname:
            node.asname = self._name(node.asname)
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, bool) or node.value is None or node.value is Ellipsis:
            return node
        if isinstance(node.value, (str, bytes)):
            node.value = type(node.value)()
        elif isinstance(node.value, (int, float, complex)):
            node.value = 0
        return node


def _bound_names(function: ast.AST) -> set[str]:
    """Every name the function binds inside itself (not its own name)."""
    names: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not function:
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
    return names


def normalised_tokens(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
                      copy_first: bool = True) -> list[str]:
    """The function's code after normalisation, as a list of tokens (see the module doc).
    With ``copy_first=False`` the node itself is normalised (cheaper; it is changed)."""
    node = copy.deepcopy(function) if copy_first else function
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        node.body = body[1:] or [ast.Pass()]
    node = _Normaliser(_bound_names(node)).visit(node)
    text = ast.unparse(ast.fix_missing_locations(node))
    skip = {tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER, tokenize.ENCODING}
    return [tok.string or tokenize.tok_name[tok.type] for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type not in skip]


def analyse(text: str, functions: dict[str, str]) -> tuple[dict[str, Fingerprint], list[str]]:
    """One parse of a lesson file: the :class:`Fingerprint` of each exercise function
    (``functions``: name -> exercise id; functions too short to compare and untouched stubs
    left out) and how the file loads or decodes code at run time, one phrase per way and line
    (``"exec() at line 12"``, ``"imports base64 at line 3"``; empty for ordinary code)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}, []
    loads: set[str] = set()
    candidates = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id in ("builtins", "__builtins__") else None)
            if name in DYNAMIC_CALLS:
                loads.add(f"{name}() at line {node.lineno}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            loads.update(f"imports {m} at line {node.lineno}" for m in modules
                         if m.split(".")[0] in LOADER_MODULES | DECODER_MODULES)
        elif isinstance(node, ast.Name) and node.id == "__builtins__":
            loads.add(f"reaches __builtins__ at line {node.lineno}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in functions:
            candidates.append(node)
    found: dict[str, Fingerprint] = {}
    for node in candidates:
        inside = list(ast.walk(node))
        if len(inside) < MIN_NODES or functions[node.name] in found:
            continue
        if any(isinstance(n, ast.Raise) and "NotImplementedError" in ast.dump(n) for n in inside):
            continue  # an untouched stub
        try:  # the tree is ours alone: normalise it in place
            found[functions[node.name]] = Fingerprint(normalised_tokens(node, copy_first=False))
        except (SyntaxError, ValueError, RecursionError, tokenize.TokenError):
            continue
    order = sorted(loads, key=lambda phrase: (int(phrase.rsplit(" ", 1)[1]), phrase))
    return found, order


def fingerprints(text: str, functions: dict[str, str]) -> dict[str, Fingerprint]:
    """exercise id -> :class:`Fingerprint` of its function in ``text`` (see :func:`analyse`)."""
    return analyse(text, functions)[0]


def dynamic_loading(text: str) -> list[str]:
    """How ``text`` loads or decodes code at run time (see :func:`analyse`)."""
    return analyse(text, {})[1]


def flag(submissions: list, catalog: Catalog, solutions: Path) -> None:
    """Append similarity and provenance flags to each submission's ``flags`` (an
    ``intake.Submission``)."""
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
            try:
                prints, loads = analyse(text, functions)
            except Exception as error:  # a file that defeats the analysis never stops the batch
                sub.flags.append(f"{lesson.filename} could not be compared ({type(error).__name__})")
                continue
            if loads:
                shown = "; ".join(loads[:5]) + (f"; {len(loads) - 5} more" if len(loads) > 5 else "")
                sub.flags.append(f"{lesson.filename} loads or decodes code at run time ({shown}): "
                                 "check where that code comes from")
            for exercise_id, print_ in prints.items():
                ref = reference.get(exercise_id)
                if ref is not None and ref.digest == print_.digest:
                    sub.flags.append(f"exercise {exercise_id} is identical to the reference solution "
                                     "(after normalising names, strings and numbers)")
                elif ref is not None and print_.resemblance(ref) >= NEAR:
                    sub.flags.append(f"exercise {exercise_id} is nearly identical to the reference solution "
                                     f"({print_.resemblance(ref):.0%} of its normalised code is shared)")
                else:
                    seen[(exercise_id, print_.digest)].append(sub)
        for (exercise_id, _), group in sorted(seen.items(), key=lambda kv: kv[0]):
            if len(group) > 1:
                for sub in group:
                    names = [o.label for o in group if o is not sub]
                    others = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                    sub.flags.append(f"exercise {exercise_id} is identical to {others} "
                                     "(after normalising names, strings and numbers)")
