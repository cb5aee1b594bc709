"""A short-lived cache of upstream answers, keyed on the full upstream query (off when ttl is 0).

Hits and misses are counted per archive (app.telemetry.metrics)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from app.archives.protocol import Archive, Found
from app.core.query import StudyQuery
from app.telemetry import metrics


class CachedArchive:
    """Wraps an Archive; complete answers are kept for `ttl_s` seconds, partial ones never."""

    def __init__(
        self, inner: Archive, ttl_s: float, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.hits = 0
        self.capabilities = inner.capabilities
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, Found]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def adapter(self) -> Archive:
        return self.inner.adapter

    def _cached(self, key: tuple[Any, ...], fetch: Callable[[], Found]) -> Found:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry[0] > now:
                self.hits += 1
                self._entries.move_to_end(key)
                metrics.CACHE_HITS.labels(self.name).inc()
                return entry[1]
        metrics.CACHE_MISSES.labels(self.name).inc()
        found = fetch()
        if found.incomplete is None:
            with self._lock:
                self._entries[key] = (now + self.ttl_s, found)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return found

    def find_studies(self, query: StudyQuery) -> Found:
        return self._cached(("studies", query), lambda: self.inner.find_studies(query))

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Found:
        return self._cached(("series", query, study_uids), lambda: self.inner.find_series(query, study_uids))

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        return self._cached(
            ("instances", study_uid, series_uid), lambda: self.inner.find_instances(study_uid, series_uid)
        )

    def close(self) -> None:
        self.inner.close()
