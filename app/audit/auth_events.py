"""AuditEvents of the embedded authorization server (pure): sign-in and sign-out, tokens, introspection,
EHR launches. The patient picker's searches and choices are PatientQuery / PatientRead events built by
app.audit.events like the FHIR API's.

Every event names the client, the user (the user name typed at a sign-in, the fhirUser or subject
otherwise) and the source address, and carries the patient as an entity when there is one, so that
`AuditEvent?patient=` finds it:

| action     | type (DICOM)              | subtype                                 | BALP / IUA profile        |
|------------|---------------------------|-----------------------------------------|---------------------------|
| login      | 110114 User Authentication| 110122 Login                            |                           |
| logout     | 110114 User Authentication| 110123 Logout                           |                           |
| token      | 110114 User Authentication| ITI-71 Get Access Token (IHE)           | IHE.IUA.71 (when issued)  |
| introspect | 110114 User Authentication| ITI-102 Introspect Token (IHE)          |                           |
| launch     | rest (FHIR audit-event-type) | create (the launch context)          | PatientCreate             |
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from app.audit.events import client_agent, server_agent
from app.core import systems
from app.core.instants import utc_instant

# Code systems only these events use (app.core.systems holds the shared ones).

Action = Literal["login", "logout", "token", "introspect", "launch"]

_SUBTYPES: dict[str, tuple[str, str, str]] = {
    "login": (systems.DCM, "110122", "Login"),
    "logout": (systems.DCM, "110123", "Logout"),
    "token": (systems.IHE_EVENT_TYPE, "ITI-71", "Get Access Token"),
    "introspect": (systems.IHE_EVENT_TYPE, "ITI-102", "Introspect Token"),
    "launch": (systems.RESTFUL_INTERACTION, "create", "create"),
}


@dataclass(frozen=True)
class AuthAuditRecord:
    """What the authorization server did, in terms the event is built from."""

    action: Action
    status: int  # HTTP status of the answer: < 400 success, 4xx refused
    client_id: str | None
    user: str | None  # fhirUser (a reference), or a user name
    address: str | None
    patient: str | None = None  # NHS number of the patient in context
    description: str | None = None  # why it was refused
    detail: str | None = None  # e.g. the grant type, the launch's target client, the introspected token's client


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")


def build_auth_event(record: AuthAuditRecord, observer: str) -> dict[str, Any]:
    """One AuditEvent (a dict) for one action of the authorization server."""
    system, code, display = _SUBTYPES[record.action]
    agents = [client_agent(record.client_id, record.address, requestor=record.user is None), server_agent(observer)]
    if record.user:
        agents.append(
            {
                "type": {
                    "coding": [{"system": systems.SECURITY_ROLE_TYPE, "code": "humanuser", "display": "human user"}]
                },
                "who": {"reference": record.user} if "/" in record.user else {"display": record.user[:64]},
                "requestor": True,
            }
        )
    entities: list[dict[str, Any]] = []
    if record.detail:
        entities.append(
            {
                "type": {"system": systems.AUDIT_ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": systems.OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
                "description": record.detail,
            }
        )
    if record.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{record.patient}"},
                "type": {"system": systems.AUDIT_ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": systems.OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    profile: str | None
    if record.action == "launch":
        event_type = {"system": systems.AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}
        profile = "IHE.BasicAudit.PatientCreate" if record.patient else "IHE.BasicAudit.Create"
    else:
        event_type = {"system": systems.DCM, "code": "110114", "display": "User Authentication"}
        profile = "IHE.IUA.71" if record.action == "token" and record.status < 400 else None
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        **({"meta": {"profile": [f"{systems.BALP}/{profile}"]}} if profile else {}),
        "type": event_type,
        "subtype": [{"system": system, "code": code, "display": display}],
        "action": "C" if record.action == "launch" else "E",
        "recorded": utc_instant(),
        "outcome": _outcome(record.status),
        "agent": agents,
        "source": {
            "observer": {"display": observer},
            "type": [{"system": systems.SECURITY_SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if record.status >= 400:
        event["outcomeDesc"] = (record.description or f"HTTP {record.status}")[:200]
    if entities:
        event["entity"] = entities
    return event
