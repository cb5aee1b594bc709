"""The FHIR REST API: one module per resource type, one blueprint (`bp`). Read-only; FHIR JSON only."""

from __future__ import annotations

from app.web.fhir import (
    audit_event,
    diagnostic_report,
    document_reference,
    endpoint,
    imaging_study,
    metadata,
    organization,
    patient,
    practitioner,
)
from app.web.fhir.api import bp

__all__ = [
    "audit_event",
    "bp",
    "diagnostic_report",
    "document_reference",
    "endpoint",
    "imaging_study",
    "metadata",
    "organization",
    "patient",
    "practitioner",
]
