"""Prometheus metrics of the facade, and their exposition in one or several processes.

With PROMETHEUS_MULTIPROC_DIR set before this module is first imported, every process writes its
values to files in that folder and a scrape of any worker adds them up (prometheus_client's
multiprocess mode): gunicorn's workers then answer /metrics alike. `python -m app serve` sets it
up for itself; see README, Operations. Labels are bounded: the Flask URL rule (never the raw path,
which may hold an NHS number), method, status, trust id, archive operation, error kind.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
# No *_created series: one process or several, the same exposition.
disable_created_metrics()  # type: ignore[no-untyped-call]
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "facade_http_requests",
    "HTTP requests answered, by Flask URL rule, method and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "facade_http_request_duration_seconds",
    "Time to answer an HTTP request, by Flask URL rule and method.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
ARCHIVE_DURATION = Histogram(
    "facade_archive_request_duration_seconds",
    "Time an archive took to answer one adapter call (find_studies, find_series, find_instances).",
    ["archive", "operation"],
    buckets=_LATENCY_BUCKETS,
)
ARCHIVE_ERRORS = Counter(
    "facade_archive_errors",
    "Archive calls that failed (error, retry_later, internal) or returned partial results (incomplete).",
    ["archive", "operation", "kind"],
)
CIRCUIT_STATE = Gauge(
    "facade_archive_circuit_state",
    "Circuit breaker per archive: 0 closed, 1 half-open, 2 open (the worst state among live workers).",
    ["archive"],
    multiprocess_mode="livemax",
)
CACHE_HITS = Counter("facade_archive_cache_hits", "Archive answers served from the cache.", ["archive"])
CACHE_MISSES = Counter("facade_archive_cache_misses", "Archive calls the cache could not answer.", ["archive"])
RATE_LIMITED = Counter(
    "facade_rate_limited", "Requests refused with 429, by what the limit was keyed on (client or address).", ["key"]
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition() -> bytes:
    """The text exposition format: every process's values in multiprocess mode, else this process's."""
    if multiprocess_mode():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def prepare_multiprocess_dir() -> None:
    """Empty the multiprocess folder (before the workers start): values of a previous run must not add up."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms still count)."""
    if multiprocess_mode():
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
