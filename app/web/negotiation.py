"""Content negotiation for the FHIR API: FHIR JSON only, by `_format` or `Accept` (406 otherwise)."""

from __future__ import annotations

from flask import request

from app.core.errors import NotAcceptable, quote

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "application/*", "*/*")
_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")
OUTPUT_PARAMETERS = ("_format", "_pretty")  # shape the response only: never search criteria


def require_fhir_json() -> None:
    """406 unless the client accepts FHIR JSON."""
    wanted = request.args.get("_format")
    if wanted is not None and wanted.split(";")[0].strip() not in _FORMATS:
        raise NotAcceptable(f"_format {quote(wanted)} is not supported: this server speaks FHIR JSON only", "_format")
    accept = request.headers.get("Accept")
    if wanted is None and accept and not any(t in accept for t in _JSON_TYPES):
        raise NotAcceptable(f"Accept {quote(accept)} is not supported: ask for application/fhir+json")
