"""Two facade instances sharing one real PostgreSQL (issue 13, item 3): `audit.url` and `auth.store` name the
same database, as behind a load balancer (same configuration, same signing-key file). What must hold:
- an AuditEvent written through A (committed before A answered) is found by B's `/fhir/AuditEvent`;
- a code issued by A is redeemed by B, once: its replay on A is refused and revokes the grant on both;
- a refresh token rotated on B and reused on A is refused, and the grant's access tokens are revoked on both;
  two instances refreshing one token at the same moment: exactly one succeeds;
- a client-assertion `jti` used on A is refused on B; a launch created on A is used through B.
The apps are built with create_app (tests/auth/sec_auth_support.build_app) and driven through Flask test
clients; PostgreSQL is the session's (tests/infra/postgres.py), a database of this module's own.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from embedded_support import Browser, client_assertion, page_kind
from joserfc.jwk import RSAKey
from sec_auth_support import (
    PORTAL_KEY_FILE,
    TIMELINE,
    auth_params,
    build_app,
    exchange,
    query_of,
    read_api,
    refresh,
    tokens_for,
)
from smart_tokens import system_token

from app.audit.pg_store import PostgresAuditStore
from app.auth.server.pg_store import PostgresAuthStore
from app.web.components import components

PORTAL_KEY = RSAKey.import_key(json.loads(PORTAL_KEY_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def database(postgres_server: Any) -> str:
    return str(postgres_server.create_database("shared_state"))


@pytest.fixture(scope="module")
def pair(
    config_document: dict[str, Any], demo_data: Path, database: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Any]:
    folder = tmp_path_factory.mktemp("pg-pair")
    keys = folder / "keys.json"
    a = build_app(config_document, folder / "a", demo_data=demo_data, store=database, signing_keys=keys, audit=database)
    b = build_app(config_document, folder / "b", demo_data=demo_data, store=database, signing_keys=keys, audit=database)
    return a, b


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


def test_both_instances_run_on_postgresql(pair: tuple[Any, Any]) -> None:
    for app in pair:
        found = components(app)
        assert isinstance(found.audit, PostgresAuditStore)
        assert found.auth_server is not None and isinstance(found.auth_server.store, PostgresAuthStore)
        assert app.test_client().get("/readyz").get_json()["audit_store"] == "writable"


def _audit_search(app: Any, query: str) -> dict[str, Any]:
    token = system_token(app, "system/AuditEvent.rs")
    response = app.test_client().get(f"/fhir/AuditEvent?{query}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def test_an_audit_event_written_through_a_is_found_through_b(
    pair: tuple[Any, Any], patient: str, database: str
) -> None:
    a, b = pair
    before = {e["resource"]["id"] for e in _audit_search(b, f"patient={patient}&_count=1000").get("entry", ())}
    token = system_token(a, "system/Patient.rs")
    response = a.test_client().get(f"/fhir/Patient/{patient}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    with psycopg.connect(database) as conn:  # committed before A answered: a new connection sees it
        written = {r[0] for r in conn.execute("SELECT id FROM audit_event WHERE patient = %s", (patient,))} - before
    assert len(written) == 1
    found = _audit_search(b, f"patient={patient}&_count=1000")
    assert written <= {e["resource"]["id"] for e in found.get("entry", ())}
    assert found["total"] == len(before) + 1
    (event,) = [e["resource"] for e in found["entry"] if e["resource"]["id"] in written]
    assert any(e["what"]["reference"] == f"Patient/{patient}" for e in event["entity"])


def test_a_code_issued_by_a_is_redeemed_by_b_once(pair: tuple[Any, Any]) -> None:
    a, b = pair
    params, verifier = auth_params()
    code = query_of(Browser(a).run(params))["code"]
    redeemed = exchange(b, code, verifier, params)
    assert redeemed.status_code == 200, redeemed.get_json()
    access = redeemed.get_json()["access_token"]
    assert read_api(a, access) == 200
    assert exchange(a, code, verifier, params).status_code == 400  # the replay, on the other instance
    assert read_api(a, access) == 401  # ... revokes what the code gave, on both
    assert read_api(b, access) == 401


def test_refresh_reuse_across_instances_is_detected(pair: tuple[Any, Any]) -> None:
    a, b = pair
    tokens = tokens_for(a)
    rotated = refresh(b, tokens["refresh_token"])
    assert rotated.status_code == 200
    assert refresh(a, tokens["refresh_token"]).status_code == 400  # reuse of the rotated token, on A
    assert read_api(b, tokens["access_token"]) == 401
    assert read_api(a, rotated.get_json()["access_token"]) == 401  # the family is revoked
    assert refresh(b, rotated.get_json()["refresh_token"]).status_code == 400


def _refresh_together(apps: tuple[Any, Any], token: str) -> list[int]:
    """Both apps refresh `token` at the same moment (threads released together): their statuses."""
    barrier = threading.Barrier(len(apps))
    statuses: list[int] = []

    def attempt(app: Any) -> None:
        barrier.wait(timeout=60)
        statuses.append(refresh(app, token).status_code)

    threads = [threading.Thread(target=attempt, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_one_refresh_token_refreshed_at_once_on_both_instances(pair: tuple[Any, Any]) -> None:
    a, _ = pair
    for _ in range(5):
        statuses = _refresh_together(pair, tokens_for(a)["refresh_token"])
        assert sorted(statuses) == [200, 400], statuses  # one rotation; the other is a reuse, refused


def test_a_client_assertion_jti_used_on_a_is_refused_on_b(pair: tuple[Any, Any]) -> None:
    a, b = pair
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(PORTAL_KEY, "portal"),
    }
    assert a.test_client().post("/auth/token", data=form).status_code == 200
    replay = b.test_client().post("/auth/token", data=form)
    assert replay.status_code in (400, 401) and replay.get_json()["error"] == "invalid_client"


def test_a_launch_created_on_a_is_used_through_b(pair: tuple[Any, Any], patient: str) -> None:
    a, b = pair
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Patient.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(PORTAL_KEY, "portal"),
    }
    portal = a.test_client().post("/auth/token", data=form).get_json()["access_token"]
    created = a.test_client().post(
        "/auth/launch", json={"client_id": TIMELINE, "patient": patient}, headers={"Authorization": f"Bearer {portal}"}
    )
    assert created.status_code == 201, created.get_json()
    launch = created.get_json()["launch"]
    with psycopg.connect(components(a).auth_server.store._pool.conninfo) as conn:  # type: ignore[union-attr]
        rows = conn.execute("SELECT key, value::text FROM auth_state").fetchall()
    assert not [r for r in rows if launch in r[0] or launch in r[1]], "a launch id is stored in clear"
    params, _ = auth_params(scope="launch patient/*.rs openid", launch=launch)
    agent = Browser(b)
    assert page_kind(agent.login(agent.authorize(params))) == "consent"
