"""Resource protection end to end (SMART checklist items 1, 5, 6, 24, 25 and 26).

* a scope matrix over every route x (v1/v2, r vs s, system/user/patient, missing type): 200 or
  403 `insufficient_scope`, decided before any archive is asked;
* discovery and /metadata without a token; CORS;
* the patient compartment under `patient/*.rs` with patient context A, on every route: another
  patient's data never comes back, whatever the path (search, read, identifiers, _include, paging);
* v2 scope filters narrowing the data.

Expected data come from demo-data/manifest.json, never from the facade.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

try:
    from fhir_validation import validate_resource
except ImportError:  # pragma: no cover
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]

from smart_support import (
    ACCESSION_OF,
    BASE_URL,
    FILTER_PATIENT,
    NHS_SYSTEM,
    PAGE_SIZE,
    PATIENT_A,
    PATIENT_B,
    PORTAL_ORIGIN,
    STUDIES_A,
    STUDIES_B,
    entries,
    next_link,
    parse_challenge,
    studies_of,
    subject_of,
)

from app.web.components import components

STUDY_A = sorted(STUDIES_A)[0]
STUDY_B = sorted(STUDIES_B)[0]
UNKNOWN_STUDY = "2.25.123456789012345678901234567890"


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    resource_type: str
    interaction: str  # r or s
    form: dict[str, str] | None = None

    def call(self, api: Any, token: str | None, **kwargs: Any) -> Any:
        if self.method == "POST":
            return api.post(self.path, token, data=self.form, **kwargs)
        return api.get(self.path, token, **kwargs)


ROUTES = [
    Route("ImagingStudy-search", "GET", f"/fhir/ImagingStudy?patient={PATIENT_A}", "ImagingStudy", "s"),
    Route("ImagingStudy-_search", "POST", "/fhir/ImagingStudy/_search", "ImagingStudy", "s", {"patient": PATIENT_A}),
    Route("ImagingStudy-read", "GET", f"/fhir/ImagingStudy/{STUDY_A}", "ImagingStudy", "r"),
    Route("Patient-search", "GET", f"/fhir/Patient?identifier={PATIENT_A}", "Patient", "s"),
    Route("Patient-_search", "POST", "/fhir/Patient/_search", "Patient", "s", {"identifier": PATIENT_A}),
    Route("Patient-read", "GET", f"/fhir/Patient/{PATIENT_A}", "Patient", "r"),
    Route("Endpoint-search", "GET", "/fhir/Endpoint", "Endpoint", "s"),
    Route("Endpoint-read", "GET", "/fhir/Endpoint/bolton-wado-rs", "Endpoint", "r"),
    Route("Organization-search", "GET", "/fhir/Organization", "Organization", "s"),
    Route("Organization-read", "GET", "/fhir/Organization/RMC", "Organization", "r"),
    Route("AuditEvent-search", "GET", f"/fhir/AuditEvent?patient={PATIENT_A}", "AuditEvent", "s"),
]
ROUTE_IDS = [r.name for r in ROUTES]


def assert_forbidden(response: Any, *, challenge: bool = True) -> None:
    """403, an OperationOutcome, no data; with `challenge`, WWW-Authenticate error="insufficient_scope"."""
    assert response.status_code == 403, (response.status_code, response.get_data(as_text=True)[:400])
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "forbidden"
    assert "ImagingStudy/" not in str(body) and "entry" not in body
    if challenge:
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate"))
        assert scheme == "Bearer" and params.get("realm") == BASE_URL
        assert params.get("error") == "insufficient_scope", params


def assert_route_answer(route: Route, response: Any) -> None:
    """A 200 with the data the route is about (so a 200 with nothing in it does not pass)."""
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True)[:400])
    body = response.get_json()
    if route.interaction == "r":
        assert body["resourceType"] == route.resource_type
        return
    assert body["resourceType"] == "Bundle"
    found = entries(body)
    assert found and {r["resourceType"] for r in found} == {route.resource_type}
    if route.resource_type == "ImagingStudy":
        assert {s["id"] for s in found} == STUDIES_A
    if route.resource_type == "Patient":
        assert [p["id"] for p in found] == [PATIENT_A]


# ----------------------------------------------------------------------------- the scope matrix


def _other_type(resource_type: str) -> str:
    return "Organization" if resource_type != "Organization" else "Endpoint"


@dataclass(frozen=True)
class Grant:
    name: str
    scope: str  # {T}: the route's type, {O}: another type
    patient: str | None
    allows: Callable[[Route], bool]


def everything(route: Route) -> bool:
    return True


def not_audit(route: Route) -> bool:
    return route.resource_type != "AuditEvent"  # the audit trail is for system/ clients only


GRANTS = [
    Grant("system-v2-rs", "system/{T}.rs", None, everything),
    Grant("system-v2-cruds", "system/{T}.cruds", None, everything),
    Grant("system-v1-read", "system/{T}.read", None, everything),
    Grant("system-v1-star", "system/{T}.*", None, everything),
    Grant("system-wildcard", "system/*.rs", None, everything),
    Grant("system-v2-r-only", "system/{T}.r", None, lambda r: r.interaction == "r"),
    Grant("system-v2-s-only", "system/{T}.s", None, lambda r: r.interaction == "s"),
    Grant("system-v1-write", "system/{T}.write", None, lambda r: False),
    Grant("system-v2-cud", "system/{T}.cud", None, lambda r: False),
    Grant("system-missing-type", "system/{O}.rs", None, lambda r: False),
    Grant("user-v2-rs", "user/{T}.rs", None, not_audit),
    Grant("user-v1-read", "user/{T}.read", None, not_audit),
    Grant("user-v2-r-only", "user/{T}.r", None, lambda r: not_audit(r) and r.interaction == "r"),
    Grant("user-v2-s-only", "user/{T}.s", None, lambda r: not_audit(r) and r.interaction == "s"),
    Grant("user-missing-type", "user/{O}.rs", None, lambda r: False),
    Grant("patient-v2-rs", "patient/{T}.rs", PATIENT_A, not_audit),
    Grant("patient-v1-read", "patient/{T}.read", PATIENT_A, not_audit),
    Grant("patient-wildcard", "patient/*.rs", PATIENT_A, not_audit),
    Grant("patient-v2-r-only", "patient/{T}.r", PATIENT_A, lambda r: not_audit(r) and r.interaction == "r"),
    Grant("patient-v2-s-only", "patient/{T}.s", PATIENT_A, lambda r: not_audit(r) and r.interaction == "s"),
    Grant("patient-missing-type", "patient/{O}.rs", PATIENT_A, lambda r: False),
    Grant("patient-without-patient-claim", "patient/{T}.rs", None, lambda r: False),
    Grant("context-scopes-only", "openid fhirUser launch/patient", PATIENT_A, lambda r: False),
    Grant("malformed-letters", "system/{T}.sr", None, lambda r: False),
]


@pytest.mark.parametrize("grant", GRANTS, ids=[g.name for g in GRANTS])
@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_scope_matrix_route_by_grant(api: Any, mint: Callable[..., str], route: Route, grant: Grant) -> None:
    scope = grant.scope.format(T=route.resource_type, O=_other_type(route.resource_type))
    response = route.call(api, mint(scope, patient=grant.patient))
    if grant.allows(route):
        assert_route_answer(route, response)
    else:
        assert_forbidden(response)


# ----------------------------------------------------------------------------- scopes before data


@pytest.fixture
def archive_calls(smart_app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every call into the federation (the archives) and the audit store's search."""
    calls: list[str] = []
    federation = components(smart_app).services.federation
    store = components(smart_app).audit
    for owner, name in ((federation, "search"), (federation, "patient"), (store, "search")):
        original = getattr(owner, name)

        def spy(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
    yield calls


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_scope_refusal_asks_no_archive(
    api: Any, mint: Callable[..., str], archive_calls: list[str], route: Route
) -> None:
    assert_forbidden(route.call(api, mint(f"system/{_other_type(route.resource_type)}.rs")))
    assert_forbidden(route.call(api, mint(f"patient/{route.resource_type}.rs")))  # no patient claim
    assert archive_calls == []
    route.call(api, mint("system/*.rs"))  # the spy does see calls
    if route.resource_type in ("ImagingStudy", "Patient", "AuditEvent"):
        assert archive_calls


def test_scope_refusal_for_unknown_study_is_403_not_404(
    api: Any, mint: Callable[..., str], archive_calls: list[str]
) -> None:
    assert_forbidden(api.get(f"/fhir/ImagingStudy/{UNKNOWN_STUDY}", mint("system/Patient.rs")))
    assert_forbidden(api.get(f"/fhir/ImagingStudy/{UNKNOWN_STUDY}", mint("system/ImagingStudy.s")))
    assert archive_calls == []
    assert api.get(f"/fhir/ImagingStudy/{UNKNOWN_STUDY}", mint("system/ImagingStudy.r")).status_code == 404


def test_compartment_refusal_asks_no_archive(api: Any, mint: Callable[..., str], archive_calls: list[str]) -> None:
    token = mint("patient/*.rs", patient=PATIENT_A)
    assert api.get(f"/fhir/ImagingStudy?patient={PATIENT_B}", token).status_code == 403
    assert api.get(f"/fhir/Patient?identifier={PATIENT_B}", token).status_code == 403
    assert archive_calls == []


# ----------------------------------------------------------------------------- discovery and metadata


def test_discovery_without_token_is_json_whatever_accept(api: Any, smart_configuration: dict[str, Any]) -> None:
    for accept in ("text/html", "application/xml", "*/*", None):
        response = api.get("/fhir/.well-known/smart-configuration", headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert response.mimetype == "application/json"
        document = response.get_json()
        for key in (
            "authorization_endpoint",
            "token_endpoint",
            "introspection_endpoint",
            "revocation_endpoint",
            "issuer",
            "jwks_uri",
        ):
            assert document[key] == smart_configuration[key], key
        # The issuer's capabilities, and the facade's own: its gateway takes the same tokens.
        assert document["capabilities"] == [*smart_configuration["capabilities"], "smart-imaging-access"]
        assert document["code_challenge_methods_supported"] == ["S256"]
        assert "code" in document["response_types_supported"]


def test_discovery_ignores_a_bad_token(api: Any) -> None:
    response = api.get("/fhir/.well-known/smart-configuration", "not-a-token", headers={"Accept": "text/html"})
    assert response.status_code == 200


def test_metadata_without_token_advertises_smart(api: Any, smart_configuration: dict[str, Any]) -> None:
    response = api.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.get_json()
    assert statement["resourceType"] == "CapabilityStatement"
    security = statement["rest"][0]["security"]
    assert security["cors"] is True
    codings = [(c["system"], c["code"]) for s in security["service"] for c in s["coding"]]
    assert ("http://terminology.hl7.org/CodeSystem/restful-security-service", "SMART-on-FHIR") in codings
    oauth = [
        e
        for e in security["extension"]
        if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    ]
    assert len(oauth) == 1
    uris = {e["url"]: e["valueUri"] for e in oauth[0]["extension"]}
    assert uris == {
        "authorize": smart_configuration["authorization_endpoint"],
        "token": smart_configuration["token_endpoint"],
        "introspect": smart_configuration["introspection_endpoint"],
        "revoke": smart_configuration["revocation_endpoint"],
    }
    discovered = api.get("/fhir/.well-known/smart-configuration").get_json()
    assert uris["authorize"] == discovered["authorization_endpoint"]
    assert uris["token"] == discovered["token_endpoint"]


def test_metadata_ignores_a_bad_token(api: Any) -> None:
    assert api.get("/fhir/metadata", "not-a-token").status_code == 200


# ----------------------------------------------------------------------------- CORS


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/.well-known/smart-configuration"])
@pytest.mark.parametrize("origin", [PORTAL_ORIGIN, "https://evil.example", "null"])
def test_cors_public_endpoints_any_origin(api: Any, path: str, origin: str) -> None:
    response = api.get(path, headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_cors_api_configured_origin_only(api: Any, mint: Callable[..., str]) -> None:
    token = mint("system/ImagingStudy.rs")
    path = f"/fhir/ImagingStudy?patient={PATIENT_A}"
    allowed = api.get(path, token, headers={"Origin": PORTAL_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers.get("Access-Control-Allow-Origin") == PORTAL_ORIGIN
    assert "Origin" in allowed.headers.get("Vary", "")
    assert "WWW-Authenticate" in allowed.headers.get("Access-Control-Expose-Headers", "")
    for origin in ("https://evil.example", "https://portal.gm.nhs.uk.evil.example", "http://portal.gm.nhs.uk", "null"):
        refused = api.get(path, token, headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in refused.headers, origin
        assert "Access-Control-Allow-Credentials" not in refused.headers, origin


def test_cors_api_401_readable_by_configured_origin(api: Any) -> None:
    response = api.get(f"/fhir/ImagingStudy?patient={PATIENT_A}", headers={"Origin": PORTAL_ORIGIN})
    assert response.status_code == 401
    assert response.headers.get("Access-Control-Allow-Origin") == PORTAL_ORIGIN
    assert "WWW-Authenticate" in response.headers.get("Access-Control-Expose-Headers", "")


def test_cors_preflight_configured_origin_only(api: Any) -> None:
    request_headers = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    allowed = api.options("/fhir/ImagingStudy", headers={"Origin": PORTAL_ORIGIN, **request_headers})
    assert allowed.status_code in (200, 204)
    assert allowed.headers.get("Access-Control-Allow-Origin") == PORTAL_ORIGIN
    assert "authorization" in allowed.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "GET" in allowed.headers.get("Access-Control-Allow-Methods", "")
    refused = api.options("/fhir/ImagingStudy", headers={"Origin": "https://evil.example", **request_headers})
    assert "Access-Control-Allow-Origin" not in refused.headers


# ----------------------------------------------------------------------------- the patient compartment


@pytest.fixture(scope="module")
def token_a(mint: Callable[..., str]) -> str:
    return mint("patient/*.rs", patient=PATIENT_A, exp=int(time.time()) + 3600)


@pytest.fixture(scope="module")
def token_b(mint: Callable[..., str]) -> str:
    return mint("patient/*.rs", patient=PATIENT_B, exp=int(time.time()) + 3600)


@pytest.fixture(scope="module")
def b_study(api: Any, mint: Callable[..., str]) -> dict[str, Any]:
    """One of B's studies with its series and instances (read with a system token)."""
    response = api.get(f"/fhir/ImagingStudy/{STUDY_B}", mint("system/ImagingStudy.rs"))
    assert response.status_code == 200
    return response.get_json()


def assert_no_patient_b(response: Any) -> None:
    """200 without any of B's data, or 403; never B's studies, B's Patient, B's NHS number."""
    assert response.status_code in (200, 403), (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json()
    for resource in entries(body, mode=None):
        if resource["resourceType"] == "ImagingStudy":
            assert resource["id"] not in STUDIES_B and subject_of(resource) == PATIENT_A
        if resource["resourceType"] == "Patient":
            assert resource["id"] == PATIENT_A
    assert PATIENT_B not in json.dumps(body.get("entry", [])), "B's NHS number appears in the answer"


def test_compartment_search_without_patient_returns_only_a(api: Any, token_a: str) -> None:
    for response in (
        api.get("/fhir/ImagingStudy", token_a),
        api.post("/fhir/ImagingStudy/_search", token_a, data={"_count": "50"}),
    ):
        assert response.status_code == 200
        studies = entries(response.get_json())
        assert {s["id"] for s in studies} == STUDIES_A
        assert {subject_of(s) for s in studies} == {PATIENT_A}
        assert response.get_json()["total"] == len(STUDIES_A)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("patient", PATIENT_B),
        ("patient", f"Patient/{PATIENT_B}"),
        ("patient", f"{BASE_URL}/Patient/{PATIENT_B}"),
        ("subject", f"Patient/{PATIENT_B}"),
        ("patient.identifier", f"{NHS_SYSTEM}|{PATIENT_B}"),
        ("patient:identifier", PATIENT_B),
        ("subject.identifier", f"{NHS_SYSTEM}|{PATIENT_B}"),
        ("subject:identifier", PATIENT_B),
        ("patient", f"{PATIENT_A},{PATIENT_B}"),
    ],
)
def test_compartment_search_for_other_patient_is_403(api: Any, token_a: str, name: str, value: str) -> None:
    assert_forbidden(api.get(f"/fhir/ImagingStudy?{urlencode({name: value})}", token_a), challenge=False)
    assert_forbidden(api.post("/fhir/ImagingStudy/_search", token_a, data={name: value}), challenge=False)


def test_compartment_search_refusal_carries_insufficient_scope_challenge(api: Any, token_a: str) -> None:
    """RFC 6750 3: a 403 for a token that does not allow the request carries the Bearer challenge
    (as the same refusal on Patient does)."""
    assert_forbidden(api.get(f"/fhir/Patient?identifier={PATIENT_B}", token_a))
    assert_forbidden(api.get(f"/fhir/ImagingStudy?patient={PATIENT_B}", token_a))


def test_compartment_search_both_patients_anded_returns_nothing(api: Any, token_a: str) -> None:
    response = api.get(f"/fhir/ImagingStudy?patient={PATIENT_A}&patient={PATIENT_B}", token_a)
    assert_no_patient_b(response)
    if response.status_code == 200:
        assert entries(response.get_json()) == []


def b_identifier_queries(b_study: dict[str, Any]) -> list[str]:
    series = b_study["series"][0]
    return [
        f"identifier={STUDY_B}",
        f"identifier=urn:dicom:uid|{STUDY_B}",
        f"identifier=urn:oid:{STUDY_B}",
        f"_id={STUDY_B}",
        f"_id={','.join(sorted(STUDIES_B))}",
        f"identifier={ACCESSION_OF[STUDY_B]}",
        f"series={series['uid']}",
        f"instance={series['instance'][0]['uid']}",
        f"_id={STUDY_B}&_include=ImagingStudy:patient&_include=ImagingStudy:endpoint",
    ]


def test_compartment_search_by_b_identifiers_returns_no_b_data(api: Any, token_a: str, b_study: dict[str, Any]) -> None:
    for query in b_identifier_queries(b_study):
        response = api.get(f"/fhir/ImagingStudy?{query}", token_a)
        assert_no_patient_b(response)
        if response.status_code == 200:
            assert entries(response.get_json(), mode=None, resource_type="ImagingStudy") == [], query


def test_compartment_b_identifiers_do_find_b_with_system_scope(
    api: Any, mint: Callable[..., str], b_study: dict[str, Any]
) -> None:
    """Control for the test above: the same queries return B's study to a system client."""
    token = mint("system/ImagingStudy.rs")
    for query in b_identifier_queries(b_study):
        if query.startswith("instance="):
            continue  # see test_compartment_b_instance_control_finds_b_with_system_scope
        response = api.get(f"/fhir/ImagingStudy?{query}", token)
        assert response.status_code == 200, query
        assert STUDY_B in {s["id"] for s in entries(response.get_json())}, query


def test_compartment_b_instance_control_finds_b_with_system_scope(
    api: Any, mint: Callable[..., str], b_study: dict[str, Any]
) -> None:
    """Control for the `instance=` query above (without it, that compartment check proves nothing)."""
    instance = b_study["series"][0]["instance"][0]["uid"]
    response = api.get(f"/fhir/ImagingStudy?instance={instance}", mint("system/ImagingStudy.rs"))
    assert response.status_code == 200
    assert STUDY_B in {s["id"] for s in entries(response.get_json())}


@pytest.mark.parametrize("study", sorted(STUDIES_B))
def test_compartment_read_of_b_study_is_404(api: Any, token_a: str, study: str) -> None:
    response = api.get(f"/fhir/ImagingStudy/{study}", token_a)
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert PATIENT_B not in response.get_data(as_text=True)


def test_compartment_read_of_own_study_is_200(api: Any, token_a: str) -> None:
    for study in sorted(STUDIES_A):
        response = api.get(f"/fhir/ImagingStudy/{study}", token_a)
        assert response.status_code == 200
        assert subject_of(response.get_json()) == PATIENT_A


def test_compartment_read_of_unknown_study_is_404_like_b(api: Any, token_a: str) -> None:
    """Another patient's study and a study that does not exist look the same."""
    unknown = api.get(f"/fhir/ImagingStudy/{UNKNOWN_STUDY}", token_a)
    other = api.get(f"/fhir/ImagingStudy/{STUDY_B}", token_a)
    assert unknown.status_code == other.status_code == 404


def test_compartment_patient_read(api: Any, token_a: str) -> None:
    other = api.get(f"/fhir/Patient/{PATIENT_B}", token_a)
    assert other.status_code == 404
    assert other.get_json()["resourceType"] == "OperationOutcome"
    own = api.get(f"/fhir/Patient/{PATIENT_A}", token_a)
    assert own.status_code == 200 and own.get_json()["id"] == PATIENT_A


@pytest.mark.parametrize(
    "query",
    [
        f"identifier={PATIENT_B}",
        f"identifier={NHS_SYSTEM}|{PATIENT_B}",
        f"_id={PATIENT_B}",
        f"identifier={PATIENT_A},{PATIENT_B}",
    ],
)
def test_compartment_patient_search_for_b_is_403(api: Any, token_a: str, query: str) -> None:
    assert_forbidden(api.get(f"/fhir/Patient?{query}", token_a))
    assert_forbidden(api.post("/fhir/Patient/_search", token_a, data=dict(parse_qsl(query))))


def test_compartment_patient_search_without_parameter_returns_only_a(api: Any, token_a: str) -> None:
    response = api.get("/fhir/Patient", token_a)
    assert response.status_code == 200
    assert [p["id"] for p in entries(response.get_json())] == [PATIENT_A]


def test_compartment_include_brings_only_a_and_own_endpoints(api: Any, token_a: str, mint: Callable[..., str]) -> None:
    response = api.get("/fhir/ImagingStudy?_include=ImagingStudy:patient&_include=ImagingStudy:endpoint", token_a)
    assert response.status_code == 200
    bundle = response.get_json()
    studies = entries(bundle)
    assert {s["id"] for s in studies} == STUDIES_A
    included = entries(bundle, mode="include")
    assert [p["id"] for p in included if p["resourceType"] == "Patient"] == [PATIENT_A]
    referenced = {r["reference"].split("/")[-1] for s in studies for r in s.get("endpoint", ())}
    referenced |= {
        r["reference"].split("/")[-1] for s in studies for se in s.get("series", ()) for r in se.get("endpoint", ())
    }
    endpoints = {e["id"] for e in included if e["resourceType"] == "Endpoint"}
    assert endpoints and endpoints <= referenced
    assert {r["resourceType"] for r in included} <= {"Patient", "Endpoint"}
    assert PATIENT_B not in str(bundle.get("entry"))


@pytest.mark.parametrize(
    ("scope", "included_types"),
    [
        ("patient/ImagingStudy.rs", set()),
        ("patient/ImagingStudy.rs patient/Endpoint.rs", {"Endpoint"}),
        ("patient/ImagingStudy.rs patient/Patient.rs", {"Patient"}),
        ("patient/ImagingStudy.rs patient/Endpoint.s patient/Patient.s", set()),  # search-only grants do not read
        ("patient/ImagingStudy.rs system/Organization.rs", set()),
    ],
)
def test_compartment_include_needs_a_read_scope_for_the_included_type(
    api: Any, mint: Callable[..., str], scope: str, included_types: set[str]
) -> None:
    token = mint(scope, patient=PATIENT_A)
    response = api.get(
        f"/fhir/ImagingStudy?patient={PATIENT_A}&_include=ImagingStudy:endpoint&_include=ImagingStudy:patient", token
    )
    assert response.status_code == 200
    bundle = response.get_json()
    assert {s["id"] for s in entries(bundle)} == STUDIES_A
    assert {r["resourceType"] for r in entries(bundle, mode="include")} == included_types


def test_compartment_paging_follows_only_a(api: Any, token_a: str) -> None:
    seen: list[str] = []
    url: str | None = f"/fhir/ImagingStudy?_count={PAGE_SIZE}"
    pages = 0
    while url:
        response = api.get(url, token_a)
        assert response.status_code == 200
        studies = entries(response.get_json())
        assert {subject_of(s) for s in studies} <= {PATIENT_A}
        seen += [s["id"] for s in studies]
        url = next_link(response.get_json())
        pages += 1
        assert pages <= 10
    assert pages == -(-len(STUDIES_A) // PAGE_SIZE)
    assert sorted(seen) == sorted(STUDIES_A)


@pytest.mark.parametrize(
    "first_query",
    [
        f"_count={PAGE_SIZE}",
        f"patient={PATIENT_A}&_count={PAGE_SIZE}",
        f"_count={PAGE_SIZE}&_include=ImagingStudy:patient",
    ],
)
def test_compartment_paging_link_replayed_by_b_never_gives_a(
    api: Any, token_a: str, token_b: str, first_query: str
) -> None:
    first = api.get(f"/fhir/ImagingStudy?{first_query}", token_a)
    assert first.status_code == 200
    link = next_link(first.get_json())
    assert link, "A's search has a second page"
    replay = api.get(link, token_b)
    assert replay.status_code in (200, 403)
    text = replay.get_data(as_text=True)
    for study in STUDIES_A:
        assert study not in text
    assert PATIENT_A not in str(replay.get_json().get("entry", ""))
    if replay.status_code == 200:
        assert {subject_of(s) for s in entries(replay.get_json())} <= {PATIENT_B}


def test_compartment_paging_link_replayed_without_patient_claim_is_403(
    api: Any, token_a: str, mint: Callable[..., str]
) -> None:
    link = next_link(api.get(f"/fhir/ImagingStudy?_count={PAGE_SIZE}", token_a).get_json())
    assert link
    assert_forbidden(api.get(link, mint("patient/*.rs")))


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("patient", [None, ""], ids=["no-claim", "empty-claim"])
def test_compartment_patient_scope_without_patient_fails_closed(
    api: Any, mint: Callable[..., str], route: Route, patient: str | None
) -> None:
    token = mint("patient/*.rs", **({"patient": patient} if patient is not None else {}))
    assert_forbidden(route.call(api, token))


def test_compartment_patient_scope_without_patient_search_without_patient_is_403(
    api: Any, mint: Callable[..., str]
) -> None:
    assert_forbidden(api.get("/fhir/ImagingStudy", mint("patient/ImagingStudy.rs")))
    assert_forbidden(api.get("/fhir/Patient", mint("patient/Patient.rs")))


MALFORMED_CLAIMS = [
    "*",
    f"{PATIENT_A},{PATIENT_B}",
    f"{PATIENT_A}\\{PATIENT_B}",
    "999?",
    "not-an-nhs-number",
    f"Patient/{PATIENT_A}",
]


@pytest.mark.parametrize(
    "path",
    ["/fhir/ImagingStudy", f"/fhir/ImagingStudy/{STUDY_A}", "/fhir/Patient", f"/fhir/Patient/{PATIENT_A}"],
    ids=["study-search", "study-read", "patient-search", "patient-read"],
)
def test_compartment_malformed_patient_claim_fails_closed(smart_app: Any, mint: Callable[..., str], path: str) -> None:
    """A patient claim that is not an NHS number must narrow to nothing (or be refused), never widen
    or crash: "*", "A,B", "A\\B" and "?" are DICOM wildcard/list syntax if they reach an archive query."""
    client = smart_app.test_client()  # the raw client: a 500 is recorded here, not raised
    answers = {}
    for claim in MALFORMED_CLAIMS:
        token = mint("patient/*.rs", patient=claim)
        response = client.get(path, headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})
        body = response.get_json()
        if response.status_code < 500:
            validate_resource(body)
        leaked = response.status_code == 200 and body["resourceType"] == "Bundle" and bool(entries(body))
        leaked = leaked or (response.status_code == 200 and body["resourceType"] != "Bundle")
        answers[claim] = (response.status_code, leaked)
    bad = {claim: answer for claim, answer in answers.items() if answer[0] not in (200, 401, 403, 404) or answer[1]}
    assert not bad, f"GET {path}: {bad} (status, data returned) for patient claims that are not NHS numbers"


@pytest.mark.parametrize(
    "path", ["/fhir/Endpoint", "/fhir/Endpoint/bolton-wado-rs", "/fhir/Organization", "/fhir/Organization/RMC"]
)
def test_compartment_directory_is_public_policy_without_patient_data(api: Any, token_a: str, path: str) -> None:
    """Policy (app/auth/protect.py): Endpoint and Organization are directory data outside the
    Patient compartment, readable under patient/ scopes; they carry no patient data."""
    response = api.get(path, token_a)
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "Patient/" not in text and PATIENT_A not in text and PATIENT_B not in text


@pytest.mark.parametrize("query", ["", f"patient={PATIENT_A}", f"patient={PATIENT_B}"])
def test_compartment_audit_trail_is_403_under_patient_scope(api: Any, token_a: str, query: str) -> None:
    assert_forbidden(api.get(f"/fhir/AuditEvent?{query}", token_a))


# ----------------------------------------------------------------------------- v2 scope filters


def modalities(study: dict[str, Any]) -> set[str]:
    return {c["code"] for c in study.get("modality", ())}


def test_filter_modality_ct_even_when_search_asks_for_mr(api: Any, mint: Callable[..., str]) -> None:
    assert studies_of(FILTER_PATIENT, "CT") and studies_of(FILTER_PATIENT, "MR") - studies_of(FILTER_PATIENT, "CT")
    token = mint("patient/ImagingStudy.rs?modality=CT", patient=FILTER_PATIENT)
    for query in ("modality=MR", "", "modality=CT", f"patient={FILTER_PATIENT}&modality=MR,CT"):
        response = api.get(f"/fhir/ImagingStudy?{query}", token)
        assert response.status_code in (200, 403), query
        if response.status_code == 200:
            studies = entries(response.get_json())
            assert {s["id"] for s in studies} <= studies_of(FILTER_PATIENT, "CT"), query
            assert all("CT" in modalities(s) for s in studies), query
    unfiltered = api.get("/fhir/ImagingStudy", token)
    assert {s["id"] for s in entries(unfiltered.get_json())} == studies_of(FILTER_PATIENT, "CT")


def test_filter_read_outside_filter_is_404(api: Any, mint: Callable[..., str]) -> None:
    token = mint("patient/ImagingStudy.rs?modality=CT", patient=FILTER_PATIENT)
    mr_only = sorted(studies_of(FILTER_PATIENT, "MR") - studies_of(FILTER_PATIENT, "CT"))
    assert mr_only
    assert api.get(f"/fhir/ImagingStudy/{mr_only[0]}", token).status_code == 404
    ct = sorted(studies_of(FILTER_PATIENT, "CT"))[0]
    assert api.get(f"/fhir/ImagingStudy/{ct}", token).status_code == 200


def test_filter_system_scope_narrows_search(api: Any, mint: Callable[..., str]) -> None:
    token = mint("system/ImagingStudy.rs?modality=MR")
    response = api.get(f"/fhir/ImagingStudy?patient={PATIENT_A},{FILTER_PATIENT}", token)
    assert response.status_code == 200
    expected = studies_of(PATIENT_A, "MR") | studies_of(FILTER_PATIENT, "MR")
    assert expected
    assert {s["id"] for s in entries(response.get_json())} == expected


def test_filter_unfiltered_grant_beats_filtered(api: Any, mint: Callable[..., str]) -> None:
    token = mint("patient/ImagingStudy.rs?modality=CT patient/ImagingStudy.rs", patient=FILTER_PATIENT)
    response = api.get("/fhir/ImagingStudy", token)
    assert {s["id"] for s in entries(response.get_json())} == studies_of(FILTER_PATIENT)


@pytest.mark.parametrize(
    "scope", ["patient/ImagingStudy.rs?foo=bar", "patient/ImagingStudy.rs?modality=", "patient/*.rs?modality=CT"]
)
def test_filter_unknown_parameter_grants_nothing(api: Any, mint: Callable[..., str], scope: str) -> None:
    assert_forbidden(api.get("/fhir/ImagingStudy", mint(scope, patient=PATIENT_A)))


def test_filter_include_respects_filter(api: Any, mint: Callable[..., str]) -> None:
    token = mint("patient/ImagingStudy.rs?modality=CT patient/Patient.rs", patient=FILTER_PATIENT)
    response = api.get("/fhir/ImagingStudy?_include=ImagingStudy:patient", token)
    bundle = response.get_json()
    assert {s["id"] for s in entries(bundle)} == studies_of(FILTER_PATIENT, "CT")
    assert [p["id"] for p in entries(bundle, mode="include")] == [FILTER_PATIENT]
