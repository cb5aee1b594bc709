"""Rate limiting: a token bucket per client, in this process or shared by every process through Redis.

A bucket holds at most `burst` tokens and refills at `requests_per_minute / 60` tokens a second;
a request takes one token or is refused with the seconds until one will be there. The Redis
bucket is one atomic script on the server's clock, so every gunicorn worker and every facade
process behind the load balancer draws from the same bucket. If Redis cannot be reached the
request is let through (logged): the limiter protects the archives, it must not take the API down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from app.settings import RateLimitSettings

log = logging.getLogger(__name__)
KEY_PREFIX = "gm-facade:rate:"
MAX_MEMORY_BUCKETS = 100_000


class Buckets(Protocol):
    def take(self, key: str, cost: int) -> float | None:
        """None when the request may go (`cost` tokens taken; 0 only looks), else seconds to wait."""
        ...


class MemoryBuckets:
    """Buckets of this process (each gunicorn worker has its own)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Any = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, cost: int) -> float | None:
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
            wait = None
            if tokens >= max(cost, 1):
                tokens -= cost
            else:
                wait = (max(cost, 1) - tokens) / self.rate_per_s
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > MAX_MEMORY_BUCKETS:  # the least recently seen client starts afresh
                self._buckets.popitem(last=False)
            return wait


_SCRIPT = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = -1
if tokens >= math.max(cost, 1) then
  tokens = tokens - cost
else
  wait = (math.max(cost, 1) - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisBuckets:
    """Buckets shared by every process using the same Redis (script run atomically on the server)."""

    def __init__(self, url: str, rate_per_s: float, burst: int) -> None:
        import redis

        self.rate_per_s = rate_per_s
        self.burst = burst
        self._redis = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(_SCRIPT)
        self._warned_at = float("-inf")

    def take(self, key: str, cost: int) -> float | None:
        import redis

        try:
            wait = float(self._script(keys=[KEY_PREFIX + key], args=[self.rate_per_s, self.burst, cost]))
        except redis.RedisError as exc:
            if time.monotonic() - self._warned_at > 60:  # once a minute, not once a request
                self._warned_at = time.monotonic()
                log.warning("rate limit store unreachable (%s): requests are not limited", type(exc).__name__)
            return None
        return None if wait < 0 else wait


class RateLimiter:
    """Keys are `client:<client_id>` or `address:<remote address>`."""

    def __init__(self, settings: RateLimitSettings) -> None:
        rate = settings.requests_per_minute / 60.0
        self.buckets: Buckets = (
            MemoryBuckets(rate, settings.burst)
            if settings.store == "memory"
            else RedisBuckets(settings.store, rate, settings.burst)
        )

    def take(self, key: str) -> int | None:
        """None when the request may go, else the Retry-After in whole seconds (at least 1)."""
        return _seconds(self.buckets.take(key, 1))


def _seconds(wait: float | None) -> int | None:
    return None if wait is None else max(1, math.ceil(wait))
