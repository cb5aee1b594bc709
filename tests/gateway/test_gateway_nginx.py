"""Images at archive speed (gateway.relay: nginx): real nginx in front of the facade, a real Orthanc that
asks for HTTP basic auth behind a fault-injecting proxy. The facade checks and audits, then answers
X-Accel-Redirect; nginx fetches the archive's answer itself with the archive's own credentials, and
the client gets what it would get from the archive directly (or from the Python relay, for errors).

nginx is deploy/nginx.template.conf rendered as in tests/deploy/ (both facade "instances" are the one
loopback server here), with the include `python -m app nginx-config` prints for this configuration.
"""

from __future__ import annotations

import copy
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
import yaml
from smart_tokens import system_token

from app import create_app
from app.settings import settings_from_document
from app.web import accel
from app.web.components import components
from tests.deploy.native import Nginx, ProtectedOrthanc
from tests.deploy.support import render
from tests.gateway.multipart import parts
from tests.infra import free_port, serve_wsgi
from tests.infra.faultproxy import FaultProxy
from tests.infra.orthanc import OrthancServer

pytestmark = pytest.mark.integration
TRUST = "mft"  # its archive behind the fault-injecting proxy
STRAIGHT = "bolton"  # the same archive, no proxy in between: what nginx relays is what the archive sends
ARCHIVE_USER = "facade"
ARCHIVE_PASSWORD = "mft-archive-" + os.urandom(6).hex()
BASIC = requests.auth._basic_auth_str(ARCHIVE_USER, ARCHIVE_PASSWORD)
# Hop-by-hop and per-connection headers, which differ between any two servers.
CONNECTION_HEADERS = {"date", "server", "connection", "keep-alive", "transfer-encoding"}


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> dict[str, Any]:
    return next(
        p for p in manifest["patients"] if p["nhs_number"] == manifest["facts"]["multi_trust_patient"]["nhs_number"]
    )


@pytest.fixture(scope="module")
def study(patient: dict[str, Any]) -> str:
    return str(next(s["study_uid"] for s in patient["studies"] if s["trusts"] == [TRUST]))


@pytest.fixture(scope="module")
def archive(demo_data: Path, study: str) -> Iterator[OrthancServer]:
    files = [
        f
        for f in sorted((demo_data / TRUST).rglob("*.dcm"))
        if pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID == study
    ]
    with ProtectedOrthanc("MFTNGX", ARCHIVE_USER, ARCHIVE_PASSWORD) as orthanc:
        orthanc.upload(files)
        yield orthanc


@pytest.fixture(scope="module")
def document(config_document: dict[str, Any], archive: OrthancServer, proxy: FaultProxy) -> dict[str, Any]:
    doc = copy.deepcopy(config_document)
    for trust in doc["trusts"]:
        if trust["id"] == TRUST:
            trust["archive"] = {
                "type": "dicomweb",
                "url": proxy.url,
                "timeout_s": 2,
                "auth": {"type": "basic", "username": ARCHIVE_USER, "password": ARCHIVE_PASSWORD},
            }
        if trust["id"] == STRAIGHT:
            trust["archive"] = {
                "type": "dicomweb",
                "url": archive.dicomweb_url,
                "timeout_s": 5,
                "auth": {"type": "basic", "username": ARCHIVE_USER, "password": ARCHIVE_PASSWORD},
            }
    doc["gateway"] = {"owner_cache_s": 0, "relay": "nginx"}
    return doc


@pytest.fixture(scope="module")
def gateway_app(document: dict[str, Any], demo_data: Path) -> Any:
    return create_app(settings_from_document(document, demo_data, "tests/gateway"))


@pytest.fixture(scope="module")
def facade(gateway_app: Any) -> Iterator[str]:
    with serve_wsgi(gateway_app) as origin:
        yield origin


@pytest.fixture(scope="module")
def nginx(facade: str, document: dict[str, Any], demo_data: Path) -> Iterator[Nginx]:
    """nginx with the deployed template and the include that the CLI prints for this configuration."""
    workdir = Path(tempfile.mkdtemp(prefix="gateway-nginx-")) / "nginx"
    (workdir / "gateway").mkdir(parents=True)
    config = workdir.parent / "facade.yaml"
    config.write_text(yaml.safe_dump({**document, "patient_xref": str(demo_data / "xref.csv")}))
    printed = subprocess.run(
        [sys.executable, "-m", "app", "nginx-config", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    (workdir / "gateway" / "gateway.conf").write_text(printed.stdout)
    port = free_nginx_port = free_port()
    facade_port = facade.rsplit(":", 1)[1]
    values = {
        "LISTEN_PORT": str(free_nginx_port),
        "FACADE_A_HOST": "127.0.0.1",
        "FACADE_A_PORT": facade_port,
        "FACADE_B_HOST": "127.0.0.1",
        "FACADE_B_PORT": facade_port,
    }
    server = Nginx(workdir, port, render.render(render.NGINX_TEMPLATE, values))
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def system(gateway_app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {system_token(gateway_app)}", "Accept-Encoding": "identity"}


def direct(archive: OrthancServer, path: str, **headers: str) -> requests.Response:
    sent = {"Accept-Encoding": "identity", "Authorization": BASIC, **headers}
    return requests.get(f"{archive.dicomweb_url}/{path}", headers=sent, timeout=10)


def sop_of(archive: OrthancServer, study: str) -> tuple[str, str]:
    instances = direct(archive, f"studies/{study}/instances").json()
    return instances[0]["0020000E"]["Value"][0], instances[0]["00080018"]["Value"][0]


def comparable(response: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in CONNECTION_HEADERS}


def boundless(content_type: str) -> list[str]:
    return sorted(p.strip() for p in content_type.split(";") if not p.strip().startswith("boundary="))


def relayed_by_nginx(nginx: Nginx, path: str, trust: str = TRUST) -> bool:
    """The access log names the internal location nginx served the request from ($uri after the redirect)."""
    uri = f"{accel.RELAY_PREFIX}{trust}/{path.split('?')[0]}"
    return any(line.endswith(uri) for line in nginx.access_lines())


def outcome(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/fhir+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


# ----------------------------------------------------------------------------- the bytes


def test_retrievals_through_nginx_equal_direct_ones(
    nginx: Nginx, system: dict[str, str], archive: OrthancServer, study: str
) -> None:
    series, sop = sop_of(archive, study)
    for path in (
        f"studies/{study}",
        f"studies/{study}/series/{series}",
        f"studies/{study}/series/{series}/instances/{sop}",
        f"studies/{study}/series/{series}/instances/{sop}/frames/1",
        f"studies/{study}/metadata",
        f"studies/{study}/series/{series}/instances/{sop}/rendered",
        f"studies/{study}/series/{series}/instances/{sop}/rendered?viewport=64,64",
    ):
        via = requests.get(f"{nginx.origin}/dicomweb/{STRAIGHT}/{path}", headers=system, timeout=10)
        straight = direct(archive, path)
        assert (via.status_code, straight.status_code) == (200, 200), (path, via.text[:300])
        kind = straight.headers["Content-Type"]
        if kind.startswith("multipart/"):  # each answer has a boundary of its own: the parts are the bytes
            assert parts(via.headers["Content-Type"], via.content) == parts(kind, straight.content), path
            assert boundless(via.headers["Content-Type"]) == boundless(kind)
        else:
            assert via.content == straight.content, path
            assert via.headers["Content-Type"] == kind
        for name in ("Content-Length", "Content-Encoding"):
            assert via.headers.get(name) == straight.headers.get(name), (path, name)
        assert relayed_by_nginx(nginx, path, STRAIGHT), path


def test_nginx_asks_the_archive_itself(
    nginx: Nginx, system: dict[str, str], fresh_proxy: FaultProxy, study: str
) -> None:
    """No User-Agent: nginx's request, not the facade's (requests always sends one)."""
    response = requests.get(f"{nginx.origin}/dicomweb/{TRUST}/studies/{study}/metadata", headers=system, timeout=10)
    assert response.status_code == 200
    owner, wado = fresh_proxy.request_headers
    assert owner["User-Agent"].startswith("python-requests") and "User-Agent" not in wado


def test_an_encoded_answer_is_relayed_as_the_archive_encoded_it(
    nginx: Nginx, system: dict[str, str], archive: OrthancServer, study: str
) -> None:
    path = f"studies/{study}/metadata"
    asked = {**system, "Accept-Encoding": "gzip"}
    via = requests.get(f"{nginx.origin}/dicomweb/{STRAIGHT}/{path}", headers=asked, timeout=10, stream=True)
    straight = direct(archive, path, **{"Accept-Encoding": "gzip"})
    assert via.status_code == 200 and relayed_by_nginx(nginx, path, STRAIGHT)
    assert via.headers.get("Content-Encoding") == straight.headers.get("Content-Encoding") == "gzip"
    assert (
        via.raw.read()
        == requests.get(
            f"{archive.dicomweb_url}/{path}",
            headers={"Accept-Encoding": "gzip", "Authorization": BASIC},
            timeout=10,
            stream=True,
        ).raw.read()
    )


def test_the_client_gets_the_python_relays_headers(
    nginx: Nginx, facade: str, system: dict[str, str], study: str
) -> None:
    """The facade reached directly (no relay key) relays in Python: nginx's answer has the same headers."""
    path = f"/dicomweb/{TRUST}/studies/{study}/metadata"
    via = requests.get(nginx.origin + path, headers=system, timeout=10)
    python = requests.get(facade + path, headers=system, timeout=10)
    assert "X-Accel-Redirect" not in python.headers and via.content == python.content
    assert comparable(via).keys() == comparable(python).keys()
    assert {k: v for k, v in comparable(via).items() if k != "x-request-id"} == {
        k: v for k, v in comparable(python).items() if k != "x-request-id"
    }


def test_head_and_thumbnails_keep_the_python_relay(
    nginx: Nginx, system: dict[str, str], fresh_proxy: FaultProxy, study: str
) -> None:
    head = requests.head(f"{nginx.origin}/dicomweb/{TRUST}/studies/{study}/metadata", headers=system, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Type"].startswith("application/dicom+json")
    thumbnail = requests.get(f"{nginx.origin}/dicomweb/{TRUST}/studies/{study}/thumbnail", headers=system, timeout=10)
    assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
    wado = [
        h
        for (_, target), h in zip(fresh_proxy.requests, fresh_proxy.request_headers, strict=True)
        if "/studies?" not in target
    ]
    assert wado and all(h.get("User-Agent", "").startswith("python-requests") for h in wado)


# ----------------------------------------------------------------------------- credentials and internal locations


def test_the_archive_gets_its_credentials_and_the_client_never_sees_them(
    nginx: Nginx, system: dict[str, str], fresh_proxy: FaultProxy, study: str
) -> None:
    response = requests.get(
        f"{nginx.origin}/dicomweb/{TRUST}/studies/{study}/metadata",
        headers={**system, "Cookie": "session=client-cookie", "X-Custom": "client"},
        timeout=10,
    )
    assert response.status_code == 200
    leaked = [k for k in response.headers if k.lower().startswith(("x-gateway", "x-accel"))]
    assert leaked == [] and BASIC.split()[1] not in str(response.headers)
    sent = fresh_proxy.request_headers[-1]
    assert fresh_proxy.requests[-1][1].endswith(f"studies/{study}/metadata")
    assert sent["Authorization"] == BASIC  # the archive's credentials, never the client's token
    assert not {"Cookie", "X-Custom", "X-Gateway-Relay-Key", "X-Forwarded-For"} & set(sent)


@pytest.mark.parametrize(
    "path",
    [
        f"{accel.RELAY_PREFIX}{TRUST}/studies/1.2.3/metadata",
        f"{accel.RELAY_PREFIX}{TRUST}/",
        f"{accel.ERROR_PREFIX}{TRUST}/404",
        f"{accel.ERROR_PREFIX}not-found",
        "/_gateway/",
        "/_gateway/anything",
    ],
)
def test_the_internal_locations_cannot_be_requested(
    nginx: Nginx, system: dict[str, str], fresh_proxy: FaultProxy, path: str
) -> None:
    for headers in ({}, {**system, accel.AUTHORIZATION_HEADER: BASIC, "X-Accel-Redirect": path}):
        response = requests.get(nginx.origin + path, headers=headers, timeout=10)
        outcome(response, 404)
    assert fresh_proxy.requests == []


def test_client_supplied_relay_headers_have_no_effect(
    nginx: Nginx, facade: str, gateway_app: Any, system: dict[str, str], fresh_proxy: FaultProxy, study: str
) -> None:
    other = f"{accel.RELAY_PREFIX}{TRUST}/studies/1.2.3.4/metadata"
    forged = {
        "X-Accel-Redirect": other,
        accel.KEY_HEADER: "0" * 64,
        accel.AUTHORIZATION_HEADER: "Basic bm9ib2R5Om5vdGhpbmc=",
    }
    path = f"/dicomweb/{TRUST}/studies/{study}/metadata"
    via = requests.get(nginx.origin + path, headers={**system, **forged}, timeout=10)
    assert via.status_code == 200 and via.json()[0]["0020000D"]["Value"] == [study]
    assert fresh_proxy.request_headers[-1]["Authorization"] == BASIC
    assert not any("1.2.3.4" in target for _, target in fresh_proxy.requests)
    # Without a token the forged headers open nothing.
    refused = requests.get(nginx.origin + path, headers=forged, timeout=10)
    assert refused.status_code == 401
    # Straight to the facade, a wrong relay key gets the Python relay: no redirect, no credentials.
    straight = requests.get(facade + path, headers={**system, **forged}, timeout=10)
    assert straight.status_code == 200 and "X-Accel-Redirect" not in straight.headers
    assert not any(k.lower().startswith("x-gateway") for k in straight.headers)
    # Only nginx's own key hands over (it is derived from the cursor secret nobody outside knows).
    key = accel.relay_key(components(gateway_app).settings)
    handed = requests.get(facade + path, headers={**system, accel.KEY_HEADER: key}, timeout=10)
    assert handed.headers["X-Accel-Redirect"] == f"{accel.RELAY_PREFIX}{TRUST}/studies/{study}/metadata"
    assert handed.content == b""


@pytest.mark.parametrize(
    "target",
    [
        "/dicomweb/mft/studies/1.2.3/../4",
        "/dicomweb/mft/studies/%2e%2e/1.2",
        "/dicomweb/mft/studies/1.2.3%2F..%2F..%2Fpatients",
        "/dicomweb/mft/studies/1.2.3/rendered?viewport=1,1%26x=../../",
        "/dicomweb/mft/studies/./1.2.3",
    ],
)
def test_crafted_paths_never_reach_the_archive(
    nginx: Nginx, system: dict[str, str], fresh_proxy: FaultProxy, target: str
) -> None:
    """The request line as an attacker would send it: refused by the facade, nothing redirected."""
    connection = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
    connection.request("GET", target, headers=system)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    assert response.status in (400, 404), (target, response.status, body[:200])
    assert b'"OperationOutcome"' in body
    assert fresh_proxy.requests == []


def test_the_redirect_uri_is_only_ever_a_validated_path() -> None:
    assert (
        accel.accel_uri("mft", "studies/1.2/series/3.4/frames/1,2")
        == "/_gateway/relay/mft/studies/1.2/series/3.4/frames/1,2"
    )
    assert accel.accel_uri("mft", "studies/1.2/rendered?viewport=64,64&quality=90").endswith(
        "?viewport=64,64&quality=90"
    )
    for path in (
        "studies/1.2/../../patients",
        "studies/../1.2",
        "studies/1.2/%2e%2e",
        "studies/1.2/series/..",
        "studies/1.2?x=../y&z",
        "studies/1.2\r\nX-Accel-Redirect: /x",
        "studies//1.2",
        "tools/reset",
    ):
        with pytest.raises(accel.UnsafeHandoff):
            accel.accel_uri("mft", path)
    with pytest.raises(accel.UnsafeHandoff):
        accel.accel_uri("../mft", "studies/1.2")


# ----------------------------------------------------------------------------- archive errors


ERRORS = [
    ("status-404", dict(kind="status", code=404), {}, 404, None),
    ("status-406", dict(kind="status", code=406), {}, 406, None),
    ("status-400-accept", dict(kind="status", code=400), {"Accept": "application/dicom+json"}, 406, None),
    ("status-400", dict(kind="status", code=400), {"Accept": None}, 501, None),
    ("status-501", dict(kind="status", code=501), {}, 501, None),
    ("status-401", dict(kind="status", code=401), {}, 502, None),
    ("status-403", dict(kind="status", code=403), {}, 502, None),
    ("status-503", dict(kind="status", code=503, headers={"Retry-After": "7"}), {}, 503, "7"),
    ("status-429", dict(kind="status", code=429, headers={"Retry-After": "3"}), {}, 503, "3"),
    ("status-503-date", dict(kind="status", code=503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), {}, 503, "5"),
    ("status-500", dict(kind="status", code=500), {}, 502, None),
    ("status-302", dict(kind="status", code=302), {}, 502, None),
    ("status-410", dict(kind="status", code=410), {}, 502, None),
    ("reset", dict(kind="reset"), {}, 502, None),
    ("hang", dict(kind="hang"), {}, 504, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "headers", "status", "retry_after"),
    [(f, h, s, r) for _, f, h, s, r in ERRORS],
    ids=[i for i, *_ in ERRORS],
)
def test_archive_errors_are_the_facades_outcomes(
    nginx: Nginx,
    facade: str,
    system: dict[str, str],
    fresh_proxy: FaultProxy,
    study: str,
    fault: dict[str, Any],
    headers: dict[str, str | None],
    status: int,
    retry_after: str | None,
) -> None:
    """Each archive error through nginx: the status, Retry-After and OperationOutcome of the Python relay."""
    path = f"/dicomweb/{TRUST}/studies/{study}/metadata"
    params = dict(fault)
    kind = params.pop("kind")
    answers = []
    for origin in (nginx.origin, facade):  # through nginx (X-Accel-Redirect), then the Python relay
        fresh_proxy.set_fault(kind, only="/metadata", **params)
        answers.append(requests.get(origin + path, headers={**system, **headers}, timeout=15))
        fresh_proxy.set_fault("none")
    via, python = answers
    body = outcome(via, status)
    assert outcome(python, status)["issue"][0]["code"] == body["issue"][0]["code"]
    assert via.headers.get("Retry-After") == python.headers.get("Retry-After") == retry_after
    assert body["issue"][0]["diagnostics"].startswith(f"trust {TRUST}: ")
    if kind == "status":  # the archive answered: the Python relay's very words
        assert body == python.json()
    assert comparable(via).keys() == comparable(python).keys()  # the facade's headers, no archive's
    assert via.headers["Cache-Control"] == "no-store" and via.headers["X-Content-Type-Options"] == "nosniff"
    assert not any(k.lower().startswith(("x-gateway", "x-accel")) for k in via.headers)
    again = requests.get(nginx.origin + path, headers=system, timeout=10)
    assert again.status_code == 200  # and both go on serving


def test_an_archive_that_is_down_is_a_502_outcome(
    nginx: Nginx, system: dict[str, str], proxy: FaultProxy, study: str, document: dict[str, Any], demo_data: Path
) -> None:
    """The archive's port closed after the owner check: nginx cannot connect."""
    proxy.set_fault("reset", only="/metadata")  # warm: the owner check passes through the proxy
    proxy.set_fault("none")
    closed = free_port()
    doc = copy.deepcopy(document)
    for trust in doc["trusts"]:
        if trust["id"] == TRUST:
            trust["archive"]["wado_url"] = f"http://127.0.0.1:{closed}/dicom-web"
    settings = settings_from_document(doc, demo_data, "down")
    text = accel.nginx_config(settings)
    assert f"proxy_pass http://127.0.0.1:{closed}/dicom-web/;" in text
    # The same location, pointed at nothing, in nginx of its own: the facade hands over as before.
    workdir = Path(tempfile.mkdtemp(prefix="gateway-nginx-down-")) / "nginx"
    (workdir / "gateway").mkdir(parents=True)
    (workdir / "gateway" / "gateway.conf").write_text(text)
    facade_port = nginx.site.split("server 127.0.0.1:", 1)[1].split(" ", 1)[0]
    port = free_port()
    values = {
        "LISTEN_PORT": str(port),
        "FACADE_A_HOST": "127.0.0.1",
        "FACADE_A_PORT": facade_port,
        "FACADE_B_HOST": "127.0.0.1",
        "FACADE_B_PORT": facade_port,
    }
    down = Nginx(workdir, port, render.render(render.NGINX_TEMPLATE, values)).start()
    try:
        response = requests.get(f"{down.origin}/dicomweb/{TRUST}/studies/{study}/metadata", headers=system, timeout=10)
    finally:
        down.stop()
        shutil.rmtree(workdir.parent, ignore_errors=True)
    body = outcome(response, 502)
    assert body["issue"][0]["code"] == "exception" and "connection refused" in body["issue"][0]["diagnostics"]


def test_a_fault_mid_stream_cuts_the_response_short_and_nginx_logs_it(
    nginx: Nginx, gateway_app: Any, system: dict[str, str], fresh_proxy: FaultProxy, study: str
) -> None:
    path = f"/dicomweb/{TRUST}/studies/{study}"
    complete = requests.get(nginx.origin + path, headers=system, timeout=10)
    assert complete.status_code == 200
    fresh_proxy.set_fault("reset-midstream", only=f"studies/{study}", fraction=0.5)
    with pytest.raises(requests.exceptions.RequestException):
        cut = requests.get(nginx.origin + path, headers=system, timeout=10)
        if len(cut.content) < int(cut.headers.get("Content-Length", 0)) or len(cut.content) < len(complete.content):
            raise requests.exceptions.ChunkedEncodingError("short body")
    fresh_proxy.set_fault("none")
    errors = (nginx.workdir / "error.log").read_text()
    assert "upstream prematurely closed connection while reading upstream" in errors
    again = requests.get(nginx.origin + path, headers=system, timeout=10)
    assert again.status_code == 200
    assert parts(again.headers["Content-Type"], again.content) == parts(
        complete.headers["Content-Type"], complete.content
    )
    # The facade audited the retrievals as handed to nginx (their outcome is nginx's log's to tell).
    audit = {"Authorization": f"Bearer {system_token(gateway_app, 'system/AuditEvent.rs')}"}
    events = requests.get(f"{nginx.origin}/fhir/AuditEvent?_count=5&_sort=-date", headers=audit, timeout=10).json()
    details = [e["resource"]["entity"][0].get("description", "") for e in events["entry"] if "entity" in e["resource"]]
    assert any(d == f"WADO-RS {path} (relayed by nginx)" for d in details), details
