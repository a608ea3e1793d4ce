"""``course run``: execute a lesson cell by cell and show what a notebook would show.

Run as ``python -m recsys_course.tooling.lesson_run LESSON [--solutions FILE] [--use-solutions]
[--figures DIR]`` (``course run`` starts it in a child process). Every code cell runs in
one namespace, in order. When a cell ends in a bare expression, its value is displayed as a
notebook would: tables as text, other values by ``repr`` (not in ``check`` cells, whose
``claim(...)`` value is for the site build; a claim that fails prints its own note).
Matplotlib figures left open at the end of a cell are saved to ``--figures``, named after
their titles. Keras training that would be silent (``verbose=0``) prints one line per epoch
on stderr, so a long training cell shows its progress. A stub that is still in place stops
the run with one line naming the exercise and the check command; with ``--use-solutions``
the reference code of each unsolved exercise runs instead, so the rest of the lesson can be
seen.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import re
import sys
import time
import traceback
from pathlib import Path

from recsys_course.tooling.lessons import Cell, parse_cells
from recsys_course.tooling.quiet import one_fallback_notice

STUB_MARKER = "not solved yet. Stuck? Run: course hint"
PANDAS_ROWS = 30


def display(value: object) -> None:
    """Print ``value`` as a notebook would show a cell's result (``None`` shows nothing)."""
    if value is None:
        return
    module = type(value).__module__
    if module.startswith("matplotlib"):
        return  # figures are saved after the cell
    if module.startswith("pandas.io.formats.style"):  # a Styler: show its data
        value = value.data
    if hasattr(value, "to_string") and module.startswith("pandas"):
        import pandas as pd

        import shutil

        width = shutil.get_terminal_size((120, 40)).columns
        # Every column, wrapped to the terminal like a notebook's scrolling table.
        with pd.option_context("display.max_rows", PANDAS_ROWS, "display.max_columns", 30,
                               "display.width", width):
            print(value)
        return
    print(repr(value))


def split_last_expression(source: str, filename: str, first_line: int):
    """Compile a cell as (body code, last-expression code or None), keeping line numbers."""
    tree = ast.parse("\n" * (first_line - 1) + source, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec")
    return body, compile(last, filename, "eval") if last is not None else None


def figure_title(figure) -> str:
    """A figure's title: its suptitle, else the titles of its axes joined, else ""."""
    suptitle = getattr(figure, "_suptitle", None)
    if suptitle is not None and suptitle.get_text().strip():
        return suptitle.get_text()
    return " ".join(t for t in (ax.get_title() for ax in figure.get_axes()) if t.strip())


def slug(text: str, limit: int = 60) -> str:
    """``"Recall@10 by epoch (validation)"`` -> ``"recall-10-by-epoch-validation"``."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-")


def save_figures(folder: Path, cell_number: int, used: set[str]) -> None:
    """Save and close the figures a cell left open, each named after its title (a slug,
    made unique within the run with ``-2``, ``-3`` ...; ``cellNN-M`` without a title), and
    print where each went."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    import matplotlib.pyplot as plt

    for index, number in enumerate(plt.get_fignums(), start=1):
        figure = plt.figure(number)
        base = slug(figure_title(figure)) or f"cell{cell_number:02d}-{index}"
        name, copy = base, 1
        while name in used:
            copy += 1
            name = f"{base}-{copy}"
        used.add(name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=90, bbox_inches="tight")
        print(f"[figure saved: {path}]")
    plt.close("all")


def show_training_progress(say) -> None:
    """Make Keras ``Model.fit`` calls with ``verbose=0`` report each epoch through ``say``
    (a one-line summary: epoch, metrics, seconds), once Keras is imported. Fits that print
    their own progress (``verbose`` 1 or 2) are left alone."""
    for name in ("tf_keras", "keras"):
        module = sys.modules.get(name)
        model = getattr(module, "Model", None) if module is not None else None
        callbacks = getattr(module, "callbacks", None) if module is not None else None
        if model is None or callbacks is None or getattr(model.fit, "_course_progress", False):
            continue

        class EpochLine(callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.started = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                total = (self.params or {}).get("epochs")
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in (logs or {}).items()
                                    if isinstance(v, (int, float)))
                seconds = time.monotonic() - self.started
                name = getattr(self.model, "name", "model")
                say(f"[training {name}: epoch {epoch + 1}/{total}, {metrics}; {seconds:.0f} s]")

        def wrap(fit):
            @functools.wraps(fit)
            def fit_with_progress(self, *args, **kwargs):
                if kwargs.get("verbose", "auto") == 0:
                    kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), EpochLine()]
                return fit(self, *args, **kwargs)

            fit_with_progress._course_progress = True
            return fit_with_progress

        model.fit = wrap(model.fit)


def is_unsolved(cell: Cell) -> bool:
    return cell.exercise is not None and STUB_MARKER in cell.source


class Progress:
    """One self-overwriting status line on a terminal while a cell runs for more than a
    second ("[cell 14/52, line 230: 35 s]"), so a long training cell is visibly alive.

    Disabled when stderr is not a terminal. Anything the cell prints to stdout first clears
    the line (see :class:`ClearsProgress`), so output and status never mix.
    """

    def __init__(self, total: int) -> None:
        import threading

        self.total = total
        self.enabled = sys.stderr.isatty()
        self.visible = False
        self.current: tuple[int, int, float] | None = None
        self.lock = threading.Lock()
        if self.enabled:
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while True:
            time.sleep(1.0)
            with self.lock:
                if self.current is None:
                    continue
                number, line, started = self.current
                seconds = time.monotonic() - started
                if seconds >= 1:
                    sys.stderr.write(f"\r\x1b[2K[cell {number}/{self.total}, line {line}: {seconds:.0f} s] ")
                    sys.stderr.flush()
                    self.visible = True

    def show(self, number: int, line: int) -> None:
        self.current = (number, line, time.monotonic())

    def clear(self) -> None:
        with self.lock:
            if self.visible:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()
                self.visible = False

    def stop(self) -> None:
        self.current = None
        self.clear()

    def say(self, line: str) -> None:
        """Print a line on stderr (training progress) without mixing it with the status."""
        self.clear()
        print(line, file=sys.stderr, flush=True)


class ClearsProgress:
    """A stdout wrapper that clears the progress line before the cell's own output."""

    def __init__(self, stream, progress: Progress) -> None:
        self._stream, self._progress = stream, progress

    def write(self, text: str) -> int:
        if self._progress.visible:
            self._progress.clear()
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def run(lesson: Path, solutions: Path | None, use_solutions: bool, figures: Path, command: str) -> int:
    reference = {c.exercise: c for c in parse_cells(solutions.read_text(encoding="utf-8"))} if solutions else {}
    cells = [c for c in parse_cells(lesson.read_text(encoding="utf-8")) if c.kind == "code"]
    namespace: dict = {"__name__": "__main__", "__file__": str(lesson)}
    progress = Progress(len(cells))
    if progress.enabled:
        sys.stdout = ClearsProgress(sys.stdout, progress)
    sys.path.insert(0, str(lesson.parent))
    figure_names: set[str] = set()
    for number, cell in enumerate(cells, start=1):
        show_training_progress(progress.say)
        source, filename, first = cell.source, str(lesson), cell.first_line
        if use_solutions and is_unsolved(cell) and cell.exercise in reference:
            ref = reference[cell.exercise]
            source, filename, first = ref.source, str(solutions), ref.first_line
            print(f"[exercise {cell.exercise} is not solved yet: running the reference solution]")
        progress.show(number, cell.first_line)
        try:
            body, last = split_last_expression(source, filename, first)
            exec(body, namespace)  # running the lesson is the point
            value = eval(last, namespace) if last is not None else None
        except KeyboardInterrupt:
            raise
        except NotImplementedError as error:
            progress.stop()
            from recsys_course.tooling.grading.messages import NOT_SOLVED

            stub = NOT_SOLVED.search(str(error))
            if not stub:
                raise
            print(
                f"Stopped at line {cell.first_line}: exercise {stub['id']} ({stub['title']}) is not "
                f"solved yet. Solve it and check it with `course check {stub['id']}`, or see the rest "
                f"of the lesson with `{command} --use-solutions`.",
                file=sys.stderr,
            )
            return 1
        except SyntaxError as error:
            progress.stop()
            where = f"{Path(error.filename or filename).name}, line {error.lineno}"
            print(f"{where}: SyntaxError: {error.msg}", file=sys.stderr)
            return 1
        except Exception:  # shown with the lesson's own lines
            progress.stop()
            traceback.print_exc()
            return 1
        progress.stop()
        if "check" not in cell.tags:  # a claim's True is for the site build, not for reading
            display(value)
        save_figures(figures, number, figure_names)
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_course.tooling.lesson_run")
    parser.add_argument("lesson", type=Path)
    parser.add_argument("--solutions", type=Path, help="the lesson's reference solution file")
    parser.add_argument("--use-solutions", action="store_true")
    parser.add_argument("--figures", type=Path, default=Path(".course/figures"))
    parser.add_argument("--command", default="course run", help="how to re-run, for messages")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    one_fallback_notice()
    started = time.perf_counter()
    try:
        code = run(args.lesson.resolve(), args.solutions, args.use_solutions, args.figures, args.command)
    except KeyboardInterrupt:
        print("\nStopped (Ctrl-C).", file=sys.stderr)
        return 130
    if code == 0:
        print(f"\n{args.lesson.name} ran to the end in {time.perf_counter() - started:.0f} s.")
    return code


if __name__ == "__main__":
    sys.exit(main())
