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
"""

from __future__ import annotations

import os
import sys

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
