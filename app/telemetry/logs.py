"""Structured logs: one JSON object per line on standard error, each with its request's id.

The request id lives in a context variable, so the fan-out threads that run a request's archive
queries (their jobs are run in a copy of the request's context) log it and send it upstream.
Nothing here writes a valid NHS number: one found in a message or a traceback is masked, and the
third-party request chatter that carries query keys (urllib3, pynetdicom below WARNING) is dropped.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

from app.core.identity import is_nhs_number
from app.core.instants import utc_instant

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_VALID_ID = re.compile(r"^[\x20-\x7e]{1,128}$")  # printable ASCII, at most 128 characters
_NHS_NUMBER = re.compile(r"(?<![\d.])(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?![\d])")
# Fields an access log line may carry besides the standard ones.
ACCESS_FIELDS = ("method", "route", "status", "duration_ms", "path", "query")
# Libraries whose debug and info records carry upstream URLs or identifiers (query keys).
_CHATTY = ("urllib3", "pynetdicom")


def request_id() -> str | None:
    """The id of the request being served in this context (None outside a request)."""
    return _request_id.get()


def accept_request_id(value: str | None) -> str:
    """The client's X-Request-ID when it is printable ASCII of at most 128 characters, else a new uuid4."""
    if value is not None and _VALID_ID.match(value) and value.strip():
        return value.strip()
    return str(uuid.uuid4())


def bind_request_id(value: str) -> Any:
    """Set the current request id; returns the token that `unbind_request_id` takes."""
    return _request_id.set(value)


def unbind_request_id(token: Any) -> None:
    _request_id.reset(token)


def upstream_headers() -> dict[str, str]:
    """Headers that carry the current request's id to an archive (none outside a request)."""
    current = _request_id.get()
    return {REQUEST_ID_HEADER: current} if current else {}


def redact(text: str) -> str:
    """Mask every valid NHS number (10 digits, optionally spaced 3-3-4, Modulus 11 check) in `text`."""

    def mask(match: re.Match[str]) -> str:
        digits = "".join(match.groups())
        return "[nhs-number]" if is_nhs_number(digits) else match.group(0)

    return _NHS_NUMBER.sub(mask, text)


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, request_id, pid, the access fields when given, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": utc_instant(datetime.fromtimestamp(record.created, timezone.utc)),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or _request_id.get(),
            "pid": record.process or os.getpid(),
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value  # path and query are only ever set under ops.log_patient_data
        if record.exc_info:
            line["exception"] = redact("".join(traceback.format_exception(*record.exc_info)))
        return orjson.dumps(line).decode()


class _NoChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith(_CHATTY)


class JsonHandler(logging.StreamHandler[TextIO]):
    """JSON lines to whatever sys.stderr is when a record is written (tests replace it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(_NoChatter())

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str) -> None:
    """Root logger -> one JsonHandler (added once per process) at `level`."""
    root = logging.getLogger()
    if not any(isinstance(h, JsonHandler) for h in root.handlers):
        root.addHandler(JsonHandler())
    root.setLevel(level)
    from flask.logging import default_handler

    # Flask gives the "app" logger a plain-text handler of its own when it sees none: our records
    # reach the JSON handler through the root logger instead.
    logging.getLogger("app").removeHandler(default_handler)


# gunicorn's own loggers in JSON as well (`python -m app serve`, or `gunicorn -c python:app.ops.gunicorn_conf`).
# Its access log is off: the facade writes its own access lines, without query strings.
GUNICORN_LOGCONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["json"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True, "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False, "qualname": "gunicorn.access"},
    },
    "handlers": {"json": {"()": "app.telemetry.logs.JsonHandler"}},
    "formatters": {},
}
