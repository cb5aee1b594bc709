"""What the directory types (Endpoint, Organization) share: search and read of the trusts' data, no patient data."""

from __future__ import annotations

from flask import Response

from app.core.bundle import searchset
from app.core.search.resources import DIRECTORIES, parse_directory_search
from app.web.components import components
from app.web.fhir.api import compartment, fhir_response, search_pairs


def search_directory(resource_type: str) -> Response:
    app = components()
    compartment(resource_type, "s")
    pairs, offset = search_pairs(DIRECTORIES[resource_type])
    parsed = parse_directory_search(resource_type, pairs, app.settings.default_count, app.settings.max_count)
    matches = parsed.query.select(app.services.directory.resources(resource_type))
    paging = parsed.paging
    paging.offset = offset
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type=resource_type,
            matches=matches,
            paging=paging,
            used=parsed.used,
            secret=app.settings.cursor_secret,
        )
    )


def read_directory(resource_type: str, resource_id: str) -> Response:
    compartment(resource_type, "r")
    return fhir_response(components().services.directory.read(resource_type, resource_id))
