"""The JSON side of TensorFlow Serving's REST ``:predict`` API, without any networking.

What it implements (from TF Serving's REST API guide, ``api_rest.md``):

* a request is a JSON object with an optional ``signature_name`` (default
  ``serving_default``) and exactly one of ``instances`` (row format: one entry per example,
  an object naming every input, or a bare value when the signature has one input) and
  ``inputs`` (columnar format: an object mapping each input name to its whole tensor, or a
  bare tensor when the signature has one input);
* string tensors are JSON strings; binary strings are ``{"b64": "..."}`` objects, and outputs
  whose name ends in ``_bytes`` are returned that way;
* a row-format request gets ``{"predictions": ...}`` back (a list of values when the
  signature has one output, else a list of objects), a columnar one ``{"outputs": ...}`` (the
  tensor itself for one output, else an object of tensors);
* every error is a JSON object ``{"error": "<message>"}`` with an HTTP status: 400 for a bad
  request (TF Serving's INVALID_ARGUMENT), 404 for an unknown model or version (NOT_FOUND),
  503 when the server is too busy (UNAVAILABLE), 504 past the request deadline
  (DEADLINE_EXCEEDED). A message echoes at most a short prefix of the client's values and is
  cut to :data:`MAX_ERROR_CHARS` characters, so an error never mirrors a large request back.

The practice server's work limits are enforced here too: ``decode_predict_request`` refuses
more than ``max_batch_size`` instances before converting any of them, and
``encode_predict_response`` stops as soon as the JSON answer would exceed ``max_bytes``.

Nothing here imports TensorFlow: signatures are described with NumPy dtypes, so the module is
cheap to import and to test.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

DEFAULT_SIGNATURE = "serving_default"

#: Longest error message (characters) the server sends; longer ones are cut, saying so.
MAX_ERROR_CHARS = 1000


def clip_message(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``message`` cut to ``limit`` characters, with a note saying how much was cut."""
    if len(message) <= limit:
        return message
    note = f" ... ({len(message) - limit + 40:,} more characters cut)"
    return message[: limit - len(note)] + note


class ServingRequestError(Exception):
    """A request the server refuses. ``status`` is the HTTP status; ``grpc_code`` the name of
    the matching ``grpc.StatusCode``, paired as TF Serving pairs them (``http_server.cc``:
    INVALID_ARGUMENT 400, NOT_FOUND 404, UNIMPLEMENTED 501, UNAVAILABLE 503,
    DEADLINE_EXCEEDED 504). The message is cut to :data:`MAX_ERROR_CHARS`."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, message: str) -> None:
        message = clip_message(message)
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"error": self.message}


class NotFoundError(ServingRequestError):
    """Unknown model, version, label or URL."""

    status = 404
    grpc_code = "NOT_FOUND"


class UnimplementedError(ServingRequestError):
    """A part of TF Serving's API the practice server does not implement."""

    status = 501
    grpc_code = "UNIMPLEMENTED"


class UnavailableError(ServingRequestError):
    """The server cannot take the request now (every predict slot and queue place is
    taken); the client should retry after ``retry_after`` seconds. TF Serving answers a
    full batching queue the same way (UNAVAILABLE, HTTP 503)."""

    status = 503
    grpc_code = "UNAVAILABLE"
    retry_after = 1


class DeadlineExceededError(ServingRequestError):
    """The request did not finish within its deadline (REST: the server's
    ``rest_api_timeout_in_ms``; gRPC: the client's deadline). HTTP 504, as in TF Serving."""

    status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class AnswerTooLargeError(ServingRequestError):
    """The answer would exceed the server's ``max_response_bytes``: 400 over REST (the
    request must ask for less), RESOURCE_EXHAUSTED over gRPC (what gRPC itself answers for a
    message over its size limit)."""

    status = 400
    grpc_code = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: TF dtype name (``DT_STRING``), NumPy dtype
    (``object`` for strings) and shape (``None`` for unknown dimensions, ``None`` for the
    whole shape when even the rank is unknown)."""

    dtype: str
    np_dtype: Any
    shape: tuple[int | None, ...] | None

    @property
    def is_string(self) -> bool:
        return self.dtype == "DT_STRING"


@dataclass(frozen=True)
class SignatureInfo:
    """Inputs and outputs of one signature, keyed by the names clients use."""

    name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo] = field(default_factory=dict)


@dataclass
class PredictCall:
    """A decoded ``:predict`` request: which signature to run, on which arrays, and whether
    the answer goes back in row (``"rows"``) or columnar (``"columns"``) format."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    layout: str


#: Deepest JSON nesting accepted in a request body. TF Serving's parser has no documented
#: limit; 64 is far beyond any tensor a signature takes (the lesson's inputs have rank 1) and
#: keeps a hostile body from exhausting the interpreter's recursion limit.
MAX_JSON_DEPTH = 64


def _finite_float(text: str) -> float:
    """``parse_float`` hook: a number literal too large for a double (``1e400``) is an error,
    as in TF Serving (RapidJSON: "Number too big to be stored in double"); the literals
    ``Infinity`` and ``NaN`` are still accepted (they go through ``parse_constant``)."""
    value = float(text)
    if math.isinf(value):
        raise ServingRequestError(f"JSON Parse error: number too big to be stored in a double: {show(text)}")
    return value


#: Digits in an integer literal beyond which it cannot be a double (1.8e308 has 309 digits).
_MAX_INT_DIGITS = 309


def _integer(text: str) -> int:
    """``parse_int`` hook: integer literals too long for any tensor dtype are refused with
    RapidJSON's wording (Python would raise its own int-to-string limit error)."""
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ServingRequestError(f"JSON Parse error: number too big to be stored in a double: {show(text)}")
    return int(text)


def _check_depth(document: Any) -> None:
    """Raise a 400 error when ``document`` nests lists/objects deeper than MAX_JSON_DEPTH
    (checked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise ServingRequestError(
                    f"JSON nesting deeper than {MAX_JSON_DEPTH} levels: tensors of that rank are not supported"
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))


def parse_json(body: bytes | str) -> Any:
    """``json.loads`` that accepts ``NaN``/``Infinity`` (as TF Serving does) and reports every
    parse failure (bad UTF-8 or syntax, numbers beyond a double, nesting deeper than
    :data:`MAX_JSON_DEPTH`, integers of more than 4,300 digits) as a 400 error."""
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
    except UnicodeDecodeError as error:
        raise ServingRequestError(
            f"JSON Parse error: the body is not valid UTF-8 (byte 0x{error.object[error.start]:02x} at "
            f"offset {error.start}); send UTF-8 text, and binary strings as {{\"b64\": ...}}"
        ) from None
    try:
        document = json.loads(text, parse_float=_finite_float, parse_int=_integer)
    except RecursionError:
        raise ServingRequestError(
            f"JSON nesting deeper than {MAX_JSON_DEPTH} levels: tensors of that rank are not supported"
        ) from None
    except json.JSONDecodeError as error:  # "Expecting value: line 1 column 2 (char 1)"
        raise ServingRequestError(f"JSON Parse error: {show(error.msg, 200)} at line {error.lineno} "
                                  f"column {error.colno} (character {error.pos})") from None
    except ValueError as error:  # any other refusal of the text, in words about the text
        raise ServingRequestError(f"JSON Parse error: {_json_problem(error)}") from None
    _check_depth(document)
    return document


def _json_problem(error: ValueError) -> str:
    """A ``json`` refusal that is not a ``JSONDecodeError``, said without Python's words."""
    text = str(error)
    if "integer string conversion" in text:  # only reachable if the parse_int hook is bypassed
        return "an integer literal is too long"
    return "the body is not valid JSON"


def show(value: Any, limit: int = 80) -> str:
    """A client's value for an error message: strings as they are, anything else as JSON
    (``true``, ``null``, ``{"b64": 5}``: the client's notation, not Python's), cut to
    ``limit`` characters (an error must not echo a megabyte back)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, separators=(", ", ": "), default=str)[: limit + 1]
        except (TypeError, ValueError, RecursionError):
            text = "<value>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``string``, ``number``, ``boolean``, ``null``,
    ``array``, ``object``), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _names(names: list[str], limit: int = 10) -> str:
    """At most ``limit`` names, each cut short, joined by commas."""
    shown = [show(name, 60) for name in names[:limit]]
    return ", ".join(shown) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _batch_size(value: Any) -> int:
    """Instances in one input's JSON value: the length of a list, 1 for a scalar."""
    return len(value) if isinstance(value, list) else 1


def check_batch_size(size: int, max_batch_size: int | None) -> None:
    """Refuse a request of more than ``max_batch_size`` instances, with the message TF
    Serving's batching gives (``Task size N is larger than maximum input batch size M``)."""
    if max_batch_size is not None and size > max_batch_size:
        raise ServingRequestError(
            f"Task size {size} is larger than maximum input batch size {max_batch_size} (the "
            f"server's max_batch_size): send at most {max_batch_size} instances per request"
        )


def decode_predict_request(
    body: bytes | str | Mapping, signature_for: Callable[[str], SignatureInfo],
    max_batch_size: int | None = None,
) -> PredictCall:
    """Turn a ``:predict`` body into named NumPy arrays checked against the signature.

    Args:
        body: the raw request body (or an already parsed JSON object).
        signature_for: returns the :class:`SignatureInfo` of a signature name, raising
            :class:`ServingRequestError` for an unknown one.
        max_batch_size: most instances accepted (the length of ``instances``, or of the
            longest input under ``inputs``); checked before any value is converted.

    Raises:
        ServingRequestError: bad JSON, neither or both of ``instances``/``inputs``, too many
            instances, an input name the signature does not have, a missing input, ragged or
            mistyped values, a shape the signature does not accept.
    """
    request = parse_json(body) if isinstance(body, (bytes, bytearray, str)) else body
    if not isinstance(request, Mapping):
        raise ServingRequestError("Request body must be a JSON object")
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):  # TF Serving: null, numbers, lists are refused
        raise ServingRequestError(
            f"JSON Value: {show(signature_name)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    signature_name = signature_name or DEFAULT_SIGNATURE  # "" means the default, as in TF Serving
    has_rows, has_columns = "instances" in request, "inputs" in request
    if has_rows == has_columns:
        raise ServingRequestError(
            "Not both 'instances' and 'inputs' may be given" if has_rows
            else "Missing 'inputs' or 'instances' key"
        )
    payload = request["instances" if has_rows else "inputs"]
    if has_rows or not isinstance(payload, Mapping) or "b64" in payload:
        check_batch_size(_batch_size(payload), max_batch_size)
    else:
        check_batch_size(max((_batch_size(v) for v in payload.values()), default=0), max_batch_size)
    signature = signature_for(signature_name)
    if has_rows:
        named = _rows_to_columns(payload, signature)
    else:
        named = _columns(payload, signature)
    arrays = {name: _to_array(name, value, signature.inputs[name]) for name, value in named.items()}
    if has_rows:
        sizes = {name: array.shape[0] if array.ndim else None for name, array in arrays.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{name}: {'a scalar' if size is None else size}" for name, size in sorted(sizes.items()))
            raise ServingRequestError(f"instances have inconsistent batch sizes ({shown})")
    return PredictCall(signature_name, arrays, "rows" if has_rows else "columns")


def _check_names(given: set[str], signature: SignatureInfo) -> None:
    expected = set(signature.inputs)
    unknown, missing = sorted(given - expected), sorted(expected - given)
    if unknown:
        raise ServingRequestError(
            f"input tensor alias not found in signature: {_names(unknown)}. Inputs expected "
            f"to be in the set {{{_names(sorted(expected))}}}."
        )
    if missing:
        raise ServingRequestError(
            f"Missing input(s) {_names(missing)} for signature '{show(signature.name)}'"
        )


def _rows_to_columns(instances: Any, signature: SignatureInfo) -> dict[str, list]:
    if not isinstance(instances, list) or not instances:
        raise ServingRequestError("'instances' must be a non-empty JSON list")
    objects = [isinstance(row, Mapping) and "b64" not in row for row in instances]
    if all(objects):
        for row in instances:
            _check_names(set(row), signature)
        return {name: [row[name] for row in instances] for name in signature.inputs}
    if any(objects):
        raise ServingRequestError("'instances' mixes objects and bare values")
    if len(signature.inputs) != 1:
        raise ServingRequestError(
            "with several inputs each instance must be an object naming them: "
            + ", ".join(sorted(signature.inputs))
        )
    return {next(iter(signature.inputs)): instances}


def _columns(inputs: Any, signature: SignatureInfo) -> dict[str, Any]:
    if isinstance(inputs, Mapping) and "b64" not in inputs:
        _check_names(set(inputs), signature)
        return dict(inputs)
    if len(signature.inputs) != 1:
        raise ServingRequestError(
            "'inputs' must be an object mapping each input name to its tensor: "
            + ", ".join(sorted(signature.inputs))
        )
    return {next(iter(signature.inputs)): inputs}


def _shape_of(name: str, value: Any) -> tuple[int, ...]:
    """Shape of a nested JSON list; raises for ragged lists."""
    if isinstance(value, list):
        if not value:
            return (0,)
        inner = {_shape_of(name, item) for item in value}
        if len(inner) != 1:
            raise ServingRequestError(f"input '{name}': ragged nested lists are not a tensor")
        return (len(value), *inner.pop())
    return ()


def _leaf_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\\ud800" is not Unicode text
            raise ServingRequestError(
                f"input '{name}': the string contains a lone UTF-16 surrogate (\\ud800-\\udfff "
                "not part of a pair); send valid Unicode, or the raw bytes as {\"b64\": ...}"
            ) from None
    if isinstance(value, Mapping) and set(value) == {"b64"} and isinstance(value["b64"], str):
        text = value["b64"]
        # TF Serving decodes with absl::Base64Unescape, which accepts unpadded input: pad it.
        if "=" not in text and len(text) % 4 in (2, 3):
            text += "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (ValueError, TypeError):
            raise ServingRequestError(f"input '{name}': Unable to base64 decode {show(value['b64'])}") from None
    raise ServingRequestError(
        f"input '{name}' is DT_STRING: expected JSON strings, got the {_json_type(value)} {show(value)}"
    )


def _map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    return [_map_leaves(v, leaf) for v in value] if isinstance(value, list) else leaf(value)


def _number_check(name: str, info: TensorInfo) -> Callable[[Any], Any]:
    """The check each JSON leaf of a numeric input must pass, with TF Serving's rules
    (``json_tensor.cc``): booleans only for DT_BOOL; integer inputs take JSON integers in the
    dtype's range (``2.0`` and ``true`` are refused); float inputs take any number that the
    dtype holds without loss (integers up to 2**24 for float32, 2**53 for float64, finite
    values up to the dtype's maximum; ``NaN``/``Infinity`` literals pass)."""
    dtype = np.dtype(info.np_dtype)
    if dtype.kind == "b":
        def check(v: Any) -> Any:
            if not isinstance(v, bool):
                raise ServingRequestError(f"input '{name}': JSON value {show(v)} is not of expected type DT_BOOL")
            return v
        return check
    if dtype.kind in "iu":
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max

        def check(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ServingRequestError(
                    f"input '{name}': JSON value {show(v)} is not of expected type {info.dtype} "
                    "(send JSON integers, without a decimal point)"
                )
            if not low <= v <= high:
                raise ServingRequestError(
                    f"input '{name}': {show(v)} is out of range for {info.dtype} [{low}, {high}]"
                )
            return v
        return check
    if dtype.kind == "f":
        largest_int = 2 ** (np.finfo(dtype).nmant + 1) - 1
        largest = float(np.finfo(dtype).max)

        def check(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ServingRequestError(
                    f"input '{name}' is {info.dtype}: expected numbers, got the {_json_type(v)} {show(v)}"
                )
            if isinstance(v, int) and abs(v) > largest_int or (
                isinstance(v, float) and math.isfinite(v) and abs(v) > largest
            ):
                raise ServingRequestError(
                    f"input '{name}': cannot convert JSON value {show(v)} to {info.dtype} without loss of precision"
                )
            return v
        return check
    raise ServingRequestError(f"input '{name}': dtype {info.dtype} is not supported by the practice server's REST API")


def _to_array(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    shape = _shape_of(name, value)
    if info.is_string:
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        leaves: list[bytes] = []
        _map_leaves(value, lambda v: leaves.append(_leaf_bytes(name, v)))
        flat[:] = leaves
        array = flat.reshape(shape)
    else:
        number = _number_check(name, info)
        array = np.asarray(_map_leaves(value, number), dtype=info.np_dtype).reshape(shape)
    _check_shape(name, array.shape, info)
    return array


def _check_shape(name: str, shape: tuple[int, ...], info: TensorInfo) -> None:
    if info.shape is None:
        return
    expected = info.shape
    if len(expected) != len(shape) or any(e is not None and e != g for e, g in zip(expected, shape)):
        shown = "[" + ", ".join("-1" if e is None else str(e) for e in expected) + "]"
        raise ServingRequestError(
            f"input '{name}': the signature expects shape {shown}, the request gives {list(shape)}"
        )


def check_inputs(inputs: Mapping[str, np.ndarray], signature: SignatureInfo) -> None:
    """Check already decoded arrays (a gRPC request's TensorProtos) against a signature: the
    same names, each with the signature's dtype (no conversion, as in TF Serving) and a shape
    it accepts. Raises :class:`ServingRequestError` (INVALID_ARGUMENT) otherwise."""
    _check_names(set(inputs), signature)
    for name, array in inputs.items():
        info = signature.inputs[name]
        if info.is_string:
            matches = array.dtype.kind in "OS"
        else:
            matches = array.dtype == np.dtype(info.np_dtype)
        if not matches:
            raise ServingRequestError(
                f"input '{name}': expects a {info.dtype} tensor, the request gives {array.dtype}"
            )
        _check_shape(name, array.shape, info)


def _json_value(name: str, array: np.ndarray) -> Any:
    """A tensor as nested JSON lists: strings decoded as UTF-8 (``{"b64": ...}`` for outputs
    named ``*_bytes`` or bytes that are not UTF-8), numbers as numbers."""
    if array.dtype == object or array.dtype.kind in "SU":
        def text(v: Any) -> Any:
            raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
            if not name.endswith("_bytes"):
                try:
                    return raw.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(raw).decode("ascii")}

        return _map_leaves(array.tolist(), text)
    return array.tolist()


#: Tensor elements turned into Python objects at a time while an answer is encoded, so that
#: the memory an answer takes is its JSON text plus a small constant.
ENCODE_CHUNK = 4096


class _Answer:
    """JSON text built from parts, refused as soon as it grows past ``max_bytes``."""

    def __init__(self, max_bytes: int | None) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.max_bytes = max_bytes

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise AnswerTooLargeError(
                f"the answer is larger than the server's max_response_bytes of {self.max_bytes:,} bytes; "
                "send fewer instances per request"
            )
        self.parts.append(data)

    def tensor(self, name: str, array: np.ndarray) -> None:
        """Append ``array`` as nested JSON lists, :data:`ENCODE_CHUNK` elements at a time (one
        element of a string tensor, ``bytes``, stays an object: NumPy's ``S`` dtype would drop
        its trailing NUL bytes)."""
        array = np.asarray(array, dtype=object if isinstance(array, (bytes, str)) else None)
        if array.ndim == 0 or array.size <= ENCODE_CHUNK:
            self.add(dumps(_json_value(name, array)))
            return
        self.add(b"[")
        per_row = array.size // len(array)
        if per_row > ENCODE_CHUNK:  # one row is already large: encode it piece by piece
            for i in range(len(array)):
                if i:
                    self.add(b",")
                self.tensor(name, array[i])
        else:
            step = max(1, ENCODE_CHUNK // max(per_row, 1))
            for start in range(0, len(array), step):
                if start:
                    self.add(b",")
                self.add(dumps(_json_value(name, array[start:start + step]))[1:-1])  # without [ ]
        self.add(b"]")

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def encode_predict_response(
    outputs: Mapping[str, np.ndarray], layout: str, max_bytes: int | None = None
) -> bytes:
    """The JSON answer (UTF-8 bytes) to a ``:predict`` call, in the request's layout (see
    module docs): ``{"predictions": ...}`` for rows, ``{"outputs": ...}`` for columns.

    Raises:
        ServingRequestError: a row-format answer is impossible because the outputs do not
            share their first dimension.
        AnswerTooLargeError: the answer would exceed ``max_bytes``; encoding stops there, so
            a refused answer never takes more memory than ``max_bytes``.
    """
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    answer = _Answer(max_bytes)
    keys = {name: dumps(name) + b":" for name in names}
    if layout == "columns":
        answer.add(b'{"outputs":')
        if len(names) == 1:
            answer.tensor(names[0], arrays[names[0]])
        else:
            answer.add(b"{")
            for i, name in enumerate(names):
                answer.add((b"," if i else b"") + keys[name])
                answer.tensor(name, arrays[name])
            answer.add(b"}")
        answer.add(b"}")
        return answer.bytes()
    batch = {name: arrays[name].shape[0] if arrays[name].ndim else None for name in names}
    if len(set(batch.values())) != 1 or None in batch.values():
        shown = ", ".join(f"{name}: {'a scalar' if size is None else size}" for name, size in batch.items())
        raise ServingRequestError(
            f"outputs do not share a batch dimension ({shown}): use the columnar 'inputs' format"
        )
    answer.add(b'{"predictions":')
    if len(names) == 1:
        answer.tensor(names[0], arrays[names[0]])
    else:
        answer.add(b"[")
        for row in range(next(iter(batch.values()))):
            answer.add(b",{" if row else b"{")
            for i, name in enumerate(names):
                answer.add((b"," if i else b"") + keys[name])
                answer.tensor(name, arrays[name][row])
            answer.add(b"}")
        answer.add(b"]")
    answer.add(b"}")
    return answer.bytes()


def dumps(payload: Any) -> bytes:
    """Serialise a response body (``NaN``/``Infinity`` allowed, as in TF Serving)."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")
