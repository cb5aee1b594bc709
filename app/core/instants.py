"""FHIR instants: UTC, to the millisecond, with a Z (``2026-12-02T20:31:14.123Z``). Pure."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_instant(moment: datetime | None = None) -> str:
    """`moment` (default: now) as a FHIR instant in UTC."""
    found = datetime.now(timezone.utc) if moment is None else moment.astimezone(timezone.utc)
    return found.isoformat(timespec="milliseconds").replace("+00:00", "Z")
