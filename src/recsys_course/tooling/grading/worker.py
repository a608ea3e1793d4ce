"""The sandbox side of batch grading: a zygote that forks one worker per lesson, and the
worker that loads a submitted lesson and serves calls into it.

Started by :mod:`recsys_course.tooling.grading.sandbox` inside bubblewrap as
``python -m recsys_course.tooling.grading.worker``. The **zygote** imports the libraries
named in ``$COURSE_SANDBOX_PRELOAD`` (NumPy, pandas, TensorFlow... before any graded code
exists), says ``ready`` on its control socket (its stdin), then answers two requests:
``fork`` (with a socket passed alongside: the new worker's channel) and ``reset`` (end every
other process in the sandbox). It never runs graded code itself.

A **worker** reads requests on its socket and answers each with exactly one ``result``
(``value``, ``rngs``, ``notes``) or ``error`` (``type``, ``message``) message. Requests
(``op``): ``load``, ``getattr``, ``setattr``, ``getitem``, ``call``, ``str``, ``repr``,
``type``, ``len``, ``iter``, ``next``, ``enter``, ``exit``, ``define``. While loading it
sends ``cell`` messages (the index of the graded cell about to run); during a call it may
send ``callback`` requests for functions and test doubles that live on the trusted side.

Everything here is untrusted the moment the lesson's first cell runs: the learner's code
can rewrite this module, forge answers or exit. That is fine, because this process decides
nothing. Its answers are data (``wire.py``) that the trusted side checks; its lifetime,
time and resources are bounded from outside. pytest is never imported here.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import traceback
from typing import Any

from recsys_course.tooling.grading import wire

HANDLE_LIMIT = 200_000
MAX_ITEMS = 64  # items of an iterator sent in one answer


class TrustedObject:
    """A function or test double that lives on the trusted side: calls, attribute reads,
    items and ``len`` are sent there, with plain data or handles as arguments."""

    __slots__ = ("_channel", "_number")

    def __init__(self, channel: Channel, number: int) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_number", number)

    def _ask(self, action: str, **fields: Any) -> Any:
        return object.__getattribute__(self, "_channel").callback(
            object.__getattribute__(self, "_number"), action, fields)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=list(args), kwargs=kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key=key)

    def __len__(self) -> int:
        return self._ask("len")

    def __iter__(self):
        return iter(self._ask("list"))

    def __repr__(self) -> str:
        return "<object of the grader's tests>"


class Channel:
    def __init__(self, incoming, outgoing) -> None:
        self.incoming, self.outgoing = incoming, outgoing
        self.reader = wire.FrameReader()
        self.objects: dict[int, Any] = {}
        self.numbers: dict[int, int] = {}  # id(object) -> handle number, so identity survives
        self.notes: list[str] = []

    # ------------------------------------------------------------------ values
    def handle(self, obj: Any) -> dict:
        number = self.numbers.get(id(obj))
        if number is None or self.objects.get(number) is not obj:
            if len(self.objects) >= HANDLE_LIMIT:
                raise wire.Unsendable("too many live objects")
            number = len(self.objects) + 1
            self.objects[number] = obj
            self.numbers[id(obj)] = number
        return {"$h": number}

    def origin(self, tensor: Any) -> int | None:
        """A tensor is sent as its value and kept here, so that the trusted side can name
        the same tensor in a later request (``tape.gradient(loss, variable)``)."""
        if len(self.objects) >= HANDLE_LIMIT // 2:
            return None
        return self.handle(tensor)["$h"]

    def resolve(self, number: int) -> Any:
        if number not in self.objects:
            raise wire.WireError(f"no object number {number} in this sandbox")
        return self.objects[number]

    def trusted(self, number: int) -> TrustedObject:
        return TrustedObject(self, number)

    def encode(self, value: Any) -> tuple[Any, list[bytes]]:
        return wire.encode(value, self.handle, self.origin)

    def decode(self, tree: Any, buffers: list[bytes], rngs: list | None = None) -> Any:
        import numpy as np

        def make_rng(state: dict) -> Any:
            name = state.get("bit_generator")
            if name not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
                raise wire.WireError(f"unknown bit generator {name!r}")
            bits = getattr(np.random, name)()
            bits.state = state
            generator = np.random.Generator(bits)
            if rngs is not None:
                rngs.append(generator)
            return generator

        return wire.decode(tree, buffers, handle=self.resolve, callback=self.trusted, tensor=_tensor, rng=make_rng)

    # ------------------------------------------------------------------ messages
    def send(self, header: dict, buffers: list[bytes] | None = None) -> None:
        wire.write_message(self.outgoing, header, buffers)

    def receive(self) -> tuple[dict, list[bytes]]:
        return wire.read_message(self.incoming, self.reader)

    def reply(self, value: Any, rngs: list | None = None) -> None:
        tree, buffers = self.encode(value)
        states, more = self.encode([g.bit_generator.state for g in rngs or []])
        # Buffers of the generator states follow the value's: renumber them.
        states = _shift(states, len(buffers))
        notes, self.notes = self.notes[:20], []
        self.send({"op": "result", "value": tree, "rngs": states, "notes": notes}, buffers + more)

    def error(self, error: BaseException) -> None:
        kind = type(error)
        builtin = kind.__module__ == "builtins" and isinstance(error, Exception)
        text = "".join(traceback.format_exception_only(kind, error)).strip()
        try:
            message = str(error) if builtin else text
        except Exception:  # a hostile __str__
            message = kind.__name__
        self.send({"op": "error", "type": kind.__name__ if builtin else "RemoteError",
                   "message": message[:2000], "detail": text[:2000]})

    def callback(self, number: int, action: str, fields: dict) -> Any:
        tree, buffers = self.encode(fields)
        self.send({"op": "callback", "id": number, "action": action, "payload": tree}, buffers)
        while True:  # the grader's function may itself make requests before it answers
            header, buffers = self.receive()
            if header.get("op") == "result":
                return self.decode(header.get("value"), buffers)
            if header.get("op") == "error":
                raise _callback_error(header)
            handle_request(self, header, buffers)


def _callback_error(header: dict) -> Exception:
    """The grader's function raised: the same built-in exception type here, when there is one."""
    import builtins

    kind = getattr(builtins, str(header.get("type")), None)
    message = str(header.get("message"))
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except Exception:
            pass
    return RuntimeError(f"the grader's function raised {header.get('type')}: {message}")


def _shift(tree: Any, offset: int) -> Any:
    if isinstance(tree, dict):
        return {k: (v + offset if k in ("$a", "$b") and isinstance(v, int) else _shift(v, offset))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [_shift(v, offset) for v in tree]
    return tree


def _tensor(array: Any, number: int | None = None) -> Any:
    import tensorflow as tf

    return tf.constant(array)


def serve(channel: Channel) -> None:
    while True:
        try:
            header, buffers = channel.receive()
        except EOFError:
            return
        handle_request(channel, header, buffers)


def handle_request(channel: Channel, header: dict, buffers: list[bytes]) -> None:
    """Answer one request (always with exactly one ``result`` or ``error`` message)."""
    from recsys_course.tooling.grading.guard import contained
    from recsys_course.tooling.grading.loader import LessonLoadError, load_lesson

    op = header.get("op")
    rngs: list = []
    try:
        with contained(None, "the graded code"):
            if op == "load":
                def progress(index: int, label: str) -> None:
                    channel.send({"op": "cell", "index": index})

                skip = {int(k): str(v) for k, v in (header.get("skip") or {}).items()}
                try:
                    module = load_lesson(header["path"], header["module"], header.get("cell_timeout"),
                                         on_cell=progress, skip=skip, interrupts_are_errors=True, cpu_clock=True)
                except LessonLoadError as error:
                    channel.send({"op": "error", "type": "LessonLoadError", "message": str(error)[:2000]})
                    return
                channel.objects.clear()
                channel.numbers.clear()
                channel.objects[0] = module
                channel.numbers[id(module)] = 0
                channel.reply(dict(module.__dict__.get("__lesson_errors__", {})))
                return
            target = channel.resolve(header.get("target", 0))
            payload = channel.decode(header["payload"], buffers, rngs) if "payload" in header else {}
            if op == "getattr":
                value = getattr(target, str(header["name"]))
            elif op == "setattr":
                setattr(target, str(header["name"]), payload["value"])
                value = None
            elif op == "getitem":
                value = target[payload["key"]]
            elif op == "call":
                value = target(*payload["args"], **payload["kwargs"])
            elif op in ("str", "repr"):
                value = str(target) if op == "str" else repr(target)
                value = str.__str__(value)[:5000] if isinstance(value, str) else "?"
            elif op == "type":
                kind = type(target)
                value = [str(getattr(k, "__module__", "?")) + "." + str(getattr(k, "__qualname__", "?"))
                         for k in kind.__mro__]
            elif op == "len":
                value = len(target)
            elif op == "iter":
                value = iter(target)  # an iterator is never data: the answer is its handle
            elif op == "next":
                value = _next_items(target, header.get("count"))
            elif op == "enter":  # looked up on the type, as the `with` statement does
                value = type(target).__enter__(target)
            elif op == "exit":
                error = payload.get("error") if isinstance(payload, dict) else None
                raised = RuntimeError(": ".join(map(str, error))) if error else None
                type(target).__exit__(target, type(raised) if raised else None, raised, None)
                value = None  # whatever __exit__ returns, the grader's exception is never suppressed
            elif op == "define":
                value = _define(header, payload, channel)
            else:
                raise wire.WireError(f"unknown request {op!r}")
        channel.reply(value, rngs)
    except BaseException as error:  # every failure is the caller's answer
        try:
            channel.error(error)
        except BaseException:  # even the error could not be described
            channel.send({"op": "error", "type": "RemoteError", "message": "the graded code failed"})


def _next_items(iterator: Any, count: Any) -> dict:
    """Up to ``count`` items of ``iterator`` and whether it is exhausted."""
    count = count if type(count) is int and 0 < count <= MAX_ITEMS else 1
    items = []
    for _ in range(count):
        try:
            items.append(next(iterator))
        except StopIteration:
            return {"items": items, "done": True}
    return {"items": items, "done": False}


def _define(header: dict, payload: dict, channel: Channel) -> Any:
    """Run a test helper's source here and return the function it defines (as a handle).

    Tests use this (:func:`recsys_course.tooling.grading.sandboxed`) for helpers that build
    framework objects the learner's code needs, such as a Keras model subclass defined in a
    test file.
    """
    namespace: dict[str, Any] = {"__name__": "grader_helpers", "lesson": channel.objects[0]}
    for alias, module in payload.get("modules", {}).items():
        namespace[alias] = importlib.import_module(module)
    for alias, (module, qualname) in payload.get("imports", {}).items():
        value = importlib.import_module(module)
        if hasattr(value, alias):  # `from annoy import AnnoyIndex`: the name it was imported as
            namespace[alias] = getattr(value, alias)
            continue
        for part in qualname.split("."):
            value = getattr(value, part)
        namespace[alias] = value
    namespace.update(payload.get("constants", {}))
    for source in payload.get("sources", []):
        exec(compile(source, "<grader helper>", "exec"), namespace)
    return namespace[header["name"]]


def _audit(allowed: tuple[str, ...], channel: Channel):
    """Note attempts to open or list paths outside what the sandbox shows (for the
    instructor's provenance flags; the sandbox hides those paths anyway)."""

    def hook(event: str, args: tuple) -> None:
        if event not in ("open", "os.listdir", "os.scandir") or not args:
            return
        path = args[0]
        if not isinstance(path, (str, bytes)) or isinstance(path, int):
            return
        text = os.fsdecode(path)
        if not text.startswith("/") or text.startswith(allowed):
            return
        if len(channel.notes) < 20:
            channel.notes.append(f"tried to read {text[:200]}")

    return hook


# --------------------------------------------------------------------------- processes


def work(fd: int) -> None:
    """A forked worker: serve requests on socket ``fd`` until it closes."""
    import gc

    gc.enable()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess must be able to wait
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the zygote's control socket is not the worker's to use
    sock = socket.socket(fileno=fd)
    channel = Channel(sock.makefile("rb", buffering=0), sock.makefile("wb", buffering=0))
    allowed = tuple(p for p in os.environ.get("COURSE_SANDBOX_VISIBLE", "").split(":") if p)
    if allowed:
        sys.addaudithook(_audit(allowed, channel))
    from recsys_course.tooling.grading.loader import DEFERRED, defer_import

    for name in DEFERRED:
        defer_import(name)
    serve(channel)


def preload(names: list[str]) -> None:
    """Import what the lessons will import, before any graded code exists."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # a lesson that needs it will report the error itself
            pass


def zygote() -> None:
    import gc

    control = socket.socket(fileno=os.dup(0))
    gc.disable()
    preload([n for n in os.environ.get("COURSE_SANDBOX_PRELOAD", "").split(",") if n])
    # Everything imported so far is never collected: a worker's garbage collector then does
    # not walk (and so copy, page by page) the zygote's objects it shares copy-on-write.
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished workers are reaped by the kernel
    reader = wire.FrameReader(max_message=1 << 20, max_buffers=0)
    control.sendall(wire.frame({"op": "ready", "pid": os.getpid(),
                                "threads": len(os.listdir("/proc/self/task"))}))
    pending: list[int] = []
    while True:
        data, fds, _, _ = socket.recv_fds(control, 65536, 4)
        pending += fds
        if not data:
            return
        reader.feed(data)
        while (message := reader.next()) is not None:
            op = message[0].get("op")
            if op == "fork" and pending:
                fd = pending.pop(0)
                _end_others()
                pid = os.fork()
                if pid == 0:
                    try:
                        control.close()
                        for other in pending:
                            os.close(other)
                        work(fd)
                    finally:
                        os._exit(0)
                os.close(fd)
                control.sendall(wire.frame({"op": "forked", "pid": pid}))
            elif op == "reset":
                _end_others()
                control.sendall(wire.frame({"op": "reset"}))
            else:
                return


def _end_others() -> None:
    """SIGKILL to every process of the sandbox but this one (and its init, which the
    kernel spares): the previous worker and anything it started."""
    try:
        os.kill(-1, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def main() -> None:
    zygote()


if __name__ == "__main__":
    main()
