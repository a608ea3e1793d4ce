"""Starting, talking to and killing the sandbox process that runs a submitted lesson.

The sandbox is bubblewrap (``bwrap``, Debian package ``bubblewrap``) around
``python -m recsys_course.tooling.grading.worker``:

* new user, PID, network, IPC, UTS and mount namespaces (``--unshare-all``), every
  capability dropped, no new user namespaces inside (``--disable-userns``), its own session
  (``--new-session``: no terminal injection) and ``--die-with-parent``;
* a file system holding only the system libraries (``/usr``, ``/lib*``, ``/bin``), the
  Python installation and virtual environment, the grader's copy of the course package
  and the one submitted lesson file, all read-only; a private ``/tmp`` (tmpfs) is the only
  writable place and disappears with the sandbox;
* limits set before ``bwrap`` is executed, which graded code cannot raise without
  ``CAP_SYS_RESOURCE``: address space, file size, no core files; and a ``pids`` control
  group (where the machine lets the grader create one) capping the number of processes;
* time limits enforced from here: every request has a deadline, and a sandbox that misses
  it is killed with everything it started (killing ``bwrap`` ends its PID namespace).

:func:`problem` says why bubblewrap cannot be used on this machine, if it cannot.
"""

from __future__ import annotations

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from recsys_course.tooling.grading import wire
from recsys_course.paths import PACKAGE_DIR

LESSON_MOUNT = "/course/lessons"
PACKAGE_MOUNT = "/course/src"


class SandboxError(RuntimeError):
    """The sandbox could not answer; the message says why in words for a report."""


class SandboxUnavailable(SandboxError):
    """bubblewrap is missing or cannot create its namespaces on this machine."""


class SandboxTimeout(SandboxError):
    """A request missed its deadline; the sandbox was killed."""


class SandboxCrashed(SandboxError):
    """The sandbox process ended (or broke the protocol) in the middle of a request."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox."""

    memory_mb: int | None = 6144  # address space; TensorFlow alone maps about 2 GB
    max_processes: int = 128  # threads count too: TensorFlow starts dozens
    max_file_mb: int = 64  # largest file graded code may write (in its tmpfs)
    tmpfs_mb: int = 256


def _system_binds() -> list[str]:
    args = []
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/alternatives"):
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _python_binds() -> list[str]:
    """The interpreter, its standard library and the virtual environment, read-only."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), sys.prefix}
    executable = Path(sys.executable)
    paths.add(str(executable.parent.parent))
    args = []
    for path in sorted(paths):
        if os.path.isdir(path) and not path.startswith(("/usr/", "/bin")) and path != "/usr":
            args += ["--ro-bind", path, path]
    return args


def visible_roots() -> list[str]:
    """Paths graded code may read, for the worker's provenance notes."""
    # (system folders are listed too: libraries probe /etc and /var on their own, and an
    # honest submission must not be flagged for that)
    roots = {"/usr", "/lib", "/lib64", "/bin", "/etc", "/var", "/run", "/opt", "/proc", "/dev", "/tmp", "/sys",
             LESSON_MOUNT, PACKAGE_MOUNT, os.path.realpath(sys.base_prefix), sys.prefix,
             os.path.realpath(sys.prefix), str(Path(sys.executable).parent.parent)}
    return sorted(roots)


def command(lesson_file: Path, package_dir: Path = PACKAGE_DIR, limits: Limits = Limits()) -> list[str]:
    """The bwrap command line that runs the worker on ``lesson_file``."""
    bwrap = shutil.which("bwrap") or "bwrap"
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
        # The private /tmp comes first: bwrap mounts in order, so a virtual environment
        # that lives under /tmp (a clone in /tmp) is bound on top of it, not hidden by it.
        "--size", str(limits.tmpfs_mb * 1024 * 1024), "--tmpfs", "/tmp",
        *_system_binds(), *_python_binds(),
        "--ro-bind", str(package_dir), f"{PACKAGE_MOUNT}/{package_dir.name}",
        "--ro-bind", str(lesson_file), f"{LESSON_MOUNT}/{lesson_file.name}",
        "--proc", "/proc", "--dev", "/dev",
        "--chdir", "/tmp",
        "--clearenv",
        "--setenv", "PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PYTHONPATH", PACKAGE_MOUNT, "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--setenv", "PYTHONHASHSEED", "0", "--setenv", "MPLBACKEND", "Agg",
        "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib", "--setenv", "COURSE_CACHE_DIR", "/tmp/cache",
        "--setenv", "COURSE_DATA", "synthetic", "--setenv", "TF_USE_LEGACY_KERAS", "1",
        "--setenv", "TF_CPP_MIN_LOG_LEVEL", "2", "--setenv", "OMP_NUM_THREADS", "1",
        "--setenv", "COURSE_SANDBOX_VISIBLE", ":".join(visible_roots()),
        "--", sys.executable, "-m", "recsys_course.tooling.grading.worker",
    ]


# ------------------------------------------------------------------------- control group

_CGROUP_ROOTS = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")


@lru_cache(maxsize=1)
def _cgroup_parent() -> Path | None:
    """A pids control-group folder the grader can create children in, or None."""
    for root in map(Path, _CGROUP_ROOTS):
        if not (root / "cgroup.procs").exists():
            continue
        v2 = (root / "cgroup.controllers").exists()
        if v2 and "pids" not in (root / "cgroup.controllers").read_text().split():
            continue
        if not v2 and not (root / "pids.max").exists() and root.name != "pids":
            continue
        probe = root / f"course-probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir()
            ok = (probe / "pids.max").exists()
            probe.rmdir()
        except OSError:
            continue
        if ok:
            return root
    return None


def _make_cgroup(limit: int) -> Path | None:
    parent = _cgroup_parent()
    if parent is None:
        return None
    group = parent / f"course-sandbox-{uuid.uuid4().hex}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(limit))
    except OSError:
        return None
    return group


def _preexec(limits: Limits, cgroup: Path | None):
    def apply() -> None:  # in the child, between fork and exec of bwrap
        os.setsid()
        if cgroup is not None:
            with open(cgroup / "cgroup.procs", "w") as handle:
                handle.write(str(os.getpid()))
        if limits.memory_mb:
            size = limits.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        size = limits.max_file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Counted per real user: it binds only when the grader is not root, where the
        # control group above is the limit instead.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes * 4, limits.max_processes * 4))

    return apply


@lru_cache(maxsize=1)
def problem() -> str | None:
    """Why the sandbox cannot run here (with what to do), or None when it can.

    ``COURSE_SANDBOX_CHECKED=1`` (set by the batch grader for its pytest processes, after
    checking once) skips the trial run.
    """
    if os.environ.get("COURSE_SANDBOX_CHECKED") == "1" and shutil.which("bwrap"):
        return None
    if shutil.which("bwrap") is None:
        return ("bubblewrap is not installed: batch grading runs submissions inside it. "
                "Install it with `apt-get install -y bubblewrap` (Debian/Ubuntu).")
    with tempfile.NamedTemporaryFile("w", suffix=".py") as lesson:
        cmd = command(Path(lesson.name))
        cmd = cmd[: cmd.index("--")] + ["--", sys.executable, "-c", "print('ok')"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bubblewrap could not start ({error})."
    if done.returncode != 0 or done.stdout.strip() != "ok":
        return ("bubblewrap cannot create its namespaces on this machine: "
                f"{done.stderr.strip()[:300]}. It needs unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1, or user.max_user_namespaces > 0) "
                "or running the grader as root; inside Docker, run the container with "
                "--security-opt seccomp=unconfined or grant CAP_SYS_ADMIN.")
    return None


def isolation_summary(limits: Limits) -> dict:
    """What the sandbox enforces on this machine, for grades.json."""
    return {
        "sandbox": "bubblewrap",
        "namespaces": ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"],
        "capabilities": "all dropped",
        "network_off": True,
        "memory_mb": limits.memory_mb,
        "process_limit": limits.max_processes if _cgroup_parent() is not None or os.geteuid() != 0 else None,
        "file_size_mb": limits.max_file_mb,
    }


# ------------------------------------------------------------------------- the process


class Sandbox:
    """One running worker. Requests are synchronous; every wait has a deadline."""

    def __init__(self, lesson_file: Path, limits: Limits = Limits(), package_dir: Path = PACKAGE_DIR,
                 start_timeout: float = 60.0, log: Path | None = None) -> None:
        reason = problem()
        if reason:
            raise SandboxUnavailable(reason)
        self.limits = limits
        self.cgroup = _make_cgroup(limits.max_processes)
        stderr = open(log, "ab") if log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                command(lesson_file, package_dir, limits), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=stderr, preexec_fn=_preexec(limits, self.cgroup), bufsize=0, close_fds=True,
            )
        finally:
            if log:
                stderr.close()
        self.inbox = bytearray()
        os.set_blocking(self.process.stdout.fileno(), False)
        os.set_blocking(self.process.stdin.fileno(), False)
        header, _ = self.receive(time.monotonic() + start_timeout)
        if header.get("op") != "ready":
            self.kill()
            raise SandboxCrashed("the sandbox did not start")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """End the sandbox and everything in it (its PID namespace dies with bwrap)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.cgroup is not None:
            for _ in range(50):  # the group empties as the kernel reaps the namespace
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    _kill_cgroup(self.cgroup)
                    time.sleep(0.05)
            self.cgroup = None

    def _fail(self, error: type[SandboxError], message: str) -> SandboxError:
        self.kill()
        return error(message)

    def send(self, header: dict, buffers: list[bytes] | None = None, deadline: float | None = None) -> None:
        import io

        stream = io.BytesIO()
        wire.write_message(stream, header, buffers)
        data = memoryview(stream.getvalue())
        fd = self.process.stdin.fileno()
        while data:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._fail(SandboxTimeout, "the sandbox stopped reading its requests")
            _, ready, _ = select.select([], [fd], [], left)
            if not ready:
                continue
            try:
                written = os.write(fd, data)
            except (BrokenPipeError, OSError):
                raise self._fail(SandboxCrashed, self._ended()) from None
            data = data[written:]

    def _fill(self, size: int, deadline: float | None) -> bytes:
        fd = self.process.stdout.fileno()
        while len(self.inbox) < size:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise self._fail(SandboxTimeout, "time limit reached")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(fd, max(65536, size - len(self.inbox)))
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise self._fail(SandboxCrashed, self._ended())
            self.inbox += chunk
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        return data

    def _ended(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            return f"the sandbox was ended by signal {signal.Signals(-code).name}"
        return f"the sandbox process ended (exit code {code})"

    def receive(self, deadline: float | None) -> tuple[dict, list[bytes]]:
        """The next message, or :class:`SandboxTimeout`/:class:`SandboxCrashed`."""
        import io

        try:
            (size,) = _unpack(">I", self._fill(4, deadline))
            if size > wire.MAX_HEADER:
                raise wire.WireError("oversized header")
            head = self._fill(size, deadline)
            (count,) = _unpack(">I", self._fill(4, deadline))
            if count > 100_000:
                raise wire.WireError("too many buffers")
            parts = [_pack(">I", size), head, _pack(">I", count)]
            for _ in range(count):
                raw = self._fill(8, deadline)
                (length,) = _unpack(">Q", raw)
                if length > wire.MAX_BUFFER:
                    raise wire.WireError("oversized buffer")
                parts += [raw, self._fill(length, deadline)]
            return wire.read_message(io.BytesIO(b"".join(parts)))
        except (wire.WireError, EOFError) as error:
            raise self._fail(SandboxCrashed, f"the sandbox broke the protocol ({error})") from None


def _kill_cgroup(group: Path) -> None:
    try:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
    except OSError:
        pass


def _unpack(fmt: str, data: bytes) -> tuple:
    import struct

    return struct.unpack(fmt, data)


def _pack(fmt: str, value: int) -> bytes:
    import struct

    return struct.pack(fmt, value)
