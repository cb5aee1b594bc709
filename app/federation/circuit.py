"""A circuit breaker per archive: a dead archive costs no waiting until a probe succeeds.

closed --(threshold consecutive failures)--> open --(cooldown over)--> half-open
half-open lets one probe through: success closes the circuit, failure opens it again.

Only failures of the archive count (`heard`): transport failures, upstream 5xx and timeouts. An
archive that answers is up, whatever it answered: a refusal (4xx, a garbled answer: ArchiveRejected)
is a success, and back-pressure (429, or 503 with Retry-After: ArchiveRetryLater) is not a failure
either. Retry-After is honoured as a back-off: the archive is skipped until then (an `incomplete`
outcome), for at most `cooldown_s`, so an archive (or a client whose searches made it busy) can take
a trust out for no longer than a failing archive would; then it is asked again, no probe needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from app.archives.protocol import ArchiveError, ArchiveRejected, ArchiveRetryLater


class CircuitOpen(Exception):
    """The archive is skipped: its circuit is open, or it asked us to come back later."""

    def __init__(self, retry_in_s: float, failures: int, backing_off: bool = False) -> None:
        if backing_off:
            why = f"the archive asked to be retried later; next try in {retry_in_s:.0f} s"
        else:
            why = f"circuit open after {failures} failure(s); next probe in {retry_in_s:.0f} s"
        super().__init__(why)
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
        self._back_off_until = 0.0  # Retry-After: skipped until then, with no failure counted
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            now = self.clock()
            if now < self._back_off_until:
                return "open"  # not asked for now (readiness: not available)
            if self._open_until == 0.0:
                return "closed"
            return "half-open" if now >= self._open_until else "open"

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go through now (one probe at a time when half-open)."""
        with self._lock:
            now = self.clock()
            if now < self._back_off_until:
                raise CircuitOpen(self._back_off_until - now, self._failures, backing_off=True)
            if self._open_until == 0.0:
                return
            if now < self._open_until or self._probing:
                raise CircuitOpen(max(self._open_until - now, 0.0), self._failures)
            self._probing = True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_until = 0.0
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self._failures >= self.threshold or self._open_until:  # threshold, or a failed probe
                self._open_until = self.clock() + self.cooldown_s

    def back_off(self, retry_after_s: float) -> None:
        """The archive answered 429/503 with Retry-After: it is up and busy. No failure is counted (a probe
        in flight is over, the circuit as it was); the archive is skipped for min(retry_after_s, cooldown_s)."""
        with self._lock:
            self._probing = False
            self._back_off_until = max(self._back_off_until, self.clock() + min(retry_after_s, self.cooldown_s))

    def heard(self, error: ArchiveError) -> None:
        """What an archive's error means for its circuit (the one place that decides it)."""
        if isinstance(error, ArchiveRetryLater):
            self.back_off(error.retry_after_s)
        elif isinstance(error, ArchiveRejected):  # it answered (a 4xx, a garbled answer): it is up
            self.success()
        else:  # transport failure, 5xx, timeout
            self.failure()
