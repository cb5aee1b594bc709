"""Upstream HTTP conversations written once, as data, and two ways to run them.

An adapter writes a query's conversation with an archive as a generator (`Steps`): it yields each
`Request`, is sent the archive's `Reply` (or has `Unanswered` thrown in when none came), and returns
its result. Paging, status handling and parsing live in that one generator; the drivers only move bytes:

- `run(steps, pool)`: one request after another over the adapter's urllib3 pool (`UpstreamPool`),
  in the calling thread. Every adapter call outside a search's fan-out goes this way.
- `Multiplexer`: many conversations at once in the calling thread, on non-blocking sockets: h11
  reads and writes HTTP/1.1, `selectors` waits for whichever archive is ready. A federated search
  asks 8 archives twice each (studies and series together) without a thread per request: the
  thread hand-offs, and the GIL contention of 16 threads waking at once, cost more CPU than the
  exchanges themselves (docs/operations.md, "Performance").

The multiplexer keeps each archive's idle keep-alive connections (`Origin`), follows redirects as the
pool does (at most 30, credentials dropped across origins), decodes gzip and deflate, and speaks TLS
with the archive's own options (CA bundle, verification, client certificate). An archive reached
through an HTTP proxy is not multiplexed: `UpstreamPool.multiplexable` is False and its fan-out jobs
run on threads with `run`.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import selectors
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin, urlsplit

import h11
import urllib3

log = logging.getLogger(__name__)
T = TypeVar("T")
Kind = Literal["tls", "refused", "connect_timeout", "timeout", "failed"]
REDIRECTS = (301, 302, 303, 307, 308)
IDLE_MAX_S = 30.0  # an idle keep-alive connection is reused for this long at most
DNS_TTL_S = 30.0  # an archive's looked-up address is reused this long by new connections
RESOLVING_POLL_S = 0.005  # while a name is being looked up, the loop looks for its answer this often
_Address = tuple[Any, ...]  # one getaddrinfo entry: (family, type, proto, canonname, sockaddr)
MAX_REDIRECTS = 30
_READ_BYTES = 65536
_REASONS: dict[str, str] = {
    "tls": "TLS failure",
    "refused": "connection refused or reset",
    "connect_timeout": "connection timed out after {timeout:g} s",
    "timeout": "no answer within {timeout:g} s",
    "failed": "request failed",
}


@dataclass(frozen=True)
class Request:
    """A GET to an archive: the full URL, the request's own headers, Basic credentials if any, and the
    seconds the blocking driver may wait for it."""

    url: str
    headers: Mapping[str, str]
    basic: tuple[str, str] | None
    timeout_s: float


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive (urllib3.HTTPHeaderDict)
    body: bytes


class Unanswered(Exception):
    """No answer came (or it broke off): `kind` says how; `reason` gives the short, patient-free words
    an OperationOutcome or a log line may show, the one wording for both drivers."""

    def __init__(self, kind: Kind) -> None:
        super().__init__(kind)
        self.kind: Kind = kind

    def reason(self, timeout_s: float) -> str:
        return _REASONS[self.kind].format(timeout=timeout_s)


Steps = Generator[Request, Reply, T]


def run(steps: Steps[T], send: Callable[[Request], Reply]) -> T:
    """Drive a conversation one request at a time: `send` answers each Request with a Reply or raises
    Unanswered (UpstreamPool.exchange)."""
    try:
        request = next(steps)
        while True:
            try:
                reply = send(request)
            except Unanswered as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


def immediately(call: Callable[[], T]) -> Steps[T]:
    """A blocking call as a conversation that asks nothing: wrappers (metering, caching) write their logic
    once, for conversations, and apply it to blocking calls through this (`run(..., unused)`)."""
    return call()
    yield  # never reached: it makes this a generator


def unused(_request: Request) -> Reply:
    raise AssertionError("a conversation made by `immediately` sends no request")


# -- the multiplexer ---------------------------------------------------------------------------


@dataclass
class Origin:
    """How to reach one archive without a pool thread: its TLS context, the headers every request
    carries, and its idle keep-alive connections (shared by every search thread)."""

    base_headers: Mapping[str, str]
    tls: ssl.SSLContext | None = None
    # .netrc's credentials for the archive's own host: sent when the request carries none, never after a
    # redirect to another origin (as urllib3 drops Authorization there).
    credentials: Mapping[str, str] = field(default_factory=dict)
    idle: dict[tuple[str, str, int], list[tuple[socket.socket, h11.Connection, float]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_idle: int = 16
    # An idle connection older than this is closed, not reused: a firewall or NAT that silently drops an idle
    # flow would otherwise turn the next request on it into a timeout charged to the archive.
    idle_max_s: float = IDLE_MAX_S
    addresses: dict[tuple[str, int], tuple[float, _Address]] = field(default_factory=dict)
    lookups: dict[tuple[str, int], Future[list[_Address]]] = field(default_factory=dict)
    resolver: ThreadPoolExecutor | None = None

    def address(self, host: str, port: int) -> _Address | None:
        """Where to connect without waiting for a lookup: an IP literal, or a name's last address (looked
        up in the last DNS_TTL_S; an older one is still used while a fresh lookup runs in the background,
        so that a DNS outage does not stop an archive whose address is known)."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            with self.lock:
                known = self.addresses.get((host, port))
            if known is not None and known[0] <= time.monotonic():
                self.lookup(host, port)  # refresh, not waited for
            return known[1] if known else None
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))

    def lookup(self, host: str, port: int) -> Future[list[_Address]]:
        """The name's lookup: one at a time per name (a search joins the one running), on this archive's
        own resolver thread, so that a name that hangs holds up no other archive's."""
        with self.lock:
            running = self.lookups.get((host, port))
            if running is not None and not running.done():
                return running
            if self.resolver is None:
                self.resolver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dns")
            found = self.resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
            self.lookups[(host, port)] = found
        found.add_done_callback(lambda done: self._looked_up(host, port, done))
        return found

    def _looked_up(self, host: str, port: int, done: Future[list[_Address]]) -> None:
        try:
            addresses = done.result()
        except Exception:  # the exchange waiting for it reports the failure
            return
        if addresses:
            self.remember(host, port, addresses[0])

    def remember(self, host: str, port: int, address: _Address) -> None:
        with self.lock:
            self.addresses[(host, port)] = (time.monotonic() + DNS_TTL_S, address)

    def take(self, key: tuple[str, str, int]) -> tuple[socket.socket, h11.Connection] | None:
        """An idle connection still open (a readable idle socket was closed by the archive, or holds junk)."""
        while True:
            with self.lock:
                stack = self.idle.get(key)
                if not stack:
                    return None
                sock, conn, since = stack.pop()
            if time.monotonic() - since < self.idle_max_s and _quiet(sock):
                conn.start_next_cycle()
                return sock, conn
            sock.close()

    def give_back(self, key: tuple[str, str, int], sock: socket.socket, conn: h11.Connection) -> None:
        with self.lock:
            stack = self.idle.setdefault(key, [])
            if len(stack) < self.max_idle:
                stack.append((sock, conn, time.monotonic()))
                return
        sock.close()

    def close(self) -> None:
        if self.resolver is not None:
            self.resolver.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            stacks, self.idle = list(self.idle.values()), {}
        for stack in stacks:
            for sock, _, _ in stack:
                sock.close()


def _quiet(sock: socket.socket) -> bool:
    try:
        probe = select.poll()
        probe.register(sock, select.POLLIN)
        return not probe.poll(0)
    except (OSError, ValueError):
        return False


class _Exchange:
    """One request in flight on one connection: connect, TLS handshake, send, receive."""

    def __init__(self, origin: Origin, request: Request, redirects: int = 0) -> None:
        self.origin = origin
        self.request = request
        self.redirects = redirects
        try:  # a redirect's Location is the archive's to write: a malformed one fails the request, no more
            parts = urlsplit(request.url)
            self.scheme, self.host = parts.scheme.lower(), parts.hostname or ""
            self.port = parts.port or (443 if self.scheme == "https" else 80)
            self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        except ValueError:
            self.scheme, self.host, self.port, self.target = "", "", 0, "/"  # start(): Unanswered("failed")
        self.key = (self.scheme, self.host, self.port)
        self.sock: socket.socket | None = None
        self.conn: h11.Connection | None = None
        self.resolution: Future[list[_Address]] | None = None
        self.foreign = False  # reached by a redirect to another origin: none of the archive's credentials
        self.state = "connecting"
        self.reused = False
        self.answered = False  # a byte of the answer came: a broken connection is then no reason to retry
        self.outgoing = b""
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    # -- what to wait for ---------------------------------------------------------------
    def start(self, fresh: bool = False) -> None:
        """Send on an idle kept-alive connection to the archive, or connect (`fresh`: always connect)."""
        if self.scheme not in ("http", "https") or not self.host:
            raise Unanswered("failed")
        if self.scheme == "https" and self.origin.tls is None:
            raise Unanswered("tls")
        found = None if fresh else self.origin.take(self.key)
        if found is not None:
            self.sock, self.conn = found
            self.reused = True
            self._begin_sending()
            return
        self._connect()

    def _connect(self) -> None:
        """A new connection: at once when the address is known (an IP literal, or looked up lately);
        otherwise the name is looked up on a resolver thread first (`resolving`), so that a slow DNS
        answer for one archive never holds up the others' exchanges."""
        self.reused = False
        address = self.origin.address(self.host, self.port)
        if address is None:
            self.resolution = self.origin.lookup(self.host, self.port)
            self.state = "resolving"
            return
        self._open(address)

    def resolved(self) -> None:
        """The name lookup has finished: connect to its first address (remembered for the next ones)."""
        assert self.resolution is not None
        try:
            found = self.resolution.result(0)
        except (OSError, UnicodeError, ValueError):  # no such name, or not one (a label over 63 characters)
            raise Unanswered("refused") from None
        if not found:
            raise Unanswered("refused")
        self._open(found[0])

    def _open(self, address: _Address) -> None:
        try:
            sock = socket.socket(address[0], address[1], address[2])
        except OSError:  # e.g. out of file descriptors
            raise Unanswered("failed") from None
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.conn, self.state = sock, h11.Connection(h11.CLIENT), "connecting"
        code = sock.connect_ex(address[4])
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            raise Unanswered("refused")

    def events(self) -> int:
        if self.state in ("connecting", "sending") or self.state == "handshake-write":
            return selectors.EVENT_WRITE
        return selectors.EVENT_READ

    # -- progress -------------------------------------------------------------------------
    def advance(self) -> Reply | None:
        """Do what the socket is ready for; the Reply once the answer is complete."""
        assert self.sock is not None
        if self.state == "connecting":
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise Unanswered("refused")
            if self.scheme == "https":
                assert self.origin.tls is not None
                self.sock = self.origin.tls.wrap_socket(
                    self.sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                self.state = "handshake-read"
                self._handshake()
            else:
                self._begin_sending()
        elif self.state.startswith("handshake"):
            self._handshake()
        elif self.state == "sending":
            self._send()
        else:
            return self._receive()
        return None

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.state = "handshake-read"
            return
        except ssl.SSLWantWriteError:
            self.state = "handshake-write"
            return
        except (ssl.SSLError, ssl.CertificateError):
            raise Unanswered("tls") from None
        except OSError:
            raise Unanswered("refused") from None
        self._begin_sending()

    def _begin_sending(self) -> None:
        assert self.conn is not None
        headers = {**self.origin.base_headers, **self.request.headers}
        if not self.foreign and self.request.basic is None and "Authorization" not in headers:
            headers.update(self.origin.credentials)
        if self.request.basic is not None:
            headers["Authorization"] = urllib3.util.make_headers(basic_auth=":".join(self.request.basic))[
                "authorization"
            ]
        name = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        host = name if self.port == (443 if self.scheme == "https" else 80) else f"{name}:{self.port}"
        try:
            self.outgoing = self.conn.send(
                h11.Request(method="GET", target=self.target, headers=[("Host", host), *headers.items()])
            ) + (self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            raise Unanswered("failed") from None
        self.state = "sending"

    def _send(self) -> None:
        assert self.sock is not None
        try:
            sent = self.sock.send(self.outgoing)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            return
        except ssl.SSLError:
            raise Unanswered("tls") from None
        except OSError:
            raise Unanswered("refused") from None
        self.outgoing = self.outgoing[sent:]
        if not self.outgoing:
            self.state = "receiving"

    def _receive(self) -> Reply | None:
        assert self.sock is not None and self.conn is not None
        try:
            data = self.sock.recv(_READ_BYTES)
            if isinstance(self.sock, ssl.SSLSocket):
                while self.sock.pending():
                    data += self.sock.recv(self.sock.pending())
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return None
        except ssl.SSLError:
            raise Unanswered("tls" if not self.answered else "failed") from None
        except OSError:
            raise Unanswered("failed" if self.status else "refused") from None
        if data:
            self.answered = True
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                raise Unanswered("failed" if self.status else "refused") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                self.status, self.headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                self.body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return self._complete()
            elif isinstance(event, h11.ConnectionClosed):
                raise Unanswered("failed" if self.status else "refused")

    def _complete(self) -> Reply:
        assert self.sock is not None and self.conn is not None
        headers = urllib3.HTTPHeaderDict()
        for name, value in self.headers:
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        body = b"".join(self.body)
        encoding = headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif encoding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
        except zlib.error:
            raise Unanswered("failed") from None
        return Reply(self.status, headers, body)

    def release(self) -> None:
        """After a complete answer (and once no selector watches the socket): keep the connection for
        the next request to this archive, unless either side said it closes."""
        assert self.sock is not None and self.conn is not None
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.origin.give_back(self.key, self.sock, self.conn)
        else:
            self.sock.close()
        self.sock = None

    def retryable(self) -> bool:
        """A kept-alive connection the archive had closed: the request never reached it, send it again."""
        return self.reused and not self.answered

    def redirect(self, reply: Reply) -> _Exchange | None:
        location = reply.headers.get("Location")
        if reply.status not in REDIRECTS or not location or self.redirects >= MAX_REDIRECTS:
            return None
        try:
            url = urljoin(self.request.url, location)
        except ValueError:
            url = ""  # malformed: the next exchange fails with Unanswered("failed")
        moved = _Exchange(self.origin, Request(url, self.request.headers, self.request.basic, self.request.timeout_s))
        if moved.key != self.key or self.foreign:  # another origin: our credentials are not for it (as urllib3)
            private = ("authorization", "cookie", "proxy-authorization")
            headers = {k: v for k, v in self.request.headers.items() if k.lower() not in private}
            moved = _Exchange(self.origin, Request(url, headers, None, self.request.timeout_s))
            moved.foreign = True
        moved.redirects = self.redirects + 1
        return moved

    def abandon(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class _Conversation:
    key: object
    steps: Steps[Any]
    origin: Origin
    deadline: float
    exchange: _Exchange | None = None
    connect_pending: bool = False


@dataclass
class Outcome:
    """How one conversation ended: its result, the exception it raised, or `timed_out` (`connecting`: the
    archive had not accepted the connection by then)."""

    result: Any = None
    error: Exception | None = None
    timed_out: bool = False
    connecting: bool = False  # timed out before the archive accepted the connection


class Multiplexer:
    """Runs conversations concurrently in the calling thread; each has its own deadline (monotonic).

    One run's state is an object with methods, not nested functions: closures that call each other form a
    reference cycle, and a cycle holding a search's parsed answers lives until the cyclic collector finds
    it (hundreds of MB between collections, and each collection walks them)."""

    def run(
        self,
        conversations: list[tuple[object, Steps[Any], Origin, float]],
        on_done: Callable[[object, Outcome], None],
    ) -> None:
        """Drive every conversation to its end or its deadline; `on_done` is called once for each, in
        the order they end (an answer is mapped while slower archives are still being waited for)."""
        with selectors.DefaultSelector() as selector:
            _Run(selector, on_done).drive(conversations)


class _Run:
    def __init__(self, selector: selectors.BaseSelector, on_done: Callable[[object, Outcome], None]) -> None:
        self.selector = selector
        self.on_done = on_done
        self.live: dict[int, _Conversation] = {}
        self.resolving: list[_Conversation] = []  # waiting for a name lookup: no socket yet

    def drive(self, conversations: list[tuple[object, Steps[Any], Origin, float]]) -> None:
        try:
            for key, steps, origin, deadline in conversations:
                self.step(_Conversation(key, steps, origin, deadline), None)
            while self.live or self.resolving:
                nearest = min(c.deadline for c in [*self.live.values(), *self.resolving])
                wait = max(nearest - time.monotonic(), 0.0)
                self.poll(min(wait, RESOLVING_POLL_S) if self.resolving else wait)
                if nearest <= time.monotonic():
                    # What came in while answers were being mapped is read before anyone is declared late:
                    # the facade's own slowness must never count as an archive's timeout.
                    self.poll(0.0)
                    self.expire(time.monotonic())
        finally:  # whatever escaped: no socket left open, no conversation left unfinished
            for conv in [*{id(c): c for c in self.live.values()}.values(), *self.resolving]:
                self.unregister(conv)
                if conv.exchange is not None:
                    conv.exchange.abandon()
                conv.steps.close()
            self.resolving.clear()

    def poll(self, timeout: float) -> None:
        """Advance every exchange whose socket is ready (within `timeout`) or whose name lookup is done."""
        for selected, _ in self.selector.select(timeout):
            conv = selected.data
            if self.live.get(selected.fd) is conv:
                self.ready(conv, selected.fd)
        for conv in [
            c for c in self.resolving if c.exchange and c.exchange.resolution and c.exchange.resolution.done()
        ]:
            self.resolving.remove(conv)
            assert conv.exchange is not None
            try:
                conv.exchange.resolved()
            except Unanswered as exc:
                conv.exchange.abandon()
                self.step(conv, exc)
                continue
            self.register(conv)

    def expire(self, now: float) -> None:
        for conv in [*{id(c): c for c in self.live.values()}.values(), *self.resolving]:
            if conv.deadline <= now:
                # Still connecting (or looking the name up): the archive never took the connection.
                connecting = conv.exchange is not None and conv.exchange.state in ("connecting", "resolving")
                self.finish(conv, Outcome(timed_out=True, connecting=connecting))
                conv.steps.close()

    def ready(self, conv: _Conversation, fd: int) -> None:
        """The conversation's socket is ready: advance its exchange, and the conversation once answered."""
        exchange = conv.exchange
        if exchange is None or exchange.sock is None:
            return
        events = exchange.events()
        try:
            try:
                reply = exchange.advance()
            except Unanswered:
                raise
            except Exception:  # a fault of ours must cost this exchange only, never the other archives'
                log.exception("upstream exchange with %s failed unexpectedly", exchange.host)
                raise Unanswered("failed") from None
        except Unanswered as exc:
            self.unregister(conv)
            exchange.abandon()
            if exchange.retryable():  # the same request again, on a new connection
                self.launch(conv, _Exchange(conv.origin, exchange.request, exchange.redirects), fresh=True)
                return
            self.step(conv, exc)
            return
        if reply is None:
            if exchange.events() != events:
                self.register(conv)
            return
        del self.live[fd]
        self.selector.unregister(fd)
        exchange.release()
        if log.isEnabledFor(logging.DEBUG):  # the line urllib3 logs for the pool's requests
            log.debug(
                '%s://%s:%s "GET %s HTTP/1.1" %s %s',
                *(exchange.scheme, exchange.host, exchange.port, exchange.target),
                *(reply.status, len(reply.body)),
            )
        moved = exchange.redirect(reply)
        if moved is not None:
            self.launch(conv, moved)
            return
        conv.exchange = None
        self.step(conv, reply)

    def step(self, conv: _Conversation, send: Reply | Unanswered | None) -> None:
        """Feed the generator; start its next request, or finish it."""
        try:
            if send is None:
                request = next(conv.steps)
            elif isinstance(send, Unanswered):
                request = conv.steps.throw(send)
            else:
                request = conv.steps.send(send)
        except StopIteration as done:
            self.finish(conv, Outcome(result=done.value))
            return
        except Exception as exc:  # the adapter's verdict (ArchiveError) or its bug: the caller decides
            self.finish(conv, Outcome(error=exc))
            return
        self.launch(conv, _Exchange(conv.origin, request))

    def launch(self, conv: _Conversation, exchange: _Exchange, fresh: bool = False) -> None:
        conv.exchange = exchange
        try:
            exchange.start(fresh)
        except Unanswered as exc:
            exchange.abandon()
            self.step(conv, exc)
            return
        self.register(conv)

    def register(self, conv: _Conversation) -> None:
        assert conv.exchange is not None
        if conv.exchange.state == "resolving":
            self.resolving.append(conv)
            return
        assert conv.exchange.sock is not None
        fd = conv.exchange.sock.fileno()
        if self.live.get(fd) is conv:
            self.selector.modify(fd, conv.exchange.events(), conv)
            return
        self.live[fd] = conv
        self.selector.register(fd, conv.exchange.events(), conv)

    def unregister(self, conv: _Conversation) -> None:
        if conv.exchange is not None and conv.exchange.sock is not None:
            fd = conv.exchange.sock.fileno()
            if self.live.pop(fd, None) is not None:
                self.selector.unregister(fd)

    def finish(self, conv: _Conversation, outcome: Outcome) -> None:
        self.unregister(conv)
        if conv in self.resolving:
            self.resolving.remove(conv)
        if conv.exchange is not None:
            conv.exchange.abandon()
            conv.exchange = None
        self.on_done(conv.key, outcome)
