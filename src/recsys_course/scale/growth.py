"""Growth laws fitted on log-log axes, and where a method stops being practical.

A cost that grows as ``c * size**b`` is a straight line of slope ``b`` on log-log axes, so
:func:`fit_power_law` fits ``log(cost) = log(c) + b log(size)`` by least squares and calls
``b`` the *growth exponent*. Measured exponents are compared with the complexity each
method should have (EASE's inverse ~ ``n_movies**3``, a two-tower epoch ~ ``n_ratings``).
Fixed costs (starting a process, Python's per-call overhead) flatten the small end of a
curve, so a fit over sizes where they dominate gives a lower exponent than the asymptotic one.

:func:`practical_limit` states the rule used on the page: a method is practical on a
machine while its predicted training time stays within a time budget and its predicted
peak memory within the machine's memory; the limit is the smallest size that breaks either.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Limit",
    "PowerLaw",
    "dense_matrix_bytes",
    "fit_power_law",
    "machine_memory_bytes",
    "practical_limit",
]


@dataclass(frozen=True)
class PowerLaw:
    """``value ≈ coefficient * size ** exponent``, fitted on ``points`` (size, value) pairs
    spanning ``sizes[0]..sizes[1]``; ``r2`` is the fit's R² on log-log axes (1 for two
    points)."""

    exponent: float
    coefficient: float
    points: int
    sizes: tuple[float, float]
    r2: float

    def predict(self, size: float) -> float:
        """The fitted value at ``size``."""
        return self.coefficient * float(size) ** self.exponent

    def size_at(self, value: float) -> float:
        """The size at which the fitted value reaches ``value`` (``inf`` when the law does
        not grow, so it never does)."""
        if self.exponent <= 0:
            return math.inf
        try:
            return (float(value) / self.coefficient) ** (1.0 / self.exponent)
        except OverflowError:  # a nearly flat law reaches the value beyond any float
            return math.inf


def fit_power_law(sizes: Sequence[float], values: Sequence[float]) -> PowerLaw | None:
    """Least-squares fit of ``log(value)`` on ``log(size)``.

    Pairs with a missing, zero or negative size or value are left out (a logarithm needs a
    positive number). Returns ``None`` when fewer than two distinct sizes remain: a line
    needs two points.
    """
    pairs = [(float(s), float(v)) for s, v in zip(sizes, values)
             if s is not None and v is not None and math.isfinite(float(s)) and math.isfinite(float(v))
             and float(s) > 0 and float(v) > 0]
    if len({s for s, _ in pairs}) < 2:
        return None
    xs = [math.log(s) for s, _ in pairs]
    ys = [math.log(v) for _, v in pairs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    total = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return PowerLaw(exponent=slope, coefficient=math.exp(intercept), points=len(pairs),
                    sizes=(min(s for s, _ in pairs), max(s for s, _ in pairs)), r2=r2)


@dataclass(frozen=True)
class Limit:
    """The size where a method stops being practical: ``size`` (``inf`` when neither budget
    is ever reached) and ``binding``, the budget reached first (``"time"``, ``"memory"``,
    or ``None`` for ``inf``); ``by_time`` and ``by_memory`` are each budget's own size
    (``inf`` when that law does not grow, ``None`` when it was not fitted)."""

    size: float
    binding: str | None
    by_time: float | None
    by_memory: float | None


def practical_limit(time_law: PowerLaw | None, memory_law: PowerLaw | None, *, time_budget: float,
                    memory_budget: float, fixed_memory: float = 0.0) -> Limit:
    """The smallest size at which the predicted time exceeds ``time_budget`` or the predicted
    peak memory, ``fixed_memory + memory_law(size)``, exceeds ``memory_budget``.

    ``time_law`` predicts training time (or time per query) from the size, ``memory_law``
    the memory the method adds to ``fixed_memory`` (what the process holds before it
    starts: interpreter and libraries). Either law may be ``None`` (not measured): it then
    sets no limit. Units are the caller's, as long as budgets and laws agree.
    """
    by_time = time_law.size_at(time_budget) if time_law is not None else None
    room = memory_budget - fixed_memory
    if memory_law is None:
        by_memory = None
    elif room <= 0:
        by_memory = 0.0
    else:
        by_memory = memory_law.size_at(room)
    candidates = [(size, name) for size, name in ((by_time, "time"), (by_memory, "memory")) if size is not None]
    if not candidates or all(math.isinf(size) for size, _ in candidates):
        return Limit(math.inf, None, by_time, by_memory)
    size, binding = min(candidates)
    return Limit(size, binding, by_time, by_memory)


def dense_matrix_bytes(n: int, matrices: int = 1, bytes_per_number: int = 8) -> int:
    """Bytes of ``matrices`` dense ``n x n`` matrices (float64 by default)."""
    return int(matrices) * int(n) ** 2 * int(bytes_per_number)


def machine_memory_bytes() -> int | None:
    """This machine's physical memory from ``os.sysconf`` (pages x page size), or ``None``
    where the system does not report it."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None
