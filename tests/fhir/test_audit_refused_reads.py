"""S16 gap (docs/security.md, S16 (reads)): a patient token's read of ANOTHER patient's study names that
patient in the request's AuditEvent, so that `AuditEvent?patient=` finds the refused attempt. The answer
stays the byte-identical 404 of a study nobody holds. Before, the read was narrowed to the token's patient
before any archive was asked, and its AuditEvent named no patient at all.

The real app over the demo archives; the events are counted with `AuditEvent?patient=<target>&agent=<client>`.
"""

from __future__ import annotations

from typing import Any

import pytest
from smart_tokens import patient_token, system_token

TIMELINE = "imaging-timeline"  # the client of smart_tokens.patient_token
NOBODY = "9434765919"  # a valid NHS number nobody in the demo has


@pytest.fixture(scope="module")
def people(manifest: dict[str, Any]) -> dict[str, Any]:
    a = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    b = next(p for p in manifest["patients"] if p["nhs_number"] != a and p["studies"])
    return {"A": a, "B": b["nhs_number"], "B_study": sorted(s["study_uid"] for s in b["studies"])[0]}


def audited(app: Any, patient: str, agent: str = TIMELINE) -> int:
    token = {"Authorization": f"Bearer {system_token(app, 'system/AuditEvent.rs')}"}
    response = app.test_client().get(f"/fhir/AuditEvent?patient={patient}&agent={agent}&_summary=count", headers=token)
    assert response.status_code == 200
    return int(response.get_json()["total"])


def read(app: Any, nhs: str, study: str) -> Any:
    token = {"Authorization": f"Bearer {patient_token(app, nhs)}"}
    return app.test_client().get(f"/fhir/ImagingStudy/{study}", headers=token)


def test_refused_read_of_another_patients_study_names_its_patient(app: Any, people: dict[str, Any]) -> None:
    before = audited(app, people["B"])
    denied = read(app, people["A"], people["B_study"])
    missing = read(app, people["A"], "2.25.1")
    assert denied.status_code == missing.status_code == 404
    assert denied.data == missing.data  # the client is told nothing: byte for byte a study nobody holds
    assert people["B"].encode() not in denied.data
    assert audited(app, people["B"]) == before + 1  # the refused read; the unknown UID names nobody


def test_a_read_of_an_unknown_study_names_nobody(app: Any, people: dict[str, Any]) -> None:
    """Control (passes on the old code too): a UID nobody holds is no attempt on anyone; the token's own
    patient is not recorded as targeted either."""
    before_a, before_nobody = audited(app, people["A"]), audited(app, NOBODY)
    assert read(app, NOBODY, "2.25.1").status_code == 404
    assert read(app, people["A"], "2.25.2").status_code == 404
    assert (audited(app, people["A"]), audited(app, NOBODY)) == (before_a, before_nobody)
