"""Endpoint: each trust's image archive (DICOMweb WADO-RS, an IHE IID viewer); search and read."""

from __future__ import annotations

from flask import Response

from app.web.fhir.api import bp
from app.web.fhir.directory import read_directory, search_directory


@bp.get("/Endpoint")
def search_endpoints() -> Response:
    return search_directory("Endpoint")


@bp.get("/Endpoint/<endpoint_id>")
def read_endpoint(endpoint_id: str) -> Response:
    return read_directory("Endpoint", endpoint_id)
