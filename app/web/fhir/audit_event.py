"""AuditEvent: the audit trail, searched by patient, date and client; system scopes only (no patient's
compartment holds another client's accesses)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import Response

from app.core.bundle import searchset
from app.core.search.audit import AUDIT_EVENT, parse_audit_search
from app.web.components import components
from app.web.fhir.api import bp, compartment, fhir_response, search_pairs


@bp.get("/AuditEvent")
def search_audit_events() -> Response:
    app = components()
    compartment("AuditEvent", "s")
    pairs, offset = search_pairs(AUDIT_EVENT)
    parsed = parse_audit_search(
        pairs, ZoneInfo(app.settings.timezone), app.settings.default_count, app.settings.max_count
    )
    criteria = parsed.query.store_criteria()
    paging = parsed.paging
    paging.offset = offset
    total = app.audit.count(**criteria)
    events = [] if paging.summary_count else app.audit.search(**criteria, limit=paging.count, offset=offset)
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="AuditEvent",
            matches=events,
            paging=paging,
            used=parsed.used,
            secret=app.settings.cursor_secret,
            total=total,
        )
    )
