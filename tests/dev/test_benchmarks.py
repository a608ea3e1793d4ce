"""The benchmarks of ``course bench`` under test.

A benchmark reads names from its lesson's solution (``lesson.QueryTower``,
``lesson.IMPROVED_RECIPE``...), and ``course bench`` loads only the ``setup`` and
``exercise`` cells of that solution. Two checks keep a renamed or moved name from breaking
it silently:

* static: every ``lesson.<name>`` a benchmark reads (following the lesson object into the
  helpers it is passed to, in the benchmark's module and in ``recsys_course``) is bound at
  the top level of a setup or exercise cell of the lesson's solution;
* smoke: every benchmark runs on ``synthetic:tiny`` with ``COURSE_BENCH_QUICK=1`` and returns
  JSON data whose numbers are finite.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recsys_course.paths import PACKAGE_DIR
from recsys_course.tooling import bench
from recsys_course.tooling.catalog import load_catalog
from recsys_course.tooling.lessons import GRADED_TAGS, parse_cells

CATALOG = load_catalog()
PACKAGE = PACKAGE_DIR  # the recsys_course folder: module names resolve from here
BENCHMARK_DIR = PACKAGE / "tooling" / "benchmarks"
LESSON_IDS = sorted(BENCHMARKS := bench.BENCHMARKS)


# ---------------------------------------------------------------------------- static check


def graded_names(solution_text: str) -> set[str]:
    """Names bound at the top level of the setup and exercise cells (what ``load_lesson``
    runs, so all a benchmark can read): assignments, defs, classes, imports, and names bound
    inside top-level ``if``/``try``/``with``/``for`` blocks."""
    names: set[str] = set()
    for cell in parse_cells(solution_text):
        if cell.kind == "code" and cell.tags & GRADED_TAGS:
            _bind(ast.parse(cell.source).body, names)
    return names


def _bind(statements: list[ast.stmt], names: set[str]) -> None:
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if not isinstance(node, ast.With) else
                [i.optional_vars for i in node.items if i.optional_vars])
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        for block in ("body", "orelse", "finalbody"):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                _bind(getattr(node, block, []), names)
        for handler in getattr(node, "handlers", []):
            _bind(handler.body, names)


@dataclass
class Reads:
    """``lesson.<name>`` reads found by :func:`lesson_reads`: name -> "file:line" of the first."""

    names: dict[str, str] = field(default_factory=dict)
    unfollowed: list[str] = field(default_factory=list)  # uses the analysis cannot see through


def _parse_module(path: Path) -> tuple[dict[str, ast.FunctionDef], dict[str, str], dict[str, tuple[str, str]]]:
    """(top-level functions, imported module aliases -> module, imported names -> (module, name))."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    modules, names = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            for a in node.names:
                full = f"{module}.{a.name}"
                if _module_path(full):
                    modules[a.asname or a.name] = full
                else:
                    names[a.asname or a.name] = (module, a.name)
    return functions, modules, names


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module name of a ``from ... import`` in the package file ``path``."""
    if not node.level:
        return node.module or ""
    package = ["recsys_course", *path.relative_to(PACKAGE).parent.parts]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _module_path(dotted: str) -> Path | None:
    """The source file of a ``recsys_course`` module, found on disk without importing it;
    ``None`` for anything else (code outside the package cannot read a lesson's names)."""
    parts = dotted.split(".")
    if parts[0] != "recsys_course":
        return None
    base = PACKAGE.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def lesson_reads(module_path: Path, function_name: str) -> Reads:
    """Every ``lesson.<name>`` read by ``function_name`` of ``module_path``, whose second
    parameter (whatever its name) is the lesson, and by the ``recsys_course`` functions it
    passes the lesson to, by position or keyword. ``getattr(lesson, "name")`` counts too. Any
    other use of the lesson object (stored, passed to a function the analysis cannot open)
    is listed in ``unfollowed``."""
    reads = Reads()
    parsed: dict[Path, tuple] = {}
    todo: list[tuple[Path, str, int | str]] = [(module_path, function_name, 1)]
    done: set[tuple[Path, str, str]] = set()
    while todo:
        path, name, which = todo.pop()
        functions, modules, imported = parsed.setdefault(path, _parse_module(path))
        if name not in functions:
            module, original = imported.get(name, ("", ""))
            if _module_path(module):  # a re-export, as in a package's __init__.py
                todo.append((_module_path(module), original, which))
            else:
                reads.unfollowed.append(f"{path.name}: no function {name}() to follow the lesson into")
            continue
        function = functions[name]
        params = [a.arg for a in function.args.posonlyargs + function.args.args]
        if isinstance(which, int) and which >= len(params):
            reads.unfollowed.append(f"{path.name}:{function.lineno}: {name}() takes the lesson in *args")
            continue
        param = params[which] if isinstance(which, int) else which
        if (path, name, param) in done:
            continue
        done.add((path, name, param))

        def where(node: ast.AST, path: Path = path) -> str:
            return f"{path.name}:{node.lineno}"

        handled: set[int] = set()  # ids of Name nodes accounted for
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == param:
                reads.names.setdefault(node.attr, where(node))
                handled.add(id(node.value))
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and node.args:
                    first = node.args[0]
                    if isinstance(first, ast.Name) and first.id == param and len(node.args) > 1 \
                            and isinstance(node.args[1], ast.Constant):
                        reads.names.setdefault(node.args[1].value, where(node))
                        handled.add(id(first))
                    continue
                target = _resolve(func, path, functions, modules, imported)
                for position, arg in enumerate(node.args):
                    if isinstance(arg, ast.Name) and arg.id == param and target:
                        todo.append((*target, position))
                        handled.add(id(arg))
                for keyword in node.keywords:
                    if isinstance(keyword.value, ast.Name) and keyword.value.id == param and target and keyword.arg:
                        todo.append((*target, keyword.arg))
                        handled.add(id(keyword.value))
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and node.id == param and isinstance(node.ctx, ast.Load) \
                    and id(node) not in handled:
                reads.unfollowed.append(f"{where(node)}: {name}() uses {param!r} in a way the check cannot follow")
    return reads


def _resolve(func: ast.expr, path: Path, functions, modules, imported) -> tuple[Path, str] | None:
    """(source file, function name) of a called ``recsys_course`` function, else ``None``."""
    if isinstance(func, ast.Name):
        if func.id in functions:
            return path, func.id
        if func.id in imported:
            module, name = imported[func.id]
            source = _module_path(module)
            return (source, name) if source else None
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules:
        source = _module_path(modules[func.value.id])
        return (source, func.attr) if source else None
    return None


def missing_names(benchmark_module: Path, function_name: str, solution: Path) -> list[str]:
    """Problems that would break ``course bench``: names the benchmark reads that no setup or
    exercise cell of ``solution`` binds, and uses of the lesson the check cannot follow."""
    reads = lesson_reads(benchmark_module, function_name)
    defined = graded_names(solution.read_text(encoding="utf-8"))
    problems = [
        f"{where}: the benchmark reads lesson.{name}, which no setup or exercise cell of "
        f"{solution.name} defines (benchmarks see those cells only)"
        for name, where in sorted(reads.names.items()) if name not in defined
    ]
    return problems + reads.unfollowed


def _solution(lesson_id: str) -> Path:
    return CATALOG.root / "solutions" / CATALOG.lesson(lesson_id).filename


def _benchmark_source(lesson_id: str) -> tuple[Path, str]:
    function = BENCHMARKS[lesson_id]
    return Path(sys.modules[function.__module__].__file__), function.__name__


def test_every_lesson_and_benchmark_module_is_in_the_table():
    modules = sorted(p.stem for p in BENCHMARK_DIR.glob("lesson_*.py"))
    # an appendix's benchmark may have a module of another name (the scale ladder: ladder.py)
    listed = sorted(stem for f in BENCHMARKS.values()
                    if (stem := Path(sys.modules[f.__module__].__file__).stem).startswith("lesson_"))
    assert modules == listed, f"benchmark modules {modules} but bench.BENCHMARKS lists {listed}"
    assert LESSON_IDS == [lesson.id for lesson in CATALOG.lessons], "every lesson needs a benchmark"


@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_benchmark_reads_only_names_its_lesson_defines(lesson_id):
    module, function = _benchmark_source(lesson_id)
    if CATALOG.lesson(lesson_id).exercises:  # an appendix's benchmark (the ladder) needs nothing from it
        assert lesson_reads(module, function).names, f"found no lesson.<name> read in {module.name}: is the analysis blind?"
    problems = missing_names(module, function, _solution(lesson_id))
    assert not problems, "\n".join(problems)


def _a_setup_name_a_benchmark_reads() -> tuple[str, str]:
    """(lesson id, name): a name bound by a setup cell and read by that lesson's benchmark,
    a constant if there is one."""
    found = []
    for lesson_id in LESSON_IDS:
        setup: set[str] = set()
        for cell in parse_cells(_solution(lesson_id).read_text(encoding="utf-8")):
            if cell.kind == "code" and "setup" in cell.tags:
                _bind(ast.parse(cell.source).body, setup)
        found += [(not name.isupper(), lesson_id, name) for name in lesson_reads(*_benchmark_source(lesson_id)).names
                  if name in setup]
    assert found, "no benchmark reads a setup-cell name: nothing to rename"
    _, lesson_id, name = min(found)
    return lesson_id, name


def test_the_check_reports_a_renamed_or_demoted_setup_name(tmp_path):
    """Renaming, in a copy of a solution, a setup-cell name that the benchmark reads, or
    demoting its setup cell to an untagged one, is reported by name."""
    lesson_id, name = _a_setup_name_a_benchmark_reads()
    module, function = _benchmark_source(lesson_id)
    text = _solution(lesson_id).read_text(encoding="utf-8")
    assert not missing_names(module, function, _solution(lesson_id))

    renamed = tmp_path / "renamed.py"
    renamed.write_text(re.sub(rf"\b{name}\b", f"{name}_RENAMED", text), encoding="utf-8")
    problems = missing_names(module, function, renamed)
    assert any(f"lesson.{name}," in p for p in problems), problems

    demoted = tmp_path / "demoted.py"
    demoted.write_text(text.replace('# %% tags=["setup"]', "# %%"), encoding="utf-8")
    problems = missing_names(module, function, demoted)
    assert any(f"lesson.{name}," in p for p in problems), problems


def test_the_check_follows_the_lesson_into_helpers_under_any_name(tmp_path):
    source = tmp_path / "lesson_99.py"
    source.write_text(
        "from recsys_course.ann import compare as ann_compare\n"
        "def helper(x, solutions):\n    return solutions.FROM_HELPER + getattr(solutions, 'BY_GETATTR')\n"
        "def run(data, sol):\n"
        "    keep = [sol]\n"
        "    return helper(1, solutions=sol) + sol.DIRECT + ann_compare.compare_libraries(1, 2, sol)\n"
    )
    reads = lesson_reads(source, "run")
    assert {"FROM_HELPER", "BY_GETATTR", "DIRECT", "exact_top_k", "build_annoy_index"} <= set(reads.names)
    assert len(reads.unfollowed) == 1 and ":5:" in reads.unfollowed[0], reads.unfollowed


# ------------------------------------------------------------------------------ smoke runs



def _numbers(value, path="") -> list[tuple[str, float]]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [(path, float(value))]
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in _numbers(item, f"{path}/{key}")]
    if isinstance(value, list):
        return [pair for i, item in enumerate(value) for pair in _numbers(item, f"{path}[{i}]")]
    raise AssertionError(f"{path}: {type(value).__name__} is not JSON data")


@pytest.mark.parametrize("lesson_id", LESSON_IDS)
def test_benchmark_runs_on_tiny_data(lesson_id, monkeypatch):
    """``bench.run`` of one lesson on ``synthetic:tiny`` in quick mode returns the run's
    record with the lesson's metrics, every number finite. In this process, so TensorFlow
    is imported once for all lessons."""
    monkeypatch.setenv("COURSE_BENCH_QUICK", "1")
    for size in ("COURSE_BENCH_04_ITEMS", "COURSE_BENCH_07_ROWS"):  # quick mode's defaults
        monkeypatch.delenv(size, raising=False)
    started = time.perf_counter()
    result = json.loads(json.dumps(bench.run([lesson_id], "synthetic:tiny")))  # what --out writes
    seconds = time.perf_counter() - started
    assert {"dataset", "dataset_description", "machine", "lessons", "quick"} <= set(result)
    assert result["dataset"] == "synthetic:tiny" and list(result["lessons"]) == [lesson_id]
    metrics = result["lessons"][lesson_id]
    assert isinstance(metrics, dict) and len(metrics) > 1, f"lesson {lesson_id} returned {metrics!r}"
    numbers = _numbers(metrics)
    assert len(numbers) > 1, f"lesson {lesson_id}'s benchmark returned no numbers: {metrics!r}"
    bad = [(path, value) for path, value in numbers if not math.isfinite(value)]
    assert not bad, f"lesson {lesson_id}: non-finite numbers {bad}"
    print(f"bench {lesson_id} on synthetic:tiny (quick): {seconds:.1f} s")
