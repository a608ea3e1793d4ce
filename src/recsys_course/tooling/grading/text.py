"""Text a submission can influence, made safe for wherever the batch's reports put it.

A submission chooses its folder or zip name, the names inside its zip and the messages its
code raises; all of them end up in an instructor's terminal, spreadsheet, XML parser or file
system. Every such string passes through this module on its way into a report:

* :func:`clean` escapes what a terminal, an XML parser or a reader's eye would act on
  (control characters and escape sequences, bidirectional and zero-width marks, lone
  surrogates, the two non-characters XML forbids) as visible ``\\xNN`` / ``\\uNNNN`` text, and
  truncates to a length; :func:`one_line` does the same and escapes line breaks too, so a
  name with a newline cannot forge a row of the summary;
* :func:`csv_cell` additionally defuses spreadsheet formulas;
* :func:`escape_name` turns a file name the file system gave us (possibly bytes that are not
  UTF-8) into such text, keeping every byte visible;
* :func:`dedupe` de-duplicates notes in linear time and caps their number;
* :func:`Scrubber` replaces the grader's own paths (its temporary folder, the Python
  environment, the course checkout) with placeholders.

Every function is idempotent (applying it twice gives the same text), so reports rebuilt
from ``grades.json`` (``course merge``) are identical to the ones it came from.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

MAX_MESSAGE = 2000  # characters of one message (a failure, a note) in any report
MAX_NAME = 1200  # characters of a displayed name: 255 bytes of file name, each escaped as \xNN
MAX_NOTES = 50  # notes kept per submission, after de-duplication
MAX_CELL = 32_000  # characters of one CSV cell: spreadsheets stop at 32,767

# C0 controls but tab and newline; DEL and C1 controls; the Arabic letter mark, zero-width
# and bidirectional marks, line/paragraph separators and isolates ("Trojan Source"); the
# byte-order mark, interlinear annotations, lone surrogates and U+FFFE/U+FFFF.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ufffe\uffff\ud800-\udfff]"
)
_LINE_BREAKS = re.compile("[\t\n]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object, limit: int = MAX_MESSAGE, lines: bool = True, total: int | None = None) -> str:
    """``text`` with every unsafe character escaped, at most ``limit`` characters long (a
    longer text ends with ``[truncated: N characters]``, N being ``total`` when given: the
    length of the text ``text`` was cut from). Line breaks and tabs are kept when ``lines``
    is true, escaped otherwise."""
    text = text if isinstance(text, str) else str(text)
    total = max(total or 0, len(text))
    head = _UNSAFE.sub(_escape, text[: limit + 1])
    if not lines:
        head = _LINE_BREAKS.sub(_escape, head)
    if total <= limit and len(head) <= limit:
        return head
    marker = f" [truncated: {total} characters]"
    return head[: max(0, limit - len(marker))] + marker


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """:func:`clean` for a single line: no character of the result moves the cursor."""
    return clean(text, limit, lines=False)


def csv_cell(value: object) -> object:
    """A value for a CSV cell: numbers unchanged; text on one line, bounded, and prefixed
    with ``'`` when a spreadsheet would read it as a formula (``=``, ``+``, ``-``, ``@``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = one_line(value, MAX_CELL - 1)
    return "'" + text if text.startswith(_FORMULA_START) else text


def escape_name(name: str) -> str:
    """A file or folder name as the file system gave it (``os.fsdecode``: bytes that are not
    UTF-8 arrive as surrogates), as one line of text with every odd byte visible as ``\\xNN``."""
    raw = os.fsencode(name) if isinstance(name, str) else bytes(name)
    return one_line(raw.decode("utf-8", "backslashreplace"), MAX_NAME)


def dedupe(items: Iterable[str], cap: int = MAX_NOTES, transform: Callable[[str], str] | None = None) -> list[str]:
    """``items`` without repeats, first occurrence kept, in linear time (a dict, not a list
    search); beyond ``cap`` the last item says how many more there were, so the result never
    exceeds ``cap``. ``transform`` (e.g. :meth:`Scrubber.message`) is applied to the kept
    items only, so 50,000 forged notes cost one hash each."""
    unique = list(dict.fromkeys(items))
    head = unique if len(unique) <= cap else unique[: cap - 1]
    kept = list(dict.fromkeys(map(transform, head))) if transform else head
    if len(unique) <= cap:
        return kept
    return kept + [f"... and {len(unique) - len(head)} more notes (not kept)"]


class Scrubber:
    """Replaces the grader's own paths in messages with placeholders: its temporary folders
    (``<grader>``), the course checkout (``<course>``), the Python environment (``<python>``)
    and the home folder (``~``). Learners read the messages; these paths are none of their
    business, and they differ between machines (shards of one class must agree)."""

    def __init__(self, course_root: Path | None = None, extra: dict[str, str] | None = None) -> None:
        pairs: dict[str, str] = {}
        for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
            pairs[prefix] = "<python>"
        if course_root is not None:
            pairs[str(course_root)] = "<course>"
        pairs.update(extra or {})
        home = os.path.expanduser("~")
        if home not in ("/", "~"):
            pairs.setdefault(home, "~")
        for path in list(pairs):
            real = os.path.realpath(path)
            if real != path:
                pairs.setdefault(real, pairs[path])
        pairs = {p.rstrip("/"): v for p, v in pairs.items() if len(p.rstrip("/")) > 1}
        temp = re.escape(os.path.realpath(tempfile.gettempdir()).rstrip("/"))
        # Longest first, so a path inside another gets its own placeholder.
        alternatives = [re.escape(p) for p in sorted(pairs, key=len, reverse=True)]
        self._places = pairs
        # The batch's temporary folders are named course-*; any of them is the grader's.
        # A path counts only as a whole: not inside a longer name (/usr in /home/usr).
        self._pattern = re.compile(
            r"(?<![\w./-])(?:" + "|".join([rf"(?:/tmp|{temp})/course-[^\s'\"/:]*", *alternatives]) + r")(?![\w.-])"
        )

    def __call__(self, text: str) -> str:
        return self._pattern.sub(lambda m: self._places.get(m.group(), "<grader>"), text)

    def message(self, text: str, limit: int = MAX_MESSAGE) -> str:
        """:func:`clean` of ``text`` without the grader's paths; only the part that can be
        kept is scrubbed, so an 8 MB message costs no more than a short one."""
        return clean(self(text[: 4 * limit]), limit, total=len(text))
