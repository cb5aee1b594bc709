"""The image gateway in front of a real DICOMweb archive (Orthanc with its DICOMweb plugin), through a
fault-injecting proxy: retrievals equal direct ones byte for byte, the compartment check happens at
the archive before any image is asked for, bad input never reaches it, and faults end cleanly.
"""

from __future__ import annotations

import copy
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from smart_tokens import patient_token, system_token

from app import create_app
from app.settings import settings_from_document
from tests.gateway.multipart import parts
from tests.infra import serve_wsgi
from tests.infra.faultproxy import FaultProxy
from tests.infra.orthanc import OrthancServer

pytestmark = pytest.mark.integration
TRUST = "mft"


@pytest.fixture(scope="module")
def patients(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two patients with studies held only by mft."""

    def mft_only(p: dict[str, Any]) -> bool:
        return any(s["trusts"] == [TRUST] for s in p["studies"])

    first = next(
        p for p in manifest["patients"] if p["nhs_number"] == manifest["facts"]["multi_trust_patient"]["nhs_number"]
    )
    second = next(p for p in manifest["patients"] if p is not first and mft_only(p))
    return first, second


def mft_study(record: dict[str, Any]) -> str:
    return str(next(s["study_uid"] for s in record["studies"] if s["trusts"] == [TRUST]))


@pytest.fixture(scope="module")
def archive(demo_data: Path, patients: tuple[dict[str, Any], dict[str, Any]]) -> Iterator[OrthancServer]:
    wanted = {mft_study(p) for p in patients}
    files = [
        f
        for f in sorted((demo_data / TRUST).rglob("*.dcm"))
        if pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID in wanted
    ]
    with OrthancServer(aet="MFTGW") as orthanc:
        orthanc.upload(files)
        yield orthanc


@pytest.fixture(scope="module")
def gateway_app(config_document: dict[str, Any], demo_data: Path, proxy: FaultProxy) -> Any:
    doc = copy.deepcopy(config_document)
    for trust in doc["trusts"]:
        if trust["id"] == TRUST:
            trust["archive"] = {"type": "dicomweb", "url": proxy.url, "timeout_s": 2}
    # The owner of a study is asked of the archive on every request here, so every test sees it happen.
    doc["gateway"] = {"owner_cache_s": 0}
    return create_app(settings_from_document(doc, demo_data, "tests/gateway"))


@pytest.fixture(scope="module")
def server(gateway_app: Any) -> Iterator[str]:
    """The facade on a real loopback HTTP server (a short body must reach a real socket)."""
    with serve_wsgi(gateway_app) as origin:
        yield origin


@pytest.fixture(scope="module")
def system(gateway_app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {system_token(gateway_app)}", "Accept-Encoding": "identity"}


def upstream_paths(proxy: FaultProxy) -> list[str]:
    return [target for _, target in proxy.requests]


def direct(archive: OrthancServer, path: str, accept: str | None = None) -> requests.Response:
    headers = {"Accept-Encoding": "identity", **({"Accept": accept} if accept else {})}
    response = requests.get(f"{archive.dicomweb_url}/{path}", headers=headers, timeout=10)
    assert response.status_code == 200, (path, response.status_code)
    return response


def sop_of(archive: OrthancServer, study: str) -> tuple[str, str]:
    instances = direct(archive, f"studies/{study}/instances").json()
    return instances[0]["0020000E"]["Value"][0], instances[0]["00080018"]["Value"][0]


# ----------------------------------------------------------------------------- byte for byte


def test_retrievals_equal_direct_ones(
    server: str, system: dict[str, str], archive: OrthancServer, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    study = mft_study(patients[0])
    series, sop = sop_of(archive, study)
    for path in (
        f"studies/{study}",
        f"studies/{study}/series/{series}",
        f"studies/{study}/series/{series}/instances/{sop}",
        f"studies/{study}/series/{series}/instances/{sop}/frames/1",
    ):
        via = requests.get(f"{server}/dicomweb/{TRUST}/{path}", headers=system, timeout=10)
        assert via.status_code == 200, (path, via.text[:200])
        straight = direct(archive, path)
        assert [p for _, p in parts(via.headers["Content-Type"], via.content)] == [
            p for _, p in parts(straight.headers["Content-Type"], straight.content)
        ], path
        assert via.headers["Content-Type"].split(";")[:2] == straight.headers["Content-Type"].split(";")[:2]
    for path in (
        f"studies/{study}/metadata",
        f"studies/{study}/series/{series}/metadata",
        f"studies/{study}/series/{series}/instances/{sop}/rendered",
    ):
        via = requests.get(f"{server}/dicomweb/{TRUST}/{path}", headers=system, timeout=10)
        assert via.status_code == 200
        assert via.content == direct(archive, path).content, path


def test_transfer_syntax_accept_is_passed_to_the_archive(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    study = mft_study(patients[0])
    explicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    response = requests.get(
        f"{server}/dicomweb/{TRUST}/studies/{study}", headers={**system, "Accept": explicit}, timeout=10
    )
    assert response.status_code == 200
    assert fresh_proxy.request_headers[-1]["Accept"] == explicit
    refused = requests.get(
        f"{server}/dicomweb/{TRUST}/studies/{study}", headers={**system, "Accept": "application/zip"}, timeout=10
    )
    assert refused.status_code == 406 and refused.json()["resourceType"] == "OperationOutcome"


def test_thumbnail_falls_back_to_a_small_rendering(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """Orthanc 1.10 has no /thumbnail: the gateway asks for /rendered with the thumbnail viewport."""
    study = mft_study(patients[0])
    response = requests.get(f"{server}/dicomweb/{TRUST}/studies/{study}/thumbnail", headers=system, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert upstream_paths(fresh_proxy)[-2:] == [
        f"/dicom-web/studies/{study}/thumbnail",
        f"/dicom-web/studies/{study}/rendered?viewport=128,128",
    ]


# ----------------------------------------------------------------------------- checks before the archive


def test_owner_is_checked_at_the_archive_before_any_image_is_asked_for(
    server: str, gateway_app: Any, fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    mine, theirs = (mft_study(p) for p in patients)
    token = {"Authorization": f"Bearer {patient_token(gateway_app, patients[0]['nhs_number'])}"}
    allowed = requests.get(f"{server}/dicomweb/{TRUST}/studies/{mine}/metadata", headers=token, timeout=10)
    assert allowed.status_code == 200
    assert [p.split("?")[0] for p in upstream_paths(fresh_proxy)] == [
        "/dicom-web/studies",
        f"/dicom-web/studies/{mine}/metadata",
    ]
    assert f"StudyInstanceUID={mine}" in upstream_paths(fresh_proxy)[0]
    fresh_proxy.clear()
    denied = requests.get(f"{server}/dicomweb/{TRUST}/studies/{theirs}/metadata", headers=token, timeout=10)
    assert denied.status_code == 404 and denied.json()["resourceType"] == "OperationOutcome"
    assert [p.split("?")[0] for p in upstream_paths(fresh_proxy)] == ["/dicom-web/studies"]  # no image asked for


@pytest.mark.parametrize(
    "path",
    [
        "studies/1.2.3*",
        "studies/1.2.3%2Fseries",
        "studies/1.2.3/rendered?viewport=1,1;x",
        "studies/1.2.3?StudyInstanceUID=*",
        "studies/%2e%2e/1.2",
        "studies/1.2.3/series/1.2.3.4/frames/1",
    ],
)
def test_bad_input_never_reaches_the_archive(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy, path: str
) -> None:
    response = requests.get(f"{server}/dicomweb/{TRUST}/{path}", headers=system, timeout=10)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert response.json()["resourceType"] == "OperationOutcome"
    assert fresh_proxy.requests == []


def test_dot_segments_sent_raw_never_reach_the_archive(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy
) -> None:
    """requests would normalise `..` away: send the request line as an attacker would."""
    host, port = server.removeprefix("http://").split(":")
    for target in (
        f"/dicomweb/{TRUST}/studies/1.2.3/../4",
        f"/dicomweb/{TRUST}/studies/./1.2.3",
        f"/dicomweb/{TRUST}/../{TRUST}/studies/1.2.3",
    ):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", target, headers=system)
        response = connection.getresponse()
        assert response.status == 400, (target, response.status)
        assert b"OperationOutcome" in response.read()
        connection.close()
    assert fresh_proxy.requests == []


def test_an_absolute_form_request_target_is_served(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    """`GET http://host/dicomweb/...` (RFC 9112 absolute-form, as proxies send it) is a path like any other."""
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", f"{server}/dicomweb/{TRUST}/studies/{mft_study(patients[0])}/metadata", headers=system)
    response = connection.getresponse()
    assert response.status == 200, response.read()[:300]
    response.read()
    connection.close()
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", f"{server}/dicomweb/{TRUST}/studies/1.2.3/../4", headers=system)
    assert connection.getresponse().status == 400
    connection.close()


def test_no_token_never_reaches_the_archive(
    server: str, fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    response = requests.get(f"{server}/dicomweb/{TRUST}/studies/{mft_study(patients[0])}", timeout=10)
    assert response.status_code == 401 and fresh_proxy.requests == []


# ----------------------------------------------------------------------------- archive faults


FAULTS = [
    ("status-503", dict(kind="status", code=503, headers={"Retry-After": "7"}), 503, "7"),
    ("status-429", dict(kind="status", code=429, headers={"Retry-After": "3"}), 503, "3"),
    ("status-500", dict(kind="status", code=500), 502, None),
    ("status-401", dict(kind="status", code=401), 502, None),
    ("status-404", dict(kind="status", code=404), 404, None),
    ("reset", dict(kind="reset"), 502, None),
    ("hang", dict(kind="hang"), 504, None),
]


@pytest.mark.parametrize(
    ("kind", "status", "retry_after"), [(f, s, r) for _, f, s, r in FAULTS], ids=[i for i, *_ in FAULTS]
)
def test_archive_faults_before_the_first_byte(
    server: str,
    system: dict[str, str],
    fresh_proxy: FaultProxy,
    patients: tuple[dict[str, Any], dict[str, Any]],
    kind: dict[str, Any],
    status: int,
    retry_after: str | None,
) -> None:
    study = mft_study(patients[0])
    params = dict(kind)
    fresh_proxy.set_fault(params.pop("kind"), only="/metadata", **params)
    response = requests.get(f"{server}/dicomweb/{TRUST}/studies/{study}/metadata", headers=system, timeout=15)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.headers.get("Retry-After") == retry_after
    fresh_proxy.set_fault("none")
    assert (
        requests.get(f"{server}/dicomweb/{TRUST}/studies/{study}/metadata", headers=system, timeout=10).status_code
        == 200
    )  # and the facade goes on serving


def test_owner_check_fault_is_a_clean_502(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    fresh_proxy.set_fault("bad-json", only="/studies?")
    response = requests.get(f"{server}/dicomweb/{TRUST}/studies/{mft_study(patients[0])}", headers=system, timeout=10)
    assert response.status_code == 502 and response.json()["resourceType"] == "OperationOutcome"
    assert not any("/metadata" in p or p.endswith(mft_study(patients[0])) for p in upstream_paths(fresh_proxy))


def test_a_reset_mid_stream_cuts_the_response_short_and_is_audited(
    server: str,
    system: dict[str, str],
    gateway_app: Any,
    fresh_proxy: FaultProxy,
    patients: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    study = mft_study(patients[0])
    complete = requests.get(f"{server}/dicomweb/{TRUST}/studies/{study}", headers=system, timeout=10)
    fresh_proxy.set_fault("reset-midstream", only=f"studies/{study}", fraction=0.5)
    with pytest.raises(requests.exceptions.RequestException):
        # The client must be able to tell: the body is shorter than its Content-Length, or the connection broke.
        cut = requests.get(f"{server}/dicomweb/{TRUST}/studies/{study}", headers=system, timeout=10)
        if len(cut.content) < int(cut.headers.get("Content-Length", 0)) or len(cut.content) < len(complete.content):
            raise requests.exceptions.ChunkedEncodingError("short body")
    fresh_proxy.set_fault("none")
    again = requests.get(f"{server}/dicomweb/{TRUST}/studies/{study}", headers=system, timeout=10)
    assert again.status_code == 200 and len(again.content) == len(complete.content)
    audit = {"Authorization": f"Bearer {system_token(gateway_app, 'system/AuditEvent.rs')}"}
    events = requests.get(f"{server}/fhir/AuditEvent?_count=50&_sort=-date", headers=audit, timeout=10).json()
    aborted = [e["resource"] for e in events["entry"] if "transfer aborted" in e["resource"].get("outcomeDesc", "")]
    assert aborted and aborted[0]["outcome"] == "8"


def test_the_request_id_reaches_the_archive(
    server: str, system: dict[str, str], fresh_proxy: FaultProxy, patients: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    study = mft_study(patients[0])
    response = requests.get(
        f"{server}/dicomweb/{TRUST}/studies/{study}/metadata",
        headers={**system, "X-Request-ID": "gateway-trace-42"},
        timeout=10,
    )
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "gateway-trace-42"
    assert [h.get("X-Request-ID") for h in fresh_proxy.request_headers] == ["gateway-trace-42"] * 2  # owner + WADO
