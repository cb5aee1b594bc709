"""Login sessions of the embedded server across a key rotation: two workers (two apps over one key
file), one started before the rotation and one after, accept each other's sessions; a session signed
with a retired key ends.

The key file's clock (app/auth/server/keys.py) is frozen and moved by the test: a worker looks at the
file again only once CHECK_INTERVAL_S has passed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from embedded_support import Browser, page_kind, pkce
from flask import Flask

import app.auth.server.keys as keys_module
from app import create_app
from app.auth.server.keys import CHECK_INTERVAL_S, SigningKeys
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from app.web.components import components

FHIR_BASE = "http://127.0.0.1:8080/fhir"


class FrozenClock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(keys_module, "time", frozen)
    return frozen


@pytest.fixture
def start_worker(config_document: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    """start_worker() -> a new app over the same configuration and key file, as a gunicorn worker is."""
    doc = copy.deepcopy(config_document)
    archive = tmp_path / "bolton"
    archive.mkdir()
    doc["trusts"] = [dict(t, archive={"type": "folder", "path": str(archive)}) for t in doc["trusts"][:1]]
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(tmp_path / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{tmp_path / 'auth-state.sqlite'}"
    started: list[Flask] = []

    def start() -> Flask:
        with pytest.MonkeyPatch.context() as env:
            env.delenv(BASE_URL_ENV, raising=False)
            env.delenv(CURSOR_SECRET_ENV, raising=False)
            app = create_app(settings_from_document(copy.deepcopy(doc), tmp_path, "tests/auth/sessions"))
        started.append(app)
        return app

    yield start
    for app in started:
        components(app).services.close()
        components(app).audit.close()


def _params() -> dict[str, str]:
    _verifier, challenge = pkce()
    return {
        "response_type": "code",
        "client_id": "imaging-timeline",
        "redirect_uri": "http://127.0.0.1:8080/apps/imaging-timeline/",
        "scope": "user/*.rs openid offline_access",
        "state": "sessions",
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }


def _signed_in(worker: Flask) -> str:
    """dr.khan signs in at `worker`; the session cookie it set."""
    browser = Browser(worker)
    consent = browser.login(browser.authorize(_params()))
    assert page_kind(consent) == "consent", consent.get_data(as_text=True)[:500]
    cookie = browser.http.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def _page_with(worker: Flask, session: str) -> str:
    """What `worker` shows a browser holding that session cookie: consent (signed in) or login."""
    browser = Browser(worker)
    browser.http.set_cookie("session", session)
    return page_kind(browser.authorize(_params()))


def test_sessions_follow_the_key_file(start_worker: Any, clock: FrozenClock, tmp_path: Path) -> None:
    before = start_worker()  # started before the rotation
    session_old = _signed_in(before)
    assert _page_with(before, session_old) == "consent"
    assert _page_with(before, "forged.session.value") == "login"

    operator = SigningKeys(tmp_path / "signing-keys.json")
    old_kid = str(operator.current.kid)
    operator.rotate()
    after = start_worker()  # started after the rotation: signs with the new key from the start
    assert _page_with(after, session_old) == "consent"  # a session begun before the rotation goes on
    session_new = _signed_in(after)
    clock.advance(CHECK_INTERVAL_S)  # the older worker looks at the file again
    assert _page_with(before, session_new) == "consent"
    assert _page_with(before, session_old) == "consent"

    operator.retire(old_kid)
    clock.advance(CHECK_INTERVAL_S)
    for worker in (before, after):
        assert _page_with(worker, session_old) == "login"  # signed with the retired key: ended
        assert _page_with(worker, session_new) == "consent"
