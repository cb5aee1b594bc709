"""The authorization state at rest (issue 12: the auth-state parts of S18; S7 with Redis).

SQLite: the state file and its WAL are created 0600 (whatever the umask), launch ids are kept only as
their hashes (like codes and refresh tokens), expired rows are purged. Redis (a real redis-server,
tests/infra/redis_server.py): launch ids hashed there too, every key written with an expiry, and two
apps over one Redis (two processes behind a load balancer) refuse on one what was revoked on the
other: the access tokens of a grant whose refresh token was revoked, reused or whose code was
replayed, and a login session ended by sign-out.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from embedded_support import Browser, client_assertion, forms_of, page_kind
from joserfc.jwk import RSAKey
from sec_auth_support import (
    PORTAL_KEY_FILE,
    TIMELINE,
    ShiftedTime,
    auth_params,
    build_app,
    exchange,
    query_of,
    read_api,
    refresh,
    tokens_for,
)

from app.auth.server.store import SqliteAuthStore
from tests.infra.redis_server import RedisServer

PORTAL_KEY = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


def _portal(app: Any) -> str:
    form = {
        "grant_type": "client_credentials",
        "scope": "system/ImagingStudy.rs system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(PORTAL_KEY, "portal"),
    }
    response = app.test_client().post("/auth/token", data=form)
    assert response.status_code == 200
    return str(response.get_json()["access_token"])


def _launch(app: Any, patient: str) -> str:
    response = app.test_client().post(
        "/auth/launch",
        json={"client_id": TIMELINE, "patient": patient},
        headers={"Authorization": f"Bearer {_portal(app)}"},
    )
    assert response.status_code == 201, response.get_json()
    return str(response.get_json()["launch"])


# ============================================================================= SQLite


@pytest.fixture(scope="module")
def sqlite_app(
    config_document: dict[str, Any], demo_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Path]]:
    folder = tmp_path_factory.mktemp("sec-state")
    old = os.umask(0o022)  # a usual umask: files would be 0644 unless created otherwise
    try:
        app = build_app(config_document, folder, demo_data=demo_data)
    finally:
        os.umask(old)
    yield app, folder / "auth-state.sqlite"


def test_s18_auth_state_files_are_readable_by_their_owner_only(sqlite_app: tuple[Any, Path], patient: str) -> None:
    app, path = sqlite_app
    _launch(app, patient)
    tokens_for(app)  # a session, a code and a refresh token written: the WAL exists
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        assert name.exists(), name
        mode = stat.S_IMODE(name.stat().st_mode)
        assert mode & 0o077 == 0, f"{name.name}: {oct(mode)}"


def test_s18_an_existing_world_readable_state_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "auth-state.sqlite"
    sqlite3.connect(str(path)).close()
    os.chmod(path, 0o644)
    SqliteAuthStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_s18_launch_ids_are_stored_hashed(sqlite_app: tuple[Any, Path], patient: str) -> None:
    app, path = sqlite_app
    launch = _launch(app, patient)
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT kind, key, value FROM auth_state").fetchall()
    finally:
        connection.close()
    assert not [r for r in rows if launch in r[1] or launch.encode() in bytes(r[2])], "a launch id is stored in clear"
    # ... and the hashed launch still works
    params, _ = auth_params(scope="launch patient/*.rs openid", launch=launch)
    agent = Browser(app)
    assert page_kind(agent.login(agent.authorize(params))) == "consent"


def test_s18_expired_rows_are_purged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ShiftedTime(monkeypatch)
    path = tmp_path / "auth-state.sqlite"
    store = SqliteAuthStore(path)
    store.put("code", "expires-soon", {"x": 1}, 60)
    store.put("refresh", "lives-long", {"x": 2}, 86400)
    clock.advance(3600)
    store.put("code", "another", {"x": 3}, 60)  # any write purges (at most once a minute)
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        keys = {r[0] for r in connection.execute("SELECT key FROM auth_state").fetchall()}
    finally:
        connection.close()
    assert keys == {"lives-long", "another"}, keys


def test_s18_a_restart_purges_expired_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ShiftedTime(monkeypatch)
    path = tmp_path / "auth-state.sqlite"
    SqliteAuthStore(path).put("launch", "old", {}, 300)
    clock.advance(600)
    SqliteAuthStore(path)
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert connection.execute("SELECT COUNT(*) FROM auth_state").fetchone()[0] == 0
    finally:
        connection.close()


# ============================================================================= Redis


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="module")
def redis_pair(
    config_document: dict[str, Any], demo_data: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Any]:
    folder = tmp_path_factory.mktemp("sec-redis")
    keys = folder / "keys.json"
    one = build_app(config_document, folder / "one", demo_data=demo_data, store=redis_url, signing_keys=keys)
    two = build_app(config_document, folder / "two", demo_data=demo_data, store=redis_url, signing_keys=keys)
    return one, two


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Any:
    import redis

    return redis.Redis.from_url(redis_url, socket_timeout=5)


def test_s18_redis_launch_ids_are_stored_hashed_and_every_key_expires(
    redis_pair: tuple[Any, Any], redis_client: Any, patient: str
) -> None:
    one, _ = redis_pair
    launch = _launch(one, patient)
    tokens_for(one)
    names = list(redis_client.scan_iter(match=b"gmfacade:*"))
    assert names
    assert not [n for n in names if launch.encode() in n], "a launch id is a Redis key in clear"
    assert not [n for n in names if launch.encode() in (redis_client.get(n) or b"")]
    forever = [n for n in names if redis_client.pttl(n) < 0]
    assert not forever, f"keys without an expiry: {forever}"


def test_s7_redis_refresh_token_revoked_on_one_process_revokes_access_tokens_on_the_other(
    redis_pair: tuple[Any, Any],
) -> None:
    one, two = redis_pair
    tokens = tokens_for(one)
    assert read_api(two, tokens["access_token"]) == 200
    revoked = two.test_client().post("/auth/revoke", data={"token": tokens["refresh_token"], "client_id": TIMELINE})
    assert revoked.status_code == 200
    assert read_api(one, tokens["access_token"]) == 401
    assert read_api(two, tokens["access_token"]) == 401


def test_s7_redis_reuse_and_code_replay_revoke_the_grant_across_processes(redis_pair: tuple[Any, Any]) -> None:
    one, two = redis_pair
    tokens = tokens_for(one)
    assert refresh(one, tokens["refresh_token"]).status_code == 200
    assert refresh(two, tokens["refresh_token"]).status_code == 400  # reuse, on the other process
    assert read_api(one, tokens["access_token"]) == 401

    params, verifier = auth_params()
    code = query_of(Browser(one).run(params))["code"]
    access = exchange(one, code, verifier, params).get_json()["access_token"]
    assert exchange(two, code, verifier, params).status_code == 400  # the replay, on the other process
    assert read_api(one, access) == 401


def test_s13_redis_sign_out_on_one_process_ends_the_session_on_the_other(redis_pair: tuple[Any, Any]) -> None:
    one, two = redis_pair
    agent = Browser(one)
    params, _ = auth_params()
    assert page_kind(agent.login(agent.authorize(params))) == "consent"
    cookie = agent.http.get_cookie("session")
    assert cookie is not None
    elsewhere = Browser(two)
    elsewhere.http.set_cookie("session", cookie.value)
    assert page_kind(elsewhere.authorize(auth_params()[0])) == "consent"
    page = agent.http.get("/auth/logout")
    agent.submit(page, forms_of(page)[0])
    assert page_kind(elsewhere.authorize(auth_params()[0])) == "login"
