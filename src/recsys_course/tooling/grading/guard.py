"""Keeping graded code from ending, hanging or rewriting the grader it runs inside.

Graded lesson code runs in the same process as pytest and the grading plugin (tests call it
directly), so this module provides two defences for that process:

* :func:`contained`: while lesson code runs, ``os._exit``/``os.abort``/``sys.exit`` raise
  :class:`SubmissionMisbehaved` instead of ending the process, and a time limit interrupts
  a hang (a pure-Python loop or a sleep) with :class:`SubmissionTimeout`.
* :class:`Guard`: remembers the functions that decide and report outcomes (pytest's runner
  and reports, this plugin, common assertion helpers) and can tell when lesson code replaced
  one and put the original back.

It is not a security sandbox: code that is determined to cheat can still reach the
process's memory. It serves ``course check``, where learners grade their own work. Batch
grading does not rely on it: there the graded code runs in a bubblewrap sandbox and never
in the process that runs the assertions (see ``batch.py``). ``tests/dev/test_grading_wire.py``
checks that every watched name exists in the installed pytest.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from collections.abc import Iterator


class SubmissionMisbehaved(Exception):
    """Graded code tried to end the process or rewrite the grader."""


class SubmissionTimeout(Exception):
    """Graded code ran longer than its time limit."""


def _refuse(name: str):
    def refuse(*args, **kwargs):
        raise SubmissionMisbehaved(f"the graded code called {name}(); it must return instead")

    return refuse


@contextmanager
def contained(seconds: float | None, what: str, *, cpu: bool = False) -> Iterator[None]:
    """Run a block of graded code with exits turned into exceptions and a time limit.

    The time limit is wall-clock time (``SIGALRM``), or with ``cpu`` the process's CPU time
    (``SIGPROF``: the same on a busy machine as on an idle one; a block that sleeps is left
    to the caller's wall-clock backstop). It only applies in the main thread; elsewhere the
    caller's process-level timeout is the backstop.
    """
    saved = (os._exit, os.abort, sys.exit)
    os._exit, os.abort, sys.exit = _refuse("os._exit"), _refuse("os.abort"), _refuse("sys.exit")
    use_alarm = bool(seconds) and threading.current_thread() is threading.main_thread()
    timer, signum = (signal.ITIMER_PROF, signal.SIGPROF) if cpu else (signal.ITIMER_REAL, signal.SIGALRM)
    if use_alarm:
        unit = "s of CPU time" if cpu else "s"

        def on_alarm(signum, frame):
            raise SubmissionTimeout(f"{what} did not finish within {seconds:g} {unit} (endless loop?)")

        previous = signal.signal(signum, on_alarm)
        signal.setitimer(timer, seconds)
    try:
        yield
    except SystemExit as error:  # raised directly, not through sys.exit
        raise SubmissionMisbehaved(f"the graded code raised SystemExit({error.code})") from None
    finally:
        if use_alarm:
            signal.setitimer(timer, 0)
            signal.signal(signum, previous)
        os._exit, os.abort, sys.exit = saved


# (module, attribute path) pairs whose replacement would change what a test run reports.
WATCHED = [
    ("_pytest.runner", "call_and_report"),
    ("_pytest.runner", "pytest_runtest_call"),
    ("_pytest.runner", "runtestprotocol"),
    ("_pytest.runner", "pytest_runtest_makereport"),
    ("_pytest.runner", "CallInfo.from_call"),
    ("_pytest.reports", "TestReport.from_item_and_call"),
    ("_pytest.reports", "BaseReport.passed"),
    ("_pytest.reports", "BaseReport.failed"),
    ("_pytest.reports", "BaseReport.skipped"),
    ("_pytest.python", "Function.runtest"),
    ("_pytest.python", "pytest_pyfunc_call"),
    ("_pytest.main", "pytest_runtestloop"),
    ("_pytest.outcomes", "fail"),
    ("_pytest.approx", "approx"),  # pytest 9.2; _pytest.python_api before
    ("_pytest.approx", "ApproxScalar.__eq__"),
    ("_pytest.python_api", "approx"),
    ("_pytest.python_api", "ApproxScalar.__eq__"),
    ("_pytest.raises", "raises"),
    ("pytest", "approx"),
    ("pytest", "raises"),
    ("pytest", "fail"),
    ("recsys_course.tooling.grading.plugin", "GradeCollector.pytest_runtest_logreport"),
    ("recsys_course.tooling.grading.plugin", "GradeCollector.pytest_terminal_summary"),
    ("recsys_course.tooling.grading.plugin", "GradeCollector.pytest_collection_modifyitems"),
    ("recsys_course.tooling.grading.plugin", "_first_line"),
    ("recsys_course.tooling.grading.plugin", "score"),
    ("recsys_course.tooling.grading.plugin", "report_json"),
    ("recsys_course.tooling.grading.plugin", "write_json"),
    ("recsys_course.tooling.grading.plugin", "format_table"),
    ("recsys_course.tooling.grading.plugin", "load_lesson"),
    ("recsys_course.tooling.grading.results", "score"),
    ("recsys_course.tooling.grading.results", "report_json"),
    ("recsys_course.tooling.grading.results", "write_json"),
    ("recsys_course.tooling.grading.results", "format_table"),
    ("numpy.testing", "assert_allclose"),
    ("numpy.testing", "assert_array_equal"),
    ("numpy.testing", "assert_array_almost_equal"),
    ("numpy.testing", "assert_equal"),
    ("numpy", "allclose"),
    ("numpy", "isclose"),
    ("numpy", "array_equal"),
    ("pandas.testing", "assert_frame_equal"),
    ("pandas.testing", "assert_series_equal"),
    ("math", "isclose"),
    ("json", "dump"),
    ("json", "dumps"),
    ("builtins", "open"),
    ("builtins", "isinstance"),
    ("builtins", "len"),
    ("builtins", "abs"),
    ("builtins", "AssertionError"),
    ("os", "replace"),
]


class Guard:
    """Snapshot of :data:`WATCHED`; take it before any graded code runs."""

    def __init__(self) -> None:
        self.notes: list[str] = []  # what was replaced and restored, for the report
        self.originals: dict[tuple[str, str], tuple[object, str, object]] = {}
        for module_name, path in WATCHED:
            try:
                owner = importlib.import_module(module_name)
                *parents, name = path.split(".")
                for parent in parents:
                    owner = getattr(owner, parent)
                # Class attributes are read from __dict__ so properties stay properties.
                value = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            except (ImportError, AttributeError, KeyError):
                continue  # not present in this version: nothing to guard
            self.originals[(module_name, path)] = (owner, name, value)

    def _current(self, owner: object, name: str) -> object:
        if isinstance(owner, type):
            return owner.__dict__.get(name, None)
        return getattr(owner, name, None)

    def violations(self) -> list[str]:
        """Names of guarded functions that graded code replaced."""
        return [
            f"{module}.{path}"
            for (module, path), (owner, name, value) in self.originals.items()
            if self._current(owner, name) is not value
        ]

    def restore(self) -> list[str]:
        """Put every replaced function back; return what was replaced."""
        changed = self.violations()
        for (module, path), (owner, name, value) in self.originals.items():
            if f"{module}.{path}" in changed:
                setattr(owner, name, value)
        return changed

