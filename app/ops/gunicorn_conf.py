"""gunicorn settings and hooks for several workers: JSON logs, no query strings in the access log,
and Prometheus multiprocess bookkeeping. `python -m app serve` applies them itself; with plain
gunicorn: `PROMETHEUS_MULTIPROC_DIR=/some/dir gunicorn -c python:app.ops.gunicorn_conf wsgi:app`.
"""

from __future__ import annotations

from typing import Any

from app.telemetry.logs import GUNICORN_LOGCONFIG
from app.telemetry.metrics import prepare_multiprocess_dir, worker_exited

logconfig_dict = GUNICORN_LOGCONFIG
accesslog = None  # the facade writes its own access lines (JSON, no query string)


def on_starting(_server: Any) -> None:
    """In the master, before any worker: a multiprocess folder emptied of a previous run's values."""
    prepare_multiprocess_dir()


def child_exit(_server: Any, worker: Any) -> None:
    worker_exited(worker.pid)
