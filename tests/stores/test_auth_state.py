"""The authorization server's state: one behaviour whatever the store (SQLite, a real Redis, a real
PostgreSQL), one-time operations atomic across processes, expired rows never returned and purged."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any

import pytest

from app.auth.server.pg_store import PostgresAuthStore
from app.auth.server.store import AuthStore
from tests.stores.conftest import AUTH_KINDS, Clock
from tests.stores.workers import race

Open = Callable[[str], AuthStore]


@pytest.fixture(params=AUTH_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, auth_spec: Callable[[str], str], opened: Open) -> AuthStore:
    return opened(auth_spec(kind))


def test_put_get_delete(store: AuthStore) -> None:
    store.put("refresh", "k1", {"family": "f1", "n": [1, 2], "s": "é"}, 600)
    assert store.get("refresh", "k1") == {"family": "f1", "n": [1, 2], "s": "é"}
    assert store.get("refresh", "other") is None
    assert store.get("code", "k1") is None  # kinds are separate
    store.put("refresh", "k1", {"family": "f2"}, 600)  # replaced
    assert store.get("refresh", "k1") == {"family": "f2"}
    store.delete("refresh", "k1")
    assert store.get("refresh", "k1") is None
    store.delete("refresh", "k1")  # deleting what is gone is no error


def test_take_is_once(store: AuthStore) -> None:
    store.put("code", "c1", {"grant": "g"}, 600)
    assert store.take("code", "c1") == {"grant": "g"}
    assert store.take("code", "c1") is None
    assert store.get("code", "c1") is None
    assert store.take("code", "never") is None


def test_add_once(store: AuthStore) -> None:
    assert store.add_once("assertion-jti", "portal:j1", 600) is True
    assert store.add_once("assertion-jti", "portal:j1", 600) is False
    assert store.add_once("assertion-jti", "portal:j2", 600, {"x": 1}) is True
    assert store.get("assertion-jti", "portal:j2") == {"x": 1}


def test_incr_counts_from_one(store: AuthStore) -> None:
    assert [store.incr("signin-failures", "u", 600) for _ in range(3)] == [1, 2, 3]
    assert store.incr("signin-failures", "v", 600) == 1


# -- expiry, by the facade's clock (SQLite and PostgreSQL; Redis expires keys by its own clock) ------------
@pytest.fixture(params=("sqlite", "postgres"))
def clocked(request: pytest.FixtureRequest, auth_spec: Callable[[str], str], opened: Open) -> AuthStore:
    return opened(auth_spec(str(request.param)))


def test_expired_entries_are_not_returned(clocked: AuthStore, clock: Clock) -> None:
    clocked.put("code", "c", {"a": 1}, 60)
    clocked.put("launch", "l", {"a": 2}, 60)
    clock.advance(61)
    assert clocked.get("code", "c") is None
    assert clocked.take("launch", "l") is None


def test_an_expired_jti_may_be_seen_again(clocked: AuthStore, clock: Clock) -> None:
    assert clocked.add_once("assertion-jti", "j", 60) is True
    clock.advance(30)
    assert clocked.add_once("assertion-jti", "j", 60) is False
    clock.advance(31)
    assert clocked.add_once("assertion-jti", "j", 60) is True
    assert clocked.add_once("assertion-jti", "j", 60) is False


def test_a_counter_restarts_after_its_window(clocked: AuthStore, clock: Clock) -> None:
    assert clocked.incr("signin-failures", "u", 60) == 1
    clock.advance(59)
    assert clocked.incr("signin-failures", "u", 60) == 2  # the window runs from the first count
    clock.advance(2)
    assert clocked.incr("signin-failures", "u", 60) == 1


def _postgres_keys(url: str) -> set[tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {(k, key) for k, key in conn.execute("SELECT kind, key FROM auth_state").fetchall()}


def test_postgres_expired_rows_are_purged(postgres_url: str, clock: Clock, opened: Open) -> None:
    store = opened(postgres_url)
    store.put("code", "expires-soon", {"x": 1}, 60)
    store.put("launch", "expires-soon", {"x": 1}, 300)
    store.add_once("assertion-jti", "portal:j", 300)
    store.put("refresh", "lives-long", {"x": 2}, 86400)
    clock.advance(3600)
    store.put("code", "another", {"x": 3}, 60)  # any write purges (at most once a minute)
    assert _postgres_keys(postgres_url) == {("refresh", "lives-long"), ("code", "another")}


def test_postgres_a_restart_purges_expired_rows(postgres_url: str, clock: Clock, opened: Open) -> None:
    opened(postgres_url).put("launch", "old", {}, 300)
    clock.advance(600)
    opened(postgres_url)
    assert _postgres_keys(postgres_url) == set()


def test_postgres_keeps_hashes_not_secrets(postgres_url: str, opened: Open) -> None:
    """The store is given keys (the callers hash codes, launch ids, refresh tokens): it keeps them as given."""
    from app.auth.server.store import secret_key

    store = opened(postgres_url)
    store.put("code", secret_key("the-code"), {"grant": "g"}, 60)
    assert _postgres_keys(postgres_url) == {("code", secret_key("the-code"))}
    assert store.take("code", secret_key("the-code")) == {"grant": "g"}


# -- across processes ---------------------------------------------------------------------------------------
RACERS = 2
KEYS = 40


def test_one_time_operations_are_atomic_across_processes(
    kind: str, auth_spec: Callable[[str], str], opened: Open
) -> None:
    """Two processes (two facade instances) on one store, each trying every key at once: each code is
    redeemed by exactly one, each client-assertion jti accepted by exactly one, and the shared sign-in
    counter sees every count once."""
    spec = auth_spec(kind)
    store = opened(spec)
    keys = [f"code-{i}" for i in range(KEYS)]
    for key in keys:
        store.put("code", key, {"grant": key}, 600)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS)
    results: Any = ctx.Queue()
    procs = [ctx.Process(target=race, args=(spec, keys, barrier, results)) for _ in range(RACERS)]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=300) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
    assert [sum(codes[i] for codes, _, _ in outcomes) for i in range(KEYS)] == [1] * KEYS
    assert [sum(jtis[i] for _, jtis, _ in outcomes) for i in range(KEYS)] == [1] * KEYS
    assert sorted(n for _, _, counts in outcomes for n in counts) == list(range(1, RACERS * KEYS + 1))


def test_postgres_store_is_the_one_chosen_by_the_url(postgres_url: str, opened: Open) -> None:
    assert isinstance(opened(postgres_url), PostgresAuthStore)
    assert isinstance(opened(postgres_url.replace("postgresql://", "postgres://", 1)), PostgresAuthStore)
