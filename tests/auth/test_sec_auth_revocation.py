"""Revocation that contains a theft, and who may introspect or revoke (issue 12: S7, S11, S12, C1).

S7: access tokens carry their grant; revoking the refresh token, refresh-token reuse and a replayed
code revoke every token of the grant, on the next request, in this process and in another one (a
second app over the same key file and SQLite state; tests/auth/test_sec_auth_state.py does it with
Redis). S11: introspection is for confidential clients and resource servers, or for the caller's own
tokens. S12: revocation refuses unidentified callers and other clients' tokens (RFC 7009 2.1). C1:
introspection answers with the launch context the token response had (SMART App Launch 2.2).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from embedded_support import Browser, client_assertion, jwt_parts
from joserfc.jwk import RSAKey
from sec_auth_support import (
    EHR_SCOPE,
    OTHER,
    PORTAL_KEY_FILE,
    SYMMETRIC,
    SYMMETRIC_SECRET,
    TIMELINE,
    USER_SCOPE,
    auth_params,
    build_app,
    exchange,
    query_of,
    read_api,
    refresh,
    tokens_for,
)

PORTAL_KEY = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def pair(config_document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """Two apps over one key file and one SQLite state file: two worker processes of one server."""
    folder = tmp_path_factory.mktemp("sec-revocation")
    first = build_app(
        config_document, folder / "one", store=f"sqlite:{folder / 'state.sqlite'}", signing_keys=folder / "keys.json"
    )
    second = build_app(
        config_document, folder / "two", store=f"sqlite:{folder / 'state.sqlite'}", signing_keys=folder / "keys.json"
    )
    return first, second


@pytest.fixture(scope="module")
def launch_app(config_document: dict[str, Any], demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_app(config_document, tmp_path_factory.mktemp("sec-launch"), demo_data=demo_data)


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _portal_token(app: Any, scope: str = "system/ImagingStudy.rs system/Patient.rs") -> str:
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(PORTAL_KEY, "portal"),
    }
    response = app.test_client().post("/auth/token", data=form)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def _introspect(app: Any, token: str, headers: dict[str, str]) -> dict[str, Any]:
    response = app.test_client().post("/auth/introspect", data={"token": token}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return dict(response.get_json())


# ============================================================================= S7


def test_s7_revoking_the_refresh_token_revokes_its_access_tokens_in_every_process(pair: tuple[Any, Any]) -> None:
    first, second = pair
    tokens = tokens_for(first)
    assert read_api(first, tokens["access_token"]) == 200
    assert read_api(second, tokens["access_token"]) == 200  # the other process accepts it too
    revoked = second.test_client().post("/auth/revoke", data={"token": tokens["refresh_token"], "client_id": TIMELINE})
    assert revoked.status_code == 200
    assert read_api(first, tokens["access_token"]) == 401
    assert read_api(second, tokens["access_token"]) == 401


def test_s7_refresh_token_reuse_revokes_every_access_token_of_the_family(pair: tuple[Any, Any]) -> None:
    first, second = pair
    tokens = tokens_for(first)
    rotated = refresh(first, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.get_json()
    newer = rotated.get_json()
    assert refresh(second, tokens["refresh_token"]).status_code == 400  # reuse: the thief or the app
    for access in (tokens["access_token"], newer["access_token"]):
        assert read_api(first, access) == 401
        assert read_api(second, access) == 401
    assert refresh(first, newer["refresh_token"]).status_code == 400


def test_s7_a_replayed_code_revokes_the_tokens_issued_with_it(pair: tuple[Any, Any]) -> None:
    first, second = pair
    params, verifier = auth_params(scope=USER_SCOPE)
    code = query_of(Browser(first).run(params))["code"]
    issued = exchange(first, code, verifier, params)
    assert issued.status_code == 200
    access = issued.get_json()["access_token"]
    assert read_api(second, access) == 200
    replay = exchange(second, code, verifier, params)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
    assert read_api(first, access) == 401
    assert read_api(second, access) == 401
    assert refresh(first, issued.get_json()["refresh_token"]).status_code == 400


def test_s7_other_grants_of_the_same_user_are_untouched(pair: tuple[Any, Any]) -> None:
    first, _ = pair
    kept, revoked = tokens_for(first), tokens_for(first)
    first.test_client().post("/auth/revoke", data={"token": revoked["refresh_token"], "client_id": TIMELINE})
    assert read_api(first, revoked["access_token"]) == 401
    assert read_api(first, kept["access_token"]) == 200
    assert refresh(first, kept["refresh_token"]).status_code == 200


# ============================================================================= S11


def test_s11_a_public_apps_token_cannot_introspect_another_users_tokens(pair: tuple[Any, Any]) -> None:
    app, _ = pair
    victim = tokens_for(app, username="radiographer.jones")
    snooper = tokens_for(app, username="dr.khan")
    for token in (victim["refresh_token"], victim["access_token"]):
        answer = _introspect(app, token, _bearer(snooper["access_token"]))
        assert answer == {"active": False}, answer


def test_s11_a_public_apps_token_cannot_introspect_another_apps_tokens(pair: tuple[Any, Any]) -> None:
    app, _ = pair
    own = tokens_for(app)
    other_app = tokens_for(app, client_id=OTHER, redirect_uri="http://127.0.0.1:8080/apps/other/")
    assert _introspect(app, other_app["access_token"], _bearer(own["access_token"])) == {"active": False}


def test_s11_the_caller_may_introspect_its_own_tokens(pair: tuple[Any, Any]) -> None:
    app, _ = pair
    tokens = tokens_for(app)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        answer = _introspect(app, token, _bearer(tokens["access_token"]))
        assert answer["active"] is True and answer["sub"] == "dr.khan" and answer["client_id"] == TIMELINE


def test_s11_confidential_clients_and_resource_servers_may_introspect_any_token(pair: tuple[Any, Any]) -> None:
    app, _ = pair
    tokens = tokens_for(app, username="radiographer.jones")
    for headers in (_basic(SYMMETRIC, SYMMETRIC_SECRET), _bearer(_portal_token(app))):
        answer = _introspect(app, tokens["refresh_token"], headers)
        assert answer["active"] is True and answer["sub"] == "radiographer.jones"


# ============================================================================= S12


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
def test_s12_revocation_without_client_identification_is_refused(pair: tuple[Any, Any], kind: str) -> None:
    app, _ = pair
    tokens = tokens_for(app)
    response = app.test_client().post("/auth/revoke", data={"token": tokens[kind]})
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in response.headers
    assert read_api(app, tokens["access_token"]) == 200
    assert refresh(app, tokens["refresh_token"]).status_code == 200


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
def test_s12_revocation_of_another_clients_token_is_refused(pair: tuple[Any, Any], kind: str) -> None:
    app, _ = pair
    tokens = tokens_for(app)
    response = app.test_client().post("/auth/revoke", data={"token": tokens[kind], "client_id": OTHER})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"] == "invalid_grant"
    assert read_api(app, tokens["access_token"]) == 200


def test_s12_revocation_by_a_confidential_client_with_a_wrong_secret_is_refused(pair: tuple[Any, Any]) -> None:
    app, _ = pair
    tokens = tokens_for(
        app,
        client_id=SYMMETRIC,
        redirect_uri="http://127.0.0.1:8080/apps/symmetric/",
        token_headers=_basic(SYMMETRIC, SYMMETRIC_SECRET),
    )
    response = app.test_client().post(
        "/auth/revoke", data={"token": tokens["access_token"]}, headers=_basic(SYMMETRIC, "not-the-secret")
    )
    assert response.status_code == 401
    assert read_api(app, tokens["access_token"]) == 200


def test_s12_an_unknown_token_is_still_200(pair: tuple[Any, Any]) -> None:
    app, _ = pair
    response = app.test_client().post("/auth/revoke", data={"token": "no-such-token", "client_id": TIMELINE})
    assert response.status_code == 200


# ============================================================================= C1


def test_c1_introspection_returns_the_launch_context_of_the_token_response(
    launch_app: Any, patient: str, manifest: dict[str, Any]
) -> None:
    record = next(p for p in manifest["patients"] if p["nhs_number"] == patient)
    study = str(record["studies"][0]["study_uid"])
    portal = _portal_token(launch_app)
    created = launch_app.test_client().post(
        "/auth/launch",
        json={"client_id": TIMELINE, "patient": patient, "imaging_study": study},
        headers=_bearer(portal),
    )
    assert created.status_code == 201, created.get_json()
    tokens = tokens_for(launch_app, EHR_SCOPE, launch=created.get_json()["launch"])
    assert tokens["need_patient_banner"] is False and tokens["smart_style_url"]
    for token in (tokens["access_token"], tokens["refresh_token"]):
        answer = _introspect(launch_app, token, _bearer(portal))
        assert answer["active"] is True
        for key in ("patient", "fhirContext", "need_patient_banner", "smart_style_url"):
            assert answer.get(key) == tokens[key], (key, answer)


def test_c1_standalone_launch_introspection_shows_the_banner_flag(launch_app: Any, patient: str) -> None:
    tokens = tokens_for(launch_app, "launch/patient patient/*.rs offline_access", patient=patient)
    answer = _introspect(launch_app, tokens["access_token"], _bearer(_portal_token(launch_app)))
    assert answer["need_patient_banner"] is True and answer["smart_style_url"] == tokens["smart_style_url"]
    assert answer["patient"] == patient


def test_grant_id_is_in_the_access_token(pair: tuple[Any, Any]) -> None:
    """What makes S7 work: each access token names the grant it came from (unverified read)."""
    app, _ = pair
    tokens = tokens_for(app)
    claims = jwt_parts(tokens["access_token"])[1]
    assert claims["grant_id"]
    rotated = refresh(app, tokens["refresh_token"]).get_json()
    assert jwt_parts(rotated["access_token"])[1]["grant_id"] == claims["grant_id"]
