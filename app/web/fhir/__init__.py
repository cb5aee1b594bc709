"""The FHIR REST API: one module per resource type, one blueprint (`bp`). Read-only; FHIR JSON only."""

from __future__ import annotations

from app.web.fhir import audit_event, directory, imaging_study, metadata, patient, practitioner
from app.web.fhir.api import bp

__all__ = ["audit_event", "bp", "directory", "imaging_study", "metadata", "patient", "practitioner"]
