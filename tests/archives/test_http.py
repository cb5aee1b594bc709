"""app/archives/http.py: the one mapping from a failed request to a short reason, and the shared
Session set-up, with failures made by real sockets on loopback (refused, silent, full backlog, not TLS).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from app.archives.dicomweb.wado import HttpWado
from app.archives.http import POOL_MAXSIZE, UpstreamAuth, failure_reason, new_session, retry_after_seconds
from app.archives.images import RetrievalError, WadoTarget
from tests.archives.support import DicomWebService
from tests.infra import free_port

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.3


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture()
def full_port() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new connection attempts (connect timeout)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        waiting = []
        for _ in range(3):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            waiting.append(client)
        time.sleep(0.1)
        try:
            yield port
        finally:
            for client in waiting:
                client.close()


def reason_of(url: str) -> str:
    with new_session() as session:
        try:
            session.get(url, timeout=(TIMEOUT_S, TIMEOUT_S))
        except requests.RequestException as exc:
            return failure_reason(exc, TIMEOUT_S)
    raise AssertionError(f"{url} answered")


def test_refused_connection() -> None:
    assert reason_of(f"http://127.0.0.1:{free_port()}/") == "connection refused or reset"


def test_silent_archive(silent_port: int) -> None:
    assert reason_of(f"http://127.0.0.1:{silent_port}/") == "no answer within 0.3 s"


def test_connection_never_accepted(full_port: int) -> None:
    assert reason_of(f"http://127.0.0.1:{full_port}/") == "connection timed out after 0.3 s"


def test_tls_to_a_plain_http_server(dicomweb_service: DicomWebService) -> None:
    assert reason_of(dicomweb_service.url.replace("http://", "https://")) == "TLS failure"


def test_any_other_failure_is_request_failed() -> None:
    assert reason_of("http://") == "request failed"  # no host: requests refuses the URL itself


def test_reasons_name_no_address(silent_port: int) -> None:
    for url in (f"http://127.0.0.1:{silent_port}/", f"http://127.0.0.1:{free_port()}/"):
        reason = reason_of(url)
        assert "127.0.0.1" not in reason and str(silent_port) not in reason


@pytest.mark.parametrize(
    ("port_fixture", "status", "reason"),
    [
        (None, 502, "connection refused or reset"),
        ("silent_port", 504, "no answer within 0.3 s"),
        ("full_port", 504, "connection timed out after 0.3 s"),
    ],
    ids=["refused", "silent", "never-accepted"],
)
def test_wado_retrieval_failures_use_the_same_reasons(
    request: pytest.FixtureRequest, port_fixture: str | None, status: int, reason: str
) -> None:
    port = request.getfixturevalue(port_fixture) if port_fixture else free_port()
    session = new_session()
    wado = HttpWado(
        "trust",
        f"http://127.0.0.1:{port}/dicom-web",
        session,
        UpstreamAuth({}, session, "trust", 1),
        TIMEOUT_S,
        1024,
        64,
    )
    with pytest.raises(RetrievalError) as raised:
        wado.retrieve(WadoTarget("1.2.3", resource="metadata"), None, None, [])
    session.close()
    assert (raised.value.status, raised.value.reason) == (status, reason)


def test_retry_after_seconds() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 30 ") == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None  # an HTTP date: not used
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("-1") is None


def test_session_pool_and_tls_options() -> None:
    plain = new_session()
    assert plain.verify is True and plain.cert is None
    for scheme in ("http://archive", "https://archive"):
        adapter = plain.get_adapter(scheme)
        assert isinstance(adapter, HTTPAdapter)
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == POOL_MAXSIZE
    assert new_session({"ca_bundle": "/etc/ca.pem"}).verify == "/etc/ca.pem"
    assert new_session({"verify": False}).verify is False
    assert new_session({"client_cert": "c.pem", "client_key": "k.pem"}).cert == ("c.pem", "k.pem")
    assert new_session({"client_cert": "both.pem"}).cert == "both.pem"
