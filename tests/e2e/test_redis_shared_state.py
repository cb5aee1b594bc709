"""Two facade processes sharing their authorization state through a real Redis.

As behind a load balancer: both processes have the same configuration (public base URL,
`auth.store: redis://...`, signing keys file, FACADE_CURSOR_SECRET) and each test sends one step
to process 1 and the next to process 2. What must hold across them:
  - a client assertion `jti` used on one is refused on the other (400 invalid_client);
  - an access token revoked on one is refused on the other (401);
  - a refresh token rotated on one and reused on the other is refused, and its family revoked;
  - (the positive side) a code issued on one is redeemed on the other, a token issued on one is
    accepted by the other.
Redis runs on a free loopback port with no persistence, in a temporary folder.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import (
    ASSERTION_TYPE,
    HTTP_TIMEOUT_S,
    client_assertion,
    request_backend_token,
    timeline_url,
)

from tests.infra.redis_server import RedisServer

pytestmark = pytest.mark.integration

CURSOR_SECRET = "e2e-shared-cursor-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Any:
    import redis

    return redis.Redis.from_url(redis_url, socket_timeout=5)


@pytest.fixture(scope="module")
def pair(start_facade: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """Process 1 and process 2: one public address (process 1's), one Redis, one key file."""
    keys = tmp_path_factory.mktemp("shared-keys") / "signing-keys.json"
    env = {"FACADE_CURSOR_SECRET": CURSOR_SECRET}
    one = start_facade("redis-1", store=redis_url, signing_keys=keys, workers=1, env=env)
    # Started after process 1 is up: the key file exists by then and both read the same keys.
    two = start_facade("redis-2", public_port=one.port, store=redis_url, signing_keys=keys, workers=1, env=env)
    assert keys.is_file()
    return one, two


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


def _token_on(process: Any, assertion: str) -> requests.Response:
    return request_backend_token(process.url("/auth/token"), assertion=assertion)


def _read_patient(process: Any, token: str, patient: str) -> requests.Response:
    return requests.get(
        process.url(f"/fhir/Patient/{patient}"), headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S
    )


def test_both_processes_answer_for_one_public_address(pair):
    one, two = pair
    for process in pair:
        config = requests.get(process.url("/fhir/.well-known/smart-configuration"), timeout=HTTP_TIMEOUT_S).json()
        assert config["token_endpoint"] == one.token_url
    jwks = [requests.get(p.url("/auth/jwks"), timeout=HTTP_TIMEOUT_S).json() for p in pair]
    assert jwks[0] == jwks[1], "both processes must publish the same signing keys"
    assert one.port != two.port


def test_assertion_jti_used_on_one_process_is_refused_on_the_other(pair, redis_client):
    one, two = pair
    jti = f"e2e-{secrets.token_hex(8)}"
    assertion = client_assertion(one.token_url, jti=jti)

    first = _token_on(one, assertion)
    assert first.status_code == 200, first.text
    assert any(jti.encode() in key for key in redis_client.scan_iter(match=b"gmfacade:*")), (
        "the used jti must be kept in Redis"
    )

    replay = _token_on(two, assertion)
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_client"
    # And the other way round, with a fresh jti.
    other = client_assertion(one.token_url)
    assert _token_on(two, other).status_code == 200
    assert _token_on(one, other).status_code == 400


def test_access_token_revoked_on_one_process_is_refused_on_the_other(pair, patient):
    one, two = pair
    issued = _token_on(one, client_assertion(one.token_url))
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert _read_patient(two, token, patient).status_code == 200, "a token from process 1 works on process 2"

    revoked = requests.post(
        one.url("/auth/revoke"),
        timeout=HTTP_TIMEOUT_S,
        data={
            "token": token,
            "token_type_hint": "access_token",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(one.token_url),
        },
    )
    assert revoked.status_code == 200, revoked.text

    refused = _read_patient(two, token, patient)
    assert refused.status_code == 401, refused.text
    assert "invalid_token" in refused.headers.get("WWW-Authenticate", "")
    assert _read_patient(one, token, patient).status_code == 401


# -- a user flow (public client, PKCE) across the two processes -------------------------------------
def _csrf(page: requests.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:2000]
    return found.group(1)


def _authorize(first: Any, second: Any, patient: str, *, replay: bool = False) -> dict[str, Any]:
    """A standalone launch whose steps alternate between the processes; returns the token response.

    Sign-in on `first`, patient choice on `second`, consent on `first` (code issued there), code
    redeemed on `second`. Forms are posted to /auth/authorize with the parameters in the body
    only, so this checks the shared state, not the browser's way of posting the forms
    (test_browser_launch.py does that).
    """
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": "imaging-timeline",
        "redirect_uri": timeline_url(first.public_port),
        "aud": first.public_base,
        "scope": "launch/patient patient/*.rs openid fhirUser offline_access",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    browser = requests.Session()
    login = browser.get(first.url("/auth/authorize"), params=params, timeout=HTTP_TIMEOUT_S)
    assert login.status_code == 200 and 'id="username"' in login.text
    picker = browser.post(
        first.url("/auth/authorize"),
        timeout=HTTP_TIMEOUT_S,
        data={**params, "csrf": _csrf(login), "step": "login", "username": "dr.khan", "password": "imaging-demo"},
    )
    assert 'id="q"' in picker.text, picker.text[:1000]
    # The session cookie is signed with the shared secret: process 2 knows the user.
    consent = browser.post(
        second.url("/auth/authorize"),
        timeout=HTTP_TIMEOUT_S,
        data={**params, "csrf": _csrf(picker), "patient": patient},
    )
    assert 'id="allow"' in consent.text, consent.text[:1000]
    allowed = browser.post(
        first.url("/auth/authorize"),
        allow_redirects=False,
        timeout=HTTP_TIMEOUT_S,
        data={**params, "csrf": _csrf(consent), "step": "consent", "decision": "allow", "patient": patient},
    )
    assert allowed.status_code == 302, allowed.text[:1000]
    query = parse_qs(urlsplit(allowed.headers["Location"]).query)
    assert "code" in query, query
    # The code issued by process 1 is redeemed on process 2.
    tokens = requests.post(
        second.url("/auth/token"),
        timeout=HTTP_TIMEOUT_S,
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": params["redirect_uri"],
            "client_id": "imaging-timeline",
            "code_verifier": verifier,
        },
    )
    assert tokens.status_code == 200, tokens.text
    body: dict[str, Any] = tokens.json()
    assert body["patient"] == patient and body["refresh_token"]
    if not replay:
        return body
    # ... and cannot be redeemed again on process 1 (which revokes what it gave: RFC 6749 4.1.2).
    again = requests.post(
        first.url("/auth/token"),
        timeout=HTTP_TIMEOUT_S,
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": params["redirect_uri"],
            "client_id": "imaging-timeline",
            "code_verifier": verifier,
        },
    )
    assert again.status_code == 400, again.text
    return body


def test_a_code_replayed_on_the_other_process_is_refused_and_revokes_its_tokens(pair, patient):
    one, two = pair
    tokens = _authorize(one, two, patient, replay=True)
    for process in pair:
        assert _read_patient(process, tokens["access_token"], patient).status_code == 401
    assert _refresh(two, tokens["refresh_token"]).status_code == 400


def _refresh(process: Any, refresh_token: str) -> requests.Response:
    return requests.post(
        process.url("/auth/token"),
        timeout=HTTP_TIMEOUT_S,
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "imaging-timeline"},
    )


def test_refresh_token_rotated_on_one_process_and_reused_on_the_other_is_refused(pair, patient):
    one, two = pair
    tokens = _authorize(one, two, patient)
    first_refresh = tokens["refresh_token"]

    rotated = _refresh(one, first_refresh)
    assert rotated.status_code == 200, rotated.text
    second_refresh = rotated.json()["refresh_token"]
    assert second_refresh != first_refresh

    reused = _refresh(two, first_refresh)
    assert reused.status_code == 400, reused.text
    assert reused.json()["error"] == "invalid_grant"
    # A reused refresh token revokes its family: the newest one is dead too, on either process.
    assert _refresh(two, second_refresh).status_code == 400
    assert _refresh(one, second_refresh).status_code == 400


def test_refresh_token_rotated_across_processes_keeps_working(pair, patient):
    one, two = pair
    tokens = _authorize(two, one, patient)
    rotated = _refresh(one, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    again = _refresh(two, rotated.json()["refresh_token"])
    assert again.status_code == 200, again.text
    assert again.json()["patient"] == patient
    access = again.json()["access_token"]
    assert _read_patient(one, access, patient).status_code == 200

    # A user's access token revoked on process 2 (public client) is refused on process 1.
    revoked = requests.post(
        two.url("/auth/revoke"), data={"token": access, "client_id": "imaging-timeline"}, timeout=HTTP_TIMEOUT_S
    )
    assert revoked.status_code == 200
    assert _read_patient(one, access, patient).status_code == 401


def test_processes_with_their_own_sqlite_state_do_not_share_it(start_facade, pair, tmp_path_factory: Any):
    """The control: the same two-process check without Redis lets a replayed jti through.

    It shows that the refusals above come from the shared store, not from something else.
    """
    one, _ = pair
    keys = Path(str(tmp_path_factory.mktemp("own-keys"))) / "signing-keys.json"
    env = {"FACADE_CURSOR_SECRET": CURSOR_SECRET}
    lone_one = start_facade("sqlite-1", signing_keys=keys, workers=1, env=env)
    lone_two = start_facade("sqlite-2", public_port=lone_one.port, signing_keys=keys, workers=1, env=env)
    assertion = client_assertion(lone_one.token_url)
    assert _token_on(lone_one, assertion).status_code == 200
    assert _token_on(lone_two, assertion).status_code == 200, "separate SQLite stores cannot see each other's jti"
    assert one.port not in (lone_one.port, lone_two.port)
