"""A warm worker: one process keeps pytest, pandas and TensorFlow imported and forks a fresh
child for each check, so a re-check costs the tests, not ten seconds of imports.

``course watch`` starts one for the clone (``python -m recsys_course.tooling.grading.warm_worker ROOT``)
and stops it when it ends; ``course check`` uses it when one is running (see
:func:`submit`) and otherwise starts pytest cold. Every check still runs in its own
process (a fork of the worker, in its own session): graded code cannot change the worker,
and a time limit ends the child and everything it started.

Protocol, over the Unix socket ``<clone>/.course/worker.sock``: one JSON line
``{"args": [pytest arguments], "env": {...}, "cwd": "...", "timeout": seconds}``, answered
by one JSON line ``{"returncode": int, "output": str, "timed_out": bool}``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from recsys_course.paths import SRC_DIR

IDLE_LIMIT = 3600.0  # seconds without a request before the worker leaves
PRELOAD = [
    "pytest", "_pytest.python", "_pytest.assertion.rewrite", "numpy", "numpy.testing",
    "pandas", "pandas.testing", "matplotlib.pyplot", "yaml",
    "tensorflow", "tf_keras", "tensorflow_recommenders",
]


def socket_path(root: Path) -> Path:
    return Path(root) / ".course" / "worker.sock"


def is_running(root: Path) -> bool:
    """Whether a worker answers on the clone's socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(socket_path(root)))
            return True
    except OSError:
        return False


def start(root: Path):
    """Start a worker for the clone in the background (owned by this process); ``None`` if
    one is already running. The worker leaves when this process ends."""
    import subprocess

    if is_running(root):
        return None
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    return subprocess.Popen(
        [sys.executable, "-m", "recsys_course.tooling.grading.warm_worker", str(root), str(os.getpid())],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal is for `watch`, which stops us
    )


def submit(root: Path, args: list[str], env: dict, cwd: str, timeout: float) -> dict | None:
    """Run pytest with ``args`` in the clone's worker; ``None`` when no worker is running."""
    path = socket_path(root)
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(path))
            conn.settimeout(timeout + 30)
            request = {"args": args, "env": env, "cwd": cwd, "timeout": timeout}
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = _read_line(conn)
    except OSError:  # a stale socket, or the worker just left: check cold instead
        return None
    return json.loads(answer) if answer else None


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def _run_child(request: dict, output: Path) -> None:
    """In the forked child: run pytest as asked, with stdout/stderr into ``output``."""
    os.setsid()
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    code = 3
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import pytest

        code = int(pytest.main(request["args"]))
    except BaseException:  # reported through the output file
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def handle(conn: socket.socket, listener: socket.socket) -> None:
    request = json.loads(_read_line(conn) or b"{}")
    with tempfile.TemporaryDirectory(prefix="course-worker-") as tmp:
        output = Path(tmp) / "output.txt"
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            _run_child(request, output)
        deadline = time.monotonic() + float(request.get("timeout", 600))
        timed_out, status = False, 0
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            gone = select.select([conn], [], [], 0)[0] and not conn.recv(1, socket.MSG_PEEK)
            if gone or time.monotonic() > deadline:  # the client left (Ctrl-C), or too long
                timed_out = not gone
                try:
                    os.killpg(pid, signal.SIGKILL)  # the child and all it started
                except ProcessLookupError:  # not in its own session yet
                    os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        text = output.read_text(errors="replace") if output.exists() else ""
    answer = {"returncode": os.waitstatus_to_exitcode(status), "output": text, "timed_out": timed_out}
    conn.sendall(json.dumps(answer).encode() + b"\n")


def serve(root: Path, parent: int | None = None) -> None:
    """Preload the heavy modules, then answer requests until idle or the parent is gone."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import importlib

    # COURSE_WORKER_PRELOAD (comma-separated module names) replaces the list, for tests.
    names = os.environ.get("COURSE_WORKER_PRELOAD")
    for name in names.split(",") if names is not None else PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # a missing extra only makes checks slower
            pass
    path = socket_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    listener.settimeout(1.0)
    last = time.monotonic()
    try:
        while time.monotonic() - last < IDLE_LIMIT:
            if parent and os.getppid() != parent:
                break  # the watch that started us is gone
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(None)
                try:
                    handle(conn, listener)
                except (OSError, ValueError):
                    pass  # the client left; serve the next one
            last = time.monotonic()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the watch that owns us stops us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(Path(argv[0]), int(argv[1]) if len(argv) > 1 else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
