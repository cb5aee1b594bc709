"""A real threaded HTTP proxy on loopback that forwards to one upstream and injects faults.

Usage::

    with FaultProxy(orthanc.dicomweb_url) as proxy:
        proxy.set_fault("status", code=503, headers={"Retry-After": "2"})
        requests.get(proxy.url + "/studies?PatientID=P1")   # -> 503
        assert proxy.requests == [("GET", "/dicom-web/studies?PatientID=P1")]

The proxy's URL mirrors the upstream's path prefix: a request for ``proxy.url + X`` is
forwarded to ``upstream + X``; request targets are forwarded byte for byte (no re-quoting).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

FAULT_KINDS = frozenset(
    {
        "none",
        "delay",
        "hang",
        "status",
        "empty-200",
        "no-content",
        "partial-206",
        "bad-json",
        "wrong-content-type",
        "warning-299",
        "truncate",
        "reset",
        "reset-midstream",
    }
)
WARNING_299_TEXT = (
    "The number of results exceeded the maximum supported by the server. Additional results can be requested."
)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
WILDCARD_CHARS = ("*", "?")


@dataclass
class Fault:
    kind: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    remaining: int | None = None  # None: until changed


@dataclass
class Upstream:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    proxy: FaultProxy


class FaultProxy:
    """Loopback HTTP proxy in front of ``upstream`` with run-time switchable faults."""

    def __init__(self, upstream: str, *, upstream_timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.upstream_prefix = parsed.path.rstrip("/")
        self.upstream_timeout = upstream_timeout
        self.requests: list[tuple[str, str]] = []
        self.request_headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._fault = Fault()
        self._only: str | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- addresses -------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Proxy URL with the upstream's path prefix (e.g. ``.../dicom-web``)."""
        return self.base_url + self.upstream_prefix

    # -- control ---------------------------------------------------------
    def set_fault(self, kind: str, *, times: int | None = None, only: str | None = None, **params: Any) -> None:
        """Switch behaviour; ``times=N`` applies the fault to the next N requests only; ``only`` to
        requests whose target contains that text (others pass through and do not count).

        Params: delay ``seconds``; status ``code``, ``headers``, ``body``; bad-json ``body``;
        truncate ``count`` (default 1); reset-midstream ``fraction`` of the body sent before
        closing (default 0.5) and ``rst`` (default False: FIN, so the client deterministically
        sees a short body; True: TCP RST, which may also surface as a connection error).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        with self._lock:
            self._fault = Fault(kind, dict(params), times)
            self._only = only

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self.requests.clear()
            self.request_headers.clear()

    def wildcard_requests(self) -> list[str]:
        """Recorded request targets whose decoded query values contain ``*`` or ``?``."""
        found = []
        for _method, target in list(self.requests):
            query = urllib.parse.urlsplit(target).query
            values = [v for _k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)]
            if any(ch in value for value in values for ch in WILDCARD_CHARS):
                found.append(target)
        return found

    def _take_fault(self, method: str, target: str, headers: dict[str, str]) -> Fault:
        with self._lock:
            self.requests.append((method, target))
            self.request_headers.append(headers)
            fault = self._fault
            if self._only is not None and self._only not in target:
                return Fault()
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = Fault()
                    self._only = None
            return Fault(fault.kind, fault.params, None)

    # -- lifecycle -------------------------------------------------------
    def start(self) -> FaultProxy:
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="faultproxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- upstream --------------------------------------------------------
    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Upstream:
        """Send the request to the upstream verbatim and read the whole answer."""
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=self.upstream_timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"{self.upstream_host}:{self.upstream_port}")
            for name, value in headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            reply = conn.getresponse()
            data = reply.read()
            kept = [(k, v) for k, v in reply.getheaders() if k.lower() not in HOP_BY_HOP]
            return Upstream(reply.status, reply.reason, kept, data)
        finally:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- main dispatch ---------------------------------------------------
    def _handle(self) -> None:
        proxy = self.server.proxy
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k: v for k, v in self.headers.items()}
        fault = proxy._take_fault(self.command, self.path, headers)
        kind, params = fault.kind, fault.params

        if kind == "hang":
            proxy._stopping.wait()
            self._abort()
            return
        if kind == "reset":
            self._abort()
            return
        if kind == "delay":
            if proxy._stopping.wait(float(params.get("seconds", 1.0))):
                self._abort()
                return
        if kind == "status":
            code = int(params.get("code", 500))
            payload = _as_bytes(params.get("body", b""))
            extra = dict(params.get("headers") or {})
            if payload and not any(k.lower() == "content-type" for k in extra):
                extra["Content-Type"] = "application/json"
            self._send(code, list(extra.items()), payload)
            return
        if kind == "empty-200":
            self._send(200, [("Content-Type", "application/dicom+json")], b"[]")
            return
        if kind == "no-content":
            self._send(204, [], b"")
            return
        if kind == "bad-json":
            payload = _as_bytes(params.get("body", b'[{"0020000D": {"vr": "UI", "Value": ['))
            self._send(200, [("Content-Type", "application/dicom+json")], payload)
            return

        if kind == "truncate":
            headers = {k: v for k, v in headers.items() if k.lower() != "accept-encoding"}
        try:
            up = proxy.forward(self.command, self.path, headers, body)
        except (OSError, http.client.HTTPException) as exc:
            self._send(
                502,
                [("Content-Type", "text/plain")],
                f"faultproxy: upstream error {exc!r}".encode(),
            )
            return
        status, out_headers, payload = up.status, up.headers, up.body

        if kind == "partial-206":
            status = 206
        elif kind == "wrong-content-type":
            out_headers = _replace_header(out_headers, "Content-Type", "text/html; charset=utf-8")
        elif kind == "warning-299":
            agent = f"{proxy.upstream_host}:{proxy.upstream_port}"
            out_headers = out_headers + [("Warning", f'299 {agent}: "{WARNING_299_TEXT}"')]
        elif kind == "truncate":
            payload = _truncate_json(payload, int(params.get("count", 1)))
        elif kind == "reset-midstream":
            fraction = float(params.get("fraction", 0.5))
            self._send_partial(status, out_headers, payload, fraction, bool(params.get("rst", False)))
            return
        self._send(status, out_headers, payload)

    # -- writing ---------------------------------------------------------
    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status not in (204, 304) and not (100 <= status < 200):
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(payload)
        self.wfile.flush()

    def _send_partial(
        self,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
        fraction: float,
        rst: bool,
    ) -> None:
        if len(payload) < 2:
            payload = payload + b" " * (2 - len(payload))
        cut = min(max(1, int(len(payload) * fraction)), len(payload) - 1)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[:cut])
        self.wfile.flush()
        if rst:
            self._abort()
            return
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _abort(self) -> None:
        """Close the TCP connection abruptly (RST) without an HTTP answer."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _replace_header(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return kept + [(name, value)]


def _truncate_json(payload: bytes, count: int) -> bytes:
    try:
        data = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(data, list):
        return json.dumps(data[:count]).encode()
    return payload
