"""Starting, talking to, timing and killing the sandbox that runs one submission's code.

The sandbox is bubblewrap (``bwrap``, Debian package ``bubblewrap``) around
``python -m recsys_course.tooling.grading.worker``, a *zygote*: it imports the libraries
the graded lessons need, says it is ready, and then forks one worker per lesson on request
(``Sandbox.spawn``), so no lesson waits for TensorFlow to import and the lessons of one
submission share one sandbox. What the sandbox gets:

* new user, PID, network, IPC, UTS, cgroup and mount namespaces (``--unshare-all``), every
  capability dropped, no new user namespaces inside (``--disable-userns``), its own session
  (``--new-session``: no terminal injection) and ``--die-with-parent``;
* a file system holding only the system libraries, the Python installation and virtual
  environment, the grader's copy of the course package and the submission's lesson files,
  all read-only. Every tmpfs has a size: the root (then made read-only), ``/dev`` (then
  read-only), ``/dev/shm`` and ``/tmp``, whose sizes together stay inside the memory limit;
* a seccomp filter (:func:`seccomp_filter`) that refuses file locks, inotify/fanotify watches
  and the kernel keyrings. The read-only environment and the device nodes are the same
  inodes in every sandbox; without locks and watches on them, two sandboxes running at the
  same time have no shared inode through which one can observe the other (bubblewrap 0.8,
  the Debian 12 version, has no per-sandbox overlay);
* limits set before ``bwrap`` is executed, which graded code cannot raise without
  ``CAP_SYS_RESOURCE``: address space, file size, no core files; and, where the grader can
  create control groups, a group per sandbox with a process and memory limit, whose CPU
  counter times the sandbox;
* time limits enforced from here in **CPU seconds of the sandbox** (:class:`Budget`), so a
  busy machine does not change a grade, with a generous wall-clock backstop for code that
  sleeps or waits. A sandbox that runs out of either is killed with everything it started.

:func:`problem` says why bubblewrap cannot be used on this machine, if it cannot.
"""

from __future__ import annotations

import errno
import os
import platform
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from recsys_course.paths import PACKAGE_DIR
from recsys_course.tooling.grading import wire
from recsys_course.tooling.grading.guard import SubmissionMisbehaved, SubmissionTimeout

# pytest leaves this module's frames out of failure tracebacks (``--fulltrace`` shows them):
# a learner reads their test and their code, and pytest need not parse this file for each
# failing call (it walks the AST of every file in a traceback, per entry).
__tracebackhide__ = True

LESSON_MOUNT = "/course/lessons"
PACKAGE_MOUNT = "/course/src"
MB = 1024 * 1024


class SandboxError(RuntimeError):
    """The sandbox could not answer; the message says why in words for a report."""


class SandboxUnavailable(SandboxError):
    """bubblewrap is missing or cannot create its namespaces on this machine."""


class SandboxTimeout(SandboxError, SubmissionTimeout):
    """A request ran out of its CPU time (or of the wall-clock backstop); it was stopped.
    (A :class:`SubmissionTimeout`, so learners read it as the time-out it is.)"""


class SandboxCrashed(SandboxError, SubmissionMisbehaved):
    """The sandbox process ended (or broke the protocol) in the middle of a request."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox.

    ``wall_factor`` turns a CPU-time limit into the wall-clock backstop: a request may use
    ``t`` CPU seconds and is stopped after ``wall_factor * t + wall_margin`` seconds of wall
    time even if it used less (a sleep, a blocked read). Honest code under load takes more
    wall time but the same CPU time, so only the backstop depends on load, and it is far.
    """

    memory_mb: int | None = 6144  # address space per process; the control group's memory too
    max_processes: int = 128  # threads count too: TensorFlow starts dozens
    max_file_mb: int = 64  # largest file graded code may write (in its tmpfs)
    tmpfs_mb: int = 256  # /tmp
    shm_mb: int = 64  # /dev/shm
    wall_factor: float = 4.0
    wall_margin: float = 30.0

    def __post_init__(self) -> None:
        if self.memory_mb and self.tmpfs_mb + self.shm_mb + 2 > self.memory_mb // 2:
            raise ValueError(f"the sandbox's tmpfs mounts ({self.tmpfs_mb + self.shm_mb} MB) must fit in half "
                             f"of its memory limit ({self.memory_mb} MB)")

    def wall(self, cpu_seconds: float) -> float:
        return self.wall_factor * cpu_seconds + self.wall_margin


# --------------------------------------------------------------------------- file system


def _system_binds() -> list[str]:
    args = []
    for path in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/alternatives"):
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
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


DEVICES = ("null", "zero", "full", "random", "urandom")


def command(lessons_dir: Path, package_dir: Path = PACKAGE_DIR, limits: Limits = Limits(),
            *, preload: tuple[str, ...] = (), seccomp_fd: int | None = None,
            program: list[str] | None = None) -> list[str]:
    """The bwrap command line that runs the zygote on the lesson files of ``lessons_dir``
    (or ``program`` instead, for the start-up check and tests of the sandbox itself)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    devices = []
    for name in DEVICES:
        devices += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    return [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
        # A small root, read-only once everything is mounted on it.
        "--size", str(1 * MB), "--tmpfs", "/",
        # The private /tmp comes before the binds: bwrap mounts in order, so a virtual
        # environment that lives under /tmp (a clone in /tmp) is bound on top of it.
        "--perms", "1777", "--size", str(limits.tmpfs_mb * MB), "--tmpfs", "/tmp",
        *_system_binds(), *_python_binds(),
        "--ro-bind", str(package_dir), f"{PACKAGE_MOUNT}/{package_dir.name}",
        "--ro-bind", str(lessons_dir), LESSON_MOUNT,
        "--proc", "/proc",
        # /dev by hand (bwrap's --dev has no size and puts /dev/shm on the same tmpfs).
        "--size", str(MB // 4), "--tmpfs", "/dev", *devices,
        "--perms", "1777", "--size", str(limits.shm_mb * MB), "--tmpfs", "/dev/shm",
        "--symlink", "/proc/self/fd", "/dev/fd", "--symlink", "/proc/self/fd/0", "/dev/stdin",
        "--symlink", "/proc/self/fd/1", "/dev/stdout", "--symlink", "/proc/self/fd/2", "/dev/stderr",
        "--remount-ro", "/dev",
        "--remount-ro", "/",
        "--chdir", "/tmp",
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
        "--clearenv",
        "--setenv", "PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
        "--setenv", "PYTHONPATH", PACKAGE_MOUNT, "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
        "--setenv", "PYTHONHASHSEED", "0", "--setenv", "MPLBACKEND", "Agg",
        "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib", "--setenv", "COURSE_CACHE_DIR", "/tmp/cache",
        "--setenv", "COURSE_DATA", "synthetic", "--setenv", "TF_USE_LEGACY_KERAS", "1",
        "--setenv", "TF_CPP_MIN_LOG_LEVEL", "3",
        # One thread per pool: CPU time then tracks the work, not the machine's core count,
        # and the zygote has no threads when it forks.
        "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "OPENBLAS_NUM_THREADS", "1",
        "--setenv", "MKL_NUM_THREADS", "1", "--setenv", "TF_NUM_INTRAOP_THREADS", "1",
        "--setenv", "TF_NUM_INTEROP_THREADS", "1",
        "--setenv", "COURSE_SANDBOX_VISIBLE", ":".join(visible_roots()),
        "--setenv", "COURSE_SANDBOX_PRELOAD", ",".join(preload),
        "--", *(program or [sys.executable, "-m", "recsys_course.tooling.grading.worker"]),
    ]


# --------------------------------------------------------------------------- seccomp

# Classic BPF for seccomp (linux/filter.h, linux/seccomp.h, linux/audit.h).
_LD_W_ABS, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_ALLOW, _ERRNO, _KILL = 0x7FFF0000, 0x00050000, 0x80000000
# Per architecture: audit arch, syscalls refused outright, fcntl's number.
_SYSCALLS = {
    "x86_64": (0xC000003E, {"flock": 73, "inotify_init": 253, "inotify_add_watch": 254, "inotify_init1": 294,
                            "fanotify_init": 300, "fanotify_mark": 301, "add_key": 248, "request_key": 249,
                            "keyctl": 250}, 72),
    "aarch64": (0xC00000B7, {"flock": 32, "inotify_init1": 26, "inotify_add_watch": 27, "fanotify_init": 262,
                             "fanotify_mark": 263, "add_key": 217, "request_key": 218, "keyctl": 219}, 25),
}
# fcntl commands that take, test or watch: F_GETLK/F_SETLK/F_SETLKW, the open-file-description
# locks, leases and directory notifications (F_NOTIFY).
_FCNTL_REFUSED = (5, 6, 7, 36, 37, 38, 1024, 1025, 1026)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The compiled filter for ``bwrap --seccomp``, or None on an architecture it does not
    know (then the sandbox runs without it and :func:`isolation_summary` says so).

    Locks, watches and keyrings fail with ``ENOLCK``/``ENOSYS``/``EPERM`` as if the kernel
    had none; every other system call is allowed. System calls of another ABI (i386 through
    ``int 0x80``, x32) end the process, since their numbers differ from those checked here.
    """
    arch = _SYSCALLS.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, refused, fcntl = arch
    code: list[tuple] = []  # (op, jump-if-true label, jump-if-false label, k) with labels resolved below

    def add(op, k, true=None, false=None):
        code.append([op, true, false, k])

    add(_LD_W_ABS, 4)  # seccomp_data.arch
    add(_JEQ, audit_arch, None, "kill")
    add(_LD_W_ABS, 0)  # seccomp_data.nr
    if (machine or platform.machine()) == "x86_64":
        add(_JGE, 0x40000000, "kill", None)  # the x32 ABI
    for name, number in sorted(refused.items()):
        add(_JEQ, number, "nolock" if name == "flock" else "eperm" if "key" in name else "nosys", None)
    add(_JEQ, fcntl, "fcntl", None)
    labels = {"allow": len(code)}
    add(_RET, _ALLOW)
    labels["fcntl"] = len(code)
    add(_LD_W_ABS, 24)  # low 32 bits of args[1] (little-endian): the fcntl command
    for cmd in _FCNTL_REFUSED:
        add(_JEQ, cmd, "nolock", None)
    add(_RET, _ALLOW)
    labels["nolock"] = len(code)
    add(_RET, _ERRNO | errno.ENOLCK)
    labels["nosys"] = len(code)
    add(_RET, _ERRNO | errno.ENOSYS)
    labels["eperm"] = len(code)
    add(_RET, _ERRNO | errno.EPERM)
    labels["kill"] = len(code)
    add(_RET, _KILL)
    out = []
    for index, (op, true, false, k) in enumerate(code):
        jt = labels[true] - index - 1 if true else 0
        jf = labels[false] - index - 1 if false else 0
        if not (0 <= jt < 256 and 0 <= jf < 256):
            raise ValueError("seccomp jump out of range")
        out.append(struct.pack("=HBBI", op, jt, jf, k))
    return b"".join(out)


# --------------------------------------------------------------------------- control groups


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, mount root, fs type, super options) of the cgroup file systems."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4], fields[3], tail[0], set(tail[2].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """Controller (or "" for cgroup v2) -> this process's group path."""
    groups = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                groups[name] = path
    except (OSError, ValueError):
        pass
    return groups


@lru_cache(maxsize=1)
def _cgroup_parents() -> dict[str, Path]:
    """Where this grader can create per-sandbox groups: "pids", "cpu" (a CPU usage counter)
    and "memory" -> a parent folder, for what this machine allows (maybe nothing)."""
    own = _own_groups()
    candidates: dict[str, list[Path]] = {"pids": [], "cpu": [], "memory": []}
    for point, root, kind, options in _mounts():
        if kind == "cgroup2":
            rel = own.get("")
            if rel is None:
                continue
            base = Path(point) / os.path.relpath(rel, root).lstrip("./") if rel != root else Path(point)
            enabled = set((base / "cgroup.subtree_control").read_text().split()) \
                if (base / "cgroup.subtree_control").exists() else set()
            candidates["cpu"].append(base)
            for name in ("pids", "memory"):
                if name in enabled:
                    candidates[name].append(base)
        else:
            for name, controller in (("pids", "pids"), ("cpu", "cpuacct"), ("memory", "memory")):
                if controller in options and controller in own:
                    rel = os.path.relpath(own[controller], root)
                    base = Path(point) / rel if rel != "." else Path(point)
                    candidates[name].insert(0, base)  # v1 controllers first
    parents = {}
    for name, options in candidates.items():
        for base in options:
            probe = base / f"course-probe-{uuid.uuid4().hex[:8]}"
            try:
                probe.mkdir()
                files = {"pids": ["pids.max"], "memory": ["memory.max", "memory.limit_in_bytes"],
                         "cpu": ["cpu.stat", "cpuacct.usage"]}[name]
                ok = any((probe / f).exists() for f in files)
                probe.rmdir()
            except OSError:
                continue
            if ok:
                parents[name] = base
                break
    return parents


class ControlGroups:
    """The sandbox's groups (one per hierarchy this machine lets the grader use)."""

    def __init__(self, limits: Limits) -> None:
        self.groups: dict[str, Path] = {}
        tag = f"course-sandbox-{uuid.uuid4().hex}"
        for name, parent in _cgroup_parents().items():
            group = parent / tag
            try:
                if not group.exists():
                    group.mkdir()
                if name == "pids":
                    (group / "pids.max").write_text(str(limits.max_processes))
                elif name == "memory" and limits.memory_mb:
                    target = group / "memory.max"
                    if not target.exists():
                        target = group / "memory.limit_in_bytes"
                    target.write_text(str(limits.memory_mb * MB))
            except OSError:
                continue
            self.groups[name] = group

    def join(self) -> None:
        """Move the calling process into every group (in the child, before exec)."""
        for group in dict.fromkeys(self.groups.values()):
            with open(group / "cgroup.procs", "w") as handle:
                handle.write(str(os.getpid()))

    def cpu_seconds(self) -> float | None:
        group = self.groups.get("cpu")
        if group is None:
            return None
        try:
            if (group / "cpuacct.usage").exists():
                return int((group / "cpuacct.usage").read_text()) / 1e9
            for line in (group / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        except (OSError, ValueError):
            return None
        return None

    def remove(self) -> None:
        for group in dict.fromkeys(self.groups.values()):
            for _ in range(50):  # the group empties as the kernel reaps the namespace
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _kill_group_members(group)
                    time.sleep(0.05)
        self.groups = {}


def _kill_group_members(group: Path) -> None:
    try:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass
    except OSError:
        pass


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of process ``root`` and all its descendants (their own and those of the
    children they reaped), from /proc: the timer where no control group can be made."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                text = handle.read()
        except OSError:
            continue
        fields = text[text.rfind(b")") + 2:].split()
        if len(fields) < 15:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0)
        stack += children.get(pid, [])
    return total / _TICK


# --------------------------------------------------------------------------- checks


def _preexec(limits: Limits, groups: ControlGroups | None):
    def apply() -> None:  # in the child, between fork and exec of bwrap
        os.setsid()
        if groups is not None:
            groups.join()
        if limits.memory_mb:
            size = limits.memory_mb * MB
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        size = limits.max_file_mb * MB
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Counted per real user: it binds only when the grader is not root, where the
        # control group is the limit instead.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes * 4, limits.max_processes * 4))

    return apply


def _seccomp_pipe() -> int | None:
    """A pipe's read end holding the compiled filter (bwrap reads it at start)."""
    program = seccomp_filter()
    if program is None:
        return None
    read, write = os.pipe()
    os.write(write, program)
    os.close(write)
    return read


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
    with tempfile.TemporaryDirectory() as lessons:
        fd = _seccomp_pipe()
        cmd = command(Path(lessons), seccomp_fd=fd, program=[sys.executable, "-c", "print('ok')"])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  pass_fds=(fd,) if fd is not None else ())
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bubblewrap could not start ({error})."
        finally:
            if fd is not None:
                os.close(fd)
    if done.returncode != 0 or done.stdout.strip() != "ok":
        return ("bubblewrap cannot create its namespaces on this machine: "
                f"{done.stderr.strip()[:300]}. It needs unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1, or user.max_user_namespaces > 0) "
                "or running the grader as root; inside Docker, run the container with "
                "--security-opt seccomp=unconfined or grant CAP_SYS_ADMIN.")
    return None


def isolation_summary(limits: Limits) -> dict:
    """What the sandbox enforces on this machine, for grades.json."""
    parents = _cgroup_parents()
    return {
        "sandbox": "bubblewrap",
        "namespaces": ["user", "pid", "network", "ipc", "uts", "mount", "cgroup"],
        "capabilities": "all dropped",
        "network_off": True,
        "memory_mb": limits.memory_mb,
        "memory_group": "memory" in parents,
        "process_limit": limits.max_processes if "pids" in parents or os.geteuid() != 0 else None,
        "file_size_mb": limits.max_file_mb,
        "tmpfs_mb": {"/": 1, "/dev": 0.25, "/dev/shm": limits.shm_mb, "/tmp": limits.tmpfs_mb},
        "read_only_root": True,
        "locks_and_watches": "refused (seccomp)" if seccomp_filter() is not None else "allowed (unknown architecture)",
        "time": f"CPU seconds of the sandbox ({'control group' if 'cpu' in parents else '/proc'}); "
                f"wall-clock backstop {limits.wall_factor:g} x limit + {limits.wall_margin:g} s",
    }


# --------------------------------------------------------------------------- budgets


class Budget:
    """A limit in CPU seconds of one sandbox, with a wall-clock backstop.

    ``cpu`` is read from the sandbox (:meth:`Sandbox.cpu_seconds`) when the budget starts
    and whenever it is checked; ``check`` raises :class:`SandboxTimeout` with ``what`` once
    either limit is passed.
    """

    def __init__(self, cpu_limit: float | None, limits: Limits, what: str = "time limit reached") -> None:
        self.cpu_limit = cpu_limit
        self.wall_limit = limits.wall(cpu_limit) if cpu_limit else None
        self.what = what
        self.sandbox: Sandbox | None = None
        self.cpu_start: float | None = None
        self.wall_start = time.monotonic()

    def start(self, sandbox: Sandbox | None) -> Budget:
        self.sandbox = sandbox
        self.cpu_start = sandbox.cpu_seconds() if sandbox is not None else None
        self.wall_start = time.monotonic()
        return self

    def used(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) since the start."""
        cpu = 0.0
        if self.sandbox is not None and self.cpu_start is not None:
            cpu = self.sandbox.cpu_seconds() - self.cpu_start
        return cpu, time.monotonic() - self.wall_start

    def check(self) -> None:
        if not self.cpu_limit:
            return
        cpu, wall = self.used()
        if cpu > self.cpu_limit:
            raise SandboxTimeout(f"{self.what} ({self.cpu_limit:g} s of CPU time)")
        if wall > self.wall_limit:
            raise SandboxTimeout(f"{self.what} ({wall:.0f} s of wall-clock time while using "
                                 f"{cpu:.1f} s of CPU: waiting or sleeping?)")

    def wait(self) -> float | None:
        """How long to block before the next check."""
        if not self.cpu_limit:
            return None
        return max(0.01, min(0.25, self.wall_limit - (time.monotonic() - self.wall_start)))


# --------------------------------------------------------------------------- the processes


class Channel:
    """The trusted end of one worker's socket: framed messages with budgets and limits."""

    def __init__(self, sock: socket.socket, sandbox: Sandbox) -> None:
        self.sock = sock
        self.sandbox = sandbox
        self.reader = wire.FrameReader()
        self.received = 0  # bytes, for the per-test cap kept by the caller
        sock.setblocking(False)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fail(self, error: type[SandboxError], message: str) -> SandboxError:
        self.close()
        self.sandbox.reset()
        return error(message)

    def send(self, header: dict, buffers: list[bytes] | None, budget: Budget) -> None:
        data = memoryview(wire.frame(header, buffers))
        while data:
            try:
                budget.check()
            except SandboxTimeout as error:
                raise self._fail(SandboxTimeout, f"the sandbox stopped reading its requests: {error}") from None
            _, ready, _ = select.select([], [self.sock], [], budget.wait())
            if not ready:
                continue
            try:
                written = self.sock.send(data)
            except BlockingIOError:
                continue
            except OSError:
                raise self._fail(SandboxCrashed, self.sandbox.ended()) from None
            data = data[written:]

    def receive(self, budget: Budget) -> tuple[dict, list[bytes]]:
        """The next message, or :class:`SandboxTimeout`/:class:`SandboxCrashed`."""
        while True:
            try:
                message = self.reader.next()
            except wire.WireError as error:
                raise self._fail(SandboxCrashed, f"the sandbox broke the protocol ({error})") from None
            if message is not None:
                return message
            try:
                budget.check()
            except SandboxTimeout as error:
                raise self._fail(SandboxTimeout, str(error)) from None
            ready, _, _ = select.select([self.sock], [], [], budget.wait())
            if not ready:
                continue
            try:
                chunk = self.sock.recv(min(1 << 20, max(65536, self.reader.wanted())))
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise self._fail(SandboxCrashed, self.sandbox.ended())
            self.received += len(chunk)
            self.reader.feed(chunk)


# The zygote forks and resets at once; if it does not, graded code stopped or killed it (it
# is the same user), and the whole sandbox is replaced after at most 10 s.
_PROMPT = Limits(wall_factor=1.0, wall_margin=5.0)


class Sandbox:
    """One bubblewrap sandbox holding a zygote; :meth:`spawn` forks a worker in it.

    Only one worker runs at a time: spawning a new one first ends every other process in
    the sandbox (the previous lesson's worker and whatever it left running), so the
    sandbox's CPU counter times the current worker alone.
    """

    def __init__(self, lessons_dir: Path, limits: Limits = Limits(), package_dir: Path = PACKAGE_DIR,
                 preload: tuple[str, ...] = (), start_timeout: float = 120.0, log: Path | None = None) -> None:
        """``start_timeout``: CPU seconds the zygote may take to import ``preload`` (trusted
        code only, so this is generous; the wall-clock backstop scales with it)."""
        reason = problem()
        if reason:
            raise SandboxUnavailable(reason)
        self.limits = limits
        self.groups = ControlGroups(limits)
        self.control, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control_reader = wire.FrameReader(max_message=1 * MB, max_buffers=0)
        seccomp = _seccomp_pipe()
        stderr = open(log, "ab") if log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                command(lessons_dir, package_dir, limits, preload=preload, seccomp_fd=seccomp),
                stdin=child, stdout=stderr, stderr=stderr, preexec_fn=_preexec(limits, self.groups),
                close_fds=True, pass_fds=(seccomp,) if seccomp is not None else (),
            )
        finally:
            child.close()
            if seccomp is not None:
                os.close(seccomp)
            if log:
                stderr.close()
        self.control.settimeout(None)
        self.workers = 0
        # Starting (imports included) is timed by the wall clock: it runs no graded code.
        header = self._control_receive(Budget(start_timeout, limits).start(self), "the sandbox did not start")
        self.ready = header  # pid and thread count of the zygote, for diagnostics
        if header.get("op") != "ready":
            self.kill()
            raise SandboxCrashed("the sandbox did not start")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        value = self.groups.cpu_seconds()
        return value if value is not None else tree_cpu_seconds(self.process.pid)

    def _control_receive(self, budget: Budget, what: str) -> dict:
        while True:
            try:
                message = self.control_reader.next()
            except wire.WireError:
                self.kill()
                raise SandboxCrashed(f"{what}: the sandbox broke the protocol") from None
            if message is not None:
                return message[0]
            try:
                budget.check()
            except SandboxTimeout as error:
                self.kill()
                raise SandboxTimeout(f"{what} in time: {error}") from None
            ready, _, _ = select.select([self.control], [], [], budget.wait())
            if not ready:
                continue
            try:
                chunk = self.control.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.kill()
                raise SandboxCrashed(f"{what}: {self.ended()}")
            self.control_reader.feed(chunk)

    def spawn(self) -> Channel:
        """A new worker (the only one running), connected by its own socket."""
        if not self.alive:
            raise SandboxCrashed(self.ended())
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self.control, [wire.frame({"op": "fork"})], [theirs.fileno()])
        except OSError:
            mine.close()
            self.kill()
            raise SandboxCrashed(self.ended()) from None
        finally:
            theirs.close()
        header = self._control_receive(Budget(5.0, _PROMPT).start(self), "the sandbox did not start a worker")
        if header.get("op") != "forked":
            mine.close()
            self.kill()
            raise SandboxCrashed("the sandbox did not start a worker")
        self.workers += 1
        return Channel(mine, self)

    def reset(self) -> None:
        """End every worker (and what it started); kill the sandbox if the zygote does not
        answer at once (graded code can stop or kill it: it is the same user)."""
        if not self.alive:
            return
        try:
            self.control.sendall(wire.frame({"op": "reset"}))
            header = self._control_receive(Budget(5.0, _PROMPT).start(self), "the sandbox did not reset")
            if header.get("op") != "reset":
                self.kill()
        except (OSError, SandboxError):
            self.kill()

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
        try:
            self.control.close()
        except OSError:
            pass
        self.groups.remove()

    def ended(self) -> str:
        try:
            code = self.process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return "the graded code's process ended"
        if code is not None and code < 0:
            return f"the sandbox was ended by signal {signal.Signals(-code).name}"
        return f"the sandbox process ended (exit code {code})"
