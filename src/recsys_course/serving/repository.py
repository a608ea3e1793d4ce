"""Which models and versions the practice server serves, and loading them.

It mirrors the parts of TF Serving's model management that a learner can observe:

* a **model** has a name and a base path; its **versions** are the integer-named child
  folders that hold a SavedModel (:func:`recsys_course.serving.export.version_dirs`);
* a **version policy** picks the versions to serve: ``latest`` (the highest ``n``, default
  1), ``all``, or ``specific`` versions (pin one to roll back, two to run a canary);
* **labels** (``stable``, ``canary``) name versions so clients need not know numbers;
* the base paths (and the config file, if any) are polled; a new version is loaded, warmed
  up with its ``assets.extra/tf_serving_warmup_requests`` and only then served, and the
  version it replaces is unloaded afterwards (TF Serving's availability-preserving order);
* a version that fails to load is reported with state ``END`` and an error, and the
  versions already serving keep serving (old versions are unloaded only once one of the
  versions the policy asks for is AVAILABLE); it is retried with exponential back-off (from
  the poll interval up to :data:`MAX_RETRY_SECONDS`), and at once when its files change
  (TF Serving retries ``--max_num_load_retries`` times, ``--load_retry_interval_micros``
  apart; the practice server keeps retrying, ever more slowly);
* with ``--model-base-path``, whether the folder is one model (it holds version folders) or
  a folder of models is decided once, from the first scan that shows a SavedModel version or
  a named sub-folder; an empty numeric folder decides nothing, so ``mkdir models/2024``
  cannot unload anything.

Requests hold a reference to the :class:`Servable` they started with, so unloading a version
never breaks a request in flight.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from recsys_course.serving.export import is_version_name, version_dirs
from recsys_course.serving.protocol import (
    DEFAULT_SIGNATURE,
    NotFoundError,
    ServingRequestError,
    SignatureInfo,
    TensorInfo,
    show,
)


@dataclass(frozen=True)
class VersionPolicy:
    """``kind`` is ``"latest"`` (the ``num_versions`` highest), ``"all"`` or ``"specific"``
    (exactly ``versions``, those that exist)."""

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve among ``available``, in increasing numeric order."""
        ordered = sorted(set(int(v) for v in available))
        if self.kind == "latest":
            return ordered[-max(self.num_versions, 1):] if ordered else []
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in set(self.versions)]
        raise ValueError(f"unknown version policy {self.kind!r}")


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its name, where its versions live, and how to choose among them."""

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


def specs_from_config_text(text: str, relative_to: Path | None = None) -> list[ModelSpec]:
    """Parse a TF Serving model config file (text-format ``ModelServerConfig``).

    Relative base paths are resolved against ``relative_to`` (TF Serving resolves them
    against its working directory; pass the config file's folder to get the same files
    wherever the practice server is started).
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ValueError(f"invalid model config: {error}") from None
    specs = []
    for entry in config.model_config_list.config:
        base = Path(entry.base_path)
        if not base.is_absolute() and relative_to is not None:
            base = relative_to / base
        which = entry.model_version_policy.WhichOneof("policy_choice")
        if which == "specific":
            policy = VersionPolicy("specific", versions=tuple(entry.model_version_policy.specific.versions))
        elif which == "all":
            policy = VersionPolicy("all")
        elif which == "latest":
            policy = VersionPolicy("latest", num_versions=entry.model_version_policy.latest.num_versions or 1)
        else:
            policy = VersionPolicy()
        specs.append(ModelSpec(entry.name, base, policy, dict(entry.version_labels)))
    return specs


MAX_RETRY_SECONDS = 60.0
#: Event lines kept in :attr:`ModelRepository.events` (older ones are dropped).
MAX_EVENTS = 500


def base_path_layout(base_path: str | Path, model_name: str | None = None) -> str | None:
    """``"single"`` when ``base_path`` is one model's base path (``model_name`` given, or it
    holds a version folder with a SavedModel), ``"multi"`` when it is a folder of models (a
    visible sub-folder whose name is not a number), ``None`` while nothing says which (empty,
    or only numeric folders without a SavedModel yet)."""
    base = Path(base_path)
    if model_name or version_dirs(base):
        return "single"
    if any(not c.name.startswith(".") and not is_version_name(c.name) for c in _children(base)):
        return "multi"
    return None


def specs_from_base_path(
    base_path: str | Path, model_name: str | None = None, layout: str | None = None
) -> list[ModelSpec]:
    """Models under ``base_path``.

    With ``model_name``, or when ``base_path`` itself holds version folders, it is one model's
    base path (TF Serving's ``--model_name``/``--model_base_path``; the name defaults to the
    folder's name). Otherwise every visible sub-folder is a model named after the folder, a
    practice-server convenience so that ``--model-base-path models/`` serves them all.
    ``layout`` (see :func:`base_path_layout`) overrides the guess; the repository passes the
    layout it decided once, so that later folders cannot change it.
    """
    base = Path(base_path).resolve()
    layout = layout or base_path_layout(base, model_name)
    if layout == "single":
        return [ModelSpec(model_name or base.name, base)]
    if layout is None:
        return []
    return [
        ModelSpec(child.name, child) for child in _children(base)
        if not child.name.startswith(".") and not is_version_name(child.name)
    ]


def _children(path: Path) -> list[Path]:
    return sorted(c for c in path.iterdir() if c.is_dir()) if path.is_dir() else []


def _signature_info(name: str, function) -> SignatureInfo:
    from tensorflow.core.framework import types_pb2

    def info(spec) -> TensorInfo:
        shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
        return TensorInfo(types_pb2.DataType.Name(spec.dtype.as_datatype_enum), spec.dtype.as_numpy_dtype, shape)

    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    return SignatureInfo(
        name,
        {key: info(spec) for key, spec in inputs.items()},
        {key: info(spec) for key, spec in outputs.items()} if isinstance(outputs, Mapping) else {},
    )


class Servable:
    """One loaded version of one model: its signatures, ready to run."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf

        self.name, self.version, self.path = name, int(version), Path(path)
        self._loaded = tf.saved_model.load(str(path), tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self.signatures = {key: _signature_info(key, fn) for key, fn in self._functions.items()}
        self.warmup_requests = 0
        self._signature_defs = self._read_signature_defs()  # now: the folder may go away later

    def signature(self, name: str | None) -> SignatureInfo:
        """Describe signature ``name`` (``serving_default`` when empty); 400 if unknown."""
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures:
            raise ServingRequestError(f'Serving signature name: "{show(key)}" not found in signature def')
        return self.signatures[key]

    def run(self, signature_name: str | None, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature on NumPy inputs (names already checked) and return NumPy outputs.

        TensorFlow's own complaints (wrong dtype, shape, inputs whose batch sizes disagree)
        become 400 errors carrying TensorFlow's message (see :func:`tensorflow_error_message`).
        """
        import tensorflow as tf

        signature = self.signature(signature_name)
        missing = set(signature.inputs) - set(inputs)
        unknown = set(inputs) - set(signature.inputs)
        if missing or unknown:
            raise ServingRequestError(
                f"signature '{signature.name}' takes inputs {sorted(signature.inputs)}, the "
                f"request gives {sorted(inputs)}"
            )
        function = self._functions[signature.name]
        try:
            tensors = {
                key: tf.constant(value, dtype=tf.as_dtype(signature.inputs[key].np_dtype)
                                 if not signature.inputs[key].is_string else tf.string)
                for key, value in inputs.items()
            }
            outputs = function(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            raise ServingRequestError(tensorflow_error_message(error)) from None
        return {key: value.numpy() for key, value in outputs.items()}

    def warm_up(self) -> int:
        """Replay the version's warm-up requests; return how many ran."""
        import tensorflow as tf

        from recsys_course.serving.warmup import read_warmup_requests

        count = 0
        for request in read_warmup_requests(self.path):
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
            self.run(request.model_spec.signature_name or None, inputs)
            count += 1
        self.warmup_requests = count
        return count

    def signature_defs(self) -> dict:
        """The SavedModel's ``SignatureDef`` protos by name (for the metadata APIs), as read
        when the version was loaded."""
        return dict(self._signature_defs)

    def _read_signature_defs(self) -> dict:
        from tensorflow.core.protobuf import saved_model_pb2

        proto = saved_model_pb2.SavedModel()
        pb = self.path / "saved_model.pb"
        if pb.exists():
            proto.ParseFromString(pb.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse((self.path / "saved_model.pbtxt").read_text(), proto)
        for meta_graph in proto.meta_graphs:
            if "serve" in meta_graph.meta_info_def.tags:
                return dict(meta_graph.signature_def)
        return dict(proto.meta_graphs[0].signature_def) if proto.meta_graphs else {}


#: Lines of a TensorFlow error that frame the message rather than say what went wrong.
_TF_FRAMING = re.compile(
    r"^(Graph execution error:|Detected at node|<stack traces unavailable>|Node: |File \"|"
    r"Traceback|Error in user-defined function)"
)
_TF_NODE = re.compile(r"\[\[\{\{node ([^}]+)\}\}\]\]")


def tensorflow_error_message(error: BaseException, limit: int = 300) -> str:
    """TensorFlow's complaint as one informative line, the way TF Serving reports it: the
    first line that says what went wrong (not ``Graph execution error:`` nor the ``Detected
    at node`` header and its stack), with the node it happened at, no absolute paths.

    >>> class E(Exception): pass
    >>> tensorflow_error_message(E("Graph execution error:\\n\\nDetected at node a/b defined at "
    ...     "(most recent call last):\\n<stack traces unavailable>\\nIncompatible shapes: [2] vs. [1]"
    ...     "\\n\\t [[{{node a/b}}]] [Op:__inference_serve_9]"))
    'Incompatible shapes: [2] vs. [1] (at node a/b)'
    """
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines()]
    informative = [
        line for line, raw in zip(lines, text.splitlines())
        if line and not raw[:1].isspace() and not _TF_FRAMING.match(line) and not line.startswith("[[")
    ]
    message = informative[0] if informative else ""
    message = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", message)
    node = _TF_NODE.search(text)
    if message and node and node.group(1) not in message:
        message += f" (at node {node.group(1)})"
    message = _ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", message)
    return (message or "the model refused these inputs")[:limit]


@dataclass
class VersionState:
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END (TF Serving's ManagerState names)
    error: str = ""
    stamp: float = 0.0  # newest mtime in the version folder when a load failed
    attempts: int = 0  # failed loads so far
    retry_at: float = 0.0  # time.monotonic() of the next retry


def _newest_mtime(path: Path) -> int:
    """Newest modification time (ns) of ``path`` and everything below it."""
    newest = path.stat().st_mtime_ns
    for folder, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
            except OSError:
                pass
    return newest


_ABSOLUTE_PATH = re.compile(r"(?:[A-Za-z]:)?[/\\](?:[^\s/\\:'\"{}|]+[/\\])+([^\s/\\:'\"{}|]*)")


def _load_error_message(error: BaseException, model: str, version: int) -> str:
    """A failed load as one line for the status API: no exception class, no absolute path
    (paths become ``<model>/<version>/...`` or ``.../<file>``)."""
    text = (str(error).strip().splitlines() or [""])[0] or "the SavedModel could not be loaded"
    return _ABSOLUTE_PATH.sub(lambda m: f".../{m.group(1)}", text)[:300] + (
        f" (model {model}, version {version})"
    )


class ModelRepository:
    """The set of served models, kept in sync with the file system by :meth:`refresh`.

    Args:
        specs: models to serve (fixed), or
        config_file: a TF Serving model config file, re-read whenever it changes, or
        root: a folder whose sub-folders are models (re-scanned for new models).
        warmup: replay warm-up requests before a version becomes AVAILABLE.
        log: called with one line per event (loads, unloads, failures).

    :attr:`events` keeps the last :data:`MAX_EVENTS` event lines; a config file that stays
    broken is reported once per change of the file, not on every poll.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec] | None = None,
        *,
        config_file: str | Path | None = None,
        root: str | Path | None = None,
        model_name: str | None = None,
        warmup: bool = True,
        log=None,
        retry_seconds: float = 1.0,
    ) -> None:
        if sum(x is not None for x in (specs, config_file, root)) != 1:
            raise ValueError("give exactly one of specs, config_file or root")
        self._fixed = list(specs) if specs is not None else None
        self._config_file = Path(config_file).resolve() if config_file else None
        self._config_stamp: float | None = None
        self._root = Path(root).resolve() if root else None
        self._root_model_name = model_name
        self._layout: str | None = None  # decided once for a root (see base_path_layout)
        self.retry_seconds = retry_seconds
        self.warmup = warmup
        self._log = log or (lambda line: None)
        self.events: deque[str] = deque(maxlen=MAX_EVENTS)
        self._config_failed: tuple[int | None, str] | None = None  # (stamp, error) reported last
        self._specs: dict[str, ModelSpec] = {}
        self._serving: dict[str, dict[int, Servable]] = {}
        self._states: dict[str, dict[int, VersionState]] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- configuration -------------------------------------------------------------
    def _current_specs(self) -> list[ModelSpec]:
        if self._fixed is not None:
            return self._fixed
        if self._root is not None:
            if self._layout is None:
                self._layout = base_path_layout(self._root, self._root_model_name)
                if self._layout is not None:
                    self._event(
                        f"{self._root.name}: "
                        + ("one model's base path" if self._layout == "single" else "a folder of models")
                    )
            return specs_from_base_path(self._root, self._root_model_name, self._layout)
        stamp = self._config_file.stat().st_mtime_ns if self._config_file.exists() else None
        if stamp != self._config_stamp:
            try:
                specs = specs_from_config_text(
                    self._config_file.read_text(encoding="utf-8"), self._config_file.parent
                )
            except (OSError, ValueError) as error:
                failure = (stamp, str(error))
                if failure != self._config_failed:  # once per change, not once per poll
                    self._config_failed = failure
                    self._event(f"config {self._config_file} not (re)loaded: {error}")
                return list(self._specs.values())
            self._config_stamp, self._config_failed = stamp, None
            self._event(f"config {self._config_file.name} read: {', '.join(s.name for s in specs)}")
            return specs
        return list(self._specs.values())

    def _event(self, line: str) -> None:
        self.events.append(line)
        self._log(line)

    # ---- loading ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Bring the served versions in line with the file system and the policies."""
        with self._refresh_lock:
            specs = {spec.name: spec for spec in self._current_specs()}
            for name in set(self._serving) - set(specs):
                self._unload_all(name)
            with self._lock:
                self._specs = specs
            for spec in specs.values():
                self._sync_model(spec)

    def _sync_model(self, spec: ModelSpec) -> None:
        aspired = spec.policy.select(version_dirs(spec.base_path))
        serving = dict(self._serving.get(spec.name, {}))
        states = self._states.setdefault(spec.name, {})
        for version in aspired:
            if version in serving:
                continue
            path = spec.base_path / str(version)
            try:
                stamp = _newest_mtime(path)
            except OSError:  # removed between the scan and now
                continue
            previous = states.get(version)
            attempts = 0
            if previous and previous.state == "END" and previous.error:
                if previous.stamp == stamp and time.monotonic() < previous.retry_at:
                    continue  # failed before, unchanged since, back-off not over yet
                attempts = previous.attempts if previous.stamp == stamp else 0
            states[version] = VersionState("LOADING")
            try:
                servable = Servable(spec.name, version, path)
                warm = servable.warm_up() if self.warmup else 0
            except Exception as error:  # reported in the model status
                attempts += 1
                wait = min(self.retry_seconds * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
                message = _load_error_message(error, spec.name, version)
                states[version] = VersionState("END", message, stamp, attempts, time.monotonic() + wait)
                self._event(
                    f"{spec.name} version {version} failed to load (attempt {attempts}, retry in "
                    f"{wait:.1f} s or when its files change): {message}"
                )
                continue
            with self._lock:
                self._serving.setdefault(spec.name, {})[version] = servable
                states[version] = VersionState("AVAILABLE")
            self._event(
                f"{spec.name} version {version} AVAILABLE"
                + (f" (warmed up with {warm} requests)" if warm else "")
            )
        serving_now = set(self._serving.get(spec.name, {}))
        if aspired and not serving_now & set(aspired):
            return  # availability first: keep the old versions until a new one serves
        for version in sorted(serving_now - set(aspired)):
            with self._lock:
                self._serving[spec.name].pop(version, None)
                states[version] = VersionState("END")
            self._event(f"{spec.name} version {version} unloaded")

    def _unload_all(self, name: str) -> None:
        with self._lock:
            versions = self._serving.pop(name, {})
            for version in versions:
                self._states[name][version] = VersionState("END")
        if versions:
            self._event(f"{name} removed from the config: unloaded {sorted(versions)}")

    # ---- polling -----------------------------------------------------------------------
    def start_polling(self, every_seconds: float = 1.0) -> None:
        """Call :meth:`refresh` every ``every_seconds`` in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.refresh()
                except Exception as error:  # keep serving what is loaded
                    self._event(f"refresh failed: {error!r}")

        self._thread = threading.Thread(target=loop, name="model-repository-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # ---- lookups -----------------------------------------------------------------------
    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._specs)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses: a version, a label, or the highest served one."""
        with self._lock:
            serving = self._serving.get(name, {})
            version = _labelled(self._specs.get(name), label, version)
            if version is not None:
                if version not in serving:
                    raise NotFoundError(f"Servable not found for request: Specific({show(name)}, {version})")
                return serving[version]
            if not serving:
                raise NotFoundError(f"Servable not found for request: Latest({show(name)})")
            return serving[max(serving)]

    def status(self, name: str, version: int | None = None, label: str | None = None) -> dict:
        """A ``GetModelStatusResponse`` as TF Serving's REST API renders it."""
        with self._lock:
            spec = self._specs.get(name)
            states = dict(self._states.get(name, {}))
        if spec is None and not states:
            raise NotFoundError(f"Could not find any versions of model {show(name)}")
        version = _labelled(spec, label, version)
        if version is not None:
            if version not in states:
                raise NotFoundError(f"Could not find version {version} of model {show(name)}")
            states = {version: states[version]}
        if not states:
            raise NotFoundError(f"Could not find any versions of model {show(name)}")
        return {
            "model_version_status": [
                {
                    "version": str(v),
                    "state": s.state,
                    "status": {"error_code": "UNKNOWN" if s.error else "OK", "error_message": s.error},
                }
                for v, s in sorted(states.items(), reverse=True)
            ]
        }


def _labelled(spec: ModelSpec | None, label: str | None, version: int | None) -> int | None:
    """The version a request addresses: the one ``label`` points at, else ``version``.
    Raises :class:`ServingRequestError` (INVALID_ARGUMENT, HTTP 400, as TF Serving's
    ``ServerCore::GetModelVersionForLabel``) for a label the model's config does not define."""
    if label is None:
        return version
    if spec is None or label not in spec.labels:
        raise ServingRequestError(f"Unrecognized servable version label: {show(label)}")
    return spec.labels[label]
