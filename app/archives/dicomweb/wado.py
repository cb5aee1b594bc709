"""WADO-RS over HTTP from a DICOMweb archive, for the gateway: relayed chunk by chunk, never buffered.

`HttpWado` relays the archive's answer as it arrives: status, media type, length and encoding pass
through unchanged, so a 500 MB study costs one chunk of memory. Faults before the first byte become
a RetrievalError with the status the gateway answers; a fault after it ends the stream (the client
sees a short body) and is logged by the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import requests
import urllib3

from app.archives.http import UpstreamAuth, authorization_value, failure_reason, retry_after_seconds
from app.archives.images import Handoff, Retrieval, RetrievalError, StreamAborted, WadoTarget
from app.archives.protocol import ArchiveError

log = logging.getLogger(__name__)

_RELAYED_HEADERS = ("Content-Type", "Content-Length", "Content-Encoding")


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

    def handoff(self, target: WadoTarget, accept_encoding: str | None, params: list[tuple[str, str]]) -> Handoff | None:
        """The resource for nginx to fetch itself (gateway.relay: nginx), or None for the resources this
        class alone can serve (a thumbnail, which falls back to a rendering when the archive has none)."""
        if target.resource == "thumbnail":
            return None
        try:
            authorization = authorization_value(self.auth)
        except ArchiveError as exc:  # an OAuth 2.0 token endpoint that does not answer
            raise RetrievalError(self.name, 502, exc.reason) from None
        query = "&".join(f"{k}={v}" for k, v in params)  # values matched RENDER_PARAMETERS: nothing to escape
        return Handoff(target.path() + (f"?{query}" if query else ""), authorization, accept_encoding or "identity")

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
            raise status_error(self.name, status, response.headers, accept)
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


def status_error(name: str, status: int, headers: Any, accept: str | None) -> RetrievalError:
    """What the gateway answers for an archive's error status (either relay: app.web.accel renders the same
    for nginx)."""
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
