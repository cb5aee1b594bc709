"""app/archives/exchange.py: conversations run by the blocking driver and by the multiplexer give the same
answers, over real sockets on loopback: keep-alive reuse, an idle connection the server closed, gzip,
redirects (credentials dropped across origins), TLS with the archive's CA bundle, refusals and deadlines.
"""

from __future__ import annotations

import gc
import gzip
import http.server
import socket
import ssl
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from app.archives.dicomweb.qido import DicomWebArchive
from app.archives.exchange import Multiplexer, Outcome, Request, Steps, Unanswered, run
from app.archives.http import UpstreamPool, new_session
from app.archives.protocol import ArchiveError, Found
from app.core.query import PatientKey, StudyQuery
from tests.infra import free_port

pytestmark = pytest.mark.integration


@dataclass
class Behaviour:
    gzip: bool = False
    close: bool = False  # answer with Connection: close
    redirect_to: str | None = None  # 302 to this URL for /moved
    delay_s: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)  # by path, instead of delay_s
    connections: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization)


def _server(behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            behaviour.connections += 1
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            behaviour.seen.append((self.path, self.headers.get("Authorization")))
            with behaviour.lock:
                behaviour.in_flight += 1
                behaviour.most_in_flight = max(behaviour.most_in_flight, behaviour.in_flight)
            time.sleep(behaviour.delays.get(self.path, behaviour.delay_s))
            with behaviour.lock:
                behaviour.in_flight -= 1
            if self.path.startswith("/moved") and behaviour.redirect_to:
                self.send_response(302)
                self.send_header("Location", behaviour.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = orjson.dumps([{"00100020": {"vr": "LO", "Value": [self.path]}}])
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            if behaviour.gzip:
                body = gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            if behaviour.close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 64  # a backlog of 5 would drop simultaneous connections' SYNs

    server = Server(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture()
def base(behaviour: Behaviour) -> Iterator[str]:
    server, url = _server(behaviour)
    yield url
    server.shutdown()
    server.server_close()


def _get(url: str, headers: dict[str, str] | None = None) -> Steps[tuple[int, bytes, str]]:
    reply = yield Request(url, headers or {}, None, 2.0)
    return reply.status, reply.body, reply.headers.get("Content-Type", "")


def _pages(url: str, count: int) -> Steps[list[bytes]]:
    bodies = []
    for page in range(count):
        reply = yield Request(f"{url}/page{page}", {}, None, 2.0)
        bodies.append(reply.body)
    return bodies


def _multiplexed(pool: UpstreamPool, jobs: list[Steps[Any]], deadline_s: float = 2.0) -> list[Outcome]:
    outcomes: dict[object, Outcome] = {}
    deadline = time.monotonic() + deadline_s
    Multiplexer().run([(i, job, pool.origin, deadline) for i, job in enumerate(jobs)], outcomes.__setitem__)
    return [outcomes[i] for i in range(len(jobs))]


def test_both_drivers_give_the_same_answers(base: str, behaviour: Behaviour) -> None:
    pool = UpstreamPool(base, requests.Session())
    blocking = [run(_get(f"{base}/a{i}"), pool.exchange) for i in range(3)]
    multiplexed = [o.result for o in _multiplexed(pool, [_get(f"{base}/a{i}") for i in range(3)])]
    assert blocking == multiplexed
    assert [b[0] for b in blocking] == [200, 200, 200] and blocking[0][2] == "application/dicom+json"
    assert orjson.loads(blocking[2][1]) == [{"00100020": {"vr": "LO", "Value": ["/a2"]}}]


def test_many_conversations_are_in_flight_at_once(base: str, behaviour: Behaviour) -> None:
    behaviour.delay_s = 0.2
    pool = UpstreamPool(base, requests.Session())
    outcomes = _multiplexed(pool, [_get(f"{base}/s{i}") for i in range(8)])
    assert all(o.result[0] == 200 for o in outcomes)
    assert behaviour.most_in_flight == 8  # the server held all eight requests at the same time
    assert behaviour.connections == 8


def test_a_conversation_pages_over_one_kept_alive_connection(base: str, behaviour: Behaviour) -> None:
    pool = UpstreamPool(base, requests.Session())
    (outcome,) = _multiplexed(pool, [_pages(base, 4)])
    assert [orjson.loads(b)[0]["00100020"]["Value"][0] for b in outcome.result] == [f"/page{i}" for i in range(4)]
    assert behaviour.connections == 1
    _multiplexed(pool, [_pages(base, 2)])  # the next search takes the idle connection
    assert behaviour.connections == 1


def test_an_idle_connection_the_archive_closed_is_not_an_error(base: str, behaviour: Behaviour) -> None:
    pool = UpstreamPool(base, requests.Session())
    _multiplexed(pool, [_get(f"{base}/first")])
    # The server forgets the connection the pool keeps (as a keep-alive timeout does).
    for sock, _, _ in next(iter(pool.origin.idle.values())):
        sock.shutdown(socket.SHUT_RD)
    (outcome,) = _multiplexed(pool, [_get(f"{base}/second")])
    assert outcome.error is None and outcome.result[0] == 200


def test_connection_close_is_honoured(base: str, behaviour: Behaviour) -> None:
    behaviour.close = True
    pool = UpstreamPool(base, requests.Session())
    (outcome,) = _multiplexed(pool, [_pages(base, 3)])
    assert len(outcome.result) == 3 and behaviour.connections == 3
    assert not any(pool.origin.idle.values())


def test_gzip_answers_are_decoded(base: str, behaviour: Behaviour) -> None:
    behaviour.gzip = True
    pool = UpstreamPool(base, requests.Session())
    (outcome,) = _multiplexed(pool, [_get(f"{base}/zipped")])
    assert orjson.loads(outcome.result[1]) == [{"00100020": {"vr": "LO", "Value": ["/zipped"]}}]


def test_redirects_are_followed_and_credentials_stay_with_their_origin(base: str, behaviour: Behaviour) -> None:
    other = Behaviour()
    server, other_base = _server(other)
    try:
        behaviour.redirect_to = "/here"
        pool = UpstreamPool(base, requests.Session())
        (same,) = _multiplexed(pool, [_get(f"{base}/moved", {"Authorization": "Bearer archive-token"})])
        assert same.result[0] == 200 and behaviour.seen[-1] == ("/here", "Bearer archive-token")
        behaviour.redirect_to = f"{other_base}/elsewhere"
        (away,) = _multiplexed(pool, [_get(f"{base}/moved", {"Authorization": "Bearer archive-token"})])
        assert away.result[0] == 200 and other.seen == [("/elsewhere", None)]
    finally:
        server.shutdown()
        server.server_close()


def test_refused_and_silent_archives(behaviour: Behaviour) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    pool = UpstreamPool(refused, requests.Session())
    with pytest.raises(Unanswered) as raised:
        run(_get(f"{refused}/x"), pool.exchange)
    assert raised.value.reason(1) == "connection refused or reset"
    (outcome,) = _multiplexed(pool, [_get(f"{refused}/x")])
    assert isinstance(outcome.error, Unanswered) and outcome.error.kind == "refused"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        (outcome,) = _multiplexed(UpstreamPool(url, requests.Session()), [_get(f"{url}/x")], deadline_s=0.3)
        assert outcome.timed_out and time.monotonic() - began < 2.0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_the_archives_ca_bundle(certificate: tuple[Path, Path], behaviour: Behaviour) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server, url = _server(behaviour, context)
    try:
        trusted = UpstreamPool(url, new_session({"ca_bundle": str(cert)}))
        (outcome,) = _multiplexed(trusted, [_pages(url, 2)])
        assert outcome.error is None and len(outcome.result) == 2
        assert run(_get(f"{url}/blocking"), trusted.exchange)[0] == 200
        untrusted = UpstreamPool(url, new_session())  # the system's CAs do not know this certificate
        (refused,) = _multiplexed(untrusted, [_get(f"{url}/x")])
        assert isinstance(refused.error, Unanswered) and refused.error.reason(1) == "TLS failure"
    finally:
        server.shutdown()
        server.server_close()


def test_the_adapters_conversations_are_its_calls(base: str, behaviour: Behaviour) -> None:
    archive = DicomWebArchive("t", f"{base}/dicom-web", timeout_s=2)
    query = StudyQuery(patient=PatientKey("P1", "NHS"))
    called = archive.find_studies(query)
    (outcome,) = _multiplexed(archive.pool, [archive.studies_steps(query)])
    assert isinstance(outcome.result, Found) and isinstance(called, Found)
    assert behaviour.seen[0][0] == behaviour.seen[1][0]  # the same request, whichever driver
    assert outcome.result.datasets[0].keys() == called.datasets[0].keys()
    archive.close()


def test_an_archive_error_ends_only_its_own_conversation(base: str) -> None:
    refused = DicomWebArchive("down", f"http://127.0.0.1:{free_port()}/dicom-web", timeout_s=2)
    up = DicomWebArchive("up", f"{base}/dicom-web", timeout_s=2)
    query = StudyQuery(patient=PatientKey("P1", "NHS"))
    outcomes: dict[object, Outcome] = {}
    deadline = time.monotonic() + 2
    assert refused.origin is not None and up.origin is not None
    Multiplexer().run(
        [
            ("down", refused.studies_steps(query), refused.origin, deadline),
            ("up", up.studies_steps(query), up.origin, deadline),
        ],
        outcomes.__setitem__,
    )
    assert isinstance(outcomes["down"].error, ArchiveError)
    assert outcomes["down"].error.reason == "connection refused or reset"
    assert isinstance(outcomes["up"].result, Found) and outcomes["up"].result.datasets


def test_a_finished_run_holds_nothing_for_the_cyclic_collector(base: str) -> None:
    """A search's answers are freed by reference counting as soon as the caller lets them go: a run leaves
    no reference cycle behind holding its `on_done` (the fan-out's, which holds the whole search's answers)
    alive until a collection."""

    class Search:
        def __init__(self) -> None:
            self.answers: list[Found] = []

        def done(self, _key: object, outcome: Outcome) -> None:
            self.answers.append(outcome.result)

    archive = DicomWebArchive("t", f"{base}/dicom-web", timeout_s=2)
    assert archive.origin is not None
    query = StudyQuery(patient=PatientKey("P1", "NHS"))
    gc.collect()
    gc.disable()
    try:
        search = Search()
        deadline = time.monotonic() + 2
        Multiplexer().run([(i, archive.studies_steps(query), archive.origin, deadline) for i in range(3)], search.done)
        answers = [weakref.ref(found) for found in search.answers]
        assert len(answers) == 3 and all(answer() is not None for answer in answers)
        del search
        assert [answer() for answer in answers] == [None, None, None]
    finally:
        gc.enable()
        archive.close()


def test_a_host_name_is_looked_up_off_the_loop_and_remembered(base: str, behaviour: Behaviour) -> None:
    """A name (not an IP literal) is looked up on a resolver thread while the other exchanges go on; its
    address is then reused by new connections for a while (DNS_TTL_S)."""
    named = base.replace("127.0.0.1", "localhost")
    behaviour.close = True  # every request needs a new connection
    pool = UpstreamPool(named, requests.Session())
    (first,) = _multiplexed(pool, [_get(f"{named}/by-name")])
    assert first.error is None and first.result[0] == 200
    port = int(named.rsplit(":", 1)[1])
    assert ("localhost", port) in pool.origin.addresses
    assert pool.origin.address("localhost", port) is not None  # the next connection needs no lookup
    (second,) = _multiplexed(pool, [_pages(named, 2)])
    assert second.error is None and len(second.result) == 2 and behaviour.connections == 3


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.1:99999/x", "request failed"),
        ("http://[::1/x", "request failed"),
        ("ftp://127.0.0.1/x", "request failed"),
        (f"http://{'a' * 70}.example/x", "connection refused or reset"),  # no such name can exist: as unknown
    ],
)
def test_a_malformed_redirect_fails_the_request_and_nothing_else(
    base: str, behaviour: Behaviour, location: str, reason: str
) -> None:
    behaviour.redirect_to = location
    pool = UpstreamPool(base, requests.Session())
    moved, fine = _multiplexed(pool, [_get(f"{base}/moved"), _get(f"{base}/fine")])
    assert isinstance(moved.error, Unanswered) and moved.error.reason(1) == reason
    assert fine.error is None and fine.result[0] == 200


def test_an_answer_that_came_in_time_is_read_before_anyone_is_declared_late(base: str, behaviour: Behaviour) -> None:
    """Mapping one answer in `on_done` may hold the loop past another conversation's deadline: what that
    archive sent in time is still read, not counted as its timeout (which its circuit breaker would hear)."""
    behaviour.delays = {"/first": 0.05, "/second": 0.15}  # the second answer comes while the first is mapped
    pool = UpstreamPool(base, requests.Session())
    began = time.monotonic()
    ended: dict[object, Outcome] = {}

    def done(key: object, outcome: Outcome) -> None:
        ended[key] = outcome
        if key == "first":
            time.sleep(0.4)  # a large answer being mapped

    Multiplexer().run(
        [
            ("first", _get(f"{base}/first"), pool.origin, began + 2),
            ("second", _get(f"{base}/second"), pool.origin, began + 0.3),
        ],
        done,
    )
    assert not ended["second"].timed_out and ended["second"].result[0] == 200


def test_a_connection_never_accepted_is_a_connect_timeout(behaviour: Behaviour) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        waiting = []
        for _ in range(3):  # the backlog is full: the kernel drops new connection attempts
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(server.getsockname())
            waiting.append(client)
        time.sleep(0.1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        try:
            (outcome,) = _multiplexed(UpstreamPool(url, requests.Session()), [_get(f"{url}/x")], deadline_s=0.3)
        finally:
            for client in waiting:
                client.close()
    assert outcome.timed_out and outcome.connecting


def test_netrc_credentials_stay_with_the_archives_host(
    base: str, behaviour: Behaviour, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.netrc's login for the archive is sent to the archive, and not to the host a redirect names (as
    urllib3 does for the pool's requests)."""
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login archuser password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    other = Behaviour()
    server, other_base = _server(other)
    try:
        pool = UpstreamPool(base, requests.Session())
        (own,) = _multiplexed(pool, [_get(f"{base}/own")])
        assert own.result[0] == 200 and behaviour.seen[-1][1] == "Basic YXJjaHVzZXI6czNjcmV0"
        behaviour.redirect_to = other_base.replace("127.0.0.1", "localhost") + "/elsewhere"
        (away,) = _multiplexed(pool, [_get(f"{base}/moved")])
        assert away.result[0] == 200 and other.seen == [("/elsewhere", None)]
        assert run(_get(f"{base}/moved"), pool.exchange)[0] == 200  # the pool agrees
        assert other.seen[-1] == ("/elsewhere", None)
    finally:
        server.shutdown()
        server.server_close()


def test_an_idle_connection_past_its_age_is_not_reused(base: str, behaviour: Behaviour) -> None:
    pool = UpstreamPool(base, requests.Session())
    pool.origin.idle_max_s = 0.2
    _multiplexed(pool, [_get(f"{base}/first")])
    _multiplexed(pool, [_get(f"{base}/soon")])
    assert behaviour.connections == 1  # reused while young
    time.sleep(0.3)
    (late,) = _multiplexed(pool, [_get(f"{base}/later")])
    assert late.result[0] == 200 and behaviour.connections == 2
