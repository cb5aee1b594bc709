"""The patient compartment on every path of the running app, one table of cases per path.

Patient A (the demo's multi-trust patient) holds the token's patient context; patient B is
anyone else with imaging records. Each case asserts what A's token may see of A and of B, and
that B's data and B's existence never show: not in a search, a read, an include, a paging
cursor, $ihe-pix's wording, the image gateway or an AuditEvent search.
"""

from __future__ import annotations

from typing import Any

import pytest
from smart_tokens import patient_token

from app.core import systems
from app.web.components import components

Bundle = dict[str, Any]
NOBODY = "9434765919"  # a valid NHS number nobody in the demo has: a patient context that holds nothing


def ods(app: Any, trust: str) -> str:
    from app.web.components import components

    found = components(app).settings.trust(trust)
    assert found is not None
    return found.ods_code


@pytest.fixture(scope="module")
def people(manifest: dict[str, Any]) -> dict[str, Any]:
    a = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    patients = {p["nhs_number"]: p for p in manifest["patients"]}
    # B: a patient with both CT and MR studies, so that scope filters have something to cut.
    b = next(
        n for n, p in patients.items() if n != a and {"CT", "MR"} <= {m for s in p["studies"] for m in s["modalities"]}
    )
    return {"A": a, "B": b, "patients": patients}


def studies(people: dict[str, Any], who: str, modality: str | None = None) -> set[str]:
    found = people["patients"][people[who]]["studies"]
    return {s["study_uid"] for s in found if modality is None or modality in s["modalities"]}


def bearer(app: Any, nhs: str, scope: str = "launch/patient patient/*.rs") -> dict[str, str]:
    return {"Authorization": f"Bearer {patient_token(app, nhs, scope)}"}


def entries(bundle: Bundle, mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == mode]


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.get_json()
    return {r["id"] for r in entries(response.get_json())}


def diagnostics(response: Any) -> str:
    return str(response.get_json()["issue"][0]["diagnostics"])


# -- search ---------------------------------------------------------------------------------------
def test_compartment_search_without_patient_is_the_context_patient(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    assert ids(client.get("/fhir/ImagingStudy?_count=200", headers=bearer(app, people["A"]))) == studies(people, "A")


@pytest.mark.parametrize("parameter", ["patient", "subject", "patient.identifier"])
def test_compartment_search_naming_another_patient_is_403(
    app: Any, client: Any, people: dict[str, Any], parameter: str
) -> None:
    value = people["B"] if parameter != "patient.identifier" else f"{systems.NHS_NUMBER}|{people['B']}"
    response = client.get(f"/fhir/ImagingStudy?{parameter}={value}", headers=bearer(app, people["A"]))
    assert response.status_code == 403
    assert "insufficient_scope" in response.headers["WWW-Authenticate"]


def test_compartment_patient_search_naming_another_patient_is_403(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    assert client.get(f"/fhir/Patient?_id={people['B']}", headers=bearer(app, people["A"])).status_code == 403
    assert ids(client.get("/fhir/Patient", headers=bearer(app, people["A"]))) == {people["A"]}


# -- v2 scope filters: intersected with the client's own criteria -----------------------------------
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "CT"),
        ("modality=CT", "CT"),
        ("modality=MR", None),  # disjoint: nothing, never the filter's CT studies
        ("modality=MR,CT", "CT"),
        ("modality=MR&status=available", None),
        ("status=cancelled", None),
    ],
)
def test_compartment_scope_filter_is_intersected_with_the_search(
    app: Any, client: Any, people: dict[str, Any], query: str, expected: str | None
) -> None:
    assert studies(people, "B", "CT") and studies(people, "B", "MR") - studies(people, "B", "CT")
    token = bearer(app, people["B"], "launch/patient patient/ImagingStudy.rs?modality=CT")
    found = ids(client.get(f"/fhir/ImagingStudy?_count=200&{query}", headers=token))
    assert found == (studies(people, "B", expected) if expected else set())


def test_compartment_scope_filter_applies_to_system_scopes_too(app: Any, client: Any, people: dict[str, Any]) -> None:
    from smart_tokens import system_token

    token = {"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs?modality=MR')}"}
    assert ids(client.get(f"/fhir/ImagingStudy?patient={people['B']}&modality=CT&_count=200", headers=token)) == set()
    found = ids(client.get(f"/fhir/ImagingStudy?patient={people['B']}&_count=200", headers=token))
    assert found == studies(people, "B", "MR")


# -- read -----------------------------------------------------------------------------------------
def test_compartment_read_of_another_patients_study_reads_like_a_missing_one(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    token = bearer(app, people["A"])
    own = sorted(studies(people, "A"))[0]
    assert client.get(f"/fhir/ImagingStudy/{own}", headers=token).status_code == 200
    other = sorted(studies(people, "B"))[0]
    denied = client.get(f"/fhir/ImagingStudy/{other}", headers=token)
    missing = client.get("/fhir/ImagingStudy/2.25.1", headers=token)
    assert denied.status_code == missing.status_code == 404
    assert diagnostics(denied).replace(other, "X") == diagnostics(missing).replace("2.25.1", "X")
    # S3: byte for byte, not only the same template (neither names the id asked for) ...
    assert denied.data == missing.data
    assert other.encode() not in denied.data
    # ... and the same UID reads the same under a token whose patient holds nothing at all.
    assert client.get(f"/fhir/ImagingStudy/{other}", headers=bearer(app, NOBODY)).data == denied.data


def test_compartment_patient_read_of_another_patient_reads_like_an_unknown_one(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    token = bearer(app, people["A"])
    assert client.get(f"/fhir/Patient/{people['A']}", headers=token).status_code == 200
    unknown = "9434765919"  # a valid NHS number nobody in the demo has
    assert unknown not in people["patients"]
    denied = client.get(f"/fhir/Patient/{people['B']}", headers=token)
    missing = client.get(f"/fhir/Patient/{unknown}", headers=token)
    assert denied.status_code == missing.status_code == 404
    assert diagnostics(denied).replace(people["B"], "X") == diagnostics(missing).replace(unknown, "X")
    assert denied.data == missing.data  # S3: byte for byte
    assert people["B"].encode() not in denied.data


# -- _include -------------------------------------------------------------------------------------
def test_compartment_include_never_brings_another_patients_demographics(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    """A user scope on ImagingStudy finds B's studies; a patient scope on Patient (A) must not include B."""
    token = bearer(app, people["A"], "launch/patient user/ImagingStudy.rs patient/Patient.r")
    response = client.get(f"/fhir/ImagingStudy?patient={people['B']}&_include=ImagingStudy:patient", headers=token)
    bundle = response.get_json()
    assert {s["id"] for s in entries(bundle)} == studies(people, "B")
    assert entries(bundle, "include") == []
    own = client.get(f"/fhir/ImagingStudy?patient={people['A']}&_include=ImagingStudy:patient", headers=token)
    assert [p["id"] for p in entries(own.get_json(), "include")] == [people["A"]]


# -- paging cursors -------------------------------------------------------------------------------
def test_compartment_cursor_of_a_replayed_by_b_is_refused(app: Any, client: Any, people: dict[str, Any]) -> None:
    first = client.get(f"/fhir/ImagingStudy?patient={people['A']}&_count=1", headers=bearer(app, people["A"]))
    link = next(link["url"] for link in first.get_json()["link"] if link["relation"] == "next")
    path = "/fhir/" + link.split("/fhir/", 1)[1]
    assert client.get(path, headers=bearer(app, people["A"])).status_code == 200
    assert client.get(path, headers=bearer(app, people["B"])).status_code == 403


# -- $ihe-pix ---------------------------------------------------------------------------------------
def test_compartment_pix_another_patient_and_an_unknown_number_read_alike(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    token = bearer(app, people["A"])
    own = client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={systems.NHS_NUMBER}|{people['A']}", headers=token)
    assert own.status_code == 200
    unknown = "9434765919"
    denied = client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={systems.NHS_NUMBER}|{people['B']}", headers=token)
    missing = client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={systems.NHS_NUMBER}|{unknown}", headers=token)
    assert denied.status_code == missing.status_code == 404
    assert diagnostics(denied).replace(people["B"], "X") == diagnostics(missing).replace(unknown, "X")
    assert denied.data == missing.data  # S3: byte for byte
    assert people["B"].encode() not in denied.data


def test_compartment_pix_another_patients_local_number_and_an_unknown_one_are_byte_identical(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    """S3: the oracle of "who is held at which trust": B's number at a trust and a number nobody has there."""
    token = bearer(app, people["A"])
    trust, local = next(iter(people["patients"][people["B"]]["local_ids"].items()))
    system = f"https://fhir.nhs.uk/{ods(app, trust)}/Id/local-patient-identifier"
    denied = client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={system}|{local}", headers=token)
    missing = client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={system}|NOBODY-0000", headers=token)
    assert denied.status_code == missing.status_code == 404
    assert denied.data == missing.data
    assert local.encode() not in denied.data


# -- the image gateway --------------------------------------------------------------------------------
def test_compartment_gateway_another_patients_study_reads_like_a_missing_one(app: Any, people: dict[str, Any]) -> None:
    http = app.test_client()
    token = bearer(app, people["A"])
    own = next(s for s in people["patients"][people["A"]]["studies"])
    assert (
        http.get(f"/dicomweb/{own['trusts'][0]}/studies/{own['study_uid']}/metadata", headers=token).status_code == 200
    )
    other = next(s for s in people["patients"][people["B"]]["studies"])
    trust = other["trusts"][0]
    denied = http.get(f"/dicomweb/{trust}/studies/{other['study_uid']}/metadata", headers=token)
    missing = http.get(f"/dicomweb/{trust}/studies/2.25.1/metadata", headers=token)
    assert denied.status_code == missing.status_code == 404
    assert diagnostics(denied).replace(other["study_uid"], "X") == diagnostics(missing).replace("2.25.1", "X")
    assert denied.data == missing.data  # S3: byte for byte
    assert other["study_uid"].encode() not in denied.data
    same_uid = http.get(f"/dicomweb/{trust}/studies/{other['study_uid']}/metadata", headers=bearer(app, NOBODY))
    assert same_uid.data == denied.data


# -- AuditEvent -----------------------------------------------------------------------------------
def test_compartment_audit_trail_needs_a_system_scope(app: Any, client: Any, people: dict[str, Any]) -> None:
    token = bearer(app, people["A"], "launch/patient patient/*.rs user/*.rs")
    assert client.get(f"/fhir/AuditEvent?patient={people['A']}", headers=token).status_code == 403
    assert client.get(f"/fhir/AuditEvent?patient={people['A']}").status_code == 200  # the client's system token


# -- EHR launch context -------------------------------------------------------------------------------
def test_compartment_launch_context_study_must_be_the_patients(app: Any, people: dict[str, Any]) -> None:
    """POST /auth/launch: an EPR may launch with a patient's own study, never with another patient's."""
    from smart_tokens import system_token

    http = app.test_client()
    token = {"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs')}"}
    own = sorted(studies(people, "A"))[0]
    other = sorted(studies(people, "B"))[0]
    body = {"client_id": "imaging-timeline", "patient": people["A"]}
    granted = http.post("/auth/launch", json={**body, "imaging_study": own}, headers=token)
    assert granted.status_code == 201, granted.get_json()
    refused = http.post("/auth/launch", json={**body, "imaging_study": other}, headers=token)
    assert refused.status_code == 400
    assert refused.get_json() == {
        "error": "invalid_request",
        "error_description": "imaging_study is not a study of that patient",
    }


def test_compartment_filtered_scope_keeps_an_unbounded_search_too_costly(app: Any, client: Any) -> None:
    """A disjoint filter matches nothing, but a search naming no patient or study is still refused (400)."""
    from smart_tokens import system_token

    token = {"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs?modality=CT')}"}
    response = client.get("/fhir/ImagingStudy?modality=MR", headers=token)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["code"] == "too-costly"


def test_compartment_read_under_uncombinable_filters_reads_like_a_missing_study(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    scope = "launch/patient patient/ImagingStudy.rs?modality=CT patient/ImagingStudy.rs?modality=MR"
    token = bearer(app, people["B"], scope)
    own = sorted(studies(people, "B", "CT"))[0]
    denied = client.get(f"/fhir/ImagingStudy/{own}", headers=token)
    missing = client.get("/fhir/ImagingStudy/2.25.1", headers=bearer(app, people["B"]))
    assert denied.status_code == missing.status_code == 404
    assert denied.get_data() == missing.get_data()


def test_compartment_patient_token_reads_its_own_practitioner_only(
    app: Any, client: Any, people: dict[str, Any]
) -> None:
    """S23: an app in one patient's context reads its user's Practitioner (fhirUser), not every user's."""
    token = bearer(app, people["A"])  # dr.khan's token in patient A's context
    assert client.get("/fhir/Practitioner/dr-khan", headers=token).status_code == 200
    server = components(app).auth_server
    assert server is not None
    others = [u.fhir_user for u in server.users.values() if u.fhir_user and u.fhir_user != "Practitioner/dr-khan"]
    assert others, "the demo has other users"
    other = others[0].removeprefix("Practitioner/")
    assert client.get(f"/fhir/Practitioner/{other}", headers=token).status_code == 404
    assert client.get(f"/fhir/Practitioner/{other}").status_code == 200  # a system token reads any user
