"""Audit: an AuditEvent per read, search and denial, shaped per IHE Basic Audit Log Patterns (BALP).

Events are written to SQLite in WAL mode with synchronous=FULL and committed before the response
leaves, so an acknowledged request is never missing from the log after a crash. One event per
patient whose data was returned (PatientRead / PatientQuery); a request that returned no patient
data, or was refused, gets one event without a patient entity.
"""

from __future__ import annotations

import base64
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

DCM = "http://dicom.nema.org/resources/ontology/DCM"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition"


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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outcome(status: int) -> str:
    return "0" if status < 400 else ("4" if status < 500 else "8")


def build_events(record: AuditRecord, observer: str) -> list[dict[str, Any]]:
    """The BALP-shaped AuditEvents for one request (pure)."""
    patient_shape = "PatientQuery" if record.interaction == "search-type" else "PatientRead"
    generic_shape = "Query" if record.interaction == "search-type" else "RESTread"
    recorded = _now()
    agents: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
            "who": {
                "identifier": {"system": "urn:ietf:rfc:3986", "value": f"client:{record.client_id or 'anonymous'}"},
                "display": record.client_id or "anonymous",
            },
            "requestor": False,
            **({"network": {"address": record.address, "type": "2"}} if record.address else {}),
        },
        {
            "type": {"coding": [{"system": DCM, "code": "110152", "display": "Destination Role ID"}]},
            "who": {"display": observer},
            "requestor": False,
        },
    ]
    if record.user:
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
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
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
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
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
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
                        "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                        "code": "1",
                        "display": "Person",
                    },
                    "role": {
                        "system": "http://terminology.hl7.org/CodeSystem/object-role",
                        "code": "1",
                        "display": "Patient",
                    },
                }
            )
        shape = patient_shape if patient else generic_shape
        out: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": str(uuid.uuid4()),
            "meta": {"profile": [f"{BALP}/IHE.BasicAudit.{shape}"]},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "RESTful Operation",
            },
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": record.interaction}],
            "action": "E" if record.interaction == "search-type" else "R",
            "recorded": recorded,
            "outcome": _outcome(record.status),
            "agent": agents,
            "source": {
                "observer": {"display": observer},
                "type": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
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


class AuditStore:
    """Durable, append-only storage of AuditEvents, searchable by patient, date and client."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("""CREATE TABLE IF NOT EXISTS audit_event (
            id TEXT PRIMARY KEY, recorded TEXT NOT NULL, patient TEXT, client_id TEXT,
            outcome TEXT NOT NULL, body BLOB NOT NULL)""")
        self._db.execute("CREATE INDEX IF NOT EXISTS audit_patient ON audit_event (patient, recorded)")
        self._db.execute("CREATE INDEX IF NOT EXISTS audit_recorded ON audit_event (recorded)")

    def write(self, events: list[dict[str, Any]], client_id: str | None) -> None:
        """Commit the events (one transaction) before returning: the caller then answers."""
        rows = []
        for event in events:
            patient = next(
                (
                    e["what"]["reference"].split("/", 1)[1]
                    for e in event.get("entity", ())
                    if e.get("role", {}).get("code") == "1"
                ),
                None,
            )
            rows.append((event["id"], event["recorded"], patient, client_id, event["outcome"], orjson.dumps(event)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO audit_event VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _where(
        patient: str | None, since: str | None, until: str | None, client_id: str | None
    ) -> tuple[str, list[str]]:
        clauses, args = [], []
        for clause, value in (
            ("patient = ?", patient),
            ("recorded >= ?", since),
            ("recorded < ?", until),
            ("client_id = ?", client_id),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args

    def search(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """One page of events, newest first (a stable order: recorded time, then id)."""
        where, args = self._where(patient, since, until, client_id)
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM audit_event {where} ORDER BY recorded DESC, id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def count(
        self,
        patient: str | None = None,
        since: str | None = None,
        until: str | None = None,
        client_id: str | None = None,
    ) -> int:
        where, args = self._where(patient, since, until, client_id)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM audit_event {where}", args).fetchone()[0])

    def writable(self) -> bool:
        """True when an event could be committed now: the write lock is taken, then let go unused."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("ROLLBACK")
            return True
        except sqlite3.Error:
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()
