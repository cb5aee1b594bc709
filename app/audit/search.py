"""AuditEvent search parameters (patient, date, agent) -> audit store criteria. Pure."""

from __future__ import annotations

from datetime import timezone, tzinfo
from typing import Any

from app.core.errors import InvalidRequest
from app.core.search.dates import DateValueError, parse_filter
from app.core.search.params import _patient_reference


def _instant(moment: Any) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_criteria(pairs: list[tuple[str, str]], zone: tzinfo) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    criteria: dict[str, Any] = {}
    used: list[tuple[str, str]] = []
    for name, value in pairs:
        if name == "patient":
            criteria["patient"] = _patient_reference(value, name)
        elif name == "agent":
            criteria["client_id"] = value.removeprefix("client:")
        elif name == "date":
            try:
                found = parse_filter(value, zone)
            except DateValueError as exc:
                raise InvalidRequest(str(exc), name) from None
            if found.prefix in ("ge", "gt", "sa", "eq"):
                criteria["since"] = _instant(found.range.start if found.prefix in ("ge", "eq") else found.range.end)
            if found.prefix in ("le", "lt", "eb", "eq"):
                criteria["until"] = _instant(found.range.end if found.prefix in ("le", "eq") else found.range.start)
            if found.prefix == "ne":
                raise InvalidRequest("date: the ne prefix is not supported for AuditEvent", name)
        else:
            continue
        used.append((name, value))
    return criteria, used
