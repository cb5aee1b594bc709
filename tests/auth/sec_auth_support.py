"""Shared pieces of the authorization server's security tests (issue 12: S4, S7-S9, S11-S13, S16-S18,
S23, C1), the test_sec_auth_*.py modules.

Everything is real: the demo configuration's embedded server built with create_app, its own key file,
SQLite (or Redis) state and audit file in a temporary folder; browsers are the Flask test client with
their own cookie jar and source address (`REMOTE_ADDR`), driven through the real pages
(embedded_support.Browser). Time is moved by `ShiftedTime`: `time.time` itself, for the whole process,
so that the state store, the login sessions and the token checks all see the same future.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from embedded_support import PASSWORD, Browser, pkce, redirect_params

from app import create_app
from app.auth.server.clients import hash_secret
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document

FHIR_BASE = "http://127.0.0.1:8080/fhir"
TIMELINE = "imaging-timeline"
TIMELINE_REDIRECT = "http://127.0.0.1:8080/apps/imaging-timeline/"
OTHER = "other-app"
OTHER_REDIRECT = "http://127.0.0.1:8080/apps/other/"
SYMMETRIC = "symmetric-app"
SYMMETRIC_REDIRECT = "http://127.0.0.1:8080/apps/symmetric/"
SYMMETRIC_SECRET = "symmetric-secret-5be81c"
APP_SCOPE = "launch launch/patient patient/*.rs user/*.rs openid fhirUser offline_access online_access"
STANDALONE_SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access"
EHR_SCOPE = "launch patient/*.rs openid fhirUser offline_access"
USER_SCOPE = "user/*.rs openid fhirUser offline_access"  # no patient picker: no archive needed
CLINICIANS = [f"clinician.{c}" for c in "abcdefghijkl"]  # one per test that fails sign-ins on purpose
PORTAL_KEY_FILE = Path(__file__).resolve().parents[2] / "config" / "demo-keys" / "portal.private.jwk.json"


class ShiftedTime:
    """`time.time` frozen at the moment of installation and moved forward only by `advance`, for the
    whole process while installed (waits and timeouts come out exact, however slow the machine)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        start = time.time()
        monkeypatch.setattr(time, "time", lambda: start + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def build_app(
    config_document: dict[str, Any],
    folder: Path,
    *,
    demo_data: Path | None = None,
    store: str | None = None,
    signing_keys: Path | None = None,
    audit: str | None = None,
) -> Any:
    """The demo configuration's embedded server with two more public/confidential apps and a dozen
    clinicians; its keys, state and audit in `folder` (or the given store and key file). Without
    `demo_data`, one empty folder trust (no patient picker). `audit`: a postgresql:// URL for the trail."""
    doc = copy.deepcopy(config_document)
    folder.mkdir(parents=True, exist_ok=True)
    if demo_data is None:
        archive = folder / "bolton"
        archive.mkdir(exist_ok=True)
        doc["trusts"] = [dict(t, archive={"type": "folder", "path": str(archive)}) for t in doc["trusts"][:1]]
        doc.pop("patient_xref", None)
    doc["audit"] = {"url": audit} if audit else {"path": str(folder / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(signing_keys or folder / "signing-keys.json")
    doc["auth"]["store"] = store or f"sqlite:{folder / 'auth-state.sqlite'}"
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
            "client_id": SYMMETRIC,
            "name": "Symmetric app",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_secret_hash": hash_secret(SYMMETRIC_SECRET),
            "redirect_uris": [SYMMETRIC_REDIRECT],
            "scope": APP_SCOPE,
        },
    ]
    clinician_hash = hash_secret(PASSWORD)
    doc["auth"]["users"] += [
        {"username": name, "name": name.title(), "fhir_user": f"Practitioner/{name}", "password_hash": clinician_hash}
        for name in CLINICIANS
    ]
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        settings = settings_from_document(doc, demo_data or folder, "tests/auth/sec")
    return create_app(settings)


def browser(app: Any, address: str = "127.0.0.1") -> Browser:
    """A browser of its own (cookie jar) at a source address of its own."""
    found = Browser(app)
    found.http.environ_base["REMOTE_ADDR"] = address
    return found


def auth_params(
    client_id: str = TIMELINE, redirect_uri: str = TIMELINE_REDIRECT, scope: str = USER_SCOPE, **extra: str
) -> tuple[dict[str, str], str]:
    verifier, challenge = pkce()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": "sec-state",
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return params, verifier


def exchange(app: Any, code: str, verifier: str, params: dict[str, str], **headers: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": params["redirect_uri"],
        "client_id": params["client_id"],
        "code_verifier": verifier,
    }
    return app.test_client().post("/auth/token", data=form, headers=headers)


def tokens_for(
    app: Any,
    scope: str = USER_SCOPE,
    *,
    username: str = "dr.khan",
    patient: str | None = None,
    agent: Browser | None = None,
    token_headers: dict[str, str] | None = None,
    **extra: str,
) -> dict[str, Any]:
    """Sign in (if needed), pick (if asked), consent, and redeem the code: the token response."""
    params, verifier = auth_params(scope=scope, **extra)
    final = (agent or Browser(app)).run(params, username=username, patient=patient)
    where, query = redirect_params(final)
    assert "code" in query, (where, query)
    response = exchange(app, query["code"], verifier, params, **(token_headers or {}))
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def refresh(app: Any, token: str, client_id: str = TIMELINE, scope: str | None = None) -> Any:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    if scope is not None:
        form["scope"] = scope
    return app.test_client().post("/auth/token", data=form)


def read_api(app: Any, token: str, path: str = "/fhir/Practitioner/dr-khan") -> int:
    """The FHIR API's status for this bearer (401: refused token)."""
    return int(app.test_client().get(path, headers={"Authorization": f"Bearer {token}"}).status_code)


def query_of(response: Any) -> dict[str, str]:
    assert response.status_code in (302, 303), (response.status_code, response.get_data(as_text=True)[:500])
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def audit_events(path: Path) -> list[dict[str, Any]]:
    """Every AuditEvent of an audit file, read with a NEW connection (so: committed)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT body FROM audit_event ORDER BY recorded, id").fetchall()
    finally:
        connection.close()
    return [json.loads(r[0]) for r in rows]


def events_from(path: Path, address: str) -> list[dict[str, Any]]:
    """The events whose agents name this source address."""
    return [
        e for e in audit_events(path) if any(a.get("network", {}).get("address") == address for a in e.get("agent", ()))
    ]
