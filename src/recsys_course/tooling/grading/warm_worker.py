"""A warm worker: one process per clone keeps pytest, pandas and TensorFlow imported and
forks a fresh child for each check, so a check costs the tests, not seconds of imports.

``course check`` starts one when none is running (:func:`ensure`) and hands it the check;
the worker stays behind for :data:`IDLE_LIMIT` seconds without a request, so the learner's
next checks start warm. ``course watch`` starts one tied to its own lifetime. Every check
still runs in its own process (a fork of the worker, in its own session): graded code cannot
change the worker, and a time limit ends the child and everything it started.

What it imports: at start, pytest and the grading plugin plus the libraries the first check
needs (:func:`modules_for`: the imports of the lesson's graded cells, among
:data:`PRELOADABLE`), so a cold check imports each library once; once it has been idle for
:data:`IDLE_PRELOAD_AFTER` seconds, the rest of :data:`PRELOAD`, so the next check of any
lesson starts warm. A worker never serves a check with stale code: it leaves when a file of
the ``recsys_course`` package changes, and declines requests from another Python or package.

Protocol, over the Unix socket ``<clone>/.course/worker.sock`` (mode 0600): one JSON line
``{"args": [pytest arguments], "env": {...}, "cwd": "...", "timeout": seconds, "python":
..., "src": ...}``, answered by one JSON line ``{"returncode": int, "output": str,
"timed_out": bool}`` (or ``{"declined": reason}``). ``<clone>/.course/worker.json`` names
its pid while it runs, and says ``starting`` while it still imports (a check then waits for
it rather than start a second one).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from recsys_course.paths import PACKAGE_DIR, SRC_DIR

IDLE_LIMIT = 900.0  # seconds without a request before a check's worker leaves
IDLE_PRELOAD_AFTER = 2.0  # seconds idle before the rest of PRELOAD is imported
START_TIMEOUT = 120.0  # seconds `ensure` waits for a new worker to listen
DISABLE_ENV = "COURSE_WORKER"  # "off": checks run cold and start no worker
# Not the grading plugin: pytest imports it in each check, so its assertions are rewritten
# and it reads that check's settings.
BASE = ["pytest", "_pytest.python", "_pytest.assertion.rewrite", "numpy", "yaml"]
PRELOAD = [*BASE, "numpy.testing", "pandas", "pandas.testing", "matplotlib.pyplot",
           "tensorflow", "tf_keras", "tensorflow_recommenders"]
# Top-level packages whose import a lesson's cells may hand to the worker before a check.
PRELOADABLE = {"numpy", "pandas", "scipy", "matplotlib", "tensorflow", "tf_keras",
               "tensorflow_recommenders", "annoy", "recsys_course"}


def socket_path(root: Path) -> Path:
    return Path(root) / ".course" / "worker.sock"


def info_path(root: Path) -> Path:
    return Path(root) / ".course" / "worker.json"


def is_running(root: Path) -> bool:
    """Whether a worker answers on the clone's socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(socket_path(root)))
            return True
    except OSError:
        return False


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").lower() not in ("off", "0", "no")


def modules_for(lesson_file: Path, exercises: set[str] | None) -> list[str]:
    """The modules the graded cells of ``lesson_file`` (up to the last of ``exercises``)
    import, among :data:`PRELOADABLE` packages, in order. For ``matplotlib.pyplot`` only the
    ``matplotlib`` package, which its import statement loads anyway: the grading plugin
    defers pyplot itself, which grading never draws with."""
    from recsys_course.tooling.grading.loader import graded_cells, imported_modules

    try:
        cells = graded_cells(Path(lesson_file).read_text(encoding="utf-8"))
    except OSError:
        return []
    if exercises:
        last = max((i for i, c in enumerate(cells) if c.exercise in exercises), default=len(cells) - 1)
        cells = cells[: last + 1]
    names: list[str] = []
    for name in imported_modules(cells, submodules=True):
        if name.startswith("matplotlib"):
            name = "matplotlib"  # the package (imported anyway); pyplot stays deferred
        if name.split(".")[0] in PRELOADABLE and name not in names:
            names.append(name)
    return names


def ensure(root: Path, modules: list[str] | None = None, *, parent: int | None = None) -> bool:
    """Make sure a worker serves the clone: start one (importing ``modules`` first) when none
    answers, and wait until it listens. False when workers are disabled (``COURSE_WORKER=off``)
    or one could not start (the check then runs cold)."""
    if not enabled():
        return False
    if is_running(root):
        return True
    starting = _starting_pid(root)  # one a stub check started in the background
    if starting is not None:
        return wait_until_listening(root, None, pid=starting)
    return wait_until_listening(root, start(root, modules, parent=parent))


def _starting_pid(root: Path) -> int | None:
    """The pid of a worker of this clone that is still importing, if its process lives."""
    try:
        info = json.loads(info_path(root).read_text(encoding="utf-8"))
        pid = int(info["pid"]) if info.get("starting") else None
        if pid is not None:
            os.kill(pid, 0)
        return pid
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wait_until_listening(root: Path, process, *, pid: int | None = None) -> bool:
    """Wait until the worker ``process`` (a :func:`start` result, or the process ``pid``)
    answers; False if there is none, it ended, or it did not listen within
    :data:`START_TIMEOUT` seconds."""
    deadline = time.monotonic() + START_TIMEOUT
    while (process is not None or pid is not None) and time.monotonic() < deadline:
        if is_running(root):
            return True
        if process is not None and process.poll() is not None:
            return False
        if pid is not None:
            try:
                os.kill(pid, 0)
            except OSError:
                return False
        time.sleep(0.02)
    return False


def start(root: Path, modules: list[str] | None = None, *, parent: int | None = None):
    """Start a worker for the clone in the background; the Popen, or ``None`` when the
    socket path is too long for the system or the worker cannot start. With ``parent`` it
    leaves when that process ends (``course watch``); otherwise after :data:`IDLE_LIMIT`."""
    import subprocess

    if len(os.fsencode(socket_path(root))) > 100:  # AF_UNIX paths are limited to ~107 bytes
        return None
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    command = [sys.executable, "-m", "recsys_course.tooling.grading.warm_worker", str(root)]
    if parent:
        command += ["--parent", str(parent)]
    if modules:
        command += ["--preload", ",".join(modules)]
    try:
        return subprocess.Popen(
            command, env=env, cwd=str(root), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives the check; Ctrl-C in the terminal is not for it
        )
    except OSError:
        return None


def stop(root: Path) -> bool:
    """Ask the clone's worker to leave (SIGTERM to the pid it recorded); True if one was asked."""
    try:
        pid = int(json.loads(info_path(root).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True


def submit(root: Path, args: list[str], env: dict, cwd: str, timeout: float) -> dict | None:
    """Run pytest with ``args`` in the clone's worker; ``None`` when no worker is running or
    it declines (another Python or package copy, or the package changed since it started)."""
    path = socket_path(root)
    if not enabled() or not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(path))
            conn.settimeout(timeout + 30)
            request = {"args": args, "env": env, "cwd": cwd, "timeout": timeout,
                       "python": sys.executable, "src": str(SRC_DIR)}
            conn.sendall(json.dumps(request).encode() + b"\n")
            answer = _read_line(conn)
    except OSError:  # a stale socket, or the worker just left: check cold instead
        return None
    try:
        reply = json.loads(answer) if answer else None
    except json.JSONDecodeError:
        return None
    return reply if isinstance(reply, dict) and "returncode" in reply else None


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def _package_stamp() -> tuple[int, int]:
    """(number of .py files, newest mtime) of the recsys_course package: changes when its
    code does, so a worker never grades with modules older than the files."""
    count, newest = 0, 0
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                count += 1
                try:
                    newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
                except OSError:
                    pass
    return count, newest


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


def handle(conn: socket.socket, listener: socket.socket, stamp: tuple[int, int]) -> bool:
    """Answer one request; False when the worker must leave (its package changed)."""
    request = json.loads(_read_line(conn) or b"{}")
    if request.get("python") not in (None, sys.executable) or request.get("src") not in (None, str(SRC_DIR)):
        conn.sendall(json.dumps({"declined": "another Python or package copy"}).encode() + b"\n")
        return True
    if _package_stamp() != stamp:
        conn.sendall(json.dumps({"declined": "the course package changed"}).encode() + b"\n")
        return False
    with tempfile.TemporaryDirectory(prefix="course-worker-") as tmp:
        output = Path(tmp) / "output.txt"
        # Everything the worker holds (TensorFlow's millions of objects) moves out of the
        # collector's sight: the child's full collections (pytest runs some at the end)
        # then cost what the check allocated, and touch no inherited pages.
        gc.freeze()
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
            time.sleep(0.01)
        text = output.read_text(errors="replace") if output.exists() else ""
    answer = {"returncode": os.waitstatus_to_exitcode(status), "output": text, "timed_out": timed_out}
    conn.sendall(json.dumps(answer).encode() + b"\n")
    return True


def _import_all(names: list[str]) -> None:
    """Import ``names``, skipping any that fail. The cycle collector pauses meanwhile:
    TensorFlow's import allocates millions of objects and few cycles, and its passes
    cost a tenth of the import's CPU."""
    import importlib

    gc.disable()
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # a missing extra, or a name that is not a module: only slower
                pass
    finally:
        gc.enable()


def serve(root: Path, parent: int | None = None, first: list[str] | None = None,
          idle_limit: float = IDLE_LIMIT) -> None:
    """Import what the first check needs, then answer requests until idle for
    ``idle_limit`` seconds, the parent is gone, the clone's socket was removed or the
    package changed; import the rest of :data:`PRELOAD` once idle."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    path = socket_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_info(root, starting=True)  # checks that come meanwhile wait for us
    # COURSE_WORKER_PRELOAD (comma-separated module names) replaces the lists, for tests.
    names = os.environ.get("COURSE_WORKER_PRELOAD")
    override = names.split(",") if names is not None else None
    _import_all(override if override is not None else [*BASE, *(first or [])])
    rest = [] if override is not None else [n for n in PRELOAD if n not in sys.modules]
    stamp = _package_stamp()
    if is_running(root):  # another worker got there first: it serves the clone
        _remove_own(root)
        return
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # the socket runs pytest as this user: nobody else may connect
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    listener.listen(8)
    listener.settimeout(0.5)
    inode = os.stat(path).st_ino
    _write_info(root, starting=False)
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_limit:
            if parent and os.getppid() != parent:
                break  # the watch that started us is gone
            try:
                if os.stat(path).st_ino != inode:
                    break  # another worker took the clone's socket
            except OSError:
                break  # the clone (or its .course/) was removed
            if rest and time.monotonic() - last > IDLE_PRELOAD_AFTER:
                _import_all(rest)
                rest = []
                continue
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(None)
                try:
                    keep = handle(conn, listener, stamp)
                except (OSError, ValueError):
                    keep = True  # the client left; serve the next one
            if not keep:
                break
            last = time.monotonic()
    finally:
        listener.close()
        _remove_own(root)


def _write_info(root: Path, *, starting: bool) -> None:
    info_path(root).write_text(json.dumps({"pid": os.getpid(), "python": sys.executable, "src": str(SRC_DIR),
                                           "starting": starting}), encoding="utf-8")


def _remove_own(root: Path) -> None:
    """Remove the socket and info file, unless another worker has replaced them."""
    try:
        mine = json.loads(info_path(root).read_text(encoding="utf-8")).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        mine = True
    if mine:
        socket_path(root).unlink(missing_ok=True)
        info_path(root).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m recsys_course.tooling.grading.warm_worker")
    parser.add_argument("root", type=Path)
    parser.add_argument("parent", nargs="?", type=int, help="(old form of --parent)")
    parser.add_argument("--parent", dest="parent_pid", type=int, help="leave when this process ends")
    parser.add_argument("--preload", default="", help="comma-separated modules to import first")
    parser.add_argument("--idle", type=float, default=float(os.environ.get("COURSE_WORKER_IDLE", IDLE_LIMIT)),
                        help="seconds without a request before leaving")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the watch that owns us stops us
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    first = [n for n in args.preload.split(",") if n]
    serve(args.root, args.parent_pid or args.parent, first, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
