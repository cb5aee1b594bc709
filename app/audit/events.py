"""Audit: an AuditEvent per read, search and denial, shaped per IHE Basic Audit Log Patterns (BALP).

Built here (pure), stored by app.audit.store. One event per
patient whose data was returned (PatientRead / PatientQuery); a request that returned no patient
data, or was refused, gets one event without a patient entity.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from app.core import systems
from app.core.instants import utc_instant


@dataclass(frozen=True)
class AuditRecord:
    """What happened, in terms the event is built from."""

    interaction: str  # read | search-type
    resource_type: str
    status: int
    client_id: str | None
    user: str | None  # fhirUser or sub
    address: str | None
    query: str | None  # the raw query string of a search
    resource_id: str | None = None
    patients: tuple[str, ...] = ()
    description: str | None = None
    detail: str | None = None  # what exactly was read, e.g. the WADO-RS path of an image retrieval


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")


def client_agent(client_id: str | None, address: str | None, requestor: bool) -> dict[str, Any]:
    """The calling client (DICOM Source Role ID), with its network address when known."""
    client = client_id or "anonymous"
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": systems.DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": systems.URI, "value": f"client:{client}"}, "display": client},
        "requestor": requestor,
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    return agent


def server_agent(observer: str) -> dict[str, Any]:
    """This server (DICOM Destination Role ID)."""
    return {
        "type": {"coding": [{"system": systems.DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": observer},
        "requestor": False,
    }


def build_events(record: AuditRecord, observer: str) -> list[dict[str, Any]]:
    """The BALP-shaped AuditEvents for one request (pure)."""
    patient_shape = "PatientQuery" if record.interaction == "search-type" else "PatientRead"
    generic_shape = "Query" if record.interaction == "search-type" else "RESTread"
    recorded = utc_instant()
    agents = [client_agent(record.client_id, record.address, requestor=False), server_agent(observer)]
    if record.user:
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": systems.PARTICIPATION_TYPE,
                            "code": "IRCP",
                            "display": "information recipient",
                        }
                    ]
                },
                "who": ({"reference": record.user} if "/" in record.user else {"display": record.user}),
                "requestor": True,
            }
        )
    else:
        agents[0]["requestor"] = True
    query_entity: list[dict[str, Any]] = []
    if record.interaction == "search-type":
        query_entity.append(
            {
                "type": {
                    "system": systems.AUDIT_ENTITY_TYPE,
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": systems.OBJECT_ROLE,
                    "code": "24",
                    "display": "Query",
                },
                "query": base64.b64encode((record.query or "").encode()).decode(),
            }
        )
    elif record.resource_id:
        query_entity.append(
            {
                "what": {"reference": f"{record.resource_type}/{record.resource_id}"},
                "type": {
                    "system": systems.AUDIT_ENTITY_TYPE,
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": systems.OBJECT_ROLE,
                    "code": "4",
                    "display": "Domain Resource",
                },
                **({"description": record.detail} if record.detail else {}),
            }
        )

    def event(patient: str | None) -> dict[str, Any]:
        entities = list(query_entity)
        if patient:
            entities.append(
                {
                    "what": {"reference": f"Patient/{patient}"},
                    "type": {
                        "system": systems.AUDIT_ENTITY_TYPE,
                        "code": "1",
                        "display": "Person",
                    },
                    "role": {
                        "system": systems.OBJECT_ROLE,
                        "code": "1",
                        "display": "Patient",
                    },
                }
            )
        shape = patient_shape if patient else generic_shape
        out: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": str(uuid.uuid4()),
            "meta": {"profile": [f"{systems.BALP}/IHE.BasicAudit.{shape}"]},
            "type": {
                "system": systems.AUDIT_EVENT_TYPE,
                "code": "rest",
                "display": "RESTful Operation",
            },
            "subtype": [{"system": systems.RESTFUL_INTERACTION, "code": record.interaction}],
            "action": "E" if record.interaction == "search-type" else "R",
            "recorded": recorded,
            "outcome": _outcome(record.status),
            "agent": agents,
            "source": {
                "observer": {"display": observer},
                "type": [
                    {
                        "system": systems.SECURITY_SOURCE_TYPE,
                        "code": "4",
                        "display": "Application Server",
                    }
                ],
            },
        }
        if record.status >= 400:
            out["outcomeDesc"] = record.description or f"HTTP {record.status}"
        if entities:
            out["entity"] = entities
        return out

    return [event(p) for p in record.patients] or [event(None)]
