"""The OpenAPI 3.1 document (app/web/openapi.yaml), as served at {base}/openapi.json for one configuration.

The file is written for the demo's layout: the FHIR API under /fhir, the embedded authorization
server under /auth, a relative server URL. The search parameters are not written there: an
operation marked `x-fhir-search: <type>` gets its type's from the search registry (app/core/search),
as query parameters (GET) or as the fields of its form (POST _search). Serving it fills in what
the configuration decides:
the server URL (the public origin of `base_url`), the FHIR mount point, the OAuth endpoints of
whichever server issues the tokens, and, without an embedded server, no /auth paths (and, with
`auth.mode: none`, no security at all).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from app.core.search.registry import QueryName, ResourceSearch
from app.core.search.resources import SEARCHES
from app.settings import Settings

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
WRITTEN_BASE_PATH = "/fhir"  # where the file's FHIR paths are written
SEARCH_EXTENSION = "x-fhir-search"  # on a search operation of the file: the type whose search it is
FORM = "application/x-www-form-urlencoded"
_AUTH_PREFIX = "/auth/"


@lru_cache(maxsize=1)
def written_document() -> dict[str, Any]:
    """app/web/openapi.yaml as written (parsed once per process; callers must not change it)."""
    document: dict[str, Any] = yaml.safe_load(DOCUMENT_PATH.read_text(encoding="utf-8"))
    return document


@lru_cache(maxsize=1)
def stored_document() -> dict[str, Any]:
    """The file with the registry's search parameters: the document before configuration (once per
    process; callers must not change it)."""
    document = copy.deepcopy(written_document())
    for operation in _operations(document):
        kind = operation.pop(SEARCH_EXTENSION, None)
        if kind is not None:
            _add_search(document, operation, SEARCHES[kind])
    return document


def query_parameter(query: QueryName) -> dict[str, Any]:
    """One name a search reads, as an OpenAPI query parameter."""
    parameter: dict[str, Any] = {
        "name": query.name,
        "in": "query",
        "description": query.documentation,
        "schema": _schema(query),
    }
    if query.repeated:
        parameter.update(style="form", explode=True)
    if query.example is not None:
        parameter["example"] = copy.deepcopy(query.example)
    return parameter


def _schema(query: QueryName) -> dict[str, Any]:
    schema = copy.deepcopy(dict(query.schema))
    return {"type": "array", "items": schema} if query.repeated else schema


def _add_search(document: dict[str, Any], operation: dict[str, Any], search: ResourceSearch[Any]) -> None:
    """A GET search gets the query parameters (before the written ones: _format, _pretty, Prefer); a POST
    _search gets the fields of its form schema (written with its description and example) and their encoding."""
    queries = search.query_names()
    body = operation.get("requestBody")
    if body is None:
        operation["parameters"] = [*map(query_parameter, queries), *operation.get("parameters", [])]
        return
    form = body["content"][FORM]
    schema = form["schema"]
    while "$ref" in schema:
        schema = _resolve(document, schema["$ref"])
    schema["properties"] = {q.name: _schema(q) for q in queries}
    encoding = {q.name: {"style": "form", "explode": True} for q in queries if q.repeated}
    if encoding:
        form["encoding"] = encoding


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = document
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target  # type: ignore[no-any-return]


def openapi_document(settings: Settings, smart: dict[str, Any] | None) -> dict[str, Any]:
    """The document for this configuration; `smart` is the served SMART configuration (None: no auth)."""
    document = copy.deepcopy(stored_document())
    document["servers"] = [{"url": settings.public_root, "description": "This facade (its configured base URL)"}]
    embedded = settings.auth.get("mode") == "embedded"
    paths: dict[str, Any] = {}
    for path, item in document["paths"].items():
        if path.startswith(_AUTH_PREFIX) and not embedded:
            continue  # another server (or none) issues the tokens
        if path.startswith(WRITTEN_BASE_PATH + "/"):
            path = settings.base_path + path[len(WRITTEN_BASE_PATH) :]
        paths[path] = item
    document["paths"] = paths
    schemes = document["components"]["securitySchemes"]
    if smart is None:
        _drop_security(document)
        return document
    code_flow = schemes["smartAppLaunch"]["flows"]["authorizationCode"]
    backend_flow = schemes["smartBackendServices"]["flows"]["clientCredentials"]
    token_url = smart.get("token_endpoint")
    if smart.get("authorization_endpoint") and token_url:
        code_flow.update(authorizationUrl=smart["authorization_endpoint"], tokenUrl=token_url, refreshUrl=token_url)
    else:
        _drop_scheme(document, "smartAppLaunch")
    if token_url and "client_credentials" in smart.get("grant_types_supported", ("client_credentials",)):
        backend_flow["tokenUrl"] = token_url
    else:
        _drop_scheme(document, "smartBackendServices")
    return document


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    methods = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    return [item[m] for item in document["paths"].values() for m in methods if m in item]


def _drop_scheme(document: dict[str, Any], name: str) -> None:
    del document["components"]["securitySchemes"][name]
    for operation in _operations(document):
        if "security" in operation:
            operation["security"] = [r for r in operation["security"] if name not in r]


def _drop_security(document: dict[str, Any]) -> None:
    """auth.mode none: nothing is protected (the server logs a warning at start-up)."""
    document["components"].pop("securitySchemes", None)
    document.pop("security", None)
    for operation in _operations(document):
        operation.pop("security", None)
        operation.get("responses", {}).pop("401", None)
    document["info"]["description"] += "\n\n**Authorization is off on this server (`auth.mode: none`).**\n"
