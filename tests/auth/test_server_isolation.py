"""Two embedded authorization servers in one process (two apps, each with its own state store and
keys) share no grant state: a code or a refresh token is honoured only by the server that issued it,
whichever app was built last. The refresh family is an argument of the token issuer, not request
state (flask.g): the issuer works outside any request.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from embedded_support import Browser, pkce, redirect_params
from flask import Flask, has_app_context

from app import create_app
from app.auth.server.grants import Grantee
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from app.web.components import components

CLIENT = "imaging-timeline"
REDIRECT = "http://127.0.0.1:8080/apps/imaging-timeline/"
FHIR_BASE = "http://127.0.0.1:8080/fhir"
SCOPE = "user/*.rs openid fhirUser offline_access"  # no patient picker: no archive needed


def _build(config_document: dict[str, Any], folder: Path) -> Flask:
    """The demo configuration with one empty folder trust, and keys, state and audit in `folder`."""
    doc = copy.deepcopy(config_document)
    archive = folder / "bolton"
    archive.mkdir(parents=True)
    doc["trusts"] = [dict(t, archive={"type": "folder", "path": str(archive)}) for t in doc["trusts"][:1]]
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(folder / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(folder / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{folder / 'auth-state.sqlite'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        return create_app(settings_from_document(doc, folder, "tests/auth/isolation"))


@pytest.fixture(scope="module")
def apps(config_document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, Flask]]:
    first = _build(config_document, tmp_path_factory.mktemp("server-1"))
    second = _build(config_document, tmp_path_factory.mktemp("server-2"))  # built last: must not take over the first
    yield first, second
    for app in (first, second):
        components(app).services.close()
        components(app).audit.close()


def _code(app: Flask) -> tuple[str, str]:
    """An authorization code of `app` for dr.khan (login and consent through the pages), and its verifier."""
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "scope": SCOPE,
        "state": "isolation",
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    where, query = redirect_params(Browser(app).run(params))
    assert where == REDIRECT and "code" in query, query
    return query["code"], verifier


def _exchange(app: Flask, code: str, verifier: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT,
        "code_verifier": verifier,
    }
    return app.test_client().post("/auth/token", data=form)


def _refresh(app: Flask, token: str) -> Any:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT}
    return app.test_client().post("/auth/token", data=form)


def _refresh_token(app: Flask) -> str:
    code, verifier = _code(app)
    response = _exchange(app, code, verifier)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["refresh_token"])


def _invalid_grant(response: Any) -> None:
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.get_json()["error"] == "invalid_grant"
    assert "access_token" not in response.get_json()


def test_a_code_is_redeemed_only_at_the_server_that_issued_it(apps: tuple[Flask, Flask]) -> None:
    first, second = apps
    for issuer, other in ((first, second), (second, first)):
        code, verifier = _code(issuer)
        _invalid_grant(_exchange(other, code, verifier))
        redeemed = _exchange(issuer, code, verifier)  # the other server's refusal did not use it up
        assert redeemed.status_code == 200, redeemed.get_json()
        assert redeemed.get_json()["scope"].split() == SCOPE.split()


def test_a_refresh_token_is_honoured_only_by_the_server_that_issued_it(apps: tuple[Flask, Flask]) -> None:
    first, second = apps
    for issuer, other in ((first, second), (second, first)):
        token = _refresh_token(issuer)
        _invalid_grant(_refresh(other, token))
        rotated = _refresh(issuer, token)
        assert rotated.status_code == 200, rotated.get_json()
        newer = rotated.get_json()["refresh_token"]
        assert newer != token
        _invalid_grant(_refresh(other, newer))
        assert _refresh(issuer, newer).status_code == 200


def test_the_refresh_family_is_an_argument_of_the_issuer(apps: tuple[Flask, Flask]) -> None:
    """Outside any request or app context: the family is passed in, or a new one starts."""
    server = components(apps[0]).auth_server
    assert server is not None
    client = server.clients[CLIENT]
    user = Grantee("dr.khan", "Practitioner/dr-khan")
    assert not has_app_context()
    kept = server.issuer("refresh_token", client, user, SCOPE, refresh_family="family-17")["refresh_token"]
    fresh = [server.issuer("authorization_code", client, user, SCOPE)["refresh_token"] for _ in range(2)]

    def family(token: str) -> str:
        record = server.store.get("refresh", hashlib.sha256(token.encode()).hexdigest())
        assert record is not None, "no refresh record for the token"
        return str(record["family"])

    assert family(kept) == "family-17"
    assert family(fresh[0]) != family(fresh[1])
    assert "family-17" not in {family(t) for t in fresh}
