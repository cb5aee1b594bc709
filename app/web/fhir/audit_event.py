"""AuditEvent: the audit trail, searched by patient, date and client; system scopes only (no patient's
compartment holds another client's accesses)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Response

from app.audit.search import audit_criteria
from app.core.bundle import searchset
from app.core.search import params as p
from app.web.components import components
from app.web.fhir.api import bp, compartment, fhir_response, search_pairs

AUDIT_EVENT_PARAMETERS = {"patient", "date", "agent"}


@bp.get("/AuditEvent")
def search_audit_events() -> Response:
    app = components()
    compartment("AuditEvent", "s", context="system")
    pairs, offset = search_pairs("AuditEvent", AUDIT_EVENT_PARAMETERS)
    criteria, used = audit_criteria(pairs, ZoneInfo(app.settings.timezone))
    paging, paging_used = p.parse_paging(
        pairs, app.settings.default_count, app.settings.max_count, frozenset(), frozenset(), False
    )
    paging.offset = offset
    total = app.audit.count(**criteria)
    events = [] if paging.summary_count else app.audit.search(**criteria, limit=paging.count, offset=offset)
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="AuditEvent",
            matches=events,
            paging=paging,
            used=sorted(used + paging_used),
            secret=app.settings.cursor_secret,
            total=total,
        )
    )
