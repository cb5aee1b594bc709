"""Practitioner: the embedded authorization server's users, as the `fhirUser` of their tokens names them."""

from __future__ import annotations

from typing import Any

from flask import Response

from app.core.errors import NotFound, quote
from app.web.components import components
from app.web.fhir.api import access, bp, compartment, fhir_response


def practitioner_resource(practitioner_id: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": practitioner_id, "active": True, "name": [{"text": name}]}


@bp.get("/Practitioner/<practitioner_id>")
def read_practitioner(practitioner_id: str) -> Response:
    compartment("Practitioner", "r")
    reference = f"Practitioner/{practitioner_id}"
    claims = access().claims
    server = components().auth_server
    users = list(server.users.values()) if server is not None else []
    # A patient-context token (an app in one patient's chart) reads its own user only, not the staff list:
    # its fhirUser, or the user its subject names.
    if claims.patient is not None:
        own = {claims.fhir_user} | {u.fhir_user for u in users if u.username == claims.subject}
        users = [u for u in users if u.fhir_user in own]
    found = next((u for u in users if u.fhir_user == reference), None)
    if found is None:
        raise NotFound(f"Practitioner/{quote(practitioner_id)} does not exist")
    return fhir_response(practitioner_resource(practitioner_id, found.name))
