"""/healthz and /readyz: no token needed, no patient data, 503 when not ready.

Archives are real: the demo folders, an Orthanc behind a fault proxy, a dcmqrscp.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from app.web.components import components
from tests.infra.dcmqrscp import DcmqrscpServer
from tests.infra.faultproxy import FaultProxy
from tests.ops.support import NHS, bearer, dicomweb

pytestmark = pytest.mark.integration


def _readyz(app: Any) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get("/readyz")
    assert response.mimetype == "application/json"
    return response.status_code, response.get_json()


def test_healthz_answers_without_a_token(build_app):
    response = build_app().test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_ops_endpoints_are_at_the_server_root_not_under_fhir(build_app):
    client = build_app().test_client()
    for path in ("/fhir/healthz", "/fhir/readyz", "/fhir/metrics"):
        response = client.get(path, headers=bearer(client.application))
        assert response.status_code == 404, path
        assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_ops_endpoints_other_methods_answer_operation_outcome(build_app, path):
    response = build_app().test_client().post(path)
    assert response.status_code == 405
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "not-supported"


def test_readyz_ready_with_every_archive_available(build_app):
    status, report = _readyz(build_app())
    assert status == 200
    assert report["status"] == "ready"
    assert report["configuration"] == "loaded"
    assert report["audit_store"] == "writable"
    assert report["archives"] == {
        "bolton": {"type": "folder", "reachable": True, "circuit": "closed", "available": True},
        "mft": {"type": "folder", "reachable": True, "circuit": "closed", "available": True},
    }


def test_readyz_folder_removed_reports_archive_down(build_app, small_folders, tmp_path):
    folder = tmp_path / "bolton"
    shutil.copytree(small_folders["bolton"], folder)
    app = build_app(bolton={"type": "folder", "path": str(folder)}, ops={"readiness": {"cache_s": 0}})
    assert _readyz(app)[1]["archives"]["bolton"]["reachable"] is True
    shutil.rmtree(folder)
    status, report = _readyz(app)
    assert status == 200  # archives_required: any; mft still answers
    assert report["archives"]["bolton"] == {
        "type": "folder",
        "reachable": False,
        "circuit": "closed",
        "reason": "folder missing",
        "available": False,
    }
    assert report["archives"]["mft"]["available"] is True


def test_readyz_all_required_and_one_folder_removed_is_503(build_app, small_folders, tmp_path):
    folder = tmp_path / "bolton"
    shutil.copytree(small_folders["bolton"], folder)
    app = build_app(
        bolton={"type": "folder", "path": str(folder)}, ops={"readiness": {"cache_s": 0, "archives_required": "all"}}
    )
    assert _readyz(app)[0] == 200
    shutil.rmtree(folder)
    status, report = _readyz(app)
    assert status == 503
    assert report["status"] == "not ready" and report["archives_available"] == 1


def test_readyz_dicomweb_archive_reset_reports_it_unreachable(build_app, proxy: FaultProxy):
    app = build_app(bolton=dicomweb(proxy), ops={"readiness": {"cache_s": 0}})
    assert _readyz(app)[1]["archives"]["bolton"]["reachable"] is True
    proxy.set_fault("reset")
    status, report = _readyz(app)
    assert status == 200
    assert report["archives"]["bolton"] == {
        "type": "dicomweb",
        "reachable": False,
        "circuit": "closed",
        "reason": "connection refused or reset",
        "available": False,
    }
    proxy.set_fault("none")
    assert _readyz(app)[1]["archives"]["bolton"]["reachable"] is True


def test_readyz_no_archive_available_is_503(build_app, proxy: FaultProxy, small_folders, tmp_path):
    folder = tmp_path / "mft"
    shutil.copytree(small_folders["mft"], folder)
    app = build_app(
        bolton=dicomweb(proxy), mft={"type": "folder", "path": str(folder)}, ops={"readiness": {"cache_s": 0}}
    )
    shutil.rmtree(folder)
    proxy.set_fault("reset")
    status, report = _readyz(app)
    assert status == 503
    assert report["archives_available"] == 0


def test_readyz_reports_open_circuit(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy), ops={"readiness": {"cache_s": 0, "archives_required": "all"}})
    # One 503 with Retry-After opens the circuit for that long; the probe afterwards goes through.
    proxy.set_fault("status", code=503, headers={"Retry-After": "600"}, times=1, only="/studies")
    search = app.test_client().get(
        "/fhir/ImagingStudy",
        headers=bearer(app),
        query_string={"patient.identifier": f"{NHS}|{bolton_patient['nhs_number']}"},
    )
    assert search.status_code == 200
    assert any(
        i["code"] == "incomplete"
        for e in search.get_json()["entry"]
        if e["search"]["mode"] == "outcome"
        for i in e["resource"]["issue"]
    )
    status, report = _readyz(app)
    assert report["archives"]["bolton"] == {
        "type": "dicomweb",
        "reachable": True,
        "circuit": "open",
        "available": False,
    }
    assert status == 503  # archives_required: all


def test_readyz_probe_is_one_harmless_qido_request_cached(build_app, proxy: FaultProxy):
    app = build_app(bolton=dicomweb(proxy), ops={"readiness": {"cache_s": 300}})
    for _ in range(5):
        assert _readyz(app)[0] == 200
    assert len(proxy.requests) == 1  # five calls, one probe: /readyz cannot hammer an archive
    method, target = proxy.requests[0]
    assert method == "GET"
    assert target == "/dicom-web/studies?StudyInstanceUID=2.25.0&limit=1"
    assert proxy.wildcard_requests() == []


def test_readyz_audit_store_not_writable_is_503(build_app):
    app = build_app()
    components(app).audit.close()  # an audit store that can no longer commit an event
    status, report = _readyz(app)
    assert status == 503
    assert report["audit_store"] == "not writable"


def test_readyz_dimse_archive_c_echo(build_app):
    with DcmqrscpServer(aet="LEGACYPACS") as server:
        app = build_app(
            bolton={
                "type": "dimse",
                "host": server.host,
                "port": server.port,
                "called_aet": server.aet,
                "calling_aet": "GMFACADE",
                "timeout_s": 3,
            },
            ops={"readiness": {"cache_s": 0}},
        )
        assert _readyz(app)[1]["archives"]["bolton"] == {
            "type": "dimse",
            "reachable": True,
            "circuit": "closed",
            "available": True,
        }
    report = _readyz(app)[1]  # the archive has stopped
    assert report["archives"]["bolton"]["reachable"] is False
    assert report["archives"]["bolton"]["reason"] == "connection refused or unreachable"


def test_readyz_reveals_no_patient_data_or_archive_address(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy))
    app.test_client().get(
        "/fhir/ImagingStudy",
        headers=bearer(app),
        query_string={"patient.identifier": f"{NHS}|{bolton_patient['nhs_number']}"},
    )
    text = app.test_client().get("/readyz").get_data(as_text=True)
    assert bolton_patient["nhs_number"] not in text
    assert str(proxy.port) not in text and "127.0.0.1" not in text


def test_readyz_demo_configuration_defaults(settings):
    # config/demo.yaml: any one archive available is enough; probes cached five seconds.
    assert settings.ops.archives_required == "any"
    assert settings.ops.readiness_cache_s == 5
