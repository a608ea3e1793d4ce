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
from typing import Any, Callable, Mapping

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


def parse_json(body: bytes | str) -> Any:
    """``json.loads`` that accepts ``NaN``/``Infinity`` (as TF Serving does) and reports a
    parse failure as a 400 error."""
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as error:
        raise ServingRequestError(f"JSON Parse error: {error}") from None


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
    signature_name = request.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(signature_name, str):
        raise ServingRequestError("'signature_name' must be a string")
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
        return value.encode("utf-8")
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise ServingRequestError(f"input '{name}': invalid base64 in 'b64'") from None
    raise ServingRequestError(
        f"input '{name}' is DT_STRING: expected JSON strings, got {type(value).__name__} {value!r}"
    )


def _map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    return [_map_leaves(v, leaf) for v in value] if isinstance(value, list) else leaf(value)


def _to_array(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    shape = _shape_of(name, value)
    if info.is_string:
        flat = np.empty(int(np.prod(shape)) if shape else 1, dtype=object)
        leaves: list[bytes] = []
        _map_leaves(value, lambda v: leaves.append(_leaf_bytes(name, v)))
        flat[:] = leaves
        array = flat.reshape(shape)
    else:
        def number(v: Any) -> Any:
            if isinstance(v, bool) and info.dtype != "DT_BOOL":
                raise ServingRequestError(f"input '{name}' is {info.dtype}: got a boolean")
            if not isinstance(v, (int, float, bool)):
                raise ServingRequestError(
                    f"input '{name}' is {info.dtype}: expected numbers, got "
                    f"{type(v).__name__} {v!r}"
                )
            if info.dtype.startswith(("DT_INT", "DT_UINT")) and isinstance(v, float):
                if not (math.isfinite(v) and v == int(v)):
                    raise ServingRequestError(f"input '{name}' is {info.dtype}: got {v}")
            return v

        array = np.asarray(_map_leaves(value, number), dtype=info.np_dtype).reshape(shape)
    if info.shape is not None:
        expected = info.shape
        if len(expected) != array.ndim or any(
            e is not None and e != g for e, g in zip(expected, array.shape)
        ):
            shown = "[" + ", ".join("-1" if e is None else str(e) for e in expected) + "]"
            raise ServingRequestError(
                f"input '{name}': the signature expects shape {shown}, the request gives "
                f"{list(array.shape)}"
            )
    return array


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
