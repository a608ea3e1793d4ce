"""Prose that cannot drift from the numbers: generated sentences and guarded claims.

A lesson's numbers depend on the data it runs on (synthetic, MovieLens 100K, a learner's
own folder), so a sentence such as "the towers beat popularity" may hold on one dataset and
not on another. Lessons therefore state data-dependent comparisons in one of two ways:

* :func:`say` renders a sentence built from the computed values (``say(f"EASE reaches
  {r:.3f}")``): Markdown on the site and in notebooks, plain text in a script run.
* :func:`claim` guards a sentence written in a Markdown cell. Put the call in a code cell
  tagged ``check`` right after the sentence; the site hides such cells. When the condition
  is false the site build fails (``COURSE_STRICT_CLAIMS=1``, set by the build), naming the
  claim; in a learner's run it prints a notice instead, because the learner's data may
  legitimately differ.

Use :func:`pick` to choose between two wordings by a condition, so the sentence shown is
always the true one.

Numbers and comparisons in prose go through one vocabulary:

* :func:`fmt` writes a number the same way everywhere (counts as integers with thousands
  separators, metrics to three significant digits, seconds, percentages, ratios), and
  :func:`signed` writes a change with its sign, always *new minus old*;
* :func:`compare` says "higher", "lower" or "about the same" only when the difference is
  larger than a stated noise threshold (twice a standard error over users or seeds, from
  :func:`recsys_course.evaluation.paired_standard_error`, or an explicit tolerance for
  timings), so a sentence never ranks two numbers the data cannot tell apart.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from dataclasses import dataclass

STRICT_ENV = "COURSE_STRICT_CLAIMS"


class ClaimError(AssertionError):
    """A sentence on a lesson page is false on the data the page was built with."""


def strict() -> bool:
    """True while the site is built: a false claim must fail the build."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def claim(condition: object, sentence: str) -> bool:
    """Check that ``sentence`` (quoted from the lesson's prose) is true on this data.

    Returns ``bool(condition)``. When it is false: raises :class:`ClaimError` during a site
    build, otherwise prints one notice so a learner knows the prose does not describe their
    run. ``condition`` must be a plain truth value computed from the lesson's outputs.
    """
    holds = bool(condition)
    if not holds:
        message = f"this claim does not hold on the data of this run: {sentence!r}"
        if strict():
            raise ClaimError(message + " (fix the sentence, or generate it with say()/pick())")
        print(f"Note: {message}", file=sys.stderr)
    return holds


def pick(condition: object, if_true: str, if_false: str) -> str:
    """``if_true`` when ``condition`` holds, else ``if_false``: the wording that is true."""
    return if_true if bool(condition) else if_false


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def say(markdown: str) -> None:
    """Show a generated sentence or paragraph: rendered Markdown in a notebook and on the
    site, plain text when the lesson runs as a script."""
    if _in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(markdown))
    else:
        print(markdown)


# ----------------------------------------------------------------------------- numbers

MINUS = "\u2212"  # the typographic minus, so "-0.023" and "−0.023" never mix on a page
KINDS = ("auto", "count", "metric", "error", "number", "setting", "seconds", "percent", "ratio")


def fmt(value: object, kind: str = "auto") -> str:
    """``value`` written for a sentence, the same way on every page.

    ``kind`` says what the number is:

    * ``"count"``: an integer with thousands separators (``4,096``, never ``4096.0``);
    * ``"metric"``: a score in [0, 1] such as recall or NDCG, three significant digits
      (``0.234``, ``0.0512``);
    * ``"error"``: an error such as RMSE in stars, four decimals below 10 (``0.9131``,
      ``1.1240``), enough to tell apart the models of one page, four significant digits above;
    * ``"number"``: any other quantity (parameters per rating, a size), three significant
      digits, whole numbers from 100 on, with thousands separators (``1.17``, ``12,345``);
    * ``"setting"``: a value the code fixes or chooses from a grid (a learning rate, a
      regularisation strength, a loss weight), written as exactly as the code has it, without
      padding to significant digits (``0.1``, ``0.003``, ``500``, ``1``, ``1e-05``);
    * ``"seconds"``: a duration (``0.42 s``, ``12 s``, ``2 min 05 s``);
    * ``"percent"``: a fraction shown as a percentage (``0.123`` -> ``12.3 %``);
    * ``"ratio"``: a multiple (``1.3x``);
    * ``"auto"``: integers as counts, other numbers as metrics.

    NaN becomes "n/a"; booleans and non-numbers are refused (a sentence should not print them).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"fmt() formats numbers, not {type(value).__name__}")
    x = float(value)
    if math.isnan(x):
        return "n/a"
    if kind == "auto":
        kind = "count" if isinstance(value, numbers.Integral) or (x.is_integer() and abs(x) >= 10) else "metric"
    sign = MINUS if x < 0 else ""
    x = abs(x)
    if math.isinf(x):
        return sign + "\u221e"
    if kind == "count":
        return sign + f"{round(x):,}"
    if kind == "setting":
        return sign + f"{x:,g}"
    if kind == "seconds":
        if x < 10:
            return sign + f"{_significant(x, 2)} s"
        if x < 60:
            return sign + f"{x:.0f} s"
        minutes, seconds = divmod(round(x), 60)
        return sign + f"{minutes} min {seconds:02d} s"
    if kind == "percent":
        return sign + f"{_significant(100 * x, 3, max_decimals=1)} %"
    if kind == "ratio":
        return sign + f"{_significant(x, 2, max_decimals=2)}x"
    if kind == "error" and x < 10:
        return sign + f"{x:.4f}"  # errors in stars: four decimals, so 1.1240 and 0.9361 align
    return sign + _significant(x, 4 if kind == "error" else 3)


def _significant(x: float, digits: int, max_decimals: int | None = None) -> str:
    """``x >= 0`` to ``digits`` significant digits, with thousands separators."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(x)))
    if max_decimals is not None:
        decimals = min(decimals, max_decimals)
    return f"{x:,.{decimals}f}"


def signed(change: float, kind: str = "metric", like: float | None = None) -> str:
    """A change with its sign (``+0.023``, ``−0.023``); always computed as *new minus old*.

    With ``like`` (one of the two numbers compared), the change gets as many decimals as
    ``fmt(like, kind)`` writes, so "0.9361 to 0.9131" reads with "−0.0230", not "−0.02303".
    """
    text = fmt(change, kind)
    if like is not None and text != "n/a" and kind in ("metric", "error", "number"):
        reference = fmt(like, kind)
        decimals = len(reference.rpartition(".")[2]) if "." in reference else 0
        value = abs(float(change))
        text = (MINUS if float(change) < 0 and round(value, decimals) else "") + f"{value:,.{decimals}f}"
    return text if text.startswith(MINUS) or text == "n/a" else "+" + text


@dataclass(frozen=True)
class Comparison:
    """``value`` against ``reference``, told apart only beyond ``noise``.

    ``difference`` is ``value - reference`` (the one sign convention of every page).
    ``direction`` is ``"higher"``, ``"lower"`` or ``"about the same"``; ``better`` and
    ``worse`` take ``higher_is_better`` into account (lower is better for an error or a
    time) and are both false inside the noise.
    """

    value: float
    reference: float
    noise: float
    higher_is_better: bool = True
    kind: str = "metric"

    @property
    def difference(self) -> float:
        return float(self.value) - float(self.reference)

    @property
    def relative(self) -> float:
        """The difference as a fraction of the reference (nan for a zero reference)."""
        return self.difference / abs(self.reference) if self.reference else math.nan

    @property
    def distinct(self) -> bool:
        """Whether the difference is larger than the noise."""
        return abs(self.difference) > self.noise

    @property
    def direction(self) -> str:
        if not self.distinct:
            return "about the same"
        return "higher" if self.difference > 0 else "lower"

    @property
    def better(self) -> bool:
        return self.distinct and (self.difference > 0) == self.higher_is_better

    @property
    def worse(self) -> bool:
        return self.distinct and not self.better

    def word(self, higher: str = "higher than", lower: str = "lower than", same: str = "about the same as") -> str:
        """The wording for this comparison: one of the three, by :attr:`direction`."""
        return {"higher": higher, "lower": lower, "about the same": same}[self.direction]

    def change(self) -> str:
        """The signed difference, formatted with the reference's decimals (``+0.023``)."""
        return signed(self.difference, self.kind, like=self.reference)

    def __str__(self) -> str:
        return f"{fmt(self.value, self.kind)} {self.word()} {fmt(self.reference, self.kind)}"


def compare(value: float, reference: float, *, se: float | None = None, noise: float | None = None,
            z: float = 2.0, higher_is_better: bool = True, kind: str = "metric") -> Comparison:
    """Compare ``value`` with ``reference`` at a stated noise level; say exactly one of:

    * ``se``: the standard error of the difference (over users, user-cutoff pairs or seeds,
      e.g. :func:`recsys_course.evaluation.paired_standard_error`); differences within
      ``z`` standard errors (default 2) are "about the same";
    * ``noise``: an explicit threshold on the absolute difference, for numbers without a
      standard error (a relative tolerance for timings: ``noise=0.1 * reference``).
    """
    if (se is None) == (noise is None):
        raise ValueError("compare() needs exactly one of se= (a standard error) or noise= (a threshold)")
    threshold = z * float(se) if se is not None else float(noise)
    if not threshold >= 0:
        raise ValueError(f"the noise threshold must be a number >= 0, got {threshold!r}")
    return Comparison(float(value), float(reference), threshold, higher_is_better, kind)
