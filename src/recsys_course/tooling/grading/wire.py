"""The only format in which values cross the sandbox boundary: JSON plus raw array buffers.

A message is a JSON header followed by zero or more byte buffers, each length-prefixed::

    [4-byte header length][header JSON][4-byte buffer count]([8-byte length][bytes])*

:func:`frame` writes it and :class:`FrameReader` reads it, on both sides of the boundary,
with limits on the header, every buffer, the number of buffers and the whole message that
are checked before any announced byte is awaited.

Values are encoded as JSON trees. Plain JSON covers ``None``, ``bool``, ``int``, ``float``
and ``str``; everything else is a one-key object whose key starts with ``$``:

==========  ================================================================
``$b``      bytes (buffer index)
``$l``      list; ``$t`` tuple; ``$set``/``$fs`` set/frozenset; ``$d`` dict as ``[[key, value], ...]``
``$a``      NumPy array with a whitelisted fixed-width dtype (buffer index)
``$ao``     NumPy object array of plain elements (usually ``str`` or ``bytes``)
``$s``      NumPy scalar; ``$df`` pandas DataFrame; ``$ser`` Series; ``$ix`` Index
``$tf``     a TensorFlow tensor or variable, sent as its array; ``h`` (optional) is the
            handle of the original in the sandbox, so that the same tensor goes back
``$rng``    a NumPy ``Generator``, sent as its bit generator's state
``$path``   a ``pathlib`` path (a name in the file system of the side that reads it)
``$h``      a handle: an object that stays in the sandbox, named by number
``$cb``     a callback: a function or test double that stays on the trusted side, by number
==========  ================================================================

Decoding never calls code chosen by the sender: it builds exact built-in types, arrays with
``np.frombuffer`` (never pickle), and DataFrames from those. Whatever the sandbox sends,
the trusted side ends up with plain data or an opaque handle number, so a subclass with an
always-true ``__eq__`` cannot cross: it arrives as its plain base value or not at all.
docs/authoring.md ("Tests that work in the sandbox") states the rule for test writers.
"""

from __future__ import annotations

import json
import math
import pathlib
import struct
from typing import Any, BinaryIO
from collections.abc import Callable

import numpy as np

MAX_HEADER = 8 * 1024 * 1024  # bytes of JSON in one message (its parsed form is several times that)
MAX_BUFFER = 128 * 1024 * 1024  # bytes in one array
MAX_BUFFERS = 10_000  # buffers in one message
MAX_MESSAGE = 160 * 1024 * 1024  # bytes of one whole message
MAX_DEPTH = 64  # nesting of containers

# Fixed-width dtype kinds that np.frombuffer rebuilds exactly: bool, ints, floats,
# complex, fixed-width bytes and unicode. Objects, datetimes and structured types are not.
SAFE_KINDS = set("biufcSU")


class WireError(ValueError):
    """A message or value that does not follow the format (or breaks its limits)."""


class Unsendable(TypeError):
    """A value that cannot cross the boundary as data (it becomes a handle, or is refused)."""


# --------------------------------------------------------------------------- framing
#
# The one implementation of the frame format. The worker reads with read_message (blocking);
# the trusted side feeds whatever bytes arrived into a FrameReader (non-blocking, with its
# own deadlines). Both enforce the same limits before they allocate anything.


def frame(header: dict, buffers: list[bytes] | None = None) -> bytes:
    """One message as bytes: ``[4: header length][header JSON][4: count]([8: length][bytes])*``."""
    data = json.dumps(header, allow_nan=True).encode()
    parts = [struct.pack(">I", len(data)), data, struct.pack(">I", len(buffers or []))]
    for buffer in buffers or []:
        parts += [struct.pack(">Q", len(buffer)), buffer]
    return b"".join(parts)


def write_message(stream: BinaryIO, header: dict, buffers: list[bytes] | None = None) -> None:
    stream.write(frame(header, buffers))
    stream.flush()


class FrameReader:
    """Incremental reader of messages from bytes that arrive in any pieces.

    Every length is checked against the limits *before* the bytes it announces are awaited,
    so a forged length costs nothing: ``max_header`` bytes of JSON, ``max_buffers`` buffers,
    ``max_buffer`` bytes in one buffer and ``max_message`` bytes in the whole message.
    :meth:`wanted` says how many bytes complete the next piece (for a blocking reader that
    must not read past the message it waits for).
    """

    def __init__(self, max_header: int = MAX_HEADER, max_buffer: int = MAX_BUFFER,
                 max_buffers: int = MAX_BUFFERS, max_message: int = MAX_MESSAGE) -> None:
        self.max_header, self.max_buffer = max_header, max_buffer
        self.max_buffers, self.max_message = max_buffers, max_message
        self._data = bytearray()
        self._pos = 0
        self._reset()

    def _reset(self) -> None:
        self._stage = "size"  # size -> header -> count -> (length -> buffer)* -> done
        self._header: dict | None = None
        self._buffers: list[bytes] = []
        self._left = 0  # buffers still to read
        self._need = 4
        self._total = 0  # bytes of the message so far

    def wanted(self) -> int:
        """Bytes still missing for the piece being read (at least 1)."""
        return max(1, self._need - (len(self._data) - self._pos))

    def feed(self, data: bytes) -> None:
        self._data += data

    def _take(self, size: int) -> bytes | None:
        if len(self._data) - self._pos < size:
            return None
        piece = bytes(self._data[self._pos:self._pos + size])
        self._pos += size
        if self._pos > 1 << 20 and self._pos * 2 > len(self._data):  # compact, amortised O(n)
            del self._data[:self._pos]
            self._pos = 0
        return piece

    def _count(self, size: int) -> None:
        self._total += size
        if self._total > self.max_message:
            raise WireError(f"a message of more than {self.max_message} bytes")

    def next(self) -> tuple[dict, list[bytes]] | None:
        """The next complete message, or None until more bytes arrive."""
        while True:
            piece = self._take(self._need)
            if piece is None:
                return None
            if self._stage == "size":
                (size,) = struct.unpack(">I", piece)
                if size > self.max_header:
                    raise WireError(f"message header of {size} bytes is over the {self.max_header} limit")
                self._count(4 + size)
                self._stage, self._need = "header", size
            elif self._stage == "header":
                try:
                    header = json.loads(piece)
                except (ValueError, RecursionError) as error:
                    raise WireError(f"message header is not valid JSON ({str(error)[:100]})") from None
                if not isinstance(header, dict):
                    raise WireError("message header is not a JSON object")
                self._header = header
                self._stage, self._need = "count", 4
            elif self._stage == "count":
                (count,) = struct.unpack(">I", piece)
                if count > self.max_buffers:
                    raise WireError(f"{count} buffers in one message (limit {self.max_buffers})")
                self._count(4)
                self._left = count
                self._stage, self._need = "length", 8
            elif self._stage == "length":
                (length,) = struct.unpack(">Q", piece)
                if length > self.max_buffer:
                    raise WireError(f"a buffer of {length} bytes is over the {self.max_buffer} limit")
                self._count(8 + length)
                self._stage, self._need = "buffer", length
            else:  # buffer
                self._buffers.append(piece)
                self._left -= 1
                self._stage, self._need = "length", 8
            if self._stage in ("length",) and self._left == 0:
                message = (self._header, self._buffers)
                self._reset()
                return message


def read_message(stream: BinaryIO, reader: FrameReader | None = None) -> tuple[dict, list[bytes]]:
    """The next message from a blocking stream (``EOFError`` when it closes first)."""
    reader = reader or FrameReader()
    while True:
        message = reader.next()
        if message is not None:
            return message
        chunk = stream.read(reader.wanted())
        if not chunk:
            raise EOFError("the other side closed the channel")
        reader.feed(chunk)


# --------------------------------------------------------------------------- encoding


class Encoder:
    """Turns a value into a JSON tree plus buffers.

    ``opaque(obj)`` is asked for anything that is not data; it returns a JSON tree (a handle
    or a callback reference) or raises :class:`Unsendable`. Subclasses of plain types are
    sent as their plain base value, read with the base type's own methods so an overridden
    ``__float__``/``__iter__``/``__eq__`` is never consulted.
    """

    def __init__(self, opaque: Callable[[Any], Any], origin: Callable[[Any], int | None] | None = None) -> None:
        self.opaque = opaque
        self.origin = origin  # tensor -> handle number to send with its value (sandbox side)
        self.buffers: list[bytes] = []

    def _buffer(self, data: bytes) -> int:
        self.buffers.append(data)
        return len(self.buffers) - 1

    def encode(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise Unsendable("the value is nested too deeply")
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$f": repr(value)}
        if kind is bytes:
            return {"$b": self._buffer(value)}
        if kind is list:
            return {"$l": [self.encode(v, depth + 1) for v in value]}
        if kind is tuple:
            return {"$t": [self.encode(v, depth + 1) for v in value]}
        if kind is set or kind is frozenset:
            return {"$set" if kind is set else "$fs": [self.encode(v, depth + 1) for v in value]}
        if kind is dict:
            return {"$d": [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()]}
        if kind is np.ndarray:
            return self._array(value, depth)
        if kind is pathlib.PosixPath or kind is pathlib.PurePosixPath:
            return {"$path": str(value)}
        if isinstance(value, np.generic):
            return self._numpy_scalar(value)
        special = self._library_value(value, depth)
        if special is not None:
            return special
        # Subclasses of plain types: their base value, read with the base type's methods.
        if isinstance(value, bool):
            return bool(int.__index__(value))
        if isinstance(value, int):
            return int.__index__(value)
        if isinstance(value, float):
            return self.encode(float.__float__(value), depth)
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, bytes):
            return {"$b": self._buffer(bytes(memoryview(value)))}
        if isinstance(value, np.ndarray) and type(value).__module__.startswith("numpy"):
            return self._array(np.ndarray.view(value, np.ndarray), depth)  # np.matrix, masked arrays
        # A list or tuple subclass (a named tuple, TensorFlow's tracking ListWrapper, which
        # keeps its items elsewhere) stays a handle: its items are read through it.
        return self.opaque(value)

    def _array(self, array: np.ndarray, depth: int) -> Any:
        if array.dtype.kind in SAFE_KINDS and not array.dtype.fields:
            # (not np.ascontiguousarray: it turns a 0-d array into shape (1,))
            contiguous = array if array.flags.c_contiguous else array.copy(order="C")
            return {"$a": self._buffer(contiguous.tobytes()), "dtype": contiguous.dtype.str,
                    "shape": list(contiguous.shape)}
        if array.dtype.kind == "O":
            flat = [self.encode(v, depth + 1) for v in array.ravel(order="C").tolist()]
            return {"$ao": flat, "shape": list(array.shape)}
        if array.dtype.kind in "mM":  # datetimes: their integer counts and unit
            return {"$dt": self._array(array.view(np.int64), depth), "dtype": array.dtype.str}
        raise Unsendable(f"arrays of dtype {array.dtype} cannot be sent")

    def _numpy_scalar(self, value: np.generic) -> Any:
        if value.dtype.kind not in SAFE_KINDS:
            raise Unsendable(f"a NumPy scalar of dtype {value.dtype} cannot be sent")
        return {"$s": value.dtype.str, "v": self.encode(value.item(), 0)}

    def _library_value(self, value: Any, depth: int) -> Any:
        """pandas, TensorFlow and NumPy random generators, when they are loaded."""
        module = type(value).__module__.split(".")[0]
        if module == "pandas":
            import pandas as pd

            if type(value) is pd.DataFrame and not isinstance(value.columns, pd.MultiIndex):
                return {"$df": {
                    "columns": [self.encode(c, depth + 1) for c in value.columns.tolist()],
                    "data": [self._series_values(value.iloc[:, i], depth) for i in range(value.shape[1])],
                    "index": self._index(value.index, depth),
                }}
            if type(value) is pd.Series:
                return {"$ser": {"name": self.encode(value.name, depth + 1),
                                 "data": self._series_values(value, depth),
                                 "index": self._index(value.index, depth)}}
            if isinstance(value, pd.Index) and not isinstance(value, pd.MultiIndex):
                return self._index(value, depth)
        if module in ("tensorflow", "keras", "tf_keras"):
            import tensorflow as tf

            if isinstance(value, (tf.Tensor, tf.Variable)) and not isinstance(value, tf.RaggedTensor):
                try:
                    tree = {"$tf": self._array(np.asarray(value.numpy()), depth)}
                except (AttributeError, ValueError, TypeError):  # a symbolic tensor: no value
                    return None
                number = self.origin(value) if self.origin is not None else None
                if number is not None:
                    tree["h"] = number
                return tree
        if module == "numpy" and isinstance(value, np.random.Generator):
            state = value.bit_generator.state
            return {"$rng": self.encode(state, depth + 1)}
        return None

    def _series_values(self, series: Any, depth: int) -> Any:
        values = series.to_numpy()
        if values.dtype.kind in SAFE_KINDS or values.dtype.kind in "mM":
            return self._array(values, depth)
        return self._array(np.asarray(values, dtype=object), depth)

    def _index(self, index: Any, depth: int) -> Any:
        import pandas as pd

        if type(index) is pd.RangeIndex:
            return {"$ix": {"range": [index.start, index.stop, index.step],
                            "name": self.encode(index.name, depth + 1)}}
        return {"$ix": {"values": self._series_values(index, depth), "name": self.encode(index.name, depth + 1)}}


def encode(value: Any, opaque: Callable[[Any], Any],
           origin: Callable[[Any], int | None] | None = None) -> tuple[Any, list[bytes]]:
    encoder = Encoder(opaque, origin)
    return encoder.encode(value), encoder.buffers


# --------------------------------------------------------------------------- decoding


class Decoder:
    """Rebuilds values from a JSON tree and buffers.

    ``handle(number)`` and ``callback(number)`` turn references into objects (a proxy on the
    trusted side; the real object or a calling stub in the sandbox). ``tensor(array, number)``
    rebuilds a tensor (``tf.constant``; ``number`` is its origin handle or None); without
    it, tensors arrive as arrays.
    """

    def __init__(self, buffers: list[bytes], handle: Callable[[int], Any] | None = None,
                 callback: Callable[[int], Any] | None = None,
                 tensor: Callable[[np.ndarray, int | None], Any] | None = None,
                 rng: Callable[[dict], Any] | None = None) -> None:
        self.buffers = buffers
        self.handle, self.callback, self.tensor, self.rng = handle, callback, tensor, rng

    def _buffer(self, index: Any) -> bytes:
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise WireError(f"bad buffer index {index!r}")
        return self.buffers[index]

    def decode(self, tree: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise WireError("the value is nested too deeply")
        kind = type(tree)
        if tree is None or kind in (bool, int, float, str):
            return tree
        if kind is list:  # bare JSON lists are not produced by the encoder
            raise WireError("unexpected bare list")
        if kind is not dict or len(tree) == 0:
            raise WireError(f"unexpected {kind.__name__} in a value")
        tag = next(iter(tree))
        body = tree[tag]
        if tag == "$f":
            if body not in ("nan", "inf", "-inf"):
                raise WireError(f"bad float {body!r}")
            return float(body)
        if tag == "$b":
            return bytes(self._buffer(body))
        if tag in ("$l", "$t"):
            items = [self.decode(v, depth + 1) for v in self._list(body)]
            return items if tag == "$l" else tuple(items)
        if tag in ("$set", "$fs"):
            items = [self.decode(v, depth + 1) for v in self._list(body)]
            try:
                return set(items) if tag == "$set" else frozenset(items)
            except TypeError:
                raise WireError("unhashable set item") from None
        if tag == "$d":
            out = {}
            for pair in self._list(body):
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("bad dict item")
                key = self.decode(pair[0], depth + 1)
                try:
                    out[key] = self.decode(pair[1], depth + 1)
                except TypeError:
                    raise WireError(f"unhashable dict key {type(key).__name__}") from None
            return out
        if tag in ("$a", "$ao", "$dt"):
            return self._array(tree, depth)
        if tag == "$s":
            dtype = self._dtype(body)
            value = self.decode(tree.get("v"), depth + 1)
            if type(value) not in (bool, int, float, complex, str, bytes):
                raise WireError("bad NumPy scalar")
            return dtype.type(value)
        if tag == "$df":
            return self._frame(body, depth)
        if tag == "$ser":
            return self._series(body, depth)
        if tag == "$ix":
            return self._index(body, depth)
        if tag == "$tf":
            array = self.decode(body, depth + 1)
            number = tree.get("h")
            if type(array) is not np.ndarray or (number is not None and type(number) is not int):
                raise WireError("bad tensor")
            return self.tensor(array, number) if self.tensor else array
        if tag == "$path":
            if type(body) is not str or len(body) > 4096 or "\x00" in body:
                raise WireError("bad path")
            return pathlib.Path(body)
        if tag == "$rng":
            state = self.decode(body, depth + 1)
            if type(state) is not dict:
                raise WireError("bad generator state")
            return self.rng(state) if self.rng else state
        if tag in ("$h", "$cb"):
            if type(body) is not int:
                raise WireError("bad reference")
            make = self.handle if tag == "$h" else self.callback
            if make is None:
                raise WireError(f"{tag} references are not accepted here")
            return make(body)
        raise WireError(f"unknown tag {tag!r}")

    @staticmethod
    def _list(body: Any) -> list:
        if type(body) is not list:
            raise WireError("expected a list")
        return body

    @staticmethod
    def _dtype(text: Any) -> np.dtype:
        if type(text) is not str or len(text) > 16:
            raise WireError("bad dtype")
        try:
            dtype = np.dtype(text)
        except TypeError:
            raise WireError(f"unknown dtype {text!r}") from None
        if dtype.kind not in SAFE_KINDS or dtype.fields or dtype.hasobject:
            raise WireError(f"dtype {text!r} is not accepted")
        return dtype

    def _shape(self, tree: dict) -> tuple[int, ...]:
        shape = tree.get("shape")
        if type(shape) is not list or len(shape) > 32 or any(type(s) is not int or s < 0 for s in shape):
            raise WireError("bad array shape")
        return tuple(shape)

    def _array(self, tree: dict, depth: int) -> np.ndarray:
        if "$a" in tree:
            dtype, shape = self._dtype(tree.get("dtype")), self._shape(tree)
            data = self._buffer(tree["$a"])
            if math.prod(shape) * dtype.itemsize != len(data):
                raise WireError("array buffer does not match its shape and dtype")
            return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        if "$ao" in tree:
            shape = self._shape(tree)
            items = [self.decode(v, depth + 1) for v in self._list(tree["$ao"])]
            if math.prod(shape) != len(items):
                raise WireError("object array does not match its shape")
            array = np.empty(len(items), dtype=object)
            array[:] = items if items else []
            return array.reshape(shape)
        if "$dt" in tree:
            text = tree.get("dtype")
            if type(text) is not str or len(text) > 16 or np.dtype(text).kind not in "mM":
                raise WireError("bad datetime dtype")
            counts = self._array(tree["$dt"], depth)
            if counts.dtype != np.int64:
                raise WireError("bad datetime counts")
            return counts.view(np.dtype(text))
        raise WireError("bad array")

    def _index(self, body: Any, depth: int) -> Any:
        import pandas as pd

        if type(body) is not dict:
            raise WireError("bad index")
        name = self.decode(body.get("name"), depth + 1)
        if "range" in body:
            bounds = body["range"]
            if type(bounds) is not list or len(bounds) != 3 or any(type(b) is not int for b in bounds):
                raise WireError("bad range index")
            return pd.RangeIndex(*bounds, name=name)
        values = self.decode(body.get("values"), depth + 1)
        if type(values) is not np.ndarray:
            raise WireError("bad index values")
        return pd.Index(values, name=name)

    def _series(self, body: Any, depth: int) -> Any:
        import pandas as pd

        if type(body) is not dict:
            raise WireError("bad series")
        values = self.decode(body.get("data"), depth + 1)
        index = self.decode(body.get("index"), depth + 1)
        if type(values) is not np.ndarray or len(values) != len(index):
            raise WireError("bad series values")
        return pd.Series(values, index=index, name=self.decode(body.get("name"), depth + 1), copy=False)

    def _frame(self, body: Any, depth: int) -> Any:
        import pandas as pd

        if type(body) is not dict:
            raise WireError("bad frame")
        columns = [self.decode(c, depth + 1) for c in self._list(body.get("columns"))]
        data = [self.decode(c, depth + 1) for c in self._list(body.get("data"))]
        index = self.decode(body.get("index"), depth + 1)
        if len(columns) != len(data) or any(type(d) is not np.ndarray or len(d) != len(index) for d in data):
            raise WireError("bad frame columns")
        frame = pd.DataFrame({i: d for i, d in enumerate(data)}, index=index)
        frame.columns = pd.Index(columns, dtype=object) if columns else frame.columns
        if columns and all(type(c) is str for c in columns):
            frame.columns = pd.Index(columns)
        return frame


def decode(tree: Any, buffers: list[bytes], **hooks: Any) -> Any:
    return Decoder(buffers, **hooks).decode(tree)
