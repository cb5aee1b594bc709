"""Fixtures of the store tests: a Redis for the session, stores of each kind, and a movable clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.auth.server.store import AuthStore, open_store
from tests.infra.redis_server import RedisServer

AUTH_KINDS = ("sqlite", "redis", "postgres")


class Clock:
    """`time.time` frozen when installed and moved only by `advance` (the stores' expiry clock)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        start = time.time()
        monkeypatch.setattr(time, "time", lambda: start + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def auth_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """kind -> the `auth.store` of a new, empty store of that kind (a fresh SQLite file, a flushed Redis
    database, a new PostgreSQL database)."""

    def spec(kind: str) -> str:
        if kind == "sqlite":
            return f"sqlite:{tmp_path / 'auth-state.sqlite'}"
        if kind == "redis":
            import redis

            url = str(request.getfixturevalue("redis_url"))
            redis.Redis.from_url(url).flushdb()
            return url
        return str(request.getfixturevalue("postgres_url"))

    return spec


@pytest.fixture
def opened() -> Iterator[Callable[[str], Any]]:
    """Opens stores (auth state) and closes those that can be closed at the end of the test."""
    stores: list[Any] = []

    def open_(spec: str) -> AuthStore:
        store = open_store(spec)
        stores.append(store)
        return store

    yield open_
    for store in stores:
        close = getattr(store, "close", None)
        if close is not None:
            close()
