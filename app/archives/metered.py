"""An Archive wrapper that times every adapter call and counts its failures (app.telemetry.metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from app.archives.exchange import Origin, Steps, immediately, run, unused
from app.archives.protocol import Archive, ArchiveError, ArchiveRetryLater, ConversationalArchive, Found
from app.core.query import StudyQuery
from app.telemetry import metrics


class MeteredArchive:
    """Wraps an adapter: latency per call, errors by kind, partial answers; behaviour unchanged."""

    def __init__(self, inner: Archive) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities

    @property
    def adapter(self) -> Archive:
        return self.inner.adapter

    def _timed(self, operation: str, call: Callable[[], Found]) -> Found:
        return run(self._timed_steps(operation, immediately(call)), unused)

    def _timed_steps(self, operation: str, steps: Steps[Found]) -> Steps[Found]:
        """Latency, errors by kind and partial answers of one call, from its first request to its end."""
        started = time.perf_counter()
        kind = None
        try:
            found = yield from steps
            if found.incomplete is not None:
                kind = "incomplete"
            return found
        except ArchiveRetryLater:
            kind = "retry_later"
            raise
        except ArchiveError:
            kind = "error"
            raise
        except GeneratorExit:  # abandoned at the search's deadline
            kind = "error"
            raise
        except Exception:
            kind = "internal"
            raise
        finally:
            metrics.ARCHIVE_DURATION.labels(self.name, operation).observe(time.perf_counter() - started)
            if kind is not None:
                metrics.ARCHIVE_ERRORS.labels(self.name, operation, kind).inc()

    @property
    def origin(self) -> Origin | None:
        return cast(ConversationalArchive, self.inner).origin

    def studies_steps(self, query: StudyQuery) -> Steps[Found]:
        return self._timed_steps("find_studies", cast(ConversationalArchive, self.inner).studies_steps(query))

    def series_steps(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Steps[Found]:
        inner = cast(ConversationalArchive, self.inner)
        return self._timed_steps("find_series", inner.series_steps(query, study_uids))

    def find_studies(self, query: StudyQuery) -> Found:
        return self._timed("find_studies", lambda: self.inner.find_studies(query))

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Found:
        return self._timed("find_series", lambda: self.inner.find_series(query, study_uids))

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        return self._timed("find_instances", lambda: self.inner.find_instances(study_uid, series_uid))

    def close(self) -> None:
        self.inner.close()
