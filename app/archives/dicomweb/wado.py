"""Image retrieval (WADO-RS) from a trust archive, for the gateway: relayed chunk by chunk, never buffered.

A retrieval names its object with a validated WadoTarget (DICOM UIDs only, never a path from the
user). `HttpWado` relays a DICOMweb archive's answer as it arrives: status, media type, length and
encoding pass through unchanged, so a 500 MB study costs one chunk of memory. Faults before the
first byte become a RetrievalError with the status the gateway answers; a fault after it ends the
stream (the client sees a short body) and is logged by the caller.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import urllib3

from app.archives.http import UpstreamAuth, failure_reason, retry_after_seconds
from app.core import dicom_json as dj

log = logging.getLogger(__name__)

RESOURCES = ("metadata", "rendered", "thumbnail")
_FRAMES = re.compile(r"^[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,99}\Z")
# The largest viewport edge asked of any renderer (the folder archive's or a DICOMweb archive's): a
# rendered image is a picture on a screen, not a way to make a worker allocate gigabytes.
MAX_VIEWPORT = 4096
_EDGE = r"([1-9][0-9]{0,2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6])"  # 1 to MAX_VIEWPORT
# Query parameters of rendered resources (PS3.18 8.3.5.1), each with the only values passed on. They are
# relayed unescaped, so \Z (not $, which also matches before a final newline) ends each pattern.
RENDER_PARAMETERS = {
    "viewport": re.compile(rf"^{_EDGE},{_EDGE}\Z"),
    "quality": re.compile(r"^([1-9][0-9]?|100)\Z"),
    "window": re.compile(r"^-?[0-9]{1,6}(\.[0-9]{1,4})?,[0-9]{1,6}(\.[0-9]{1,4})?,(linear|linear-exact|sigmoid)\Z"),
}
_RELAYED_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding")


class BadTarget(ValueError):
    """The path does not name a WADO-RS resource (400)."""


@dataclass(frozen=True)
class WadoTarget:
    """One WADO-RS resource of one study: /studies/{study}[/series/{s}[/instances/{i}[/frames/{n}]]][/{resource}]."""

    study: str
    series: str | None = None
    instance: str | None = None
    frames: tuple[int, ...] = ()
    resource: str = ""  # "" (the DICOM objects, or frames' pixel data), metadata, rendered or thumbnail

    @property
    def level(self) -> str:
        return "frames" if self.frames else "instance" if self.instance else "series" if self.series else "study"

    def path(self) -> str:
        parts = ["studies", self.study]
        if self.series:
            parts += ["series", self.series]
        if self.instance:
            parts += ["instances", self.instance]
        if self.frames:
            parts += ["frames", ",".join(map(str, self.frames))]
        if self.resource:
            parts.append(self.resource)
        return "/".join(parts)

    def with_resource(self, resource: str) -> WadoTarget:
        return WadoTarget(self.study, self.series, self.instance, self.frames, resource)


def parse_target(segments: list[str]) -> WadoTarget:
    """`studies/{uid}/...` split on '/', checked segment by segment; BadTarget says what is wrong."""
    names = ("studies", "series", "instances", "frames")
    values: dict[str, str] = {}
    position = 0
    resource = ""
    i = 0
    while i < len(segments):
        segment = segments[i]
        if segment in RESOURCES and i == len(segments) - 1 and values:
            resource = segment
            break
        if position >= len(names) or segment != names[position]:
            expected = " or ".join(
                [f"'{n}'" for n in names[position : position + 1]] + ([f"'{r}'" for r in RESOURCES] if values else [])
            )
            raise BadTarget(f"unexpected path segment {segment[:40]!r}: expected {expected or 'the end of the path'}")
        if i + 1 >= len(segments) or not segments[i + 1]:
            raise BadTarget(f"'{segment}' must be followed by {'frame numbers' if segment == 'frames' else 'a UID'}")
        value = segments[i + 1]
        if segment == "frames":
            if not _FRAMES.match(value):
                raise BadTarget("frame numbers are a comma-separated list of positive integers (at most 100)")
        elif not dj.is_uid(value):
            raise BadTarget(f"{value[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
        values[segment] = value
        position += 1
        i += 2
    if "studies" not in values:
        raise BadTarget("the path must start with studies/{StudyInstanceUID}")
    frames = tuple(int(n) for n in values["frames"].split(",")) if "frames" in values else ()
    if frames and resource in ("metadata",):
        raise BadTarget("frames have no metadata resource")
    return WadoTarget(values["studies"], values.get("series"), values.get("instances"), frames, resource)


@dataclass
class Retrieval:
    """An archive's answer being relayed: status and entity headers now, the body as it comes."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=lambda: None)


class RetrievalError(Exception):
    """No byte can be relayed: the status and a short, patient-free reason for the OperationOutcome."""

    def __init__(self, archive: str, status: int, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{archive}: {reason}")
        self.archive = archive
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class StreamAborted(Exception):
    """The archive's answer broke off after the first byte was relayed (the caller logs it)."""


class ImageSource(Protocol):
    """Where a trust's images come from."""

    name: str

    def retrieve(
        self,
        target: WadoTarget,
        accept: str | None,
        accept_encoding: str | None,
        params: list[tuple[str, str]],
        request_id: str | None = None,
    ) -> Retrieval: ...


class HttpWado:
    """WADO-RS over HTTP: one pooled session (the archive's own, with its credentials and TLS)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        session: requests.Session,
        auth: UpstreamAuth,
        timeout_s: float,
        chunk_bytes: int,
        thumbnail_px: int,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.auth = auth
        self.timeout_s = timeout_s
        self.chunk_bytes = chunk_bytes
        self.thumbnail_px = thumbnail_px

    def retrieve(
        self,
        target: WadoTarget,
        accept: str | None,
        accept_encoding: str | None,
        params: list[tuple[str, str]],
        request_id: str | None = None,
    ) -> Retrieval:
        if target.resource == "thumbnail":
            try:
                return self._get(target, accept, accept_encoding, params, request_id)
            except RetrievalError as exc:
                if exc.status not in (400, 404, 501):
                    raise
            # Many archives (Orthanc among them) offer /rendered but not /thumbnail: a small rendering.
            size = f"{self.thumbnail_px},{self.thumbnail_px}"
            rendered = [(k, v) for k, v in params if k != "viewport"] + [("viewport", size)]
            return self._get(target.with_resource("rendered"), accept, accept_encoding, rendered, request_id)
        return self._get(target, accept, accept_encoding, params, request_id)

    def _get(
        self,
        target: WadoTarget,
        accept: str | None,
        accept_encoding: str | None,
        params: list[tuple[str, str]],
        request_id: str | None,
    ) -> Retrieval:
        headers = {"Accept-Encoding": accept_encoding or "identity", **self.auth.headers()}
        if accept:
            headers["Accept"] = accept
        if request_id:
            headers["X-Request-ID"] = request_id
        query = "&".join(f"{k}={v}" for k, v in params)  # values matched RENDER_PARAMETERS: nothing to escape
        url = f"{self.base_url}/{target.path()}" + (f"?{query}" if query else "")
        try:
            response = self.session.get(
                url, headers=headers, auth=self.auth.basic(), stream=True, timeout=(self.timeout_s, self.timeout_s)
            )
        except requests.RequestException as exc:
            # A timeout is the gateway's 504 (Gateway Timeout); any other failure to reach the archive a 502.
            status = 504 if isinstance(exc, requests.exceptions.Timeout) else 502
            raise RetrievalError(self.name, status, failure_reason(exc, self.timeout_s)) from None
        status = response.status_code
        if status not in (200, 206):
            response.close()
            raise _status_error(self.name, status, response.headers, accept)
        relayed = {k: response.headers[k] for k in _RELAYED_HEADERS if k in response.headers}
        return Retrieval(status, relayed, self._chunks(response), response.close)

    def _chunks(self, response: requests.Response) -> Iterator[bytes]:
        try:
            # The raw stream: bytes exactly as the archive sent them (still encoded, if it encoded them).
            yield from response.raw.stream(self.chunk_bytes, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StreamAborted(f"{self.name}: the archive's answer broke off ({type(exc).__name__})") from None
        finally:
            response.close()


def _status_error(name: str, status: int, headers: Any, accept: str | None) -> RetrievalError:
    if status == 404:
        return RetrievalError(name, 404, "the archive does not hold this object")
    if status == 406 or (status == 400 and accept):
        return RetrievalError(name, 406, "the archive cannot provide the requested media type or transfer syntax")
    if status in (429, 503):
        wait = retry_after_seconds(headers.get("Retry-After"))
        return RetrievalError(name, 503, f"the archive is busy (HTTP {status})", wait if wait is not None else 5.0)
    if status in (401, 403):
        return RetrievalError(name, 502, f"HTTP {status}: the archive refused the facade's credentials")
    if status in (400, 501):
        return RetrievalError(name, 501, f"the archive does not offer this resource (HTTP {status})")
    return RetrievalError(name, 502, f"HTTP {status} from the archive")
