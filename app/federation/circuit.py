"""A circuit breaker per archive: a dead archive costs no waiting until a probe succeeds.

closed --(threshold consecutive failures, or Retry-After)--> open --(cooldown over)--> half-open
half-open lets one probe through: success closes the circuit, failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitOpen(Exception):
    """The archive is skipped: its circuit is open."""

    def __init__(self, retry_in_s: float, failures: int) -> None:
        super().__init__(f"circuit open after {failures} failure(s); next probe in {retry_in_s:.0f} s")
        self.retry_in_s = retry_in_s


class CircuitBreaker:
    def __init__(
        self, threshold: int = 3, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._open_until == 0.0:
                return "closed"
            return "half-open" if self.clock() >= self._open_until else "open"

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go through now (one probe at a time when half-open)."""
        with self._lock:
            if self._open_until == 0.0:
                return
            now = self.clock()
            if now < self._open_until or self._probing:
                raise CircuitOpen(max(self._open_until - now, 0.0), self._failures)
            self._probing = True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0
            self._probing = False

    def failure(self, retry_after_s: float | None = None) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if retry_after_s is not None:  # the archive said when to come back
                self._open_until = self.clock() + retry_after_s
            elif self._failures >= self.threshold or self._open_until:  # threshold, or a failed probe
                self._open_until = self.clock() + self.cooldown_s
