"""S16 (API side): a count and a refused attempt on another patient name the targeted patient in their
AuditEvent, so that `AuditEvent?patient=` finds them. Before, both were recorded with no patient at all.

Each case counts the events `AuditEvent?patient=<target>&agent=<client>` finds before and after one request
of the real app; the client's answer still names nobody (tests/fhir/test_compartment_paths.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from smart_tokens import patient_token, system_token

from app.core import systems

TIMELINE, PORTAL = "imaging-timeline", "portal"


@pytest.fixture(scope="module")
def people(manifest: dict[str, Any]) -> dict[str, Any]:
    a = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    others = [p for p in manifest["patients"] if p["nhs_number"] != a]
    b = next(p for p in others if any(len(s["trusts"]) == 1 for s in p["studies"]))
    return {"A": a, "B": b["nhs_number"], "B_record": b}


def audited(app: Any, patient: str, agent: str) -> int:
    token = {"Authorization": f"Bearer {system_token(app, 'system/AuditEvent.rs')}"}
    response = app.test_client().get(f"/fhir/AuditEvent?patient={patient}&agent={agent}&_summary=count", headers=token)
    assert response.status_code == 200
    return int(response.get_json()["total"])


def as_a(app: Any, people: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {patient_token(app, people['A'])}"}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/fhir/ImagingStudy?patient={B}", 403),
        ("/fhir/ImagingStudy?patient.identifier=" + systems.NHS_NUMBER + "|{B}&_summary=count", 403),
        ("/fhir/Patient?_id={B}", 403),
        ("/fhir/Patient/{B}", 404),
        ("/fhir/Patient/$ihe-pix?sourceIdentifier=" + systems.NHS_NUMBER + "|{B}", 404),
    ],
)
def test_refused_attempt_on_another_patient_names_the_target(
    app: Any, people: dict[str, Any], path: str, status: int
) -> None:
    before = audited(app, people["B"], TIMELINE)
    response = app.test_client().get(path.format(B=people["B"]), headers=as_a(app, people))
    assert response.status_code == status
    assert people["B"].encode() not in response.data  # the client is told nothing
    assert audited(app, people["B"], TIMELINE) == before + 1


def test_refused_image_retrieval_names_the_studys_owner(app: Any, people: dict[str, Any]) -> None:
    study = next(s for s in people["B_record"]["studies"] if len(s["trusts"]) == 1)
    before = audited(app, people["B"], TIMELINE)
    response = app.test_client().get(
        f"/dicomweb/{study['trusts'][0]}/studies/{study['study_uid']}/metadata", headers=as_a(app, people)
    )
    assert response.status_code == 404
    assert audited(app, people["B"], TIMELINE) == before + 1


@pytest.mark.parametrize(
    "query",
    [
        "/fhir/ImagingStudy?patient={B}&_summary=count",
        "/fhir/ImagingStudy?patient={B}&_count=0",
        "/fhir/Patient?_id={B}&_summary=count",
        "/fhir/ImagingStudy?_id={study}&_summary=count",  # no patient named: the patients it matched
    ],
)
def test_count_names_the_patients_it_counted(app: Any, people: dict[str, Any], query: str) -> None:
    study = people["B_record"]["studies"][0]["study_uid"]
    before = audited(app, people["B"], PORTAL)
    token = {"Authorization": f"Bearer {system_token(app)}"}
    response = app.test_client().get(query.format(B=people["B"], study=study), headers=token)
    assert response.status_code == 200
    body = response.get_json()
    assert body["total"] >= 1 and not [e for e in body.get("entry", ()) if e["search"]["mode"] == "match"]
    assert audited(app, people["B"], PORTAL) == before + 1


def test_count_of_an_unknown_patient_names_that_patient(app: Any) -> None:
    """Counting a number nobody holds still says who was looked for (the answer, 0, is itself a disclosure)."""
    nobody = "9434765919"
    before = audited(app, nobody, PORTAL)
    token = {"Authorization": f"Bearer {system_token(app)}"}
    response = app.test_client().get(f"/fhir/ImagingStudy?patient={nobody}&_summary=count", headers=token)
    assert response.status_code == 200 and response.get_json()["total"] == 0
    assert audited(app, nobody, PORTAL) == before + 1
