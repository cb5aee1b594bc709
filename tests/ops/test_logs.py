"""Request ids and structured logs: one JSON object per line, no NHS number or name unless asked.

The log lines are read where an operator reads them, on standard error (pytest's capsys).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from smart_tokens import system_token
from werkzeug.serving import make_server

from app import create_app
from app.settings import settings_from_document
from app.telemetry.logs import JsonFormatter, redact
from app.web.components import components
from tests.infra.faultproxy import FaultProxy
from tests.ops.support import NHS, bearer, dicomweb

pytestmark = pytest.mark.integration


def _lines(text: str) -> list[dict[str, Any]]:
    """Every line must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _search(app: Any, nhs_number: str, **headers: str) -> Any:
    return app.test_client().get(
        "/fhir/ImagingStudy",
        headers={**bearer(app), **headers},
        query_string={"patient.identifier": f"{NHS}|{nhs_number}"},
    )


@pytest.fixture
def raw_records() -> Iterator[io.StringIO]:
    """Every record of every logger, unfiltered and in plain text: what could have leaked."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_request_id_generated_and_returned(build_app):
    response = build_app().test_client().get("/healthz")
    assert uuid.UUID(response.headers["X-Request-ID"]).version == 4


def test_request_id_taken_from_the_client(build_app):
    response = build_app().test_client().get("/healthz", headers={"X-Request-ID": "epr-7f3a 2026/11/27"})
    assert response.headers["X-Request-ID"] == "epr-7f3a 2026/11/27"


@pytest.mark.parametrize("sent", ["x" * 129, "abc\x01def", "caf\xe9", "", "   "])
def test_request_id_invalid_is_replaced(build_app, sent):
    response = build_app().test_client().get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["X-Request-ID"] != sent
    assert uuid.UUID(response.headers["X-Request-ID"]).version == 4


def test_request_id_longest_accepted(build_app):
    sent = "r" * 128
    assert build_app().test_client().get("/healthz", headers={"X-Request-ID": sent}).headers["X-Request-ID"] == sent


def test_request_id_on_error_responses(build_app):
    response = build_app().test_client().get("/fhir/ImagingStudy", headers={"X-Request-ID": "denied-1"})
    assert response.status_code == 401
    assert response.headers["X-Request-ID"] == "denied-1"


def test_request_id_readable_by_browser_apps(build_app, ops_document):
    ops_document["auth"]["cors_origins"] = ["https://epr.example"]
    app = build_app()
    client = app.test_client()
    for path, headers in (("/fhir/metadata", {}), ("/fhir/Organization", bearer(app))):
        response = client.get(path, headers={"Origin": "https://epr.example", **headers})
        assert response.status_code == 200
        exposed = [h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")]
        assert "X-Request-ID" in exposed, path
    assert "Access-Control-Expose-Headers" not in client.get("/fhir/metadata").headers  # no Origin: no CORS


def test_request_id_sent_to_the_archive_from_fan_out_threads(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy))
    response = _search(app, bolton_patient["nhs_number"], **{"X-Request-ID": "trace-0042"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "trace-0042"
    sent = [
        (target, headers.get("X-Request-ID"))
        for (_m, target), headers in zip(proxy.requests, proxy.request_headers, strict=True)
    ]
    assert {t.split("?")[0] for t, _ in sent} == {"/dicom-web/studies", "/dicom-web/series"}
    assert all(value == "trace-0042" for _t, value in sent), sent


def test_request_id_generated_is_the_one_sent_upstream(build_app, proxy: FaultProxy, bolton_patient):
    app = build_app(bolton=dicomweb(proxy))
    first = _search(app, bolton_patient["nhs_number"])
    second = _search(app, bolton_patient["nhs_number"])
    ids = [h.get("X-Request-ID", "") for h in proxy.request_headers]
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert sorted(set(ids)) == sorted({first.headers["X-Request-ID"], second.headers["X-Request-ID"]})
    assert ids.count(first.headers["X-Request-ID"]) == 2  # its studies and its series request


def test_request_id_sent_to_the_pixm_service(app, config_document, ops_document, demo_data, manifest, monkeypatch):
    # The session's facade, served on loopback, is the region's PIXm service; Christie's archive
    # knows patients by local number, so the search asks the service for them.
    served = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=served.serve_forever, daemon=True).start()
    try:
        with FaultProxy(f"http://127.0.0.1:{served.server_port}/fhir") as pix:
            monkeypatch.setenv("PIX_TOKEN", system_token(app, "system/Patient.r"))
            doc = copy.deepcopy(ops_document)
            doc["trusts"].append(copy.deepcopy(next(t for t in config_document["trusts"] if t["id"] == "christie")))
            doc["patient_index"] = {"url": pix.url, "auth": {"type": "bearer", "token_env": "PIX_TOKEN"}}
            monkeypatch.delenv("FACADE_BASE_URL", raising=False)
            monkeypatch.delenv("FACADE_CURSOR_SECRET", raising=False)
            facade = create_app(settings_from_document(doc, demo_data, "tests/ops/pixm"))
            patient = next(p for p in manifest["patients"] if any("christie" in s["trusts"] for s in p["studies"]))
            try:
                response = _search(facade, patient["nhs_number"], **{"X-Request-ID": "pix-lookup-3"})
            finally:
                components(facade).services.close()
                components(facade).audit.close()
    finally:
        served.shutdown()
    assert response.status_code == 200
    assert [t.split("?")[0] for _m, t in pix.requests][:1] == ["/fhir/Patient/$ihe-pix"]
    assert [h.get("X-Request-ID") for h in pix.request_headers] == ["pix-lookup-3"] * len(pix.requests)


def test_log_lines_of_fan_out_upstream_requests_carry_the_request_id(build_app, proxy: FaultProxy, bolton_patient):
    # The fan-out's multiplexer logs each upstream request as urllib3 does (from the search's own thread;
    # an archive's thread for DIMSE and folders): formatted there, it shows the id.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    pool_logger = logging.getLogger("app.archives.exchange")
    pool_logger.addHandler(handler)
    saved = pool_logger.level
    pool_logger.setLevel(logging.DEBUG)
    try:
        app = build_app(bolton=dicomweb(proxy))
        assert _search(app, bolton_patient["nhs_number"], **{"X-Request-ID": "thread-7"}).status_code == 200
    finally:
        pool_logger.removeHandler(handler)
        pool_logger.setLevel(saved)
    upstream = [line for line in _lines(stream.getvalue()) if "/dicom-web/" in line["message"]]
    assert len(upstream) == 2
    assert all(line["request_id"] == "thread-7" for line in upstream), upstream


def test_access_log_line_is_json_with_the_request_fields(build_app, capsys, bolton_patient):
    app = build_app()
    capsys.readouterr()
    response = app.test_client().get(f"/fhir/Patient/{bolton_patient['nhs_number']}", headers=bearer(app))
    assert response.status_code == 200
    lines = _lines(capsys.readouterr().err)
    access = [line for line in lines if line["logger"] == "app.access"]
    assert len(access) == 1
    line = access[0]
    assert set(line) >= {"time", "level", "logger", "message", "request_id", "method", "route", "status", "duration_ms"}
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["method"], line["route"], line["status"], line["level"]) == (
        "GET",
        "/fhir/Patient/<patient_id>",
        200,
        "INFO",
    )
    assert line["time"].endswith("Z") and isinstance(line["duration_ms"], float)
    assert "path" not in line and "query" not in line


def test_patient_search_logs_no_nhs_number_or_name(build_app, proxy: FaultProxy, capsys, raw_records, bolton_patient):
    nhs = bolton_patient["nhs_number"]
    family = bolton_patient["name"].split("^")[0]
    app = build_app(bolton=dicomweb(proxy), ops={"log_level": "DEBUG"})
    capsys.readouterr()
    for path in (f"/fhir/Patient/{nhs}", f"/fhir/ImagingStudy?patient={nhs}&_include=ImagingStudy:patient"):
        response = app.test_client().get(path, headers=bearer(app))
        assert response.status_code == 200
        assert family.casefold() in response.get_data(as_text=True).casefold()  # the answers name the patient
    logged = capsys.readouterr().err
    assert len([line for line in _lines(logged) if line["logger"] == "app.access"]) == 2
    assert nhs in raw_records.getvalue()  # the upstream request lines named the patient...
    assert nhs not in logged  # ...and none of them reached the log
    assert family.casefold() not in logged.casefold()


def test_log_patient_data_flag_adds_path_and_query(build_app, capsys, bolton_patient):
    nhs = bolton_patient["nhs_number"]
    app = build_app(ops={"log_patient_data": True})
    capsys.readouterr()
    app.test_client().get(f"/fhir/ImagingStudy?patient={nhs}", headers=bearer(app))
    access = [line for line in _lines(capsys.readouterr().err) if line["logger"] == "app.access"]
    assert access[0]["path"] == "/fhir/ImagingStudy"
    assert access[0]["query"] == f"patient={nhs}"


def test_exceptions_logged_with_traceback_and_request_id(build_app, capsys):
    app = build_app()

    @app.route("/boom")
    def boom() -> None:
        raise RuntimeError("broken for 943 476 5919")

    capsys.readouterr()
    response = app.test_client().get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.get_json()["resourceType"] == "OperationOutcome"
    errors = [line for line in _lines(capsys.readouterr().err) if line["level"] == "ERROR"]
    assert errors and errors[0]["request_id"] == "boom-1"
    assert "RuntimeError" in errors[0]["exception"]
    assert "943 476 5919" not in errors[0]["exception"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("patient 9434765919 found", "patient [nhs-number] found"),
        ("patient 943 476 5919 found", "patient [nhs-number] found"),
        (
            "patient=https://fhir.nhs.uk/Id/nhs-number|9434765919",
            "patient=https://fhir.nhs.uk/Id/nhs-number|[nhs-number]",
        ),
        ("9434765918 fails its check digit", "9434765918 fails its check digit"),
        ("study 1.2.826.0.1.9434765919.5", "study 1.2.826.0.1.9434765919.5"),
        ("12345678901 has eleven digits", "12345678901 has eleven digits"),
    ],
)
def test_redact_masks_valid_nhs_numbers_only(text, expected):
    assert redact(text) == expected
