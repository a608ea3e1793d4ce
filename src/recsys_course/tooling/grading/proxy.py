"""The trusted side of batch grading: a lesson that lives in a sandbox, used like a module.

In batch grading the ``lesson`` fixture is a :class:`RemoteLesson`. Tests keep writing
``lesson.sparsity(frame)``; the call is sent to the sandbox (``worker.py``), and what comes
back is plain data rebuilt here by ``wire.py`` (numbers, strings, arrays, DataFrames,
tensors rebuilt with ``tf.constant``) or an opaque :class:`Remote` handle for anything
else (a Keras layer, a record, a class), whose attributes, items and calls are forwarded in
turn. Functions the test passes as arguments stay here and are called back with plain data.
The assertions, the expected values and the grading plugin never share a process with the
learner's code.

A :class:`Session` owns one sandbox for one lesson. When the sandbox crashes or misses a
deadline, the request fails (so the test that made it fails) and the next request starts a
fresh sandbox; a cell that crashed or hung the sandbox while loading is skipped on the
next load and counts as that exercise's error.
"""

from __future__ import annotations

import builtins
import functools
import time
import types
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from recsys_course.tooling.grading import wire
from recsys_course.tooling.grading.sandbox import LESSON_MOUNT, Limits, Sandbox, SandboxError, SandboxTimeout
from recsys_course.tooling.grading.loader import LessonLoadError


class RemoteError(Exception):
    """The learner's code raised an exception that is not a built-in one; its text is kept."""


class SandboxLost(RuntimeError):
    """An object from a sandbox that has since been restarted."""


_BUILTIN_ERRORS = {
    name: value for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == "builtins"
}


def _tensor(array: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.constant(array)


def _rebuild_rng(state: dict) -> np.random.Generator:
    name = state.get("bit_generator")
    if name not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
        raise wire.WireError(f"unknown bit generator {name!r}")
    bits = getattr(np.random, name)()
    bits.state = state
    return np.random.Generator(bits)


# Test functions the sandbox may call back with plain data (a scorer a test passes to
# ``rerank``). Other trusted objects (a Keras model built by a test) are refused: they
# would run on data from the sandbox with their full power, and could not train there.
_CALLBACK_TYPES = (types.FunctionType, types.MethodType, functools.partial, types.BuiltinFunctionType)


class Session:
    """One lesson of one submission in a sandbox, restarted after a crash or time-out."""

    def __init__(self, lesson_file: Path, module_name: str, *, limits: Limits = Limits(),  # noqa: B008 - frozen
                 call_timeout: float = 120.0, cell_timeout: float = 60.0, load_timeout: float = 900.0,
                 package_dir: Path | None = None, log: Path | None = None) -> None:
        self.lesson_file = Path(lesson_file)
        self.module_name = module_name
        self.limits = limits
        self.call_timeout, self.cell_timeout, self.load_timeout = call_timeout, cell_timeout, load_timeout
        self.package_dir = package_dir
        self.log = log
        self.sandbox: Sandbox | None = None
        self.generation = 0
        self.deadline: float | None = None  # set per test by the plugin
        self.skip: dict[str, str] = {}  # cells that crashed or hung a sandbox: not run again
        self.load_error: str | None = None
        self.cell_errors: dict[str, str] = {}
        self.notes: list[str] = []  # for the instructor: crashes, time-outs, provenance
        self.proxies: dict[int, Remote] = {}
        self.callbacks: list[Callable] = []
        self.lesson = RemoteLesson(self)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.kill()
            self.sandbox = None

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def start(self) -> None:
        """A running sandbox with the lesson loaded (or :class:`LessonLoadError`)."""
        if self.load_error is not None:
            raise LessonLoadError(self.load_error)
        if self.sandbox is not None and self.sandbox.alive:
            return
        started = time.monotonic()
        while True:
            self.close()
            self.generation += 1
            self.proxies.clear()
            self.callbacks.clear()
            kwargs = {"package_dir": self.package_dir} if self.package_dir else {}
            try:
                self.sandbox = Sandbox(self.lesson_file, self.limits, log=self.log, **kwargs)
            except SandboxError as error:
                self._note(f"the sandbox did not start: {error}")
                raise
            label = "starting"
            try:
                self.sandbox.send({"op": "load", "path": f"{LESSON_MOUNT}/{self.lesson_file.name}",
                                   "module": self.module_name, "skip": self.skip,
                                   # in-sandbox alarm first (a cooperative loop loses only the
                                   # rest of its cell); the deadline below is the backstop
                                   "cell_timeout": self.cell_timeout})
                while True:
                    limit = min(time.monotonic() + self.cell_timeout + 5.0, started + self.load_timeout)
                    header, buffers = self.sandbox.receive(limit)
                    if header.get("op") == "cell":
                        label = str(header.get("label"))[:60]
                        continue
                    break
            except SandboxError as error:
                what = "did not finish within the time limit" if isinstance(error, SandboxTimeout) else \
                    f"crashed the sandbox ({error})"
                self._note(f"while loading, the {label} {what}")
                if not label.startswith("exercise") or time.monotonic() > started + self.load_timeout:
                    self.load_error = f"{self.lesson_file.name}: the {label} {what}"
                    self.close()
                    raise LessonLoadError(self.load_error) from None
                self.skip[label] = f"this cell {what}; it was skipped"
                continue
            if header.get("op") == "error":
                self.load_error = str(header.get("message"))
                self.close()
                raise LessonLoadError(self.load_error)
            value = self._decode(header, buffers)
            self.cell_errors = value if isinstance(value, dict) else {}
            # The running test's time starts now: loading had deadlines of its own.
            self.deadline = time.monotonic() + self.call_timeout
            return

    # ------------------------------------------------------------------ requests
    def _encode_opaque(self, value: Any) -> Any:
        if isinstance(value, RemoteLesson):
            return {"$h": 0}  # the lesson module: reloaded in every new sandbox
        if isinstance(value, Remote):
            if object.__getattribute__(value, "_generation") != self.generation:
                raise SandboxLost("this object came from a sandbox that has been restarted since")
            return {"$h": object.__getattribute__(value, "_number")}
        if isinstance(value, _CALLBACK_TYPES):
            self.callbacks.append(value)
            return {"$cb": len(self.callbacks) - 1}
        raise wire.Unsendable(
            f"a {type(value).__module__}.{type(value).__qualname__} cannot be sent to the sandbox: "
            "send plain data, or build the object in the sandbox (through lesson.tf, or "
            "recsys_course.tooling.grading.sandboxed for a helper)"
        )

    def _proxy(self, number: int) -> Remote:
        proxy = self.proxies.get(number)
        if proxy is None:
            proxy = self.proxies[number] = Remote(self, number, self.generation)
        return proxy

    def _callback(self, number: int) -> Any:
        raise wire.WireError("the sandbox cannot send callbacks as values")

    def _decode(self, header: dict, buffers: list[bytes], rngs: list | None = None) -> Any:
        for note in header.get("notes") or []:
            if isinstance(note, str):
                self._note(f"provenance: {note[:240]}")
        value = wire.decode(header.get("value"), buffers, handle=self._proxy, callback=self._callback,
                            tensor=_tensor, rng=_rebuild_rng)
        if rngs:
            states = wire.decode(header.get("rngs", {"$l": []}), buffers)
            for generator, state in zip(rngs, states if isinstance(states, list) else []):
                if isinstance(state, dict):
                    try:
                        generator.bit_generator.state = state
                    except (TypeError, ValueError, KeyError):
                        pass
        return value

    def request(self, header: dict, payload: Any = None) -> Any:
        self.start()
        rngs: list[np.random.Generator] = []
        buffers: list[bytes] = []
        if payload is not None:
            encoder = _TrustedEncoder(self._encode_opaque, rngs)
            header = {**header, "payload": encoder.encode(payload)}
            buffers = encoder.buffers
        deadline = self.deadline or time.monotonic() + self.call_timeout
        sandbox = self.sandbox
        try:
            sandbox.send(header, buffers, deadline)
            while True:
                reply, data = sandbox.receive(deadline)
                if reply.get("op") != "callback":
                    break
                self._answer_callback(reply, data, deadline)
        except SandboxError as error:
            self.close()
            what = ("did not finish within the time limit (the sandbox was stopped)"
                    if isinstance(error, SandboxTimeout) else f"crashed the sandbox: {error}")
            self._note(f"a call into the lesson {what}")
            raise type(error)(f"the graded code {what}") from None
        if reply.get("op") == "error":
            raise _rebuild_error(reply)
        return self._decode(reply, data, rngs)

    def _answer_callback(self, request: dict, buffers: list[bytes], deadline: float) -> None:
        number = request.get("id")
        try:
            function = self.callbacks[number] if type(number) is int and 0 <= number < len(self.callbacks) else None
            if function is None:
                raise wire.WireError("unknown callback")
            payload = wire.decode(request.get("payload"), buffers, handle=self._proxy,
                                  callback=self._callback, tensor=_tensor, rng=_rebuild_rng)
            if not isinstance(payload, dict) or not isinstance(payload.get("args"), list) \
                    or not isinstance(payload.get("kwargs"), dict) \
                    or not all(type(k) is str for k in payload["kwargs"]):
                raise wire.WireError("bad callback arguments")
            result = function(*payload["args"], **payload["kwargs"])
            encoder = _TrustedEncoder(self._encode_opaque, [])
            tree = encoder.encode(result)
            self.sandbox.send({"op": "result", "value": tree}, encoder.buffers, deadline)
        except SandboxError:
            raise
        except Exception as error:  # told to the sandbox, which raises it there
            self.sandbox.send({"op": "error", "type": type(error).__name__, "message": str(error)[:500]},
                              None, deadline)


class _TrustedEncoder(wire.Encoder):
    """Encodes what tests send; remembers NumPy generators so their state can be updated
    after the call (the learner's code advanced its copy in the sandbox)."""

    def __init__(self, opaque: Callable[[Any], Any], rngs: list) -> None:
        super().__init__(opaque)
        self.rngs = rngs

    def encode(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, np.random.Generator):
            self.rngs.append(value)
        return super().encode(value, depth)


def _rebuild_error(reply: dict) -> Exception:
    kind = reply.get("type")
    message = str(reply.get("message", ""))
    if kind == "LessonLoadError":
        return LessonLoadError(message)
    cls = _BUILTIN_ERRORS.get(kind) if isinstance(kind, str) else None
    if cls is not None and cls not in (SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration):
        try:
            return cls(message)
        except Exception:  # e.g. an error class with required arguments
            pass
    return RemoteError(str(reply.get("detail") or message))


class Remote:
    """An object that lives in the sandbox. Attribute reads, item reads, calls, ``len``,
    iteration and ``str`` are forwarded; the answers are data or more handles."""

    __slots__ = ("_session", "_number", "_generation")

    def __init__(self, session: Session, number: int, generation: int) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_number", number)
        object.__setattr__(self, "_generation", generation)

    def _ask(self, op: str, payload: Any = None, **fields: Any) -> Any:
        session: Session = object.__getattribute__(self, "_session")
        session.start()
        if object.__getattribute__(self, "_generation") != session.generation:
            raise SandboxLost("this object came from a sandbox that has been restarted since "
                              "(an earlier call crashed or timed out)")
        return session.request({"op": op, "target": object.__getattribute__(self, "_number"), **fields}, payload)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # no dunder lookups (pickle, copy, numpy probing)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", {"value": value}, name=name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", {"args": list(args), "kwargs": kwargs})

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", {"key": key})

    def __len__(self) -> int:
        value = self._ask("len")
        if type(value) is not int:
            raise TypeError("len() of a sandboxed object did not return an int")
        return value

    def __iter__(self):
        value = self._ask("iter")
        return iter(value if isinstance(value, list) else [])

    def __str__(self) -> str:
        value = self._ask("str")
        return value if type(value) is str else "<sandboxed object>"

    def __repr__(self) -> str:
        try:
            value = self._ask("repr")
        except Exception:  # repr must not fail inside an assertion message
            return "<sandboxed object>"
        return value if type(value) is str else "<sandboxed object>"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __bool__(self) -> bool:
        return True

    def __mro_entries__(self, bases: tuple) -> tuple:
        raise TypeError(
            "a test cannot subclass a class that lives in the sandbox: define the subclass in "
            "a helper function and run it there with recsys_course.tooling.grading.sandboxed(lesson, helper)"
        )

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a sandboxed object is not an array: call .numpy() or the method that returns data")


class RemoteLesson(Remote):
    """The lesson module in the sandbox: handle 0, reloaded after a restart."""

    __slots__ = ()

    def __init__(self, session: Session) -> None:
        super().__init__(session, 0, 0)

    def _ask(self, op: str, payload: Any = None, **fields: Any) -> Any:
        session: Session = object.__getattribute__(self, "_session")
        session.start()
        return session.request({"op": op, "target": 0, **fields}, payload)

    def __repr__(self) -> str:
        session = object.__getattribute__(self, "_session")
        return f"<lesson {session.lesson_file.name} in a sandbox>"

    __str__ = __repr__


def type_names(value: Any) -> list[str]:
    """``module.qualname`` of the value's class and its bases, wherever the value lives."""
    if isinstance(value, Remote):
        names = value._ask("type")
        return [n for n in names if type(n) is str] if isinstance(names, list) else []
    return [f"{k.__module__}.{k.__qualname__}" for k in type(value).__mro__]


def sandboxed(lesson: Any, function: Callable, *, uses: tuple[Callable, ...] = ()) -> Callable:
    """``function`` itself for an in-process lesson; for a sandboxed one, the same function
    defined inside the sandbox (a handle to call), for helpers that build framework objects
    the learner's code works with (a Keras model subclass, a ``tf.Module``).

    The function and the helpers in ``uses`` are sent as source; the modules and plain
    constants they name are looked up in the test module and re-imported or sent as data.
    Their results come back through the boundary like any other value. Only instructors'
    helpers run this way; never send an assertion or an expected value.
    """
    if not isinstance(lesson, Remote):
        return function
    import inspect
    import textwrap

    functions = (*uses, function)
    names: set[str] = set()

    def collect(code: types.CodeType) -> None:
        names.update(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                collect(const)

    for f in functions:
        collect(f.__code__)
    modules, constants, imports = {}, {}, {}
    scope = function.__globals__
    defined = {f.__name__ for f in functions}
    for name in sorted(names - defined):
        if name not in scope:
            continue
        value = scope[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        elif isinstance(value, (int, float, str, bytes, tuple, list, dict, np.ndarray)) or value is None:
            constants[name] = value
        elif isinstance(value, (types.FunctionType, type)) and value.__module__ == function.__module__:
            raise TypeError(f"{function.__name__} uses {name}, defined in the test module: "
                            f"pass it in uses=(...) so that it is defined in the sandbox too")
        elif getattr(value, "__module__", None) not in (None, function.__module__) and \
                isinstance(getattr(value, "__qualname__", None), str):
            imports[name] = [value.__module__, value.__qualname__]  # from module import name
    sources = [textwrap.dedent(inspect.getsource(f)) for f in functions]
    session: Session = object.__getattribute__(lesson, "_session")
    session.start()
    return session.request({"op": "define", "target": 0, "name": function.__name__},
                           {"modules": modules, "constants": constants, "imports": imports, "sources": sources})
