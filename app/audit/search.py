"""AuditEvent search parameters (patient, date, agent) -> audit store criteria.

Declared and parsed in the core (app/core/search/audit.py: AUDIT_EVENT, parse_audit_search); this
keeps the audit store's view of them: keyword arguments of its search and count.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from app.core.search.audit import parse_audit_criteria


def audit_criteria(pairs: list[tuple[str, str]], zone: tzinfo) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The store's criteria and the recognised pairs (request order); raises InvalidRequest (400)."""
    query, used = parse_audit_criteria(pairs, zone)
    return query.store_criteria(), used
