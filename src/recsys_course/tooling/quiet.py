"""Keeping TensorFlow's start-up chatter away from learners (``--verbose`` brings it back).

TensorFlow and absl log from C++ straight to file descriptor 2, some of it before
``TF_CPP_MIN_LOG_LEVEL`` is read (the ``All log messages before absl::InitializeLog()`` line,
oneDNN and CUDA probes) and some regardless of it (``E0000 ... NodeDef mentions attribute
use_unbounded_threadpool``). So besides setting the variables early, :func:`filter_stderr`
puts a pipe in front of descriptor 2 and drops those lines; child processes inherit the
filtered descriptor, so lesson runs and checks are quiet too.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import sys
import threading

# One C++ log line: severity letter, MMDD, time, thread id, file:line] (absl/glog format).
# Fatal (F...) lines are kept: they explain a crash.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog"
    r"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+\s+\S+:\d+\]"
    r"|WARNING:absl:"
    r"|.*oneDNN custom operations are on"
    r"|.*Could not find cuda drivers"
    r"|.*failed call to cuInit"
    r"|.*This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions:.*rebuild TensorFlow"
    r"|.*TF-TRT Warning)"
)

QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # C++ INFO, WARNING and ERROR logs off
    "GRPC_VERBOSITY": "ERROR",
    "ABSL_MIN_LOG_LEVEL": "3",
}


def is_noise(line: str) -> bool:
    """True for a TensorFlow/absl log line (learners' output and the site leave them out)."""
    return bool(NOISE.match(line.lstrip("\r")))


def strip_noise(text: str) -> str:
    """``text`` without TensorFlow/absl log lines (for captured output shown to learners)."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_noise(line))


def one_fallback_notice() -> None:
    """The data layer prints its fallback notice on stderr and raises the same text as a
    RuntimeWarning for programs; a learner's command shows the notice once."""
    import warnings

    warnings.filterwarnings("ignore", message="TFDS could not load", category=RuntimeWarning)


def quiet_environment(verbose: bool = False) -> None:
    """Set the logging variables for this process and its children (before TF is imported)."""
    one_fallback_notice()
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.update(QUIET_ENV)


def _pump(source: int, target: int) -> None:
    """Copy ``source`` to ``target`` line by line, dropping noise; flush partial lines
    (prompts, progress updates ending in ``\\r``) after a short pause."""
    pending = b""
    while True:
        ready, _, _ = select.select([source], [], [], 0.2)
        chunk = os.read(source, 65536) if ready else b""
        if ready and not chunk:  # every writer closed the pipe
            break
        pending += chunk
        parts = re.split(rb"(?<=[\n\r])", pending)
        pending = parts.pop() if parts and not parts[-1].endswith((b"\n", b"\r")) else b""
        if not ready and pending:  # nothing more for a while: show the partial line
            parts.append(pending)
            pending = b""
        out = b"".join(p for p in parts if not is_noise(p.decode("utf-8", "replace")))
        if out:
            os.write(target, out)
    if pending and not is_noise(pending.decode("utf-8", "replace")):
        os.write(target, pending)


def filter_stderr() -> None:
    """Route file descriptor 2 of this process (and of children it starts) through a filter
    that drops TensorFlow/absl noise; undone at exit."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable descriptor 2 (unusual embedding): stay unfiltered
        return
    thread = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    thread.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes our end of the pipe; the pump drains and stops
        thread.join(timeout=2)

    atexit.register(restore)
