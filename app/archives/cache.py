"""A short-lived cache of upstream answers, keyed on the full upstream query (off when ttl is 0).

Hits and misses are counted per archive (app.telemetry.metrics)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

from cachetools import TTLCache

from app.archives.exchange import Origin, Steps, immediately, run, unused
from app.archives.protocol import Archive, ConversationalArchive, Found
from app.core.query import StudyQuery
from app.telemetry import metrics


class CachedArchive:
    """Wraps an Archive; complete answers are kept for `ttl_s` seconds, partial ones never.

    At most `max_entries` answers are held; beyond that the least recently used goes first."""

    def __init__(
        self, inner: Archive, ttl_s: float, max_entries: int = 2048, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self._entries: TTLCache[tuple[Any, ...], Found, float] = TTLCache(max_entries, ttl_s, timer=clock)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe; every search thread uses this one

    @property
    def adapter(self) -> Archive:
        return self.inner.adapter

    def _cached(self, key: tuple[Any, ...], fetch: Callable[[], Found]) -> Found:
        return run(self._cached_steps(key, lambda: immediately(fetch)), unused)

    def _cached_steps(self, key: tuple[Any, ...], fetch: Callable[[], Steps[Found]]) -> Steps[Found]:
        """The answer kept for `key`, else fetched (outside the lock: a slow archive must not hold up the
        answers already cached) and kept when complete."""
        with self._lock:
            found = self._entries.get(key)
        if found is not None:
            metrics.CACHE_HITS.labels(self.name).inc()
            return found
        metrics.CACHE_MISSES.labels(self.name).inc()
        found = yield from fetch()
        if found.incomplete is None:
            with self._lock:
                self._entries[key] = found
        return found

    @property
    def origin(self) -> Origin | None:
        return cast(ConversationalArchive, self.inner).origin

    def studies_steps(self, query: StudyQuery) -> Steps[Found]:
        inner = cast(ConversationalArchive, self.inner)
        return self._cached_steps(("studies", query), lambda: inner.studies_steps(query))

    def series_steps(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Steps[Found]:
        inner = cast(ConversationalArchive, self.inner)
        return self._cached_steps(("series", query, study_uids), lambda: inner.series_steps(query, study_uids))

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
