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
  request (TF Serving's INVALID_ARGUMENT), 404 for an unknown model or version (NOT_FOUND).

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


class ServingRequestError(Exception):
    """A request the server refuses. ``status`` is the HTTP status; ``grpc_code`` the name of
    the matching ``grpc.StatusCode`` (TF Serving maps INVALID_ARGUMENT to 400 and NOT_FOUND
    to 404)."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, message: str) -> None:
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
        raise ServingRequestError(f"JSON Parse error: number too big to be stored in a double: {_show(text)}")
    return value


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
        document = json.loads(text, parse_float=_finite_float)
    except RecursionError:
        raise ServingRequestError(
            f"JSON nesting deeper than {MAX_JSON_DEPTH} levels: tensors of that rank are not supported"
        ) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ServingRequestError(f"JSON Parse error: {_show(str(error), 200)}") from None
    _check_depth(document)
    return document


def _show(value: Any, limit: int = 80) -> str:
    """``repr`` of a client's value for an error message, cut to ``limit`` characters (an
    error must not echo a megabyte back)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_predict_request(
    body: bytes | str | Mapping, signature_for: Callable[[str], SignatureInfo]
) -> PredictCall:
    """Turn a ``:predict`` body into named NumPy arrays checked against the signature.

    Args:
        body: the raw request body (or an already parsed JSON object).
        signature_for: returns the :class:`SignatureInfo` of a signature name, raising
            :class:`ServingRequestError` for an unknown one.

    Raises:
        ServingRequestError: bad JSON, neither or both of ``instances``/``inputs``, an input
            name the signature does not have, a missing input, ragged or mistyped values, a
            shape the signature does not accept.
    """
    request = parse_json(body) if isinstance(body, (bytes, bytearray, str)) else body
    if not isinstance(request, Mapping):
        raise ServingRequestError("Request body must be a JSON object")
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):  # TF Serving: null, numbers, lists are refused
        raise ServingRequestError(
            f"JSON Value: {_show(signature_name)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    signature_name = signature_name or DEFAULT_SIGNATURE  # "" means the default, as in TF Serving
    has_rows, has_columns = "instances" in request, "inputs" in request
    if has_rows == has_columns:
        raise ServingRequestError(
            "Not both 'instances' and 'inputs' may be given" if has_rows
            else "Missing 'inputs' or 'instances' key"
        )
    signature = signature_for(signature_name)
    if has_rows:
        named = _rows_to_columns(request["instances"], signature)
    else:
        named = _columns(request["inputs"], signature)
    arrays = {name: _to_array(name, value, signature.inputs[name]) for name, value in named.items()}
    if has_rows:
        sizes = {name: array.shape[0] if array.ndim else None for name, array in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise ServingRequestError(f"instances have inconsistent batch sizes: {sizes}")
    return PredictCall(signature_name, arrays, "rows" if has_rows else "columns")


def _check_names(given: set[str], signature: SignatureInfo) -> None:
    expected = set(signature.inputs)
    unknown, missing = sorted(given - expected), sorted(expected - given)
    if unknown:
        raise ServingRequestError(
            f"input tensor alias not found in signature: {', '.join(unknown)}. Inputs expected "
            f"to be in the set {{{', '.join(sorted(expected))}}}."
        )
    if missing:
        raise ServingRequestError(
            f"Missing input(s) {', '.join(missing)} for signature '{signature.name}'"
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
            raise ServingRequestError(f"input '{name}': Unable to base64 decode {_show(value['b64'])}") from None
    raise ServingRequestError(
        f"input '{name}' is DT_STRING: expected JSON strings, got {type(value).__name__} {_show(value)}"
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
                raise ServingRequestError(f"input '{name}': JSON value {_show(v)} is not of expected type DT_BOOL")
            return v
        return check
    if dtype.kind in "iu":
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max

        def check(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ServingRequestError(
                    f"input '{name}': JSON value {_show(v)} is not of expected type {info.dtype} "
                    "(send JSON integers, without a decimal point)"
                )
            if not low <= v <= high:
                raise ServingRequestError(
                    f"input '{name}': {_show(v)} is out of range for {info.dtype} [{low}, {high}]"
                )
            return v
        return check
    if dtype.kind == "f":
        largest_int = 2 ** (np.finfo(dtype).nmant + 1) - 1
        largest = float(np.finfo(dtype).max)

        def check(v: Any) -> Any:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ServingRequestError(
                    f"input '{name}' is {info.dtype}: expected numbers, got {type(v).__name__} {_show(v)}"
                )
            if isinstance(v, int) and abs(v) > largest_int or (
                isinstance(v, float) and math.isfinite(v) and abs(v) > largest
            ):
                raise ServingRequestError(
                    f"input '{name}': cannot convert JSON value {_show(v)} to {info.dtype} without loss of precision"
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


def encode_predict_response(outputs: Mapping[str, np.ndarray], layout: str) -> dict:
    """The JSON answer to a ``:predict`` call, in the request's layout (see module docs).

    Raises :class:`ServingRequestError` when a row-format answer is impossible because the
    outputs do not share their first dimension.
    """
    names = sorted(outputs)
    arrays = {name: np.asarray(outputs[name]) for name in names}
    if layout == "columns":
        if len(names) == 1:
            return {"outputs": _json_value(names[0], arrays[names[0]])}
        return {"outputs": {name: _json_value(name, arrays[name]) for name in names}}
    batch = {name: arrays[name].shape[0] if arrays[name].ndim else None for name in names}
    if len(set(batch.values())) != 1 or None in batch.values():
        raise ServingRequestError(
            f"outputs do not share a batch dimension {batch}: use the columnar 'inputs' format"
        )
    if len(names) == 1:
        return {"predictions": _json_value(names[0], arrays[names[0]])}
    columns = {name: _json_value(name, arrays[name]) for name in names}
    rows = next(iter(batch.values()))
    return {"predictions": [{name: columns[name][i] for name in names} for i in range(rows)]}


def dumps(payload: Any) -> bytes:
    """Serialise a response body (``NaN``/``Infinity`` allowed, as in TF Serving)."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")
