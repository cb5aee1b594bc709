"""The embedded SMART App Launch 2.2 authorization server (app/auth/server), end to end.

SMART checklist (docs/smart-checklist.md) items 2-4 and 7-22: authorize (GET and POST, login,
patient picker, consent), the token endpoint (authorization_code, refresh_token,
client_credentials with private_key_jwt), revocation, introspection, the EHR launch API and
discovery. Everything runs through the Flask test client against a real app built from the demo
configuration (tests/conftest.py `config_document`) with its own key file and state store, plus
three extra registered clients:

* `other-app`: a second public app (code and refresh tokens of one client used by another);
* `reader`: a backend client with an ES384 key, registered for `system/ImagingStudy.rs` only and
  not a launch issuer;
* `symmetric-app`: a confidential app authenticating with a client secret.

The browser is tests/auth/embedded_support.Browser: forms are read from the pages and posted to
their `action` (the path, never the query string) with the hidden fields and the csrf value.
Time travel (expired codes and launch ids) moves the clock of the state store only.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from embedded_support import (
    ASSERTION_TYPE,
    AUTH_ROOT,
    FHIR_BASE,
    TOKEN_URL,
    Browser,
    assertion_claims,
    client_assertion,
    forms_of,
    hs256_assertion,
    jwt_parts,
    page_kind,
    pkce,
    redirect_params,
    unsigned_assertion,
)
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, KeySet, RSAKey

import app.auth.server.store as store_module
from app import create_app
from app.auth.server.clients import hash_secret
from app.auth.server.grants import BACKEND_TOKEN_TTL_S, CODE_TTL_S
from app.core.identity import nhs_number_problem
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from app.web.components import components

ROOT = Path(__file__).resolve().parents[2]
PORTAL_KEY_FILE = ROOT / "config" / "demo-keys" / "portal.private.jwk.json"
PORTAL_KEY = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))

TIMELINE = "imaging-timeline"
TIMELINE_REDIRECT = "http://127.0.0.1:8080/apps/imaging-timeline/"
OTHER = "other-app"
OTHER_REDIRECT = "http://127.0.0.1:8080/apps/other/"
SYMMETRIC = "symmetric-app"
SYMMETRIC_REDIRECT = "http://127.0.0.1:8080/apps/symmetric/"
SYMMETRIC_SECRET = "symmetric-secret-9f2c1a"
PORTAL = "portal"
READER = "reader"
READER_SCOPE = "system/ImagingStudy.rs"
PORTAL_SCOPE = "system/ImagingStudy.rs system/Patient.rs system/Endpoint.rs system/Organization.rs system/AuditEvent.rs"
APP_SCOPE = "launch launch/patient patient/*.rs user/*.rs openid fhirUser offline_access online_access"
STANDALONE_SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access"
EHR_SCOPE = "launch patient/*.rs openid fhirUser offline_access"
FHIR_USER = "Practitioner/dr-khan"
STYLE_URL = f"{AUTH_ROOT}/smart-style.json"


# ----------------------------------------------------------------------------- the app under test


@pytest.fixture(scope="module")
def reader_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "reader-es384", "alg": "ES384", "use": "sig"})


@pytest.fixture(scope="module")
def server_app(
    config_document: dict[str, Any], demo_data: Path, reader_key: ECKey, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The demo configuration (embedded SMART server) with its own keys and state, plus three clients."""
    state = tmp_path_factory.mktemp("embedded-as")
    doc = copy.deepcopy(config_document)
    doc["audit"] = {"path": str(state / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(state / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{state / 'auth-state.sqlite'}"
    doc["auth"]["clients"] += [
        {
            "client_id": OTHER,
            "name": "Other app",
            "grant_types": ["authorization_code", "refresh_token"],
            "public": True,
            "redirect_uris": [OTHER_REDIRECT],
            "scope": APP_SCOPE,
        },
        {
            "client_id": READER,
            "name": "Reader",
            "grant_types": ["client_credentials"],
            "jwks": {"keys": [reader_key.as_dict(private=False)]},
            "scope": READER_SCOPE,
        },
        {
            "client_id": SYMMETRIC,
            "name": "Symmetric app",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_secret_hash": hash_secret(SYMMETRIC_SECRET),
            "redirect_uris": [SYMMETRIC_REDIRECT],
            "scope": APP_SCOPE,
        },
    ]
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        settings = settings_from_document(doc, demo_data, "tests/auth/embedded")
    assert settings.auth.mode == "embedded" and settings.base_url == FHIR_BASE
    return create_app(settings)


@pytest.fixture()
def http(server_app: Any) -> Any:
    return server_app.test_client()


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


@pytest.fixture(scope="module")
def patient_study(manifest: dict[str, Any], patient: str) -> str:
    record = next(p for p in manifest["patients"] if p["nhs_number"] == patient)
    return str(record["studies"][0]["study_uid"])


@pytest.fixture(scope="module")
def unknown_nhs_number(manifest: dict[str, Any]) -> str:
    """A well-formed NHS number (check digit right) that no archive holds."""
    known = {p["nhs_number"] for p in manifest["patients"]}
    return next(
        c
        for n in range(999_000_000, 999_100_000)
        for c in (f"{n}{d}" for d in range(10))
        if nhs_number_problem(c) is None and c not in known
    )


class StoreClock:
    """Stands in for `time` inside app/auth/server/store.py: expiry of codes and launch ids."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture()
def store_clock(monkeypatch: pytest.MonkeyPatch) -> StoreClock:
    clock = StoreClock()
    monkeypatch.setattr(store_module, "time", SimpleNamespace(time=clock.time))
    return clock


# ----------------------------------------------------------------------------- flows


def auth_params(
    client_id: str | None = TIMELINE,
    redirect_uri: str | None = TIMELINE_REDIRECT,
    scope: str | None = STANDALONE_SCOPE,
    **override: str | None,
) -> tuple[dict[str, str], str]:
    """Authorization request parameters (None removes one) and the PKCE verifier."""
    verifier, challenge = pkce()
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": "st-123",
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(override)
    return {k: v for k, v in params.items() if v is not None}, verifier


def exchange(
    http: Any,
    code: str,
    verifier: str | None,
    client_id: str | None = TIMELINE,
    redirect_uri: str | None = TIMELINE_REDIRECT,
    headers: dict[str, str] | None = None,
    **extra: str,
) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": verifier,
        **extra,
    }
    return http.post("/auth/token", data={k: v for k, v in form.items() if v is not None}, headers=headers or {})


def obtain_code(
    app: Any, patient: str | None, *, method: str = "GET", **override: str | None
) -> tuple[str, str, dict[str, str]]:
    """(code, verifier, params) after login, picker (standalone) and consent."""
    params, verifier = auth_params(**override)
    final = Browser(app).run(params, method=method, patient=patient)
    where, query = redirect_params(final)
    assert where == params["redirect_uri"] and "code" in query, (where, query)
    assert query.get("state") == params.get("state")
    return query["code"], verifier, params


def user_tokens(app: Any, patient: str | None, scope: str = STANDALONE_SCOPE, **override: str | None) -> dict[str, Any]:
    code, verifier, params = obtain_code(app, patient, method="GET", scope=scope, **override)
    response = exchange(
        app.test_client(), code, verifier, client_id=params["client_id"], redirect_uri=params["redirect_uri"]
    )
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def backend_request(
    http: Any, assertion: str, scope: str | None = READER_SCOPE, assertion_type: str = ASSERTION_TYPE
) -> Any:
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": assertion_type,
        "client_assertion": assertion,
    }
    return http.post("/auth/token", data={k: v for k, v in form.items() if v is not None})


def portal_token(http: Any, scope: str = "system/ImagingStudy.rs system/Patient.rs") -> str:
    response = backend_request(http, client_assertion(PORTAL_KEY, PORTAL), scope)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def new_launch(app: Any, patient: str, client_id: str = TIMELINE, imaging_study: str | None = None) -> str:
    http = app.test_client()
    body = {"client_id": client_id, "patient": patient, **({"imaging_study": imaging_study} if imaging_study else {})}
    response = http.post("/auth/launch", json=body, headers={"Authorization": f"Bearer {portal_token(http)}"})
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["launch"])


def refresh(http: Any, token: str, client_id: str = TIMELINE, scope: str | None = None) -> Any:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id, "scope": scope}
    return http.post("/auth/token", data={k: v for k, v in form.items() if v is not None})


def fhir_search(http: Any, token: str, query: str = "") -> Any:
    return http.get(f"/fhir/ImagingStudy{query}", headers={"Authorization": f"Bearer {token}"})


def subjects(bundle: dict[str, Any]) -> set[str]:
    return {
        e["resource"]["subject"]["reference"]
        for e in bundle.get("entry", ())
        if e["resource"]["resourceType"] == "ImagingStudy"
    }


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


# ----------------------------------------------------------------------------- assertions


def assert_redirect_error(response: Any, redirect_uri: str, error: str, state: str | None) -> dict[str, str]:
    """The error went back to the registered redirect_uri with `error` and the exact `state`, no code."""
    where, query = redirect_params(response)
    assert where == redirect_uri
    assert query.get("error") == error, query
    assert query.get("state") == state, query
    assert "code" not in query
    return query


def assert_error_page(response: Any) -> None:
    """RFC 6749 4.1.2.1: no redirect for an unknown client or an unregistered redirect_uri."""
    assert response.status_code == 400, (response.status_code, response.headers.get("Location"))
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    assert page_kind(response) == "error"


def assert_token_error(response: Any, error: str, statuses: tuple[int, ...] = (400,)) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.get_data(as_text=True)[:500])
    body = response.get_json()
    assert body.get("error") == error, body
    assert "access_token" not in body and "refresh_token" not in body
    return dict(body)


def verify_signed(http: Any, token: str, alg: str) -> dict[str, Any]:
    """Claims of a token verified with the keys published at /auth/jwks (only `alg` allowed)."""
    keys = KeySet.import_key_set(http.get("/auth/jwks").get_json())
    return dict(jwt.decode(token, keys, algorithms=[alg]).claims)


# ============================================================================= authorize


@pytest.mark.parametrize(
    "override",
    [
        {"aud": "https://evil.example/fhir"},
        {"aud": "http://127.0.0.1:8080/other"},
        {"aud": "http://127.0.0.1:8080/fhir/ImagingStudy"},
        {"aud": None},
        {"aud": None, "resource": "https://evil.example/fhir"},
    ],
    ids=["foreign-server", "other-path", "longer-path", "missing", "resource-foreign"],
)
def test_authorize_invalid_aud_redirects_invalid_request(server_app: Any, override: dict[str, str | None]) -> None:
    params, _ = auth_params(**override)
    response = Browser(server_app).authorize(params)
    assert_redirect_error(response, TIMELINE_REDIRECT, "invalid_request", "st-123")


def test_authorize_resource_accepted_as_aud(server_app: Any, http: Any, patient: str) -> None:
    code, verifier, params = obtain_code(server_app, patient, aud=None, resource=FHIR_BASE)
    assert "aud" not in params
    response = exchange(http, code, verifier)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["patient"] == patient


@pytest.mark.parametrize(
    "override",
    [
        {"client_id": "no-such-app"},
        {"client_id": None},
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": OTHER_REDIRECT},
        {"redirect_uri": TIMELINE_REDIRECT.rstrip("/")},
        {"redirect_uri": TIMELINE_REDIRECT + "evil"},
        {"redirect_uri": TIMELINE_REDIRECT + "?next=https://evil.example"},
        {"redirect_uri": TIMELINE_REDIRECT.replace("127.0.0.1", "localhost")},
        {"redirect_uri": None},
        {"redirect_uri": "https://evil.example/cb", "aud": "https://evil.example/fhir"},
    ],
    ids=[
        "unknown-client",
        "no-client",
        "foreign-uri",
        "other-clients-uri",
        "prefix-of-registered",
        "registered-is-prefix",
        "registered-plus-query",
        "other-host",
        "no-redirect-uri",
        "bad-uri-and-bad-aud",
    ],
)
def test_authorize_unknown_client_or_unregistered_redirect_is_400_page(
    server_app: Any, override: dict[str, str | None]
) -> None:
    params, _ = auth_params(**override)
    for method in ("GET", "POST"):
        assert_error_page(Browser(server_app).authorize(params, method))


@pytest.mark.parametrize(
    "override",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge": None},
        {"code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": "s256"},
        {"code_challenge_method": "S512"},
    ],
    ids=["no-pkce", "no-challenge", "no-method", "plain", "lowercase-s256", "unknown-method"],
)
def test_authorize_pkce_not_s256_redirects_invalid_request(server_app: Any, override: dict[str, str | None]) -> None:
    params, _ = auth_params(**override)
    response = Browser(server_app).authorize(params)
    assert_redirect_error(response, TIMELINE_REDIRECT, "invalid_request", "st-123")


@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "code id_token"])
def test_authorize_response_type_not_code_redirects_unsupported(server_app: Any, response_type: str) -> None:
    params, _ = auth_params(response_type=response_type)
    response = Browser(server_app).authorize(params)
    assert_redirect_error(response, TIMELINE_REDIRECT, "unsupported_response_type", "st-123")


ODD_STATES = ["a b&c=d%20e+f/g?h#i", "x\"y'z<tag>&amp;", "päŧîënt-ŝtate-✓", "=&=&", "%", "   padded   "]


@pytest.mark.parametrize("state", ODD_STATES)
def test_authorize_state_echoed_exactly_with_code(server_app: Any, patient: str, state: str) -> None:
    params, _ = auth_params(state=state)
    where, query = redirect_params(Browser(server_app).run(params, patient=patient))
    assert where == TIMELINE_REDIRECT and query.get("code")
    assert query.get("state") == state


@pytest.mark.parametrize("state", ODD_STATES)
def test_authorize_state_echoed_exactly_with_error(server_app: Any, state: str) -> None:
    params, _ = auth_params(state=state, code_challenge_method="plain")
    assert_redirect_error(Browser(server_app).authorize(params), TIMELINE_REDIRECT, "invalid_request", state)


def test_authorize_state_echoed_exactly_after_deny(server_app: Any, patient: str) -> None:
    params, _ = auth_params(state=ODD_STATES[1])
    final = Browser(server_app).run(params, patient=patient, decision="deny")
    assert_redirect_error(final, TIMELINE_REDIRECT, "access_denied", ODD_STATES[1])


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_authorize_get_and_post_issue_a_usable_code(server_app: Any, http: Any, patient: str, method: str) -> None:
    code, verifier, _ = obtain_code(server_app, patient, method=method)
    response = exchange(http, code, verifier)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["patient"] == patient


def test_authorize_forms_post_to_the_path_only(server_app: Any, patient: str) -> None:
    params, _ = auth_params()
    browser = Browser(server_app)
    login = browser.authorize(params)
    assert page_kind(login) == "login"
    picker = browser.login(login)
    assert page_kind(picker) == "picker"
    consent = browser.pick(picker, patient)
    assert page_kind(consent) == "consent"
    for page in (login, picker, consent):
        for form in forms_of(page):
            assert form.action == "/auth/authorize" and form.method == "post"
            assert form.fields.get("csrf")
            assert form.fields.get("code_challenge") == params["code_challenge"]


def test_authorize_wrong_password_shows_login_again(server_app: Any) -> None:
    params, _ = auth_params()
    browser = Browser(server_app)
    again = browser.login(browser.authorize(params), password="not-the-password")
    assert again.status_code == 401
    assert page_kind(again) == "login"


@pytest.mark.parametrize("csrf", [None, "forged-csrf-value"], ids=["no-csrf", "wrong-csrf"])
def test_authorize_consent_without_csrf_issues_no_code(server_app: Any, patient: str, csrf: str | None) -> None:
    """A cross-site POST of `decision=allow` into a signed-in session must not produce a code."""
    launch = new_launch(server_app, patient)
    params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    browser = Browser(server_app)
    consent = browser.login(browser.authorize(params))
    assert page_kind(consent) == "consent"
    forged = browser.http.post(
        "/auth/authorize", data={**params, "step": "consent", "decision": "allow", **({"csrf": csrf} if csrf else {})}
    )
    assert "Location" not in forged.headers, forged.headers.get("Location")
    assert forged.status_code == 200 and page_kind(forged) == "consent"
    real = browser.consent(consent)  # the launch was not spent by the forged request
    assert "code" in redirect_params(real)[1]


def test_authorize_deny_redirects_access_denied(server_app: Any, patient: str) -> None:
    params, _ = auth_params()
    final = Browser(server_app).run(params, patient=patient, decision="deny")
    assert_redirect_error(final, TIMELINE_REDIRECT, "access_denied", "st-123")


def test_authorize_ehr_launch_sets_the_launch_context(
    server_app: Any, http: Any, patient: str, patient_study: str
) -> None:
    launch = new_launch(server_app, patient, imaging_study=patient_study)
    tokens = user_tokens(server_app, None, EHR_SCOPE, launch=launch)
    assert tokens["patient"] == patient
    assert tokens["need_patient_banner"] is False
    assert tokens["fhirContext"] == [{"reference": f"ImagingStudy/{patient_study}"}]
    assert jwt_parts(tokens["access_token"])[1]["patient"] == patient


@pytest.mark.parametrize("case", ["unknown", "missing", "another-client", "empty"])
def test_authorize_launch_invalid_redirects_invalid_request(server_app: Any, patient: str, case: str) -> None:
    launch = {
        "unknown": "no-such-launch-id",
        "missing": None,
        "empty": "",
        "another-client": new_launch(server_app, patient, client_id=OTHER),
    }[case]
    params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    response = Browser(server_app).authorize(params)
    assert_redirect_error(response, TIMELINE_REDIRECT, "invalid_request", "st-123")


def test_authorize_launch_expired_redirects_invalid_request(
    server_app: Any, patient: str, store_clock: StoreClock
) -> None:
    launch = new_launch(server_app, patient)
    store_clock.offset = 301  # launch ids are short-lived: at most 5 minutes
    params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    assert_redirect_error(Browser(server_app).authorize(params), TIMELINE_REDIRECT, "invalid_request", "st-123")


def test_authorize_launch_reused_redirects_invalid_request(server_app: Any, patient: str) -> None:
    launch = new_launch(server_app, patient)
    user_tokens(server_app, None, EHR_SCOPE, launch=launch)
    params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
    assert_redirect_error(Browser(server_app).authorize(params), TIMELINE_REDIRECT, "invalid_request", "st-123")


def test_authorize_launch_single_use_across_two_open_consents(server_app: Any, patient: str) -> None:
    launch = new_launch(server_app, patient)
    pages = []
    for _ in range(2):
        params, _ = auth_params(scope=EHR_SCOPE, launch=launch)
        browser = Browser(server_app)
        consent = browser.login(browser.authorize(params))
        assert page_kind(consent) == "consent"
        pages.append((browser, consent))
    first = pages[0][0].consent(pages[0][1])
    assert "code" in redirect_params(first)[1]
    second = pages[1][0].consent(pages[1][1])
    assert_redirect_error(second, TIMELINE_REDIRECT, "invalid_request", "st-123")


def test_authorize_patient_scopes_without_patient_context_not_granted(server_app: Any) -> None:
    """patient/*.rs asked for with neither `launch` nor `launch/patient`: no patient context, so the
    patient scopes must not be granted (SMART checklist 16, fail closed)."""
    tokens = user_tokens(server_app, None, "patient/*.rs openid fhirUser")
    assert "patient" not in tokens
    granted = tokens["scope"].split()
    assert not [s for s in granted if s.startswith("patient/")], tokens["scope"]
    assert not [s for s in jwt_parts(tokens["access_token"])[1]["scope"].split() if s.startswith("patient/")]


def test_authorize_scopes_cut_to_registration(server_app: Any, patient: str) -> None:
    tokens = user_tokens(server_app, patient, "launch/patient patient/*.rs system/*.rs patient/*.cruds openid")
    assert tokens["scope"].split() == ["launch/patient", "patient/*.rs", "openid"]


def test_authorize_narrower_scope_within_registration_granted(server_app: Any, http: Any, patient: str) -> None:
    """`patient/ImagingStudy.rs` is inside the registered `patient/*.rs`: asking for less must work."""
    tokens = user_tokens(server_app, patient, "launch/patient patient/ImagingStudy.rs")
    assert "patient/ImagingStudy.rs" in tokens["scope"].split(), tokens["scope"]
    assert fhir_search(http, tokens["access_token"]).status_code == 200


# ============================================================================= token: authorization_code


@pytest.mark.parametrize(
    ("verifier", "error"),
    [
        (None, "invalid_request"),
        ("", "invalid_request"),
        ("    ", "invalid_request"),
        ("wrong", "invalid_grant"),
        ("challenge", "invalid_grant"),
    ],
    ids=["missing", "empty", "blank", "wrong", "equals-challenge"],
)
def test_token_pkce_verifier_rejected(
    server_app: Any, http: Any, patient: str, verifier: str | None, error: str
) -> None:
    code, right, params = obtain_code(server_app, patient)
    sent = {"wrong": pkce()[0], "challenge": params["code_challenge"]}.get(verifier or "", verifier)
    assert_token_error(exchange(http, code, sent), error)
    # the code is spent: the right verifier cannot be tried next (no guessing against one code)
    assert_token_error(exchange(http, code, right), "invalid_grant")


def test_token_code_reuse_invalid_grant(server_app: Any, http: Any, patient: str) -> None:
    code, verifier, _ = obtain_code(server_app, patient)
    assert exchange(http, code, verifier).status_code == 200
    assert_token_error(exchange(http, code, verifier), "invalid_grant")


def test_token_unknown_code_invalid_grant(http: Any) -> None:
    assert_token_error(exchange(http, "no-such-code", pkce()[0]), "invalid_grant")


@pytest.mark.parametrize("redirect_uri", [TIMELINE_REDIRECT, OTHER_REDIRECT], ids=["code-redirect", "own-redirect"])
def test_token_code_of_another_client_invalid_grant(
    server_app: Any, http: Any, patient: str, redirect_uri: str
) -> None:
    """other-app presents imaging-timeline's code with the right verifier: the code is bound to its client."""
    code, verifier, _ = obtain_code(server_app, patient)
    assert_token_error(exchange(http, code, verifier, client_id=OTHER, redirect_uri=redirect_uri), "invalid_grant")


@pytest.mark.parametrize(
    "redirect_uri",
    [None, OTHER_REDIRECT, TIMELINE_REDIRECT.rstrip("/"), TIMELINE_REDIRECT + "x"],
    ids=["missing", "another-registered", "prefix", "longer"],
)
def test_token_redirect_uri_differs_invalid_grant(
    server_app: Any, http: Any, patient: str, redirect_uri: str | None
) -> None:
    code, verifier, _ = obtain_code(server_app, patient)
    assert_token_error(exchange(http, code, verifier, redirect_uri=redirect_uri), "invalid_grant")


@pytest.mark.parametrize(
    ("age_s", "accepted"), [(CODE_TTL_S - 10, True), (CODE_TTL_S + 1, False)], ids=["50s-old", "61s-old"]
)
def test_token_code_expires_after_60s(
    server_app: Any, http: Any, patient: str, store_clock: StoreClock, age_s: int, accepted: bool
) -> None:
    assert CODE_TTL_S == 60
    code, verifier, _ = obtain_code(server_app, patient)
    store_clock.offset = age_s
    response = exchange(http, code, verifier)
    if accepted:
        assert response.status_code == 200, response.get_json()
    else:
        assert_token_error(response, "invalid_grant")


@pytest.mark.parametrize("client_id", ["no-such-app", None], ids=["unknown", "missing"])
def test_token_unknown_client_invalid_client(server_app: Any, http: Any, patient: str, client_id: str | None) -> None:
    code, verifier, _ = obtain_code(server_app, patient)
    assert_token_error(exchange(http, code, verifier, client_id=client_id), "invalid_client", (400, 401))


def test_token_response_headers_no_store(server_app: Any, http: Any, patient: str) -> None:
    code, verifier, _ = obtain_code(server_app, patient)
    response = exchange(http, code, verifier)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert "no-store" in response.headers.get("Cache-Control", "")
    assert response.headers.get("Pragma") == "no-cache"


def test_token_response_fields(server_app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(server_app, patient, STANDALONE_SCOPE)
    assert {
        "access_token",
        "token_type",
        "scope",
        "expires_in",
        "patient",
        "need_patient_banner",
        "smart_style_url",
        "id_token",
        "refresh_token",
    } <= set(tokens)
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"].split() == STANDALONE_SCOPE.split()
    assert isinstance(tokens["expires_in"], int) and 0 < tokens["expires_in"] <= 3600
    assert tokens["patient"] == patient
    assert tokens["need_patient_banner"] is True  # standalone: the app shows who the patient is
    assert tokens["smart_style_url"] == STYLE_URL
    style = http.get(urlsplit(STYLE_URL).path)
    assert style.status_code == 200 and "color_background" in style.get_json()
    access = verify_signed(http, tokens["access_token"], "RS384")
    assert access["aud"] == FHIR_BASE and access["iss"] == FHIR_BASE and access["patient"] == patient
    assert access["exp"] - access["iat"] == tokens["expires_in"]


def test_token_id_token_signed_rs256_verifiable_with_jwks(server_app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(server_app, patient, STANDALONE_SCOPE, nonce="n-0S6_WzA2Mj")
    header, _ = jwt_parts(tokens["id_token"])
    assert header["alg"] == "RS256"
    assert header["kid"] in {k["kid"] for k in http.get("/auth/jwks").get_json()["keys"]}
    claims = verify_signed(http, tokens["id_token"], "RS256")
    assert claims["iss"] == FHIR_BASE
    assert claims["aud"] == TIMELINE
    assert claims["sub"] == "dr.khan"
    assert claims["fhirUser"] == FHIR_USER
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["iat"] <= time.time() + 5 < claims["exp"]
    tampered = tokens["id_token"][:-6] + ("AAAAAA" if not tokens["id_token"].endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(JoseError):
        verify_signed(http, tampered, "RS256")


def test_token_no_id_token_without_openid(server_app: Any, patient: str) -> None:
    tokens = user_tokens(server_app, patient, "launch/patient patient/*.rs fhirUser")
    assert "id_token" not in tokens


@pytest.mark.parametrize(
    ("scope", "expect_refresh"),
    [
        ("launch/patient patient/*.rs offline_access", True),
        ("launch/patient patient/*.rs online_access", True),
        ("launch/patient patient/*.rs openid fhirUser", False),
    ],
    ids=["offline_access", "online_access", "neither"],
)
def test_token_refresh_token_only_with_offline_or_online_access(
    server_app: Any, patient: str, scope: str, expect_refresh: bool
) -> None:
    tokens = user_tokens(server_app, patient, scope)
    assert ("refresh_token" in tokens) is expect_refresh


def test_token_confidential_symmetric_client(server_app: Any, http: Any, patient: str) -> None:
    cases = [
        (basic(SYMMETRIC, "wrong-secret"), "invalid_client"),
        ({}, "invalid_client"),
        (basic(SYMMETRIC, SYMMETRIC_SECRET), None),
    ]
    for headers, error in cases:
        code, verifier, _ = obtain_code(server_app, patient, client_id=SYMMETRIC, redirect_uri=SYMMETRIC_REDIRECT)
        response = exchange(
            http,
            code,
            verifier,
            client_id=None if headers else SYMMETRIC,
            redirect_uri=SYMMETRIC_REDIRECT,
            headers=headers,
        )
        if error:
            assert_token_error(response, error, (400, 401))
        else:
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["patient"] == patient


# ============================================================================= token: refresh_token


def test_refresh_rotates_the_refresh_token(server_app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(server_app, patient)
    seen = [tokens["refresh_token"]]
    for _ in range(3):
        response = refresh(http, seen[-1])
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["refresh_token"] not in seen
        assert fhir_search(http, body["access_token"]).status_code == 200
        seen.append(body["refresh_token"])


def test_refresh_reuse_of_rotated_token_revokes_the_family(server_app: Any, http: Any, patient: str) -> None:
    first = user_tokens(server_app, patient)["refresh_token"]
    second = refresh(http, first).get_json()["refresh_token"]
    assert_token_error(refresh(http, first), "invalid_grant")
    assert_token_error(refresh(http, second), "invalid_grant")  # the newest one went with the family
    active = http.post("/auth/introspect", data={"token": second}, headers=basic(SYMMETRIC, SYMMETRIC_SECRET))
    assert active.get_json() == {"active": False}


def test_refresh_token_of_another_client_invalid_grant(server_app: Any, http: Any, patient: str) -> None:
    token = user_tokens(server_app, patient)["refresh_token"]
    assert_token_error(refresh(http, token, client_id=OTHER), "invalid_grant")


def test_refresh_unknown_token_invalid_grant(http: Any) -> None:
    assert_token_error(refresh(http, "no-such-refresh-token"), "invalid_grant")


def test_refresh_narrower_scope_allowed(server_app: Any, http: Any, patient: str) -> None:
    token = user_tokens(server_app, patient)["refresh_token"]
    response = refresh(http, token, scope="patient/*.rs offline_access")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"].split() == ["patient/*.rs", "offline_access"]
    assert jwt_parts(response.get_json()["access_token"])[1]["scope"] == "patient/*.rs offline_access"


@pytest.mark.parametrize(
    "scope",
    ["launch/patient patient/*.rs user/*.rs offline_access", "patient/*.cruds offline_access", "system/*.rs"],
    ids=["adds-user-scope", "adds-write", "system"],
)
def test_refresh_wider_scope_invalid_scope(server_app: Any, http: Any, patient: str, scope: str) -> None:
    token = user_tokens(server_app, patient)["refresh_token"]
    assert_token_error(refresh(http, token, scope=scope), "invalid_scope")


def test_refresh_keeps_the_patient_context(server_app: Any, http: Any, patient: str, patient_study: str) -> None:
    launch = new_launch(server_app, patient, imaging_study=patient_study)
    first = user_tokens(server_app, None, EHR_SCOPE, launch=launch)
    response = refresh(http, first["refresh_token"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["patient"] == patient
    assert body["need_patient_banner"] is False
    assert body["fhirContext"] == first["fhirContext"]
    assert jwt_parts(body["access_token"])[1]["patient"] == patient
    assert subjects(fhir_search(http, body["access_token"]).get_json()) == {f"Patient/{patient}"}


# ============================================================================= revocation and introspection


def test_revoke_access_token_then_api_401_and_introspection_inactive(server_app: Any, http: Any, patient: str) -> None:
    access = user_tokens(server_app, patient)["access_token"]
    assert fhir_search(http, access).status_code == 200
    assert http.post("/auth/revoke", data={"token": access, "client_id": TIMELINE}).status_code == 200
    assert fhir_search(http, access).status_code == 401
    answer = http.post("/auth/introspect", data={"token": access}, headers=basic(SYMMETRIC, SYMMETRIC_SECRET))
    assert answer.status_code == 200 and answer.get_json() == {"active": False}


def test_revoke_refresh_token_then_refresh_invalid_grant(server_app: Any, http: Any, patient: str) -> None:
    token = user_tokens(server_app, patient)["refresh_token"]
    assert (
        http.post(
            "/auth/revoke", data={"token": token, "token_type_hint": "refresh_token", "client_id": TIMELINE}
        ).status_code
        == 200
    )
    assert_token_error(refresh(http, token), "invalid_grant")


def test_revoke_by_another_client_has_no_effect(server_app: Any, http: Any, patient: str) -> None:
    """RFC 7009 2.1: another client's token is refused (and says so), and stays valid (S12)."""
    tokens = user_tokens(server_app, patient)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert_token_error(http.post("/auth/revoke", data={"token": token, "client_id": OTHER}), "invalid_grant")
    assert fhir_search(http, tokens["access_token"]).status_code == 200
    assert refresh(http, tokens["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, basic(SYMMETRIC, "wrong-secret"), basic("no-such-client", "x")],
    ids=["none", "bad-bearer", "wrong-secret", "unknown-client"],
)
def test_introspect_without_valid_credentials_401(
    server_app: Any, http: Any, patient: str, headers: dict[str, str]
) -> None:
    access = user_tokens(server_app, patient, "launch/patient patient/*.rs")["access_token"]
    response = http.post("/auth/introspect", data={"token": access}, headers=headers)
    assert response.status_code == 401
    assert response.get_json().get("error") == "invalid_client"
    assert patient not in response.get_data(as_text=True)


def test_introspect_public_client_id_alone_is_not_authentication(server_app: Any, http: Any, patient: str) -> None:
    """A public client's client_id is no credential (anyone can send it): RFC 7662 2.1 wants the
    caller authenticated or authorized, to stop token scanning."""
    access = user_tokens(server_app, patient, "launch/patient patient/*.rs")["access_token"]
    response = http.post("/auth/introspect", data={"token": access, "client_id": TIMELINE})
    assert response.status_code == 401, response.get_json()


def test_introspect_active_token_fields(server_app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(server_app, patient, STANDALONE_SCOPE)
    response = http.post(
        "/auth/introspect",
        data={"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {portal_token(http)}"},
    )
    assert response.status_code == 200
    assert "no-store" in response.headers.get("Cache-Control", "")
    body = response.get_json()
    assert body["active"] is True
    assert body["scope"] == tokens["scope"]
    assert body["client_id"] == TIMELINE
    assert body["exp"] == jwt_parts(tokens["access_token"])[1]["exp"] and body["exp"] > time.time()
    assert body["patient"] == patient
    assert body["fhirUser"] == FHIR_USER
    assert body["iss"] == FHIR_BASE
    assert body["sub"] == "dr.khan"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"], ids=["empty", "garbage", "three-parts"])
def test_introspect_bad_token_inactive_200(http: Any, token: str) -> None:
    response = http.post("/auth/introspect", data={"token": token}, headers=basic(SYMMETRIC, SYMMETRIC_SECRET))
    assert response.status_code == 200
    assert response.get_json() == {"active": False}


def test_introspect_expired_token_inactive(server_app: Any, http: Any) -> None:
    server = components(server_app).auth_server
    assert server is not None
    token = server.issuer._sign(
        {
            "iss": FHIR_BASE,
            "aud": FHIR_BASE,
            "iat": int(time.time()) - 7200,
            "exp": int(time.time()) - 3600,
            "jti": "expired-1",
            "client_id": TIMELINE,
            "scope": "user/*.rs",
            "sub": "dr.khan",
        },
        "RS384",
    )
    response = http.post("/auth/introspect", data={"token": token}, headers=basic(SYMMETRIC, SYMMETRIC_SECRET))
    assert response.get_json() == {"active": False}


# ============================================================================= backend services


def test_backend_rs384_assertion_issues_a_short_token(http: Any, patient: str) -> None:
    response = backend_request(http, client_assertion(PORTAL_KEY, PORTAL), "system/ImagingStudy.rs")
    assert response.status_code == 200, response.get_json()
    assert "no-store" in response.headers.get("Cache-Control", "")
    assert response.headers.get("Pragma") == "no-cache"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "system/ImagingStudy.rs"
    assert 0 < body["expires_in"] <= 300 and BACKEND_TOKEN_TTL_S <= 300
    assert "refresh_token" not in body and "id_token" not in body and "patient" not in body
    claims = verify_signed(http, body["access_token"], "RS384")
    assert claims["exp"] - claims["iat"] <= 300 and claims["client_id"] == PORTAL
    assert fhir_search(http, body["access_token"], f"?patient={patient}").status_code == 200


def test_backend_es384_assertion_issues_a_token(http: Any, reader_key: ECKey) -> None:
    response = backend_request(http, client_assertion(reader_key, READER, alg="ES384"), READER_SCOPE)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["scope"] == READER_SCOPE


@pytest.mark.parametrize(
    ("client", "asked", "required"),
    [
        (PORTAL, "system/*.*", ""),
        (PORTAL, "system/*.* system/ImagingStudy.rs", "system/ImagingStudy.rs"),
        (PORTAL, "system/*.rs system/Patient.rs system/ImagingStudy.cruds", "system/Patient.rs"),
        (READER, "system/Patient.rs", ""),
        (READER, "system/ImagingStudy.rs system/Patient.rs", READER_SCOPE),
        (READER, "system/*.rs system/ImagingStudy.rs", READER_SCOPE),
    ],
    ids=[
        "portal-wildcard-only",
        "portal-wildcard-and-registered",
        "portal-mixed",
        "reader-unregistered-only",
        "reader-extra-type",
        "reader-wildcard",
    ],
)
def test_backend_scopes_cut_to_registration(
    http: Any, reader_key: ECKey, client: str, asked: str, required: str
) -> None:
    """Granted scopes are registered ones only; the registered ones asked for (`required`) are granted.
    When none of the registered scopes was asked for, an invalid_scope error is acceptable too."""
    registered = set(PORTAL_SCOPE.split() if client == PORTAL else READER_SCOPE.split())
    assertion = (
        client_assertion(PORTAL_KEY, PORTAL) if client == PORTAL else client_assertion(reader_key, READER, alg="ES384")
    )
    response = backend_request(http, assertion, asked)
    if not required and response.status_code != 200:
        assert_token_error(response, "invalid_scope")
        return
    assert response.status_code == 200, response.get_json()
    granted = response.get_json()["scope"].split()
    assert set(granted) <= registered, f"granted beyond the registration: {sorted(set(granted) - registered)}"
    assert set(required.split()) <= set(granted)
    assert granted, "an empty grant should have been an invalid_scope error"
    assert jwt_parts(response.get_json()["access_token"])[1]["scope"].split() == granted


def test_backend_token_without_registered_scope_cannot_read_patients(
    http: Any, reader_key: ECKey, patient: str
) -> None:
    """What the scope cut protects: `reader` is registered for ImagingStudy only."""
    response = backend_request(
        http, client_assertion(reader_key, READER, alg="ES384"), "system/ImagingStudy.rs system/Patient.rs"
    )
    token = response.get_json().get("access_token")
    if token is None:
        assert_token_error(response, "invalid_scope")
        return
    read = http.get(f"/fhir/Patient/{patient}", headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 403, read.status_code


def key_with_portal_kid() -> RSAKey:
    """A fresh RSA key under the portal key's kid: its signatures do not verify against the registered key."""
    kid = PORTAL_KEY.kid
    assert kid is not None, "the portal key has no kid"
    params: KeyParameters = {"kid": kid, "alg": "RS384"}
    return RSAKey.generate_key(2048, parameters=params)


BAD_ASSERTIONS: dict[str, Callable[[], str]] = {
    "bad-signature-same-kid": lambda: client_assertion(key_with_portal_kid(), PORTAL),
    "aud-fhir-base": lambda: client_assertion(PORTAL_KEY, PORTAL, aud=FHIR_BASE),
    "aud-other-server": lambda: client_assertion(PORTAL_KEY, PORTAL, aud="https://other.example/auth/token"),
    "aud-missing": lambda: client_assertion(PORTAL_KEY, PORTAL, aud=None),
    "exp-6-minutes-ahead": lambda: client_assertion(PORTAL_KEY, PORTAL, exp=int(time.time()) + 360),
    "exp-1-hour-ahead": lambda: client_assertion(PORTAL_KEY, PORTAL, exp=int(time.time()) + 3600),
    "expired": lambda: client_assertion(PORTAL_KEY, PORTAL, iat=int(time.time()) - 400, exp=int(time.time()) - 120),
    "exp-missing": lambda: client_assertion(PORTAL_KEY, PORTAL, exp=None),
    "unknown-kid": lambda: client_assertion(PORTAL_KEY, PORTAL, kid="no-such-kid"),
    "alg-none": lambda: unsigned_assertion({"alg": "none", "typ": "JWT"}, assertion_claims(PORTAL)),
    "alg-none-with-kid": lambda: unsigned_assertion(
        {"alg": "none", "typ": "JWT", "kid": PORTAL_KEY.kid}, assertion_claims(PORTAL)
    ),
    "hs256-public-key-pem": lambda: hs256_assertion(
        PORTAL_KEY.as_pem(private=False),
        {"alg": "HS256", "typ": "JWT", "kid": PORTAL_KEY.kid},
        assertion_claims(PORTAL),
    ),
    "rs256": lambda: client_assertion(
        RSAKey.import_key({**PORTAL_KEY.as_dict(private=True), "alg": "RS256"}), PORTAL, alg="RS256"
    ),
    "iss-not-sub": lambda: client_assertion(PORTAL_KEY, PORTAL, iss=READER),
    "jti-missing": lambda: client_assertion(PORTAL_KEY, PORTAL, jti=None),
    "sub-unknown-client": lambda: client_assertion(PORTAL_KEY, "no-such-client"),
    "sub-public-client": lambda: client_assertion(PORTAL_KEY, TIMELINE),
    "not-a-jwt": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("case", list(BAD_ASSERTIONS))
def test_backend_bad_assertion_invalid_client(http: Any, case: str) -> None:
    response = backend_request(http, BAD_ASSERTIONS[case](), "system/ImagingStudy.rs")
    assert_token_error(response, "invalid_client", (400, 401))


def test_backend_assertion_of_another_client_key_invalid_client(http: Any, reader_key: ECKey) -> None:
    """Signed with the reader's key (and kid) but claiming to be the portal."""
    response = backend_request(http, client_assertion(reader_key, PORTAL, alg="ES384"), "system/ImagingStudy.rs")
    assert_token_error(response, "invalid_client", (400, 401))


def test_backend_replayed_jti_invalid_client(http: Any) -> None:
    assertion = client_assertion(PORTAL_KEY, PORTAL)
    assert backend_request(http, assertion, "system/ImagingStudy.rs").status_code == 200
    assert_token_error(backend_request(http, assertion, "system/ImagingStudy.rs"), "invalid_client", (400, 401))
    jti = jwt_parts(assertion)[1]["jti"]  # the same jti in a freshly signed assertion
    again = client_assertion(PORTAL_KEY, PORTAL, jti=jti)
    assert_token_error(backend_request(http, again, "system/ImagingStudy.rs"), "invalid_client", (400, 401))


@pytest.mark.parametrize(
    "assertion_type",
    ["urn:ietf:params:oauth:client-assertion-type:saml2-bearer", "jwt-bearer", ""],
    ids=["saml2", "short", "empty"],
)
def test_backend_wrong_assertion_type_invalid_client(http: Any, assertion_type: str) -> None:
    response = backend_request(
        http, client_assertion(PORTAL_KEY, PORTAL), "system/ImagingStudy.rs", assertion_type=assertion_type
    )
    assert_token_error(response, "invalid_client", (400, 401))


def test_backend_confidential_app_trying_client_credentials_refused(http: Any) -> None:
    form = {"grant_type": "client_credentials", "scope": "system/ImagingStudy.rs"}
    response = http.post("/auth/token", data=form, headers=basic(SYMMETRIC, SYMMETRIC_SECRET))
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] in ("invalid_client", "unauthorized_client")
    assert "access_token" not in response.get_json()


def test_backend_public_client_trying_client_credentials_invalid_client(http: Any) -> None:
    response = http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": TIMELINE, "scope": "system/ImagingStudy.rs"},
    )
    assert_token_error(response, "invalid_client", (400, 401))


# ============================================================================= EHR launch API


@pytest.mark.parametrize("caller", ["no-token", "garbage", "user-token", "backend-not-launch-issuer"])
def test_launch_api_needs_a_launch_issuer_backend_token(
    server_app: Any, http: Any, patient: str, reader_key: ECKey, caller: str
) -> None:
    tokens: dict[str, Callable[[], str | None]] = {
        "no-token": lambda: None,
        "garbage": lambda: "not-a-token",
        "user-token": lambda: user_tokens(server_app, patient, "launch/patient patient/*.rs user/*.rs")["access_token"],
        "backend-not-launch-issuer": lambda: backend_request(
            http, client_assertion(reader_key, READER, alg="ES384"), READER_SCOPE
        ).get_json()["access_token"],
    }
    token = tokens[caller]()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http.post("/auth/launch", json={"client_id": TIMELINE, "patient": patient}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert "launch" not in response.get_json()
    assert (
        response.headers["WWW-Authenticate"].startswith('Bearer realm="')
        and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    )


@pytest.mark.parametrize(
    "bad",
    ["123", "9434765918", "94347659x9", "", "unknown"],
    ids=["short", "bad-check-digit", "letters", "empty", "no-records"],
)
def test_launch_api_bad_nhs_number_400(http: Any, bad: str, unknown_nhs_number: str) -> None:
    nhs = unknown_nhs_number if bad == "unknown" else bad
    response = http.post(
        "/auth/launch",
        json={"client_id": TIMELINE, "patient": nhs},
        headers={"Authorization": f"Bearer {portal_token(http)}"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "launch" not in response.get_json()


@pytest.mark.parametrize("client_id", ["no-such-app", ""], ids=["unknown", "empty"])
def test_launch_api_unknown_client_400(http: Any, patient: str, client_id: str) -> None:
    response = http.post(
        "/auth/launch",
        json={"client_id": client_id, "patient": patient},
        headers={"Authorization": f"Bearer {portal_token(http)}"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_launch_api_launch_id_is_opaque(http: Any, patient: str, patient_study: str) -> None:
    ids = []
    for _ in range(2):
        response = http.post(
            "/auth/launch",
            json={"client_id": TIMELINE, "patient": patient, "imaging_study": patient_study},
            headers={"Authorization": f"Bearer {portal_token(http)}"},
        )
        assert response.status_code == 201
        assert "no-store" in response.headers.get("Cache-Control", "")
        body = response.get_json()
        assert body["iss"] == FHIR_BASE and 0 < body["expires_in"] <= 300
        ids.append(body["launch"])
    assert ids[0] != ids[1]
    for launch in ids:
        decoded = base64.urlsafe_b64decode(launch + "=" * (-len(launch) % 4))
        for secret in (patient, patient_study):
            assert secret not in launch and secret.encode() not in decoded
        assert launch.count(".") == 0  # not a JWT carrying the context


# ============================================================================= discovery


def test_discovery_code_challenge_methods_s256_only(http: Any) -> None:
    document = http.get("/fhir/.well-known/smart-configuration").get_json()
    assert document["code_challenge_methods_supported"] == ["S256"]


def test_discovery_endpoints_are_served(http: Any) -> None:
    document = http.get("/fhir/.well-known/smart-configuration").get_json()
    assert document["authorization_endpoint"] == f"{AUTH_ROOT}/authorize"
    assert document["token_endpoint"] == TOKEN_URL
    assert {"authorization_code", "client_credentials"} <= set(document["grant_types_supported"])
    assert set(document["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert document["issuer"] == FHIR_BASE
    assert http.get(urlsplit(document["jwks_uri"]).path).get_json()["keys"]
    for key in ("introspection_endpoint", "revocation_endpoint", "token_endpoint"):
        assert http.post(urlsplit(document[key]).path, data={}).status_code < 500


def _prove_launch_ehr(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, None, EHR_SCOPE, launch=new_launch(app, patient))
    assert tokens["patient"] == patient


def _prove_launch_standalone(app: Any, http: Any, patient: str) -> None:
    assert user_tokens(app, patient, STANDALONE_SCOPE)["patient"] == patient


def _prove_authorize_post(app: Any, http: Any, patient: str) -> None:
    code, verifier, _ = obtain_code(app, patient, method="POST")
    assert exchange(http, code, verifier).status_code == 200


def _prove_client_public(app: Any, http: Any, patient: str) -> None:
    code, verifier, _ = obtain_code(app, patient)
    response = exchange(http, code, verifier)  # client_id and verifier only, no secret
    assert response.status_code == 200 and fhir_search(http, response.get_json()["access_token"]).status_code == 200


def _prove_client_confidential_symmetric(app: Any, http: Any, patient: str) -> None:
    code, verifier, _ = obtain_code(app, patient, client_id=SYMMETRIC, redirect_uri=SYMMETRIC_REDIRECT)
    response = exchange(
        http,
        code,
        verifier,
        client_id=None,
        redirect_uri=SYMMETRIC_REDIRECT,
        headers=basic(SYMMETRIC, SYMMETRIC_SECRET),
    )
    assert response.status_code == 200, response.get_json()


def _prove_client_confidential_asymmetric(app: Any, http: Any, patient: str) -> None:
    token = portal_token(http, "system/ImagingStudy.rs")
    assert fhir_search(http, token, f"?patient={patient}").status_code == 200


def _prove_context_banner(app: Any, http: Any, patient: str) -> None:
    assert user_tokens(app, patient, STANDALONE_SCOPE)["need_patient_banner"] is True
    assert user_tokens(app, None, EHR_SCOPE, launch=new_launch(app, patient))["need_patient_banner"] is False


def _prove_context_style(app: Any, http: Any, patient: str) -> None:
    url = user_tokens(app, patient, STANDALONE_SCOPE)["smart_style_url"]
    assert http.get(urlsplit(url).path).get_json()["color_highlight"]


def _prove_context_ehr_patient(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, None, EHR_SCOPE, launch=new_launch(app, patient))
    assert subjects(fhir_search(http, tokens["access_token"]).get_json()) == {f"Patient/{patient}"}


def _prove_context_standalone_patient(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, patient, STANDALONE_SCOPE)
    assert subjects(fhir_search(http, tokens["access_token"]).get_json()) == {f"Patient/{patient}"}


def _prove_permission_offline(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, patient, "launch/patient patient/*.rs offline_access")
    assert refresh(http, tokens["refresh_token"]).status_code == 200


def _prove_permission_online(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, patient, "launch/patient patient/*.rs online_access")
    assert refresh(http, tokens["refresh_token"]).status_code == 200


def _prove_permission_patient(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, patient, "launch/patient patient/*.rs")
    assert subjects(fhir_search(http, tokens["access_token"]).get_json()) == {f"Patient/{patient}"}


def _prove_permission_user(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, None, "user/*.rs openid fhirUser")
    found = fhir_search(http, tokens["access_token"], f"?patient={patient}")
    assert found.status_code == 200 and subjects(found.get_json()) == {f"Patient/{patient}"}


def _prove_permission_v1(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, patient, "launch/patient patient/ImagingStudy.read")
    assert "patient/ImagingStudy.read" in tokens["scope"].split(), tokens["scope"]
    found = fhir_search(http, tokens["access_token"])
    assert found.status_code == 200 and subjects(found.get_json()) == {f"Patient/{patient}"}


def _prove_permission_v2(app: Any, http: Any, patient: str) -> None:
    tokens = user_tokens(app, patient, "launch/patient patient/*.rs")
    assert "patient/*.rs" in tokens["scope"].split()
    assert fhir_search(http, tokens["access_token"]).status_code == 200


def _prove_sso_openid_connect(app: Any, http: Any, patient: str) -> None:
    oidc = http.get("/fhir/.well-known/openid-configuration")
    assert oidc.status_code == 200
    document = oidc.get_json()
    assert document["issuer"] == FHIR_BASE and document["jwks_uri"] == f"{AUTH_ROOT}/jwks"
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    tokens = user_tokens(app, patient, "launch/patient patient/*.rs openid fhirUser")
    claims = verify_signed(http, tokens["id_token"], "RS256")
    assert claims["iss"] == document["issuer"] and claims["aud"] == TIMELINE and claims["fhirUser"] == FHIR_USER


def _prove_smart_imaging_access(app: Any, http: Any, patient: str) -> None:
    """Argonaut SMART Imaging Access: the study's Endpoint needs the token, and the token opens the images."""
    token = user_tokens(app, patient, "launch/patient patient/*.rs")["access_token"]
    bundle = fhir_search(http, token, "?_include=ImagingStudy:endpoint").get_json()
    studies = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ImagingStudy"]
    endpoints = {
        f"Endpoint/{e['resource']['id']}": e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Endpoint"
    }
    study = studies[0]
    endpoint = endpoints[study["endpoint"][0]["reference"]]
    assert {
        "url": "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token",
        "valueBoolean": True,
    } in endpoint["extension"]
    uid = next(i["value"] for i in study["identifier"] if i["system"] == "urn:dicom:uid").removeprefix("urn:oid:")
    path = urlsplit(endpoint["address"]).path + f"/studies/{uid}/metadata"
    assert http.get(path).status_code == 401  # the address wants the token
    images = http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert images.status_code == 200 and images.mimetype == "application/dicom+json"
    assert {d["0020000D"]["Value"][0] for d in images.get_json()} == {uid}


PROOFS: dict[str, Callable[[Any, Any, str], None]] = {
    "launch-ehr": _prove_launch_ehr,
    "launch-standalone": _prove_launch_standalone,
    "authorize-post": _prove_authorize_post,
    "client-public": _prove_client_public,
    "client-confidential-symmetric": _prove_client_confidential_symmetric,
    "client-confidential-asymmetric": _prove_client_confidential_asymmetric,
    "context-banner": _prove_context_banner,
    "context-style": _prove_context_style,
    "context-ehr-patient": _prove_context_ehr_patient,
    "context-standalone-patient": _prove_context_standalone_patient,
    "permission-offline": _prove_permission_offline,
    "permission-online": _prove_permission_online,
    "permission-patient": _prove_permission_patient,
    "permission-user": _prove_permission_user,
    "permission-v1": _prove_permission_v1,
    "permission-v2": _prove_permission_v2,
    "sso-openid-connect": _prove_sso_openid_connect,
    "smart-imaging-access": _prove_smart_imaging_access,
}


def test_discovery_every_listed_capability_is_proven(http: Any) -> None:
    listed = set(http.get("/fhir/.well-known/smart-configuration").get_json()["capabilities"])
    assert listed <= set(PROOFS), f"listed without a test proving it works: {sorted(listed - set(PROOFS))}"


@pytest.mark.parametrize("capability", list(PROOFS))
def test_discovery_listed_capability_works(server_app: Any, http: Any, patient: str, capability: str) -> None:
    listed = http.get("/fhir/.well-known/smart-configuration").get_json()["capabilities"]
    assert capability in listed  # checklist 4: all of these are expected of this server
    PROOFS[capability](server_app, http, patient)
