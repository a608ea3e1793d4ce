"""The sandbox side of batch grading: loads one submitted lesson and serves calls into it.

Started by :mod:`recsys_course.tooling.grading.sandbox` inside bubblewrap as
``python -m recsys_course.tooling.grading.worker``. It reads requests on stdin and answers on the
original stdout (the learner's ``print`` goes to stderr). Everything here is untrusted the
moment the lesson's first cell runs: the learner's code can rewrite this module, forge
answers or exit. That is fine, because this process decides nothing. Its answers are data
(``wire.py``) that the trusted side checks; its lifetime and resources are bounded from
outside.

Requests (``op``): ``load``, ``getattr``, ``setattr``, ``getitem``, ``call``, ``str``,
``repr``, ``len``, ``iter``, ``define``. Replies: ``result`` (``value``, ``rngs``,
``notes``) or ``error`` (``type``, ``message``). During a call, the worker may send
``callback`` requests for functions that live on the trusted side and waits for their reply.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from recsys_course.tooling.grading import wire

HANDLE_LIMIT = 200_000


class Channel:
    def __init__(self, incoming, outgoing) -> None:
        self.incoming, self.outgoing = incoming, outgoing
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

    def resolve(self, number: int) -> Any:
        if number not in self.objects:
            raise wire.WireError(f"no object number {number} in this sandbox")
        return self.objects[number]

    def stub(self, number: int):
        def call_trusted(*args: Any, **kwargs: Any) -> Any:
            return self.callback(number, args, kwargs)

        return call_trusted

    def encode(self, value: Any) -> tuple[Any, list[bytes]]:
        return wire.encode(value, self.handle)

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

        return wire.decode(tree, buffers, handle=self.resolve, callback=self.stub, tensor=_tensor, rng=make_rng)

    # ------------------------------------------------------------------ messages
    def send(self, header: dict, buffers: list[bytes] | None = None) -> None:
        wire.write_message(self.outgoing, header, buffers)

    def reply(self, value: Any, rngs: list | None = None) -> None:
        tree, buffers = self.encode(value)
        states, more = self.encode([g.bit_generator.state for g in rngs or []])
        # Buffers of the generator states follow the value's: renumber them.
        offset = len(buffers)
        states = _shift(states, offset)
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

    def callback(self, number: int, args: tuple, kwargs: dict) -> Any:
        tree, buffers = self.encode({"args": list(args), "kwargs": kwargs})
        self.send({"op": "callback", "id": number, "payload": tree}, buffers)
        while True:  # the grader's function may itself make requests before it answers
            header, buffers = wire.read_message(self.incoming)
            if header.get("op") == "result":
                return self.decode(header.get("value"), buffers)
            if header.get("op") == "error":
                raise RuntimeError(f"the grader's function raised {header.get('type')}: {header.get('message')}")
            handle_request(self, header, buffers)


def _shift(tree: Any, offset: int) -> Any:
    if isinstance(tree, dict):
        return {k: (v + offset if k in ("$a", "$b") and isinstance(v, int) else _shift(v, offset))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [_shift(v, offset) for v in tree]
    return tree


def _tensor(array: Any) -> Any:
    import tensorflow as tf

    return tf.constant(array)


def serve(channel: Channel) -> None:
    while True:
        try:
            header, buffers = wire.read_message(channel.incoming)
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
                def progress(label: str) -> None:
                    channel.send({"op": "cell", "label": label})

                try:
                    module = load_lesson(header["path"], header["module"], header.get("cell_timeout"), on_cell=progress,
                                         skip=header.get("skip") or {}, interrupts_are_errors=True)
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
                value = list(target)[:1_000_000]
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


def _define(header: dict, payload: dict, channel: Channel) -> Any:
    """Run a test helper's source here and return the function it defines (as a handle).

    Tests use this (:func:`recsys_course.tooling.grading.sandboxed`) for helpers that build
    framework objects the learner's code needs, such as a Keras model subclass defined in a
    test file.
    """
    import importlib

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


def main() -> None:
    # The protocol keeps the original stdout; whatever graded code prints goes to stderr.
    outgoing = os.fdopen(os.dup(1), "wb", buffering=0)
    incoming = os.fdopen(os.dup(0), "rb", buffering=0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.stdout = sys.stderr
    channel = Channel(incoming, outgoing)
    allowed = tuple(p for p in os.environ.get("COURSE_SANDBOX_VISIBLE", "").split(":") if p)
    if allowed:
        sys.addaudithook(_audit(allowed, channel))
    # Libraries every lesson imports, loaded before any deadline runs, so that a slow
    # import on a busy machine is not charged to the learner's first cell.
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    channel.send({"op": "ready", "pid": os.getpid()})
    serve(channel)


if __name__ == "__main__":
    main()
