"""The sandbox's containment, owned by the trusted side, attacked directly.

Each test starts small sandboxes (no course lesson: a few lines of NumPy, so each costs a
second or two) and checks one property the hostile class of ``test_grade_batch.py`` relies
on: concurrent sandboxes share no lockable or writable inode; every tmpfs is bounded and the
root is read-only; frames, messages, notes and the bytes of one test are bounded; time is CPU
time with a wall-clock backstop; a lesson whose load keeps failing is not loaded again.
"""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recsys_course.tooling.grading import proxy, wire
from recsys_course.tooling.grading.loader import LessonLoadError
from recsys_course.tooling.grading.proxy import Notes, SandboxHost, Session
from recsys_course.tooling.grading.sandbox import (
    Limits, SandboxCrashed, SandboxTimeout, _seccomp_pipe, command, problem, seccomp_filter,
)

if problem() is not None and os.environ.get("COURSE_REQUIRE_SANDBOX") == "1":
    raise RuntimeError(f"COURSE_REQUIRE_SANDBOX=1 but the sandbox cannot run: {problem()}")
sandbox_only = pytest.mark.skipif(problem() is not None, reason=f"no sandbox here: {problem()}")

LESSON = '''
# %% tags=["setup"]
import os, time
import numpy as np

# %% tags=["exercise"] exercise="0.1"
def burn(seconds):
    """Busy for `seconds` of CPU time (not wall time)."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return seconds

def nap(seconds):
    time.sleep(seconds)
    return seconds

def megabytes(n):
    return np.zeros(n * 2**17)

def channel_fd():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return int(name)
        except OSError:
            pass

def forge(header_size, count, length):
    """Write a frame header announcing `count` buffers of `length` bytes, then wait."""
    import struct
    body = b'{"op": "result"}'
    frame = struct.pack(">I", header_size or len(body)) + body + struct.pack(">I", count)
    frame += struct.pack(">Q", length) + b"x" * 1000
    os.write(channel_fd(), frame)
    time.sleep(60)

def flood_notes(n):
    import sys
    worker = sys.modules["__main__"]  # the worker runs as a script
    send = worker.Channel.send
    replies = [0]
    def forged(self, header, buffers=None):
        if header.get("op") == "result":
            replies[0] += 1
            header = {**header, "notes": [f"forged note {replies[0]}-{i} " + "x" * 60 for i in range(n)]}
        return send(self, header, buffers)
    worker.Channel.send = forged
    return n

def die():
    import signal
    os.kill(os.getpid(), signal.SIGKILL)

def count_up():
    i = 0
    while True:
        yield i
        i += 1

class Box:
    """A context manager that would swallow any exception."""
    def __enter__(self):
        return 7
    def __exit__(self, *error):
        return True

def ask(double, value):
    return double.record(value) + double.offset

def where(path):
    return type(path).__name__, str(path)
'''

FORGED_PROGRESS = '''
# %% tags=["setup"]
import gc, sys
worker = sys.modules["__main__"]  # the worker runs as a script
channel = next(o for o in gc.get_objects() if isinstance(o, worker.Channel))
for _ in range(1000):  # "still working on cell 0": each would restart a cell's clock
    channel.send({"op": "cell", "index": 0})

# %% tags=["exercise"] exercise="0.1"
def answer():
    return 42
'''

CRASHING_SETUP = '''
# %% tags=["setup"]
import os, signal
os.kill(os.getpid(), signal.SIGKILL)

# %% tags=["exercise"] exercise="0.1"
def answer():
    return 42
'''


def session(tmp_path: Path, source: str = LESSON, limits: Limits | None = None, **kwargs) -> Session:
    limits = limits or Limits(memory_mb=3000)
    folder = tmp_path / "lessons"
    folder.mkdir(exist_ok=True)
    (folder / "99_probe.py").write_text(textwrap.dedent(source))
    host = SandboxHost(folder, limits=limits, preload=("numpy",))
    made = Session(folder / "99_probe.py", "lesson_99", host, **{"call_timeout": 20, "cell_timeout": 20, **kwargs})
    made.begin_test()
    return made


@pytest.fixture
def probe(tmp_path):
    made = session(tmp_path)
    yield made
    made.close()
    made.host.close()


# --------------------------------------------------------------------------- file system

PROBE = r'''
import errno, fcntl, os, sys, time, ctypes
results = {}
shared = open(os.__file__, "rb")
for name, attempt in [
    ("flock", lambda: fcntl.flock(shared, fcntl.LOCK_EX | fcntl.LOCK_NB)),
    ("flock /dev/null", lambda: fcntl.flock(open("/dev/null", "wb"), fcntl.LOCK_EX | fcntl.LOCK_NB)),
    ("posix lock", lambda: fcntl.lockf(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)),
    ("ofd lock", lambda: fcntl.fcntl(shared, 37, bytes(32))),
]:
    try:
        attempt()
        results[name] = "allowed"
    except OSError as error:
        results[name] = errno.errorcode.get(error.errno, str(error.errno))
libc = ctypes.CDLL(None, use_errno=True)
results["inotify"] = "allowed" if libc.inotify_init1(0) >= 0 else errno.errorcode.get(ctypes.get_errno())
for path, size in [("/tmp/fill", 300), ("/dev/shm/fill", 100), ("/fill", 1), ("/dev/fill", 1)]:
    try:
        with open(path, "wb") as handle:
            for _ in range(size):
                handle.write(b"x" * 2**20)
        results[path] = "wrote"
    except OSError as error:
        results[path] = errno.errorcode.get(error.errno, str(error.errno))
    try:
        os.remove(path)
    except OSError:
        pass
marker = sys.argv[1]
for place in ("/tmp", "/dev/shm"):
    open(f"{place}/{marker}", "w").close()
results["sees"] = sorted(n for place in ("/tmp", "/dev/shm") for n in os.listdir(place) if n.startswith("marker"))
print(results, flush=True)
time.sleep(float(sys.argv[2]))
'''


def run_in_sandbox(tmp_path: Path, marker: str, wait: float) -> subprocess.Popen:
    (tmp_path / "probe.py").write_text(PROBE)
    fd = _seccomp_pipe()
    cmd = command(tmp_path, limits=Limits(memory_mb=3000), seccomp_fd=fd,
                  program=[sys.executable, "/course/lessons/probe.py", marker, str(wait)])
    process = subprocess.Popen(cmd, pass_fds=(fd,), stdout=subprocess.PIPE, text=True)
    os.close(fd)
    return process


@sandbox_only
def test_concurrent_sandboxes_share_no_lock_watch_or_writable_place(tmp_path):
    """Two sandboxes at once: neither can lock or watch a file (the read-only environment and
    the device nodes are the same inodes in both), and neither sees the other's files."""
    assert seccomp_filter() is not None, "this architecture has no seccomp filter: locks are a covert channel"
    first = run_in_sandbox(tmp_path, "marker-first", 20)
    line = first.stdout.readline()  # the first sandbox is alive, its files written
    second = run_in_sandbox(tmp_path, "marker-second", 0)
    other, _ = second.communicate(timeout=120)
    first.kill()
    first.wait()
    for results in (eval(line), eval(other)):  # our own probe's dict literal
        for name in ("flock", "flock /dev/null", "posix lock", "ofd lock"):
            assert results[name] == "ENOLCK", f"{name} on a shared inode: {results[name]}"
        assert results["inotify"] == "ENOSYS"
    assert eval(other)["sees"] == ["marker-second", "marker-second"], "a sandbox saw another sandbox's files"


@sandbox_only
def test_every_tmpfs_is_bounded_and_the_root_is_read_only(tmp_path):
    done = run_in_sandbox(tmp_path, "marker-x", 0)
    results = eval(done.communicate(timeout=120)[0])
    assert results["/tmp/fill"] == "ENOSPC" and results["/dev/shm/fill"] == "ENOSPC"
    assert results["/fill"] == "EROFS" and results["/dev/fill"] == "EROFS"


def test_tmpfs_sizes_must_fit_in_the_memory_limit(tmp_path):
    with pytest.raises(ValueError, match="must fit"):
        Limits(memory_mb=512, tmpfs_mb=256)
    limits = Limits()
    assert limits.tmpfs_mb + limits.shm_mb + 2 <= limits.memory_mb // 2
    if problem() is None:  # an instructor's --memory-mb that is too small: a clear error
        from recsys_course.errors import CourseError
        from recsys_course.tooling.grading.batch import Grader, Options

        with pytest.raises(CourseError, match="raise --memory-mb"):
            Grader(Options(out=tmp_path, memory_mb=300))


# --------------------------------------------------------------------------- frames and notes


@pytest.mark.parametrize("frame, why", [
    (b"\xff\xff\xff\xff", "header"),  # a 4 GB header
    (b"\x00\x00\x00\x02{}\x7f\xff\xff\xff", "buffers"),  # two billion buffers
    (b"\x00\x00\x00\x02{}\x00\x00\x00\x01" + (2**40).to_bytes(8, "big"), "over the"),  # one 1 TB buffer
])
def test_a_forged_length_is_refused_before_anything_is_awaited(frame, why):
    reader = wire.FrameReader()
    reader.feed(frame)
    with pytest.raises(wire.WireError, match=why):
        reader.next()


def test_a_message_is_bounded_in_total():
    reader = wire.FrameReader(max_buffer=100, max_message=250)
    reader.feed(wire.frame({}, [b"x" * 100, b"x" * 100, b"x" * 100]))
    with pytest.raises(wire.WireError, match="more than 250 bytes"):
        reader.next()


def test_frames_arrive_in_any_pieces():
    data = wire.frame({"op": "a"}, [b"12345"]) + wire.frame({"op": "b"})
    reader = wire.FrameReader()
    got = []
    for byte in data:
        reader.feed(bytes([byte]))
        while (message := reader.next()) is not None:
            got.append(message)
    assert got == [({"op": "a"}, [b"12345"]), ({"op": "b"}, [])]


def test_notes_are_capped_and_deduplicated():
    notes = Notes(limit=40)
    for i in range(50_000):  # a dict, so this stays linear
        notes.add(f"note {i} " + "y" * 1000)
        notes.add(f"note {i % 40} " + "y" * 1000)  # a duplicate of a kept note is not counted
    kept = list(notes)
    assert len(kept) == 41 and kept[-1] == "49960 more notes were left out"
    assert all(len(n) <= proxy.MAX_NOTE_CHARS for n in kept)


# --------------------------------------------------------------------------- the boundary's rule


class Recorder:
    """A test double: it stays on the test's side; the sandbox calls it back."""

    offset = 100

    def __init__(self):
        self.seen = []

    def record(self, value):
        self.seen.append(value)
        return value * 2


@sandbox_only
def test_handles_iterate_lazily_and_enter_without_swallowing(probe):
    import itertools

    assert list(itertools.islice(probe.lesson.count_up(), 5)) == [0, 1, 2, 3, 4]  # endless, read lazily
    with pytest.raises(AssertionError, match="the test's own"):
        with probe.lesson.Box() as value:
            assert value == 7
            raise AssertionError("the test's own failure")


@sandbox_only
def test_test_doubles_stay_here_and_paths_are_data(probe):
    recorder = Recorder()
    assert probe.lesson.ask(recorder, 21) == 142
    assert recorder.seen == [21], "the learner's code called the test's own object"
    assert probe.lesson.where(Path("/tmp/x")) == ("PosixPath", "/tmp/x")


@sandbox_only
def test_library_objects_built_by_a_test_are_refused_with_a_way_out(probe):
    import decimal

    with pytest.raises(TypeError, match="build the object in the sandbox"):
        probe.lesson.where(decimal.Decimal(1))


# --------------------------------------------------------------------------- live workers


@sandbox_only
def test_cpu_time_limit_and_wall_clock_backstop(tmp_path):
    # The default backstop (4 x the limit + 30 s) leaves an endless computation to the CPU
    # limit even on a machine busy enough to give this sandbox a tenth of a core.
    made = session(tmp_path, call_timeout=2)
    try:
        assert made.lesson.burn(0.5) == 0.5  # within the limit
        made.begin_test()
        with pytest.raises(SandboxTimeout, match="CPU time"):
            made.lesson.burn(600)  # an endless computation: stopped by CPU time
        made.begin_test()
        assert made.lesson.burn(0.1) == 0.1, "the next test gets a fresh worker"
        assert made.host.starts == 1, "a time-out ends the worker, not the sandbox"
    finally:
        made.close()
        made.host.close()
    made = session(tmp_path, limits=Limits(memory_mb=3000, wall_factor=1.0, wall_margin=2.0), call_timeout=2)
    try:
        started = time.monotonic()
        with pytest.raises(SandboxTimeout, match="wall-clock"):
            made.lesson.nap(600)  # uses no CPU: stopped by the backstop, 1 x 2 s + 2 s
        assert time.monotonic() - started < 60
    finally:
        made.close()
        made.host.close()


@sandbox_only
def test_a_forged_frame_length_crashes_the_request_at_once(probe):
    started = time.monotonic()
    with pytest.raises(SandboxCrashed, match="protocol"):
        probe.lesson.forge(0, 1, 2**40)
    assert time.monotonic() - started < 30, "the forged length must be refused before waiting for its bytes"
    probe.begin_test()
    with pytest.raises(SandboxCrashed, match="protocol"):
        probe.lesson.forge(2**31, 0, 0)


@sandbox_only
def test_the_bytes_of_one_test_are_bounded(probe, monkeypatch):
    monkeypatch.setattr(proxy, "MAX_TEST_BYTES", 10 * 2**20)
    assert probe.lesson.megabytes(4).shape == (4 * 2**17,)
    with pytest.raises(SandboxCrashed, match="more than 10 MB"):
        probe.lesson.megabytes(4)
        probe.lesson.megabytes(4)
    probe.begin_test()  # a new test, a new allowance
    assert probe.lesson.megabytes(4).shape == (4 * 2**17,)


@sandbox_only
def test_a_flood_of_notes_is_capped(probe):
    assert probe.lesson.flood_notes(50_000) == 50_000
    for _ in range(5):
        probe.lesson.megabytes(0)
    kept = list(probe.notes)
    assert len(kept) <= proxy.MAX_NOTES + 1 and kept[-1].endswith("more notes were left out")


@sandbox_only
def test_forged_progress_frames_cannot_keep_a_cell_alive(tmp_path):
    made = session(tmp_path, FORGED_PROGRESS)
    try:
        with pytest.raises(LessonLoadError, match="broke the protocol"):
            made.lesson.answer()
    finally:
        made.close()
        made.host.close()


@sandbox_only
def test_a_load_that_keeps_failing_is_not_retried(tmp_path):
    made = session(tmp_path, CRASHING_SETUP)
    try:
        for _ in range(3):
            made.begin_test()
            with pytest.raises(LessonLoadError, match="setup cell"):
                made.lesson.answer()
        assert made.loads == 1, f"the lesson was loaded {made.loads} times"
    finally:
        made.close()
        made.host.close()


@sandbox_only
def test_a_crash_costs_the_worker_not_the_sandbox(probe):
    with pytest.raises(SandboxCrashed):
        probe.lesson.die()
    probe.begin_test()
    assert probe.lesson.burn(0.1) == 0.1
    assert probe.host.starts == 1 and probe.loads == 2
