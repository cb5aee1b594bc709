"""gunicorn settings and hooks for several workers: JSON logs, no query strings in the access log,
and Prometheus multiprocess bookkeeping. `python -m app serve` applies them itself; with plain
gunicorn: `PROMETHEUS_MULTIPROC_DIR=/some/dir gunicorn -c python:app.ops.gunicorn_conf wsgi:app`.

Security headers (app/web/headers.py) are set by the app, so a request gunicorn refuses itself before
the app sees it (400 for a malformed request line or header, 414 for a request line over
limit_request_line, 431 over the header limits, 417, 501, ...) gets gunicorn's fixed HTML page with only
Connection, Content-Type and Content-Length: gunicorn (27.x: `util.write_error`) has no setting or
hook that adds headers to it. Its text may quote the refused request line. The reverse proxy in front
adds them to every answer that is not the application's: docs/security.md ("Behind a reverse proxy")
has the nginx blocks, run as written by tests/fhir/test_proxy_error_headers.py.
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
