"""How much predict work the practice server takes on, and the gate that enforces it.

TF Serving bounds its work with batching (``--enable_batching`` and a
``BatchingParameters`` file: ``max_batch_size``, ``num_batch_threads``,
``max_enqueued_batches``) and a deadline (``--rest_api_timeout_in_ms`` for REST, the client's
deadline for gRPC). The practice server does not batch requests together, so it applies the
same limits to each request as if it were one batch:

=========================  ================================================================
``max_batch_size``         instances one request may carry (default 1000, TF's default);
                           more: 400 / INVALID_ARGUMENT ``Task size N is larger than maximum
                           input batch size M``, before any instance is converted
``num_batch_threads``      predict requests computing at once, over REST and gRPC together
                           (default 8, the REST worker threads of the server before these
                           limits: fewer slots lower the throughput of many small requests,
                           measure with ``scripts/bench_serving.py --server-args``)
``max_enqueued_batches``   predict requests waiting for one of those slots (default 64); one
                           more: 503 with ``Retry-After`` / UNAVAILABLE, as TF Serving answers
                           a full batching queue
``rest_api_timeout_in_ms`` REST deadline, counted from when a worker thread takes the request
                           (default 30000, TF Serving's); past it: 504 / DEADLINE_EXCEEDED.
                           gRPC calls use the client's deadline, as in TF Serving
``max_response_bytes``     largest answer, JSON or protobuf (default 64 MiB); more: 400 /
                           RESOURCE_EXHAUSTED, and encoding stops at the limit
=========================  ================================================================

Waiting for a slot costs a thread but no memory: the request body is read and parsed only
once the request holds its slot, so the memory predict work takes is bounded by
``num_batch_threads`` requests at a time (parsing JSON of many short strings takes about
ten times the body's size: at worst 8 bodies of 16 MiB, about 1.3 GB, for a moment).
Status and metadata requests never wait here. TensorFlow work that has started is not
interrupted; the deadline is checked before the body is parsed, before the model runs and
before the answer is encoded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from recsys_course.serving.protocol import DeadlineExceededError, UnavailableError


@dataclass(frozen=True)
class PredictLimits:
    """Limits on predict work; see the module's table. ``None`` for
    ``rest_api_timeout_in_ms`` (or 0, as TF Serving's flag) means no REST deadline."""

    max_batch_size: int = 1000
    num_batch_threads: int = 8
    max_enqueued_batches: int = 64
    rest_api_timeout_in_ms: int | None = 30_000
    max_response_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "num_batch_threads", "max_response_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_enqueued_batches", "rest_api_timeout_in_ms"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")

    def rest_deadline(self, start: float) -> float | None:
        """The ``time.monotonic()`` deadline of a REST request that started at ``start``."""
        if not self.rest_api_timeout_in_ms:
            return None
        return start + self.rest_api_timeout_in_ms / 1000


def check_deadline(deadline: float | None, limit: str) -> None:
    """Raise :class:`DeadlineExceededError` naming ``limit`` when ``deadline`` has passed."""
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceededError(f"the request did not finish within {limit}; send fewer instances, "
                                    "or retry when the server is less busy")


class PredictSlots:
    """At most ``running`` predict calls at once and at most ``waiting`` queued behind them.

    :meth:`slot` is the only entry: it admits the caller at once, queues it (first come,
    first served), or refuses it; a queued caller gives up at its deadline or when
    ``cancelled()`` turns true (a gRPC client that went away). A freed slot wakes only the
    caller first in line (each waits on its own condition), so a long queue costs no
    wake-ups.
    """

    #: How often a queued caller re-checks ``cancelled`` (seconds).
    POLL = 0.05

    def __init__(self, running: int, waiting: int) -> None:
        self.capacity, self.queue_capacity = running, waiting
        self.running = 0
        self._lock = threading.Lock()
        self._line: deque[threading.Condition] = deque()  # queued callers, oldest first

    @property
    def waiting(self) -> int:
        """Callers queued for a slot now."""
        return len(self._line)

    @contextmanager
    def slot(self, deadline: float | None = None, limit: str = "the deadline",
             cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold one slot for the ``with`` block.

        Raises:
            UnavailableError: every slot is taken and the queue is full.
            DeadlineExceededError: ``deadline`` (``time.monotonic()``) passed in the queue;
                ``limit`` names it in the message.
        """
        self._acquire(deadline, limit, cancelled)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
                self._wake_first()

    def _wake_first(self) -> None:
        if self._line and self.running < self.capacity:
            self._line[0].notify()

    def _acquire(self, deadline: float | None, limit: str, cancelled: Callable[[], bool] | None) -> None:
        with self._lock:
            if self.running < self.capacity and not self._line:
                self.running += 1
                return
            if len(self._line) >= self.queue_capacity:
                raise UnavailableError(
                    f"the server is busy: {self.running} predict requests are running (num_batch_threads="
                    f"{self.capacity}) and {len(self._line)} are waiting (max_enqueued_batches="
                    f"{self.queue_capacity}); retry after a moment"
                )
            turn = threading.Condition(self._lock)
            self._line.append(turn)
            try:
                while not (self._line[0] is turn and self.running < self.capacity):
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        raise DeadlineExceededError(
                            f"the request waited for a free predict slot (num_batch_threads={self.capacity}) "
                            f"until {limit} passed; retry when the server is less busy"
                        )
                    if cancelled is not None and cancelled():
                        raise DeadlineExceededError("the client gave up while the request waited for a predict slot")
                    timeout = self.POLL if cancelled is not None else None
                    if deadline is not None:
                        timeout = min(timeout or deadline - now, deadline - now)
                    turn.wait(timeout)
                self.running += 1
            finally:
                self._line.remove(turn)
                self._wake_first()  # the next in line, if a slot is (still) free
