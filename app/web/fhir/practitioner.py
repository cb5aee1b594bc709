"""Practitioner: the embedded authorization server's users, as the `fhirUser` of their tokens names them."""

from __future__ import annotations

from typing import Any

from flask import Response

from app.core.errors import NotFound, quote
from app.web.components import components
from app.web.fhir.api import bp, compartment, fhir_response


def practitioner_resource(practitioner_id: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": practitioner_id, "active": True, "name": [{"text": name}]}


@bp.get("/Practitioner/<practitioner_id>")
def read_practitioner(practitioner_id: str) -> Response:
    compartment("Practitioner", "r")
    server = components().auth_server
    users = server.users.values() if server is not None else ()
    found = next((u for u in users if u.fhir_user == f"Practitioner/{practitioner_id}"), None)
    if found is None:
        raise NotFound(f"Practitioner/{quote(practitioner_id)} does not exist")
    return fhir_response(practitioner_resource(practitioner_id, found.name))
