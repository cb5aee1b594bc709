"""The OpenAPI document (app/web/openapi.yaml, served at /fhir/openapi.json) against the app itself.

It cannot drift: every route of the FHIR API, the authorization server and the image gateway is
described, every described path is a route, the gateway's WADO-RS resources and rendering
parameters are exactly the ones the gateway accepts, the search parameters are generated from the
search registry (app/core/search) and are the ones the views read, the document is valid OpenAPI
3.1, and its examples are real (each example request answers 200 on the demo data, so the fuzzer
in test_openapi_fuzz.py reaches the 200 paths too).
"""

from __future__ import annotations

import dataclasses
import re
from itertools import product
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from openapi_spec_validator import validate
from smart_tokens import system_token
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Rule

from app.archives.images import _FRAMES, RENDER_PARAMETERS, BadTarget, parse_target
from app.core.dicom_json import UID_PATTERN
from app.core.search.registry import COMMON
from app.core.search.resources import SEARCHES
from app.core.search.study import IMAGING_STUDY
from app.settings import ExternalAuthSettings, NoAuthSettings
from app.web.components import components
from app.web.fhir.capability import capability_statement
from app.web.fhir.openapi import FORM, SEARCH_EXTENSION, openapi_document, stored_document, written_document

BLUEPRINTS = ("fhir", "smart_auth", "dicomweb", "report_documents")
# Operations endpoints (health, readiness, metrics) are not part of the API the document describes.
OPERATIONS = re.compile(r"/(healthz|readyz|livez|metrics)$")
AUTOMATIC = frozenset({"HEAD", "OPTIONS"})  # answered by Flask for every GET route; not listed
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
PAGING = {"_count", "_summary", "_cursor", "_format", "_pretty"}


@pytest.fixture(scope="module")
def served(app) -> dict[str, Any]:
    response = app.test_client().get("/fhir/openapi.json")  # no token: the document is public
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def deref(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs (#/components/...)."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in document["paths"].items()
        for method in HTTP_METHODS
        if method in item
    ]


def parameters(document: dict[str, Any], path: str, operation: dict[str, Any]) -> list[dict[str, Any]]:
    shared = document["paths"][path].get("parameters", [])
    return [deref(document, x) for x in [*shared, *operation.get("parameters", [])]]


def concrete(document: dict[str, Any], path: str, operation: dict[str, Any]) -> str:
    """The path with each template variable replaced by its parameter's example."""
    examples = {x["name"]: x["example"] for x in parameters(document, path, operation) if x["in"] == "path"}
    names = re.findall(r"{([^}]+)}", path)
    assert set(names) == set(examples), f"{path}: every path parameter needs an example"
    return re.sub(r"{([^}]+)}", lambda m: quote(str(examples[m.group(1)]), safe=",:"), path)


def route(app, path: str, method: str) -> Rule:
    return match(app, path, method)[0]


def match(app, path: str, method: str) -> tuple[Rule, dict[str, Any]]:
    adapter = app.url_map.bind("127.0.0.1:8080")
    try:
        return adapter.match(path, method.upper(), return_rule=True)
    except (NotFound, MethodNotAllowed) as exc:
        raise AssertionError(f"{method.upper()} {path} is in the document but not a route: {exc}") from None


def methods(rule: Rule) -> set[str]:
    assert rule.methods is not None, f"{rule.rule} ({rule.endpoint}) has no methods"
    return rule.methods


def api_rules(app) -> list[Rule]:
    return [
        r for r in app.url_map.iter_rules() if r.endpoint.split(".")[0] in BLUEPRINTS and not OPERATIONS.search(r.rule)
    ]


# ------------------------------------------------------------------------------ validity


def test_the_stored_and_the_served_documents_are_valid_openapi_3_1(served: dict[str, Any]) -> None:
    for document in (stored_document(), served):
        assert document["openapi"] == "3.1.0"
        validate(document)  # raises OpenAPIValidationError with the path of the first problem


def test_every_operation_has_an_id_and_every_error_status_an_outcome_or_oauth_error(served: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(served)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(served):
        for status, response in op["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            content = deref(served, response).get("content", {})
            if path.startswith("/auth/"):
                assert set(content) <= {"application/json", "text/html"}, f"{method} {path} {status}"
                if "application/json" in content:
                    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/OAuthError"}
                continue
            assert set(content) == {"application/fhir+json"}, f"{method} {path} {status}: {set(content)}"
            assert content["application/fhir+json"]["schema"] == {"$ref": "#/components/schemas/OperationOutcome"}


# ----------------------------------------------------------------------------------- drift


def test_every_route_of_the_api_is_in_the_document(app, served: dict[str, Any]) -> None:
    described = {
        (route(app, concrete(served, path, op), method).rule, method.upper()) for path, method, op in operations(served)
    }
    missing = [
        f"{m} {r.rule} ({r.endpoint})"
        for r in api_rules(app)
        for m in sorted(methods(r) - AUTOMATIC)
        if (r.rule, m) not in described
    ]
    assert not missing, f"routes missing from app/web/openapi.yaml: {missing}"
    assert {r.endpoint.split(".")[0] for r in api_rules(app)} == set(BLUEPRINTS)


def test_every_path_of_the_document_is_a_route_with_the_same_variables(app, served: dict[str, Any]) -> None:
    for path, method, op in operations(served):
        rule, bound = match(app, concrete(served, path, op), method)
        assert rule.endpoint.split(".")[0] in BLUEPRINTS, f"{method} {path} -> {rule.endpoint}"
        assert not OPERATIONS.search(rule.rule)
        if rule.endpoint == "dicomweb.retrieve":
            continue  # one <path:rest> rule; its resources are checked against the gateway's parser below
        variables = set(re.findall(r"{([^}]+)}", path))
        assert variables <= set(rule.arguments), f"{method} {path} vs {rule.rule}"
        for name in set(rule.arguments) - variables:
            # A literal path that a templated route also matches (GET /ImagingStudy/_search is the read of the
            # id `_search`): the document must say so, and promise no success.
            assert f"`{bound[name]}`" in op["summary"] and "200" not in op["responses"], f"{method} {path}"


def test_the_gateway_paths_are_exactly_the_wado_rs_resources_the_gateway_accepts(served: dict[str, Any]) -> None:
    uid = "1.2.3"
    levels = [
        ["studies", uid],
        ["studies", uid, "series", uid],
        ["studies", uid, "series", uid, "instances", uid],
        ["studies", uid, "series", uid, "instances", uid, "frames", "1"],
    ]
    names = {"studies": "{study}", "series": "{series}", "instances": "{instance}", "frames": "{frames}"}
    accepted = set()
    for level, resource in product(levels, ("", "metadata", "rendered", "thumbnail")):
        segments = level + ([resource] if resource else [])
        try:
            parse_target(segments)
        except BadTarget:
            continue
        templated = [names.get(segments[i - 1], s) if i % 2 and i < len(level) else s for i, s in enumerate(segments)]
        accepted.add("/dicomweb/{trust}/" + "/".join(templated))
    documented = {path for path in served["paths"] if path.startswith("/dicomweb/{trust}/")}
    assert documented == accepted
    # the only other path under /dicomweb/ is the report document route (app/web/report_documents.py)
    others = {path for path in served["paths"] if path.startswith("/dicomweb/") and path not in documented}
    assert others == {"/dicomweb/reports/{report_id}/document.pdf"}
    assert all(set(served["paths"][path]) == {"get"} for path in documented)


def test_the_gateway_parameters_use_the_gateways_own_patterns(served: dict[str, Any]) -> None:
    components = served["components"]["parameters"]
    for name, pattern in RENDER_PARAMETERS.items():
        assert components[name]["schema"]["pattern"] == ecma(pattern)
    assert components["frames"]["schema"]["pattern"] == ecma(_FRAMES)
    assert served["components"]["schemas"]["Uid"]["pattern"] == ecma(UID_PATTERN)
    for path, _, op in operations(served):
        if path.startswith("/dicomweb/"):
            query = {x["name"] for x in parameters(served, path, op) if x["in"] == "query"}
            assert query == (set(RENDER_PARAMETERS) if path.endswith(("/rendered", "/thumbnail")) else set()), path


def ecma(pattern: re.Pattern[str]) -> str:
    """A Python pattern in JSON Schema's (ECMA 262) dialect: Python's \\Z is ECMA's $ (end of input only)."""
    return pattern.pattern.replace(r"\Z", "$")


def _query(document: dict[str, Any], path: str, method: str = "get") -> set[str]:
    op = document["paths"][path][method]
    return {x["name"] for x in parameters(document, path, op) if x["in"] == "query"}


def test_the_search_parameters_are_the_ones_the_views_read(served: dict[str, Any]) -> None:
    assert _query(served, "/fhir/ImagingStudy") == set(IMAGING_STUDY.known) | set(COMMON)
    form = served["components"]["schemas"]["ImagingStudySearchForm"]["properties"]
    assert set(form) == set(IMAGING_STUDY.known) | set(COMMON) - {"_format", "_pretty"}
    capability = capability_statement("http://x/fhir", "0", None)["rest"][0]["resource"]
    by_type = {r["type"]: {s["name"] for s in r.get("searchParam", ())} for r in capability}
    assert by_type["Practitioner"] == set()  # read only
    # _elements: every type's search offers it (C2: FHIR R4 allows every root element).
    assert _query(served, "/fhir/Patient") == by_type["Patient"] | PAGING
    for kind in ("Endpoint", "Organization", "AuditEvent"):
        assert "_elements" in by_type[kind]
        assert _query(served, f"/fhir/{kind}") == by_type[kind] | PAGING
    assert _query(served, "/fhir/AuditEvent") == by_type["AuditEvent"] | PAGING
    patient_form = served["components"]["schemas"]["PatientSearchForm"]["properties"]
    assert set(patient_form) == by_type["Patient"] | PAGING - {"_format", "_pretty"}


def _search_operations(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(path, method, type) of every operation the search registry describes: /{type} and /{type}/_search."""
    found = []
    for kind in SEARCHES:
        for path, method in ((f"/fhir/{kind}", "get"), (f"/fhir/{kind}/_search", "post")):
            if method in document["paths"].get(path, {}):
                found.append((path, method, kind))
    return found


def test_the_written_document_leaves_the_search_parameters_to_the_registry() -> None:
    written = written_document()
    marked = {
        (path, method): op[SEARCH_EXTENSION] for path, method, op in operations(written) if SEARCH_EXTENSION in op
    }
    assert marked == {(path, method): kind for path, method, kind in _search_operations(written)}
    # a GET search per type, and POST _search for ImagingStudy, Patient, DocumentReference and DiagnosticReport
    assert len(marked) == len(SEARCHES) + 4
    searched = {n for search in SEARCHES.values() for n in search.known} | set(COMMON)
    for path, method in marked:
        op = written["paths"][path][method]
        assert {x["name"] for x in parameters(written, path, op)} == {"_format", "_pretty", "Prefer"}, path
        if method == "post":
            form = deref(written, op["requestBody"]["content"][FORM]["schema"])
            assert "properties" not in form and "encoding" not in op["requestBody"]["content"][FORM], path
    declared = [x["name"] for x in written["components"]["parameters"].values() if x["in"] == "query"]
    assert not set(declared) & searched - {"_format", "_pretty"}, (
        "a search parameter is written in app/web/openapi.yaml"
    )


def test_the_search_operations_are_generated_from_the_registry(served: dict[str, Any]) -> None:
    assert "x-fhir-search" not in str(served) and "x-fhir-search" not in str(stored_document())
    for path, method, kind in _search_operations(served):
        op = served["paths"][path][method]
        queries = SEARCHES[kind].query_names()
        if method == "get":
            generated = [x for x in parameters(served, path, op) if x["name"] not in ("_format", "_pretty", "Prefer")]
            assert [x["name"] for x in generated] == [q.name for q in queries], path
            for x, q in zip(generated, queries, strict=True):
                assert x["in"] == "query" and x["description"] == q.documentation, q.name
                assert x["schema"] == ({"type": "array", "items": dict(q.schema)} if q.repeated else dict(q.schema))
                assert x.get("example") == q.example and x.get("explode", False) == q.repeated, q.name
            continue
        content = op["requestBody"]["content"][FORM]
        form = deref(served, content["schema"])
        assert list(form["properties"]) == [q.name for q in queries], path
        assert set(content.get("encoding", {})) == {q.name for q in queries if q.repeated}, path
        assert form["example"] and set(form["example"]) <= set(form["properties"]), path


def test_the_views_read_every_registry_parameter(app, served: dict[str, Any]) -> None:
    """Each query name of the registry, with its example, on its own (with a patient for ImagingStudy,
    DocumentReference and Patient, which need one) and `Prefer: handling=strict`: 200, and the self link keeps it (the view
    recognised it); an unknown name is 400."""
    client = app.test_client()
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}", "Prefer": "handling=strict"}
    for kind, search in SEARCHES.items():
        bounded = {
            "ImagingStudy": [("patient", "9992975962")],
            "Patient": [("_id", "9992975962")],
            "DocumentReference": [("patient", "9992975962")],
            "DiagnosticReport": [("patient", "9992975962")],
        }.get(kind, [])
        for query in search.query_names():
            if query.example is None:
                continue  # _cursor: only from a link
            values = query.example if isinstance(query.example, list) else [query.example]
            pairs = [*bounded, *((query.name, str(v)) for v in values)]
            response = client.get(f"/fhir/{kind}", query_string=pairs, headers=token)
            assert response.status_code == 200, f"{kind}?{pairs}: {response.get_data(as_text=True)[:300]}"
            link = next(x["url"] for x in response.get_json()["link"] if x["relation"] == "self")
            assert query.name in {n for n, _ in parse_qsl(urlsplit(link).query)}, f"{kind}: {query.name} not in {link}"
        response = client.get(f"/fhir/{kind}", query_string=[*bounded, ("no-such-parameter", "1")], headers=token)
        assert response.status_code == 400 and "no-such-parameter" in response.get_data(as_text=True), kind


def test_the_capability_statement_declares_the_registry_searches() -> None:
    resources = {r["type"]: r for r in capability_statement("http://x/fhir", "0", None)["rest"][0]["resource"]}
    for kind, search in SEARCHES.items():
        declared = [(x["name"], x["type"]) for x in resources[kind]["searchParam"]]
        results = [(r.name, r.type) for r in search.result_parameters() if r.in_capability]
        assert declared == [(x.name, x.type) for x in search.parameters] + results, kind
        assert resources[kind].get("searchInclude", []) == [i.value for i in search.includes], kind
        for entry, parameter in zip(resources[kind]["searchParam"], search.parameters, strict=False):
            assert entry["documentation"].startswith(parameter.documentation)
            assert all(f"`{alias.name}`" in entry["documentation"] for alias in parameter.aliases), parameter.name
    assert resources["ImagingStudy"]["searchInclude"] == [
        "ImagingStudy:endpoint",
        "ImagingStudy:patient",
        "ImagingStudy:subject",
    ]
    assert [x["name"] for x in resources["AuditEvent"]["searchParam"]] == [
        "patient",
        "date",
        "agent",
        "_count",
        "_summary",
        "_elements",
    ]
    assert "searchParam" not in resources["Practitioner"]


# ------------------------------------------------------------------------ serving the document


def test_the_document_is_public_and_open_to_any_origin(app) -> None:
    response = app.test_client().get(
        "/fhir/openapi.json", headers={"Origin": "https://epr.example.nhs.uk", "Accept": "text/html"}
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_the_served_document_names_the_configured_base_and_authorization_server(app, served: dict[str, Any]) -> None:
    smart = components(app).smart_configuration
    assert smart is not None
    assert served["servers"] == [{"url": "http://127.0.0.1:8080", "description": served["servers"][0]["description"]}]
    flows = served["components"]["securitySchemes"]
    code = flows["smartAppLaunch"]["flows"]["authorizationCode"]
    assert code["authorizationUrl"] == smart["authorization_endpoint"] == "http://127.0.0.1:8080/auth/authorize"
    assert code["tokenUrl"] == smart["token_endpoint"] == "http://127.0.0.1:8080/auth/token"
    assert flows["smartBackendServices"]["flows"]["clientCredentials"]["tokenUrl"] == smart["token_endpoint"]
    assert stored_document()["servers"] == [{"url": "/", "description": stored_document()["servers"][0]["description"]}]


def test_another_mount_point_and_an_external_authorization_server(settings) -> None:
    external = {
        "issuer": "https://idp.example.nhs.uk",
        "authorization_endpoint": "https://idp.example.nhs.uk/authorize",
        "token_endpoint": "https://idp.example.nhs.uk/token",
        "grant_types_supported": ["authorization_code"],
    }
    elsewhere = dataclasses.replace(
        settings,
        base_url="https://imaging.example.nhs.uk/gm/fhir",
        auth=ExternalAuthSettings("external", (), external, ()),
    )
    document = openapi_document(elsewhere, external)
    validate(document)
    assert document["servers"][0]["url"] == "https://imaging.example.nhs.uk"
    assert "/gm/fhir/ImagingStudy/{study_id}" in document["paths"] and "/gm/fhir/metadata" in document["paths"]
    assert not [x for x in document["paths"] if x.startswith(("/fhir/", "/auth/"))]
    assert "/dicomweb/{trust}/studies/{study}" in document["paths"]
    schemes = document["components"]["securitySchemes"]
    assert (
        schemes["smartAppLaunch"]["flows"]["authorizationCode"]["authorizationUrl"]
        == external["authorization_endpoint"]
    )
    assert "smartBackendServices" not in schemes  # the IdP does not offer client credentials
    assert all("smartBackendServices" not in r for _, _, op in operations(document) for r in op.get("security", []))


def test_without_authorization_the_document_has_no_security(settings) -> None:
    document = openapi_document(dataclasses.replace(settings, auth=NoAuthSettings("none")), None)
    validate(document)
    assert "securitySchemes" not in document["components"]
    assert not [x for x in document["paths"] if x.startswith("/auth/")]
    assert all("security" not in op and "401" not in op["responses"] for _, _, op in operations(document))


# --------------------------------------------------------------------------- real examples


def _example_request(
    document: dict[str, Any], path: str, op: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], dict[str, str]]:
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for x in parameters(document, path, op):
        if "example" not in x or x["in"] == "path":
            continue
        values = x["example"] if isinstance(x["example"], list) else [x["example"]]
        if x["in"] == "query":
            query += [(x["name"], str(v)) for v in values]
        else:
            headers[x["name"]] = str(values[0])
    return concrete(document, path, op), query, headers


def test_the_examples_are_real_demo_data(app, served: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Every protected GET with all its examples at once answers 200: the examples agree with each other
    and with the demo dataset (so the fuzzer reaches the 200 paths, not only the 400s)."""
    client = app.test_client()
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}"}
    example_study = "2.25.7492698656716832304557205269405902835"
    patient = next(x for x in manifest["patients"] if x["nhs_number"] == "9992975962")
    assert example_study in {s["study_uid"] for s in patient["studies"]}
    checked = 0
    for path, method, op in operations(served):
        if method != "get" or not op.get("security") or path.startswith("/auth/") or "200" not in op["responses"]:
            continue
        url, query, headers = _example_request(served, path, op)
        response = client.get(url, query_string=query, headers={**headers, **token})
        assert response.status_code == 200, f"GET {url}?{query}: {response.status_code} {response.get_data()[:300]!r}"
        documented = deref(served, op["responses"]["200"])["content"]
        assert response.mimetype in documented, f"{url}: {response.mimetype} not in {set(documented)}"
        checked += 1
        if path == "/fhir/ImagingStudy":  # every criterion at once still finds the example study
            body = response.get_json()
            assert [e["resource"]["id"] for e in body["entry"] if e["search"]["mode"] == "match"] == [example_study]
    assert checked >= 25
    for path in ("/fhir/ImagingStudy/_search", "/fhir/Patient/_search"):
        form = deref(
            served,
            served["paths"][path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"],
        )["example"]
        response = client.post(path, data=form, headers=token)
        assert response.status_code == 200 and response.get_json()["total"] >= 1, path
