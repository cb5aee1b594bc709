"""Sign-in to the embedded server (issue 12: S8, S9, S13).

S8: failed sign-ins are throttled per account and per address (429 with Retry-After, the password not
checked meanwhile), never a lock-out: once the wait is over the right password works, and the
clinician's own browser is not held up by an attacker failing on purpose elsewhere. S9: an unknown
user name costs the same password hash as a known one (counted, not timed). S13: login sessions
are server-side (the cookie holds no user), end on sign-out and after idle and absolute timeouts
(defaults: 30 min, 10 h), prompt=login and max_age make the user sign in again, online_access
refresh tokens end with the session.

Each test that fails sign-ins on purpose uses a clinician and a source address of its own, so the
module's one app serves all of them.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path
from typing import Any

import pytest
from embedded_support import PASSWORD, Browser, forms_of, jwt_parts, page_kind
from sec_auth_support import (
    CLINICIANS,
    ShiftedTime,
    auth_params,
    browser,
    build_app,
    exchange,
    query_of,
    read_api,
    refresh,
    tokens_for,
)

IDLE_S = 1800  # auth.sign_in defaults (app/settings/schema.json)
ABSOLUTE_S = 36000


@pytest.fixture(scope="module")
def app(config_document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_app(config_document, tmp_path_factory.mktemp("sec-signin"))


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> ShiftedTime:
    return ShiftedTime(monkeypatch)


def _login_page(agent: Browser, **extra: str) -> Any:
    params, _ = auth_params(**extra)
    page = agent.authorize(params)
    assert page_kind(page) == "login", page.get_data(as_text=True)[:500]
    return page


def _try(agent: Browser, username: str, password: str, **extra: str) -> Any:
    """One sign-in attempt from a fresh login page; the answer to the POST (no redirect followed)."""
    page = _login_page(agent, **extra)
    (form,) = [f for f in forms_of(page) if f.fields.get("step") == "login"]
    return agent.submit(page, form, {"username": username, "password": password})


def _signed_in(agent: Browser, username: str = "dr.khan", **extra: str) -> None:
    answer = _try(agent, username, PASSWORD, **extra)
    assert answer.status_code == 303, (answer.status_code, answer.get_data(as_text=True)[:300])


def _sign_out(agent: Browser) -> None:
    page = agent.http.get("/auth/logout")
    assert page.status_code == 200
    (form,) = forms_of(page)
    done = agent.submit(page, form)
    assert done.status_code == 200 and "signed out" in done.get_data(as_text=True)


def _page_for(agent: Browser, **extra: str) -> str:
    params, _ = auth_params(**extra)
    return page_kind(agent.authorize(params))


# ============================================================================= S8


def test_s8_repeated_wrong_passwords_are_throttled_then_the_right_one_works(app: Any, clock: ShiftedTime) -> None:
    user, attacker = CLINICIANS[0], browser(app, "10.8.0.1")
    statuses = [_try(attacker, user, f"guess-{n}").status_code for n in range(20)]
    assert statuses[:5] == [401] * 5, statuses  # the free allowance
    assert 429 in statuses, statuses
    throttled = _try(attacker, user, PASSWORD)  # the right password, while it must wait: not checked
    assert throttled.status_code == 429
    wait = int(throttled.headers["Retry-After"])
    assert 0 < wait <= 300
    assert page_kind(throttled) == "login" and "try again in" in throttled.get_data(as_text=True)
    clock.advance(wait + 1)  # no lock-out: once the wait is over, the right password works
    assert _try(attacker, user, PASSWORD).status_code == 303


def test_s8_the_wait_grows_with_each_failure_and_is_capped(app: Any, clock: ShiftedTime) -> None:
    user, agent = CLINICIANS[1], browser(app, "10.8.0.2")
    waits: list[int] = []
    for n in range(40):
        answer = _try(agent, user, f"guess-{n}")
        if answer.status_code == 429:
            waits.append(int(answer.headers["Retry-After"]))
            clock.advance(waits[-1])  # wait as told, then fail again
        if waits and waits[-1] == 300:
            break
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300], waits  # doubling, capped at auth.sign_in.max_wait_s


def test_s8_one_address_trying_many_accounts_is_throttled(app: Any, clock: ShiftedTime) -> None:
    agent = browser(app, "10.8.0.3")
    statuses = [_try(agent, f"nobody-{n}", "password").status_code for n in range(35)]
    assert statuses[:31] == [401] * 31, statuses  # 30 free failures, the 31st counted: then wait
    assert set(statuses[31:]) == {429}, statuses
    other = browser(app, "10.8.0.4")  # another address is not held up
    assert _try(other, CLINICIANS[2], PASSWORD).status_code == 303


def test_s8_an_attacker_cannot_keep_a_clinician_out_of_their_own_browser(app: Any, clock: ShiftedTime) -> None:
    user = CLINICIANS[3]
    own = browser(app, "10.8.0.5")
    _signed_in(own, user)  # the clinician's workstation: signed in here before
    attacker = browser(app, "10.8.0.6")
    for n in range(12):
        _try(attacker, user, f"guess-{n}")
    assert _try(attacker, user, PASSWORD).status_code == 429  # the account is throttled for strangers
    _sign_out(own)
    assert _try(own, user, PASSWORD).status_code == 303  # ... not for the clinician's own browser


def test_s8_throttle_holds_across_browsers_of_one_address(app: Any, clock: ShiftedTime) -> None:
    """New cookies (a new browser) do not reset the count: it is kept on the server."""
    user = CLINICIANS[4]
    for n in range(8):
        _try(browser(app, "10.8.0.7"), user, f"guess-{n}")
    assert _try(browser(app, "10.8.0.7"), user, "guess-9").status_code == 429


# ============================================================================= S9


def test_s9_an_unknown_user_name_costs_the_same_password_hash(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append("scrypt")
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    counts: dict[str, int] = {}
    for case, username in (("known", CLINICIANS[5]), ("unknown", "no-such-clinician")):
        calls.clear()
        answer = _try(browser(app, f"10.9.0.{len(counts) + 1}"), username, "wrong-password")
        assert answer.status_code == 401
        counts[case] = len(calls)
    assert counts["known"] == counts["unknown"] == 1, counts


# ============================================================================= S13


def _session_cookie(agent: Browser) -> str:
    cookie = agent.http.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def test_s13_the_session_cookie_holds_no_user(app: Any) -> None:
    agent = browser(app, "10.13.0.1")
    _signed_in(agent)
    value = _session_cookie(agent)
    payload = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    text = (zlib.decompress(raw) if value.startswith(".") else raw).decode()
    assert "dr.khan" not in text and "user" not in text and "auth_time" not in text, text


def test_s13_sign_out_ends_the_session_for_a_copied_cookie_too(app: Any) -> None:
    own, thief = browser(app, "10.13.0.2"), browser(app, "10.13.0.3")
    _signed_in(own)
    thief.http.set_cookie("session", _session_cookie(own))
    assert _page_for(thief) == "consent"  # a copied cookie works while the session is on...
    _sign_out(own)
    assert _page_for(own) == "login"
    assert _page_for(thief) == "login"  # ... and not after sign-out


def test_s13_sign_out_needs_the_forms_csrf_value(app: Any) -> None:
    agent = browser(app, "10.13.0.4")
    _signed_in(agent)
    assert agent.http.post("/auth/logout", data={"csrf": "forged"}).status_code == 200
    assert _page_for(agent) == "consent"


def test_s13_idle_timeout(app: Any, clock: ShiftedTime) -> None:
    agent = browser(app, "10.13.0.5")
    _signed_in(agent)
    clock.advance(IDLE_S - 60)
    assert _page_for(agent) == "consent"  # activity restarts the idle time
    clock.advance(IDLE_S - 60)
    assert _page_for(agent) == "consent"
    clock.advance(IDLE_S + 1)
    assert _page_for(agent) == "login"


def test_s13_absolute_timeout_whatever_the_activity(app: Any, clock: ShiftedTime) -> None:
    agent = browser(app, "10.13.0.6")
    _signed_in(agent)
    elapsed = 0
    while elapsed + IDLE_S // 2 < ABSOLUTE_S:
        clock.advance(IDLE_S // 2)
        elapsed += IDLE_S // 2
        assert _page_for(agent) == "consent", elapsed
    clock.advance(ABSOLUTE_S - elapsed + 1)
    assert _page_for(agent) == "login"


def test_s13_prompt_login_asks_to_sign_in_again_once(app: Any) -> None:
    agent = browser(app, "10.13.0.7")
    _signed_in(agent)
    params, verifier = auth_params(prompt="login")
    again = agent.authorize(params)
    assert page_kind(again) == "login"
    consent = agent.login(again)
    assert page_kind(consent) == "consent"  # signed in for this request: not asked a third time
    code = query_of(agent.consent(consent))["code"]
    assert exchange(app, code, verifier, params).status_code == 200


def test_s13_max_age_older_sign_in_asks_again(app: Any, clock: ShiftedTime) -> None:
    agent = browser(app, "10.13.0.8")
    _signed_in(agent)
    clock.advance(120)
    assert _page_for(agent, max_age="600") == "consent"
    params, verifier = auth_params(max_age="60", scope="user/*.rs openid fhirUser")
    again = agent.authorize(params)
    assert page_kind(again) == "login"
    consent = agent.login(again)
    code = query_of(agent.consent(consent))["code"]
    tokens = exchange(app, code, verifier, params).get_json()
    claims = jwt_parts(tokens["id_token"])[1]
    assert claims["auth_time"] >= claims["iat"] - 5  # the new sign-in's time


def test_s13_online_access_refresh_tokens_end_with_the_session(app: Any, clock: ShiftedTime) -> None:
    agent = browser(app, "10.13.0.9")
    tokens = tokens_for(app, "user/*.rs openid online_access", agent=agent)
    rotated = refresh(app, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.get_json()
    clock.advance(IDLE_S + 1)  # the user went away: the session timed out
    ended = refresh(app, rotated.get_json()["refresh_token"])
    assert ended.status_code == 400 and ended.get_json()["error"] == "invalid_grant"


def test_s13_online_access_refresh_tokens_end_at_sign_out(app: Any) -> None:
    agent = browser(app, "10.13.0.10")
    online = tokens_for(app, "user/*.rs openid online_access", agent=agent)
    offline = tokens_for(app, "user/*.rs openid offline_access", agent=agent)
    _sign_out(agent)
    assert refresh(app, online["refresh_token"]).status_code == 400
    assert refresh(app, offline["refresh_token"]).status_code == 200  # offline access outlives the session
    assert read_api(app, offline["access_token"]) == 200


def test_s13_a_new_sign_in_replaces_the_previous_session(app: Any) -> None:
    agent = browser(app, "10.13.0.11")
    _signed_in(agent, CLINICIANS[6])
    before = _session_cookie(agent)
    _signed_in(agent, CLINICIANS[7], prompt="login")  # another clinician signs in at the same browser
    thief = browser(app, "10.13.0.12")
    thief.http.set_cookie("session", before)
    assert _page_for(thief) == "login"  # the earlier session ended with the new sign-in


def test_s13_auth_state_file_is_not_world_readable(app: Any) -> None:
    """(S18 for the login sessions this module creates; tests/auth/test_sec_auth_state.py has the rest.)"""
    server = app.extensions["gm_imaging_facade_auth_server"]
    path = Path(server.settings.auth.store.removeprefix("sqlite:"))
    assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
