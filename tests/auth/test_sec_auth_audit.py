"""The authorization server's audit trail (issue 12: S4, and the authorization-server part of S16).

The patient picker's searches (names, NHS numbers) and choices, sign-in success and failure, sign-out,
tokens issued (and refused), EHR launches created and introspections each write an AuditEvent with the
user, the client and the source address, and the patient where there is one (so that
`AuditEvent?patient=` finds it). Events are read back from the audit file with a new connection
(committed before the answer left) and validated as FHIR R4. Each test runs from a source address of
its own and finds its events by it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from embedded_support import PASSWORD, client_assertion, forms_of, page_kind
from joserfc.jwk import RSAKey
from sec_auth_support import (
    PORTAL_KEY_FILE,
    TIMELINE,
    auth_params,
    browser,
    build_app,
    events_from,
    exchange,
    query_of,
)

try:
    from fhir_validation import validate_resource
except ImportError:  # pragma: no cover
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]

PORTAL_KEY = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))
PICKER_SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sec-audit")


@pytest.fixture(scope="module")
def app(config_document: dict[str, Any], demo_data: Path, folder: Path) -> Any:
    return build_app(config_document, folder, demo_data=demo_data)


@pytest.fixture(scope="module")
def audit_file(folder: Path) -> Path:
    return folder / "audit.sqlite"


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> dict[str, Any]:
    nhs = str(manifest["facts"]["multi_trust_patient"]["nhs_number"])
    return next(p for p in manifest["patients"] if p["nhs_number"] == nhs)


def _events(audit_file: Path, address: str, expected_min: int = 1) -> list[dict[str, Any]]:
    found = events_from(audit_file, address)
    assert len(found) >= expected_min, json.dumps(found, indent=1)[:2000]
    for event in found:
        validate_resource(event)
    return found


def _subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def _agent(event: dict[str, Any], code: str) -> dict[str, Any]:
    found = [a for a in event["agent"] if any(c.get("code") == code for c in a["type"].get("coding", ()))]
    assert len(found) == 1, event["agent"]
    return found[0]


def _patients(event: dict[str, Any]) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", ()) if e.get("role", {}).get("code") == "1"]


def _client(event: dict[str, Any]) -> str:
    return str(_agent(event, "110153")["who"]["display"])


def _user(event: dict[str, Any]) -> dict[str, Any]:
    users = [a for a in event["agent"] if a.get("requestor") and not _is_source(a)]
    assert len(users) == 1, event["agent"]
    return dict(users[0]["who"])


def _is_source(agent: dict[str, Any]) -> bool:
    return any(c.get("code") == "110153" for c in agent["type"].get("coding", ()))


def _portal_token(app: Any, address: str) -> str:
    form = {
        "grant_type": "client_credentials",
        "scope": "system/ImagingStudy.rs system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(PORTAL_KEY, "portal"),
    }
    response = app.test_client().post("/auth/token", data=form, environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200
    return str(response.get_json()["access_token"])


# ============================================================================= S4: the patient picker


def test_s4_picker_search_by_name_is_audited_with_the_patients_found(
    app: Any, audit_file: Path, patient: dict[str, Any]
) -> None:
    address = "10.4.0.1"
    agent = browser(app, address)
    params, _ = auth_params(scope=PICKER_SCOPE)
    picker = agent.login(agent.authorize(params))
    assert page_kind(picker) == "picker"
    family = str(patient["name"]).split("^")[0]  # DICOM PN: family^given
    (search,) = [f for f in forms_of(picker) if "q" in f.fields]
    found = agent.submit(picker, search, {"q": family})
    assert patient["nhs_number"] in found.get_data(as_text=True)
    queries = [e for e in _events(audit_file, address) if _subtype(e) == "search-type"]
    assert queries, "no PatientQuery for the picker's search"
    assert {f"Patient/{patient['nhs_number']}"} <= {p for e in queries for p in _patients(e)}
    for event in queries:
        assert event["meta"]["profile"][0].endswith("PatientQuery")
        query = next(e for e in event["entity"] if e.get("role", {}).get("code") == "24")
        assert family in base64.b64decode(query["query"]).decode()
        assert _client(event) == TIMELINE
        assert _user(event) == {"reference": "Practitioner/dr-khan"}
        assert _agent(event, "110153")["network"]["address"] == address


def test_s4_picker_search_by_nhs_number_and_the_choice_are_audited(
    app: Any, audit_file: Path, patient: dict[str, Any]
) -> None:
    address = "10.4.0.2"
    agent = browser(app, address)
    params, _ = auth_params(scope=PICKER_SCOPE)
    consent = agent.pick(agent.login(agent.authorize(params)), patient["nhs_number"])
    assert page_kind(consent) == "consent"
    events = _events(audit_file, address, 2)
    search = [e for e in events if _subtype(e) == "search-type"]
    chosen = [e for e in events if _subtype(e) == "read"]
    assert search and _patients(search[0]) == [f"Patient/{patient['nhs_number']}"]
    assert len(chosen) == 1 and _patients(chosen[0]) == [f"Patient/{patient['nhs_number']}"]
    assert chosen[0]["outcome"] == "0" and _user(chosen[0]) == {"reference": "Practitioner/dr-khan"}


def test_s4_picker_search_with_nothing_found_is_audited(app: Any, audit_file: Path) -> None:
    address = "10.4.0.3"
    agent = browser(app, address)
    params, _ = auth_params(scope=PICKER_SCOPE)
    picker = agent.login(agent.authorize(params))
    (search,) = [f for f in forms_of(picker) if "q" in f.fields]
    agent.submit(picker, search, {"q": "Zzyzx"})
    (event,) = [e for e in _events(audit_file, address) if _subtype(e) == "search-type"]
    assert _patients(event) == [] and event["outcome"] == "0"


# ============================================================================= S16: the authorization server


def test_s16_sign_in_success_and_failure_are_audited(app: Any, audit_file: Path) -> None:
    address = "10.16.0.1"
    agent = browser(app, address)
    params, _ = auth_params()
    agent.login(agent.authorize(params), password="not-the-password")
    agent.login(agent.authorize(params), password=PASSWORD)
    logins = [e for e in _events(audit_file, address, 2) if _subtype(e) == "110122"]
    assert [e["outcome"] for e in logins] == ["4", "0"], logins
    failed, succeeded = logins
    assert _user(failed) == {"display": "dr.khan"} and failed["outcomeDesc"]
    assert _user(succeeded) == {"reference": "Practitioner/dr-khan"}
    for event in logins:
        assert event["type"]["code"] == "110114"
        assert _client(event) == TIMELINE
        assert _agent(event, "110153")["network"]["address"] == address


def test_s16_sign_out_is_audited(app: Any, audit_file: Path) -> None:
    address = "10.16.0.2"
    agent = browser(app, address)
    params, _ = auth_params()
    agent.login(agent.authorize(params))
    page = agent.http.get("/auth/logout")
    agent.submit(page, forms_of(page)[0])
    (event,) = [e for e in _events(audit_file, address) if _subtype(e) == "110123"]
    assert _user(event) == {"reference": "Practitioner/dr-khan"} and event["outcome"] == "0"


def test_s16_token_issued_is_audited_with_user_client_address_and_patient(
    app: Any, audit_file: Path, patient: dict[str, Any]
) -> None:
    address = "10.16.0.3"
    agent = browser(app, address)
    params, verifier = auth_params(scope=PICKER_SCOPE)
    code = query_of(agent.run(params, patient=patient["nhs_number"]))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "client_id": TIMELINE,
        "code_verifier": verifier,
    }
    assert agent.http.post("/auth/token", data=form).status_code == 200
    assert agent.http.post("/auth/token", data=form).status_code == 400  # the replay is audited too
    tokens = [e for e in _events(audit_file, address) if _subtype(e) == "ITI-71"]
    assert [e["outcome"] for e in tokens] == ["0", "4"], tokens
    issued, refused = tokens
    assert issued["meta"]["profile"][0].endswith("IHE.IUA.71")
    assert _patients(issued) == [f"Patient/{patient['nhs_number']}"]
    assert _user(issued) == {"reference": "Practitioner/dr-khan"} and _client(issued) == TIMELINE
    assert "invalid_grant" in refused["outcomeDesc"] and _client(refused) == TIMELINE


def test_s16_backend_token_issued_is_audited(app: Any, audit_file: Path) -> None:
    address = "10.16.0.4"
    _portal_token(app, address)
    (event,) = [e for e in _events(audit_file, address) if _subtype(e) == "ITI-71"]
    assert _client(event) == "portal" and event["outcome"] == "0"
    assert "grant_type=client_credentials" in event["entity"][0]["description"]


def test_s16_launch_created_is_audited_with_the_patient(app: Any, audit_file: Path, patient: dict[str, Any]) -> None:
    address = "10.16.0.5"
    token = _portal_token(app, address)
    http = app.test_client()
    created = http.post(
        "/auth/launch",
        json={"client_id": TIMELINE, "patient": patient["nhs_number"]},
        headers={"Authorization": f"Bearer {token}"},
        environ_base={"REMOTE_ADDR": address},
    )
    assert created.status_code == 201
    refused = http.post("/auth/launch", json={"client_id": TIMELINE}, environ_base={"REMOTE_ADDR": address})
    assert refused.status_code == 401
    launches = [e for e in _events(audit_file, address) if e["type"]["code"] == "rest"]
    assert [e["outcome"] for e in launches] == ["0", "4"], launches
    assert launches[0]["action"] == "C" and _client(launches[0]) == "portal"
    assert _patients(launches[0]) == [f"Patient/{patient['nhs_number']}"]
    assert f"for client {TIMELINE}" in launches[0]["entity"][0]["description"]


def test_s16_introspection_is_audited(app: Any, audit_file: Path, patient: dict[str, Any]) -> None:
    address = "10.16.0.6"
    agent = browser(app, address)
    params, verifier = auth_params(scope=PICKER_SCOPE)
    code = query_of(agent.run(params, patient=patient["nhs_number"]))["code"]
    access = exchange(app, code, verifier, params).get_json()["access_token"]
    portal = _portal_token(app, address)
    answer = app.test_client().post(
        "/auth/introspect",
        data={"token": access},
        headers={"Authorization": f"Bearer {portal}"},
        environ_base={"REMOTE_ADDR": address},
    )
    assert answer.get_json()["active"] is True
    (event,) = [e for e in _events(audit_file, address) if _subtype(e) == "ITI-102"]
    assert _client(event) == "portal" and _patients(event) == [f"Patient/{patient['nhs_number']}"]
    assert "active=true" in event["entity"][0]["description"]


def test_s16_auth_events_are_found_by_patient(app: Any, audit_file: Path, patient: dict[str, Any]) -> None:
    """The audit store indexes the patient entity: AuditEvent?patient= finds the picker and token events."""
    address = "10.16.0.7"
    agent = browser(app, address)
    params, verifier = auth_params(scope=PICKER_SCOPE)
    code = query_of(agent.run(params, patient=patient["nhs_number"]))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "client_id": TIMELINE,
        "code_verifier": verifier,
    }
    assert agent.http.post("/auth/token", data=form).status_code == 200
    connection = sqlite3.connect(f"file:{audit_file}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT body FROM audit_event WHERE patient = ?", (patient["nhs_number"],)).fetchall()
    finally:
        connection.close()
    mine = [json.loads(r[0]) for r in rows]
    mine = [e for e in mine if any(a.get("network", {}).get("address") == address for a in e["agent"])]
    assert {"search-type", "read", "ITI-71"} <= {_subtype(e) for e in mine}, mine
