"""The stores' configuration keys: `audit.path` (SQLite) or `audit.url` (PostgreSQL), exactly one;
`auth.store` accepts postgresql:// URLs. A wrong scheme stops start-up with the key named, and a URL's
password is never repeated in the message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.settings import ConfigError, EmbeddedAuthSettings, settings_from_document

URL = "postgresql://facade@db.example:5432/facade"


def _settings(config_document: dict[str, Any], demo_data: Path, **changes: Any) -> Any:
    doc = copy.deepcopy(config_document)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            doc[section][name] = value
        else:
            doc[section] = value
    return settings_from_document(doc, demo_data)


def _problems(config_document: dict[str, Any], demo_data: Path, **changes: Any) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        _settings(config_document, demo_data, **changes)
    return raised.value.problems


def test_audit_path_is_an_sqlite_store(config_document: dict[str, Any], demo_data: Path, tmp_path: Path) -> None:
    settings = _settings(config_document, demo_data, audit={"path": str(tmp_path / "a.sqlite")})
    assert settings.audit_store == f"sqlite:{tmp_path / 'a.sqlite'}"


def test_audit_path_is_relative_to_the_configuration(config_document: dict[str, Any], demo_data: Path) -> None:
    settings = _settings(config_document, demo_data, audit={"path": "state/audit.sqlite"})
    assert settings.audit_store == f"sqlite:{(demo_data / 'state' / 'audit.sqlite').resolve()}"


@pytest.mark.parametrize("url", [URL, "postgres://facade@db.example/facade", "postgresql://facade:pw@db/facade"])
def test_postgres_urls_are_accepted(config_document: dict[str, Any], demo_data: Path, url: str) -> None:
    settings = _settings(config_document, demo_data, audit={"url": url}, auth__store=url)
    assert settings.audit_store == url
    assert isinstance(settings.auth, EmbeddedAuthSettings) and settings.auth.store == url


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"audit": {}}, "audit: give either path (an SQLite file, the embedded default) or url"),
        ({"audit": {"path": "a.sqlite", "url": URL}}, "audit: give either path"),
        ({"audit": {"url": "mysql://facade@db/facade"}}, "audit.url: 'mysql://facade@db/facade' does not match"),
        ({"audit": {"url": "sqlite:audit.sqlite"}}, "audit.url: 'sqlite:audit.sqlite' does not match"),
        ({"auth__store": "mysql://facade@db/facade"}, "auth.store: 'mysql://facade@db/facade' does not match"),
        ({"audit": {"dsn": URL}}, "audit: unknown key 'dsn'"),
    ],
)
def test_wrong_store_settings_stop_start_up_naming_the_key(
    config_document: dict[str, Any], demo_data: Path, changes: dict[str, Any], expected: str
) -> None:
    problems = _problems(config_document, demo_data, **changes)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_refused_url_does_not_repeat_its_password(config_document: dict[str, Any], demo_data: Path) -> None:
    problems = _problems(config_document, demo_data, audit={"url": "postgresq://facade:s3cret-pw@db/facade"})
    assert any(p.startswith("audit.url: 'postgresq://facade:***@db/facade' does not match") for p in problems)
    assert not [p for p in problems if "s3cret-pw" in p]
