"""Inputs and protocol details of the authorization server (issue 12: S17 and the auth parts of S23).

S17: POST /auth/launch authenticates before it reads the body, and reads it within a size and a
nesting limit: 401 or 400, never a 500 (deeply nested JSON used to raise RecursionError).
S23: a scope that reduces to nothing is `invalid_scope` (not a token with `scope: ''`); a launch id is
spent by Deny and bound to the first user who opens it; every authorization response carries `iss`
(RFC 9207) and discovery says so; a refresh may narrow the scope to a narrower resource scope.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from embedded_support import Browser, client_assertion, jwt_parts, page_kind, redirect_params
from joserfc.jwk import RSAKey
from sec_auth_support import (
    EHR_SCOPE,
    FHIR_BASE,
    PORTAL_KEY_FILE,
    STANDALONE_SCOPE,
    TIMELINE,
    TIMELINE_REDIRECT,
    auth_params,
    browser,
    build_app,
    exchange,
    query_of,
    refresh,
    tokens_for,
)

PORTAL_KEY = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def app(config_document: dict[str, Any], demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_app(config_document, tmp_path_factory.mktemp("sec-inputs"), demo_data=demo_data)


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


@pytest.fixture(scope="module")
def portal(app: Any) -> str:
    form = {
        "grant_type": "client_credentials",
        "scope": "system/ImagingStudy.rs system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(PORTAL_KEY, "portal"),
    }
    response = app.test_client().post("/auth/token", data=form)
    assert response.status_code == 200
    return str(response.get_json()["access_token"])


def _launch(app: Any, portal: str, patient: str) -> str:
    created = app.test_client().post(
        "/auth/launch", json={"client_id": TIMELINE, "patient": patient}, headers={"Authorization": f"Bearer {portal}"}
    )
    assert created.status_code == 201, created.get_json()
    return str(created.get_json()["launch"])


NESTED = b"[" * 100_000 + b"]" * 100_000
NESTED_OBJECT = b'{"client_id": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"
NESTED_SMALL = b"[" * 5_000 + b"]" * 5_000  # within the size limit, far beyond Python's recursion limit
NESTED_SMALL_OBJECT = b'{"client_id": ' + b'{"a":' * 2_500 + b"1" + b"}" * 2_500 + b"}"


# ============================================================================= S17


@pytest.mark.parametrize(
    "body",
    [NESTED_SMALL, NESTED_SMALL_OBJECT, NESTED, NESTED_OBJECT],
    ids=["arrays", "objects", "big-arrays", "big-objects"],
)
def test_s17_unauthenticated_deeply_nested_json_is_401_not_500(app: Any, body: bytes) -> None:
    response = app.test_client().post("/auth/launch", data=body, content_type="application/json")
    assert response.status_code == 401, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (NESTED_SMALL, "application/json", "nested"),
        (NESTED_SMALL_OBJECT, "application/json", "nested"),
        (NESTED, "application/json", "larger"),
        (NESTED_OBJECT, "application/json", "larger"),
        (b'{"client_id": "' + b"x" * 2_000_000 + b'"}', "application/json", "larger"),
        (b"client_id=" + b"x" * 2_000_000, "application/x-www-form-urlencoded", "larger"),
        (b"[1, 2, 3]", "application/json", "JSON object"),
        (b'{"client_id": ', "application/json", "not valid JSON"),
        (b"\xff\xfe\x00", "application/json", "not valid JSON"),
        (b"<launch/>", "application/xml", "JSON object or a form"),
    ],
    ids=[
        "nested-arrays",
        "nested-objects",
        "big-nested-arrays",
        "big-nested-objects",
        "2MB-json",
        "2MB-form",
        "array",
        "truncated",
        "binary",
        "xml",
    ],
)
def test_s17_authenticated_hostile_bodies_are_400(
    app: Any, portal: str, body: bytes, content_type: str, words: str
) -> None:
    response = app.test_client().post(
        "/auth/launch", data=body, content_type=content_type, headers={"Authorization": f"Bearer {portal}"}
    )
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    answer = response.get_json()
    assert answer["error"] == "invalid_request" and words in answer["error_description"], answer
    assert len(response.get_data()) < 500  # the answer does not echo the body


def test_s17_a_form_body_still_works(app: Any, portal: str, patient: str) -> None:
    response = app.test_client().post(
        "/auth/launch", data={"client_id": TIMELINE, "patient": patient}, headers={"Authorization": f"Bearer {portal}"}
    )
    assert response.status_code == 201, response.get_json()


# ============================================================================= S23


def test_s23_a_scope_reducing_to_nothing_is_invalid_scope(app: Any) -> None:
    params, _ = auth_params(scope="system/*.rs patient/*.cruds")  # nothing the app is registered for
    response = Browser(app).run(params)
    query = query_of(response)
    assert query.get("error") == "invalid_scope" and "code" not in query, query
    assert query["state"] == params["state"] and query["iss"] == FHIR_BASE


def test_s23_patient_scopes_alone_without_a_patient_context_are_invalid_scope(app: Any) -> None:
    params, _ = auth_params(scope="patient/*.rs")
    query = query_of(Browser(app).run(params))
    assert query.get("error") == "invalid_scope" and "code" not in query, query


def test_s23_deny_spends_the_launch(app: Any, portal: str, patient: str) -> None:
    launch = _launch(app, portal, patient)
    params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    agent = Browser(app)
    denied = query_of(agent.run(params, decision="deny"))
    assert denied["error"] == "access_denied"
    again, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    retried = query_of(agent.authorize(again))
    assert retried.get("error") == "invalid_request" and "code" not in retried, retried


def test_s23_a_launch_is_bound_to_the_first_user_who_opens_it(app: Any, portal: str, patient: str) -> None:
    launch = _launch(app, portal, patient)
    params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    first = browser(app, "10.23.0.1")
    assert page_kind(first.login(first.authorize(params))) == "consent"
    other, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    second = browser(app, "10.23.0.2")
    refused = second.login(second.authorize(other), username="radiographer.jones")
    query = query_of(refused)
    assert query.get("error") == "invalid_request" and "code" not in query, query
    code = query_of(first.consent(first.authorize(params)))["code"]  # the first user can go on
    assert code


def test_s23_the_authorization_response_names_its_issuer(app: Any) -> None:
    params, verifier = auth_params()
    where, query = redirect_params(Browser(app).run(params))
    assert where == TIMELINE_REDIRECT and query["iss"] == FHIR_BASE and query["code"]
    assert exchange(app, query["code"], verifier, params).status_code == 200
    params, _ = auth_params()
    denied = query_of(Browser(app).run(params, decision="deny"))
    assert denied["error"] == "access_denied" and denied["iss"] == FHIR_BASE
    document = app.test_client().get("/fhir/.well-known/smart-configuration").get_json()
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["issuer"] == FHIR_BASE


def test_s23_a_refresh_may_narrow_to_a_narrower_resource_scope(app: Any, patient: str) -> None:
    tokens = tokens_for(app, STANDALONE_SCOPE, patient=patient)
    narrowed = refresh(app, tokens["refresh_token"], scope="patient/ImagingStudy.rs offline_access")
    assert narrowed.status_code == 200, narrowed.get_json()
    body = narrowed.get_json()
    assert body["scope"] == "patient/ImagingStudy.rs offline_access"
    assert jwt_parts(body["access_token"])[1]["scope"] == body["scope"]
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert app.test_client().get(f"/fhir/Patient/{patient}", headers=headers).status_code == 403
    assert app.test_client().get("/fhir/ImagingStudy", headers=headers).status_code == 200
    wider = refresh(app, body["refresh_token"], scope="patient/*.rs offline_access")  # no widening back
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_scope"


@pytest.mark.parametrize("scope", ["user/*.rs offline_access", "patient/*.cruds offline_access", "system/*.rs"])
def test_s23_a_refresh_never_widens(app: Any, patient: str, scope: str) -> None:
    tokens = tokens_for(app, STANDALONE_SCOPE, patient=patient)
    wider = refresh(app, tokens["refresh_token"], scope=scope)
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_scope"
