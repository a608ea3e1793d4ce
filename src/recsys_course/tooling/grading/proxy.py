"""The trusted side of batch grading: a lesson that lives in a sandbox, used like a module.

In batch grading the ``lesson`` fixture is a :class:`RemoteLesson`. Tests keep writing
``lesson.sparsity(frame)``; the call is sent to a worker in the submission's sandbox
(``worker.py``), and what comes back is rebuilt here by ``wire.py``. One rule decides how
every value crosses (docs/authoring.md, "Tests that work in the sandbox"):

* **data travels by value**, both ways: numbers, strings, bytes, containers of data, NumPy
  arrays and scalars, pandas frames, TensorFlow tensors (as ``tf.constant`` here), NumPy
  generators (their state, written back after the call) and ``pathlib`` paths;
* **everything else stays where it was made** and travels as a handle. An object of the
  learner's code (a Keras layer, an Annoy index, a generator, a ``tf.data`` dataset, a
  gradient tape) is a :class:`Remote` here: attributes, items, calls, ``len``, iteration
  (lazily, a few items per request), ``with`` and ``str`` are forwarded. A handle or a
  tensor that came from the sandbox goes back as the very same object;
* functions and **test doubles** (instances of classes defined in a ``test_*`` module) stay
  on this side; the learner's code calls them back with data;
* any other object a test builds here (a library object: an ``AnnoyIndex``, a Keras model)
  is refused with a message: build it in the sandbox, through ``lesson.tf`` or
  :func:`sandboxed`. Files the learner's code reads are written there the same way.

The assertions, the expected values and the grading plugin never share a process with the
learner's code, and a handle's ``__exit__`` never suppresses the test's own exception.

A :class:`Session` is one lesson of one submission: a worker forked in the submission's
sandbox (:class:`SandboxHost`), loaded with the lesson. When the worker crashes or runs out
of time, the request fails (so the test that made it fails) and the next request starts a
fresh worker; a cell that crashed or hung the worker while loading is skipped on the next
load and counts as that exercise's error. Time is counted in CPU seconds of the sandbox
(``sandbox.Budget``).
"""

from __future__ import annotations

import builtins
import functools
import types
import weakref
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from recsys_course.tooling.grading import wire
from recsys_course.tooling.grading.loader import (
    DEFERRED, LessonLoadError, cell_label, graded_cells, imported_modules,
)
from recsys_course.tooling.grading.sandbox import (
    LESSON_MOUNT, Budget, Channel, Limits, Sandbox, SandboxCrashed, SandboxError, SandboxTimeout,
)

# pytest leaves this module's frames out of failure tracebacks (``--fulltrace`` shows them):
# a learner reads their test and their code, and pytest need not parse this file for each
# failing call (it walks the AST of every file in a traceback, per entry).
__tracebackhide__ = True

MAX_NOTES = 40  # notes kept per session; the rest are counted
MAX_NOTE_CHARS = 300
MAX_TEST_BYTES = 512 * 1024 * 1024  # bytes a worker may send during one test


class RemoteError(Exception):
    """The learner's code raised an exception that is not a built-in one; its text is kept."""


class SandboxLost(RuntimeError):
    """An object from a worker that has since been replaced."""


_BUILTIN_ERRORS = {
    name: value for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == "builtins"
}


def _rebuild_rng(state: dict) -> np.random.Generator:
    name = state.get("bit_generator")
    if name not in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"):
        raise wire.WireError(f"unknown bit generator {name!r}")
    bits = getattr(np.random, name)()
    bits.state = state
    return np.random.Generator(bits)


# Functions a test may pass for the sandbox to call back with plain data (a scorer a test
# passes to ``rerank``).
_CALLBACK_TYPES = (types.FunctionType, types.MethodType, functools.partial, types.BuiltinFunctionType)


def is_test_double(value: Any) -> bool:
    """An instance of a class defined in a test module (``test_*.py``): it stays here."""
    module = type(value).__module__ or ""
    return module.rsplit(".", 1)[-1].startswith("test_") and not isinstance(value, type)


def preload_modules(lesson_files: list[Path]) -> tuple[str, ...]:
    """Modules the graded cells of these lessons import, for the zygote to import before
    any graded code runs (the reference solutions name them; a learner's extra imports are
    simply paid by that learner's lesson)."""
    names: dict[str, None] = {}
    for path in lesson_files:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except OSError:
            continue
        names.update(dict.fromkeys(imported_modules(graded_cells(source))))
    for name in ("__future__", *DEFERRED):  # (deferred modules are imported when used, if ever)
        names.pop(name, None)
    return tuple(names)


class SandboxHost:
    """The sandbox of one submission (or of its hidden tests), started on first use and
    again after it died; the lessons' workers are forked in it one at a time."""

    def __init__(self, lessons_dir: Path, *, limits: Limits = Limits(), package_dir: Path | None = None,  # noqa: B008
                 preload: tuple[str, ...] = (), log: Path | None = None) -> None:
        self.lessons_dir = Path(lessons_dir)
        self.limits, self.package_dir, self.preload, self.log = limits, package_dir, preload, log
        self.sandbox: Sandbox | None = None
        self.active: Session | None = None  # whose worker runs now
        self.starts = 0

    def get(self) -> Sandbox:
        if self.sandbox is None or not self.sandbox.alive:
            self.close()
            kwargs = {"package_dir": self.package_dir} if self.package_dir else {}
            self.starts += 1
            self.sandbox = Sandbox(self.lessons_dir, self.limits, preload=self.preload, log=self.log, **kwargs)
        return self.sandbox

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.kill()
            self.sandbox = None
        self.active = None


class Notes:
    """Notes for the instructor, without duplicates, in linear time, with a cap."""

    def __init__(self, limit: int = MAX_NOTES) -> None:
        self.kept: dict[str, None] = {}
        self.limit = limit
        self.dropped = 0

    def add(self, text: str) -> None:
        text = text[:MAX_NOTE_CHARS]
        if text in self.kept:
            return
        if len(self.kept) >= self.limit:
            self.dropped += 1
            return
        self.kept[text] = None

    def __iter__(self):
        yield from self.kept
        if self.dropped:
            yield f"{self.dropped} more notes were left out"

    def __len__(self) -> int:
        return len(self.kept) + bool(self.dropped)


class Session:
    """One lesson of one submission: a worker in the submission's sandbox."""

    def __init__(self, lesson_file: Path, module_name: str, host: SandboxHost, *,
                 call_timeout: float = 120.0, cell_timeout: float = 60.0, load_timeout: float = 900.0) -> None:
        self.lesson_file = Path(lesson_file)
        self.module_name = module_name
        self.host = host
        self.limits = host.limits
        self.call_timeout, self.cell_timeout, self.load_timeout = call_timeout, cell_timeout, load_timeout
        self.channel: Channel | None = None
        self.generation = 0
        self.budget: Budget | None = None  # the running test's, set by the plugin (begin_test)
        self.skip: dict[int, str] = {}  # cells that crashed or hung a worker: not run again
        self.load_error: str | None = None
        self.cell_errors: dict[str, str] = {}
        self.notes = Notes()  # for the instructor: crashes, time-outs, provenance
        self.loads = 0
        self.proxies: dict[int, Remote] = {}
        self.callbacks: list[Any] = []
        self.origins: dict[int, tuple[weakref.ref, int, int]] = {}  # id(tensor) -> (ref, handle, generation)
        try:
            self.cells = graded_cells(self.lesson_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            self.cells = []
        self.lesson = RemoteLesson(self)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.host.active is self:
            self.host.active = None

    def _note(self, text: str) -> None:
        self.notes.add(text)

    def begin_test(self) -> None:
        """A new test: a fresh CPU budget (started at its first request) and byte count."""
        self.budget = Budget(self.call_timeout, self.limits, "time limit reached")
        if self.channel is not None:
            self.channel.received = 0

    def _alive(self) -> bool:
        return (self.channel is not None and self.host.active is self and self.host.sandbox is not None
                and self.host.sandbox.alive and self.channel.sandbox is self.host.sandbox)

    def start(self) -> None:
        """A worker with the lesson loaded (or :class:`LessonLoadError`)."""
        if self.load_error is not None:
            raise LessonLoadError(self.load_error)
        if self._alive():
            return
        load_budget = Budget(self.load_timeout, self.limits, "loading the lesson ran out of time")
        while True:
            self.close()
            self.generation += 1
            self.proxies.clear()
            self.callbacks.clear()
            self.origins.clear()
            try:
                sandbox = self.host.get()
                self.channel = sandbox.spawn()
            except SandboxError as error:
                self._note(f"the sandbox did not start: {error}")
                raise
            self.host.active = self
            self.loads += 1
            if load_budget.sandbox is not sandbox:
                load_budget.start(sandbox)
            label, index = "starting", -1
            try:
                cell_budget = Budget(self.cell_timeout + 5.0, self.limits, "time limit reached").start(sandbox)
                self.channel.send({"op": "load", "path": f"{LESSON_MOUNT}/{self.lesson_file.name}",
                                   "module": self.module_name, "skip": {str(k): v for k, v in self.skip.items()},
                                   # in-sandbox alarm (CPU time) first: a cooperative loop loses only
                                   # the rest of its cell; the budget below is the backstop
                                   "cell_timeout": self.cell_timeout}, None, cell_budget)
                while True:
                    header, buffers = self.channel.receive(cell_budget)
                    load_budget.check()
                    if header.get("op") != "cell":
                        break
                    # Progress frames name a cell by its position in the file this side
                    # parsed too; they must move forward, so forged ones cannot keep a cell
                    # alive past its limit.
                    position = header.get("index")
                    if type(position) is not int or not index < position < len(self.cells):
                        raise self._broken("a progress message out of order")
                    index, label = position, cell_label(self.cells[position])
                    cell_budget = Budget(self.cell_timeout + 5.0, self.limits, "time limit reached").start(sandbox)
            except SandboxError as error:
                if sandbox.alive:  # the worker may still be running (the lesson's own limit)
                    sandbox.reset()
                what = "did not finish within the time limit" if isinstance(error, SandboxTimeout) else \
                    f"crashed the sandbox ({error})"
                self._note(f"while loading, the {label} {what}")
                over = load_budget.used()[0] > self.load_timeout
                if index < 0 or not label.startswith("exercise") or over or index in self.skip:
                    self.load_error = f"{self.lesson_file.name}: the {label} {what}"
                    self.close()
                    raise LessonLoadError(self.load_error) from None
                self.skip[index] = f"this cell {what}; it was skipped"
                continue
            if header.get("op") == "error":
                self.load_error = str(header.get("message"))[:2000]
                self.close()
                raise LessonLoadError(self.load_error)
            value = self._decode(header, buffers)
            self.cell_errors = value if isinstance(value, dict) else {}
            # The running test's time starts now: loading had limits of its own.
            if self.budget is not None:
                self.budget.start(sandbox)
            return

    def _broken(self, what: str) -> SandboxCrashed:
        if self.channel is not None:
            return self.channel._fail(SandboxCrashed, f"the sandbox broke the protocol ({what})")
        return SandboxCrashed(f"the sandbox broke the protocol ({what})")

    # ------------------------------------------------------------------ requests
    def _encode_opaque(self, value: Any) -> Any:
        if isinstance(value, RemoteLesson):
            return {"$h": 0}  # the lesson module: reloaded in every new worker
        if isinstance(value, Remote):
            if object.__getattribute__(value, "_generation") != self.generation:
                raise SandboxLost("this object came from a worker that has been replaced since")
            return {"$h": object.__getattribute__(value, "_number")}
        if isinstance(value, _CALLBACK_TYPES) or is_test_double(value):
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

    def _tensor(self, array: np.ndarray, number: int | None) -> Any:
        import tensorflow as tf

        tensor = tf.constant(array)
        if number is not None:
            key = id(tensor)
            self.origins[key] = (weakref.ref(tensor, lambda _, key=key: self.origins.pop(key, None)),
                                 number, self.generation)
        return tensor

    def origin(self, value: Any) -> int | None:
        """The handle of the sandbox tensor ``value`` was rebuilt from, if it still names one."""
        entry = self.origins.get(id(value))
        if entry is not None and entry[0]() is value and entry[2] == self.generation:
            return entry[1]
        return None

    def _decode(self, header: dict, buffers: list[bytes], rngs: list | None = None) -> Any:
        notes = header.get("notes")
        for note in notes[:20] if isinstance(notes, list) else []:
            if isinstance(note, str):
                self._note(f"provenance: {note[:240]}")
        value = wire.decode(header.get("value"), buffers, handle=self._proxy, callback=self._callback,
                            tensor=self._tensor, rng=_rebuild_rng)
        if rngs:
            states = wire.decode(header.get("rngs", {"$l": []}), buffers)
            for generator, state in zip(rngs, states if isinstance(states, list) else []):
                if isinstance(state, dict):
                    try:
                        generator.bit_generator.state = state
                    except (TypeError, ValueError, KeyError):
                        pass
        return value

    def _receive(self, budget: Budget) -> tuple[dict, list[bytes]]:
        header, data = self.channel.receive(budget)
        if self.channel.received > MAX_TEST_BYTES:
            raise self._broken(f"it sent more than {MAX_TEST_BYTES // 2**20} MB during one test")
        return header, data

    def request(self, header: dict, payload: Any = None) -> Any:
        self.start()
        rngs: list[np.random.Generator] = []
        buffers: list[bytes] = []
        if payload is not None:
            encoder = _TrustedEncoder(self._encode_opaque, rngs, self.origin)
            header = {**header, "payload": encoder.encode(payload)}
            buffers = encoder.buffers
        if self.budget is None:
            self.begin_test()
        budget = self.budget
        sandbox = self.host.sandbox
        if budget.sandbox is not sandbox:
            budget.start(sandbox)
        try:
            self.channel.send(header, buffers, budget)
            while True:
                reply, data = self._receive(budget)
                if reply.get("op") != "callback":
                    break
                self._answer_callback(reply, data, budget)
        except SandboxError as error:
            self.close()
            what = (f"did not finish within the time limit (it was stopped: {error})"
                    if isinstance(error, SandboxTimeout) else f"crashed the sandbox: {error}")
            self._note(f"a call into the lesson {what}")
            raise type(error)(f"the graded code {what}") from None
        if reply.get("op") == "error":
            raise _rebuild_error(reply)
        if reply.get("op") != "result":
            raise self._broken(f"unexpected {str(reply.get('op'))[:20]!r} message")
        return self._decode(reply, data, rngs)

    def _answer_callback(self, request: dict, buffers: list[bytes], budget: Budget) -> None:
        number = request.get("id")
        try:
            target = self.callbacks[number] if type(number) is int and 0 <= number < len(self.callbacks) else None
            if target is None:
                raise wire.WireError("unknown callback")
            fields = wire.decode(request.get("payload"), buffers, handle=self._proxy,
                                 callback=self._callback, tensor=self._tensor, rng=_rebuild_rng)
            if not isinstance(fields, dict):
                raise wire.WireError("bad callback request")
            result = _call_trusted(target, str(request.get("action")), fields)
            encoder = _TrustedEncoder(self._encode_opaque, [], self.origin)
            tree = encoder.encode(result)
            self.channel.send({"op": "result", "value": tree}, encoder.buffers, budget)
        except SandboxError:
            raise
        except Exception as error:  # told to the sandbox, which raises it there
            self.channel.send({"op": "error", "type": type(error).__name__, "message": str(error)[:500]},
                              None, budget)


def _call_trusted(target: Any, action: str, fields: dict) -> Any:
    """What the sandbox asked of a function or test double that lives here."""
    if action == "call":
        args, kwargs = fields.get("args"), fields.get("kwargs")
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(type(k) is str for k in kwargs):
            raise wire.WireError("bad callback arguments")
        return target(*args, **kwargs)
    if not is_test_double(target):
        raise TypeError(f"the grader's {type(target).__name__} can only be called")
    if action == "getattr":
        name = fields.get("name")
        if type(name) is not str or name.startswith("_"):
            raise AttributeError(f"{name!r} is not readable from the sandbox")
        value = getattr(target, name)
        if callable(value) and not (isinstance(value, types.MethodType) and value.__self__ is target) \
                and not is_test_double(value):
            raise AttributeError(f"{name!r} is not readable from the sandbox")
        return value
    if action == "getitem":
        return target[fields.get("key")]
    if action == "len":
        return len(target)
    if action == "list":
        return list(target)[:100_000]
    raise wire.WireError(f"unknown callback action {action!r}")


class _TrustedEncoder(wire.Encoder):
    """Encodes what tests send; remembers NumPy generators so their state can be updated
    after the call (the learner's code advanced its copy in the sandbox), and sends a tensor
    that came from the sandbox back as that same tensor."""

    def __init__(self, opaque: Callable[[Any], Any], rngs: list, origin: Callable[[Any], int | None]) -> None:
        super().__init__(opaque)
        self.rngs = rngs
        self.tensor_origin = origin

    def encode(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, np.random.Generator):
            self.rngs.append(value)
        number = self.tensor_origin(value)
        if number is not None:
            return {"$h": number}
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
    iteration, ``next``, ``with`` and ``str`` are forwarded; the answers are data or more
    handles."""

    __slots__ = ("_session", "_number", "_generation")

    def __init__(self, session: Session, number: int, generation: int) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_number", number)
        object.__setattr__(self, "_generation", generation)

    def _ask(self, op: str, payload: Any = None, **fields: Any) -> Any:
        session: Session = object.__getattribute__(self, "_session")
        session.start()
        if object.__getattribute__(self, "_generation") != session.generation:
            raise SandboxLost("this object came from a worker that has been restarted since "
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
        """Items are fetched lazily, 1, 2, 4... up to 64 per request, so an endless
        generator or a large dataset costs only what the test reads."""
        iterator = self._ask("iter")
        if not isinstance(iterator, Remote):
            raise TypeError("iter() of a sandboxed object did not give an iterator")
        return _items(iterator)

    def __next__(self) -> Any:
        answer = self._ask("next", count=1)
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise TypeError("next() of a sandboxed object did not give an item")
        if not items:
            raise StopIteration
        return items[0]

    def __enter__(self) -> Any:
        return self._ask("enter")

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> bool:
        described = [kind.__name__, str(error)[:500]] if kind is not None else None
        try:
            self._ask("exit", {"error": described})
        except Exception:
            if kind is None:
                raise
        return False  # the test's own exception is never suppressed by the sandbox

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


def _items(iterator: Remote):
    count = 1
    while True:
        answer = iterator._ask("next", count=count)
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise TypeError("a sandboxed iterator gave a malformed answer")
        yield from items
        if answer.get("done") is True or not items:
            return
        count = min(count * 2, 64)


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
