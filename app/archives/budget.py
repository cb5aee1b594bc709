"""The time an archive exchange may still take, carried to the adapters without threading it through
every call: a fan-out job sets its deadline, an adapter asks what is left for its next request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("archive_deadline", default=None)


@contextmanager
def until(deadline: float) -> Iterator[None]:
    """Run the block with a monotonic-clock deadline for its archive requests."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(default: float) -> float:
    """Seconds left (at most `default`); 0 or less means the budget is spent."""
    deadline = _deadline.get()
    return default if deadline is None else min(default, deadline - time.monotonic())
