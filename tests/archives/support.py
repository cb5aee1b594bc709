"""Helpers for the archive tests: a small DICOMweb service and a PIXm service on loopback, each
recording what it is asked.

They are real HTTP servers (werkzeug, tests/infra.serve_wsgi): the clients under test send real
requests through their real sessions. Each DICOMweb answer carries the number of the request, so a
test can tell an answer fetched now from one served by a cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import orjson

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass
class DicomWebService:
    """QIDO-RS and WADO-RS metadata on loopback; `status` 206 makes every answer partial content."""

    url: str = ""  # the DICOMweb base, …/dicom-web
    status: int = 200
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (target, Authorization)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        target = environ["PATH_INFO"] + (f"?{query}" if query else "")
        with self._lock:
            self.requests.append((target, environ.get("HTTP_AUTHORIZATION")))
            number = len(self.requests)
        body = orjson.dumps([{"00100020": {"vr": "LO", "Value": [f"answer-{number}"]}}])
        reason = "200 OK" if self.status == 200 else "206 Partial Content"
        start_response(reason, [("Content-Type", "application/dicom+json"), ("Content-Length", str(len(body)))])
        return [body]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


@dataclass
class PixService:
    """An IHE PIXm service ($ihe-pix) on loopback: every identifier maps to `targets`; `status` other
    than 200 answers that status instead (404: not known; 500: the service failing)."""

    url: str = ""  # the FHIR base
    status: int = 200
    targets: list[tuple[str, str]] = field(default_factory=list)  # (system, value) of every answer
    requests: list[str] = field(default_factory=list)  # the sourceIdentifier asked
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        source = parse_qs(environ.get("QUERY_STRING", "")).get("sourceIdentifier", [""])[0]
        with self._lock:
            self.requests.append(source)
        if not environ["PATH_INFO"].endswith("/Patient/$ihe-pix") or self.status != 200:
            status = 404 if self.status == 200 else self.status
            start_response(f"{status} {HTTPStatus(status).phrase}", [("Content-Length", "0")])
            return [b""]
        body = orjson.dumps(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "targetIdentifier", "valueIdentifier": {"system": system, "value": value}}
                    for system, value in self.targets
                ],
            }
        )
        start_response("200 OK", [("Content-Type", "application/fhir+json"), ("Content-Length", str(len(body)))])
        return [body]
