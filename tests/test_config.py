"""Configuration validation (app.settings) and `python -m app check-config`.

Each case starts from the demo configuration pointed at the generated data (valid), breaks one
thing, and checks that the problem is reported with the key that holds it.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import (
    CURSOR_SECRET_ENV,
    ConfigError,
    FolderArchiveSettings,
    check_document,
    load_settings,
    settings_from_document,
)

ROOT = Path(__file__).resolve().parent.parent

Doc = dict[str, Any]


def _rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    """A mutation that sets a dotted/indexed key, e.g. ``trusts[2].ods_code``."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def apply(doc: Doc) -> None:
        target: Any = doc
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value

    return apply


def _delete(path: str) -> Callable[[Doc], None]:
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]

    def apply(doc: Doc) -> None:
        target: Any = doc
        for part in parts[:-1]:
            target = target[part]
        del target[parts[-1]]

    return apply


def names_key(problems: list[str], path: str, key: str | None = None) -> bool:
    """True when one problem names `path` (or the unknown `key` inside `path`) as its subject."""
    for problem in problems:
        if key is None and re.match(rf"{re.escape(path)}\b(?![.\[])", problem):
            return True
        if key is not None and (
            re.match(rf"{re.escape(path)}\.{re.escape(key)}\b(?![.\[])", problem)
            or (problem.startswith(path) and repr(key) in problem)
        ):
            return True
    return False


@pytest.fixture
def doc(config_document: Doc) -> Doc:
    return copy.deepcopy(config_document)


def problems_of(doc: Doc, base_dir: Path) -> list[str]:
    return check_document(doc, base_dir)


def test_config_demo_document_is_valid(doc, demo_data):
    assert problems_of(doc, demo_data) == []
    settings = settings_from_document(doc, demo_data)
    assert [t.id for t in settings.trusts] == [t["id"] for t in doc["trusts"]]
    bolton, christie, mft = settings.trust("bolton"), settings.trust("christie"), settings.trust("mft")
    assert bolton is not None and christie is not None and mft is not None
    assert bolton.accession_system == "https://fhir.nhs.uk/RMC/Id/accession-number"
    assert christie.nhs_number.match == "xref"
    assert mft.nhs_number.issuer == "NHS"


@pytest.mark.parametrize(
    ("path", "key", "mutate"),
    [
        ("trusts[0]", "archiv", lambda d: _rename(d["trusts"][0], "archive", "archiv")),
        ("trusts[3]", "wado_uri", _set("trusts[3].wado_uri", "http://pacs.example/wado")),
        ("(top level)", "timezon", lambda d: _rename(d, "timezone", "timezon")),
        ("search", "max_cnt", _set("search.max_cnt", 10)),
        ("federation", "deadline", _set("federation.deadline", 3)),
        ("trusts[1].nhs_number", "system", _set("trusts[1].nhs_number.system", "RBV")),
        ("trusts[2].archive", "url", _set("trusts[2].archive.url", "http://pacs.example")),
    ],
)
def test_config_unknown_key_is_named(doc, demo_data, path, key, mutate):
    mutate(doc)
    problems = problems_of(doc, demo_data)
    assert names_key(problems, path, key), problems


@pytest.mark.parametrize(
    "path",
    [
        "base_url",
        "trusts",
        "trusts[1].ods_code",
        "trusts[0].name",
        "trusts[4].archive",
        "trusts[5].nhs_number",
        "trusts[2].nhs_number.match",
        "trusts[6].archive.path",
    ],
)
def test_config_missing_required_key_is_named(doc, demo_data, path):
    _delete(path)(doc)
    problems = problems_of(doc, demo_data)
    assert names_key(problems, path), problems
    assert any("required" in p or "missing" in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("trusts[2].ods_code", "rmc"),
        ("trusts[2].ods_code", "R0A-1"),
        ("trusts[2].ods_code", "AB"),
        ("trusts[2].id", "Bolton Trust"),
        ("trusts[0].nhs_number.match", "fuzzy"),
        ("trusts[0].archive.type", "ftp"),
        ("trusts[0].wado_url", "ftp://pacs"),
        ("trusts[0].accession_system", "accession numbers"),
        ("base_url", "127.0.0.1:8080/fhir"),
        ("cursor_secret", "short"),
        ("search.max_count", 0),
        ("federation.deadline_s", 0),
        ("trusts", []),
    ],
)
def test_config_bad_value_is_named(doc, demo_data, path, value):
    _set(path, value)(doc)
    problems = problems_of(doc, demo_data)
    assert names_key(problems, path), problems


def test_config_duplicate_trust_ids(doc, demo_data):
    doc["trusts"][4]["id"] = doc["trusts"][1]["id"]
    problems = problems_of(doc, demo_data)
    assert any(p.startswith("trusts[4].id") and "trusts[1]" in p for p in problems), problems


def test_config_duplicate_ods_codes(doc, demo_data):
    doc["trusts"][6]["ods_code"] = doc["trusts"][7]["ods_code"]
    problems = problems_of(doc, demo_data)
    assert any(p.startswith("trusts[7].ods_code") and "trusts[6]" in p for p in problems), problems


def test_config_missing_folder(doc, demo_data, tmp_path):
    doc["trusts"][3]["archive"]["path"] = str(tmp_path / "no-such-archive")
    problems = problems_of(doc, demo_data)
    assert any(p.startswith("trusts[3].archive.path") and "no-such-archive" in p for p in problems), problems


def test_config_relative_folder_resolved_against_config_dir(doc, demo_data):
    for trust in doc["trusts"]:
        trust["archive"]["path"] = trust["id"]
    doc["patient_xref"] = "xref.csv"
    assert problems_of(doc, demo_data) == []
    assert problems_of(doc, demo_data / "bolton") != []
    settings = settings_from_document(doc, demo_data)
    archive = settings.trusts[0].archive
    assert isinstance(archive, FolderArchiveSettings), archive
    assert archive.path == (demo_data / "bolton").resolve()
    assert settings.patient_xref == (demo_data / "xref.csv").resolve()


def test_config_xref_required_when_a_trust_uses_it(doc, demo_data):
    del doc["patient_xref"]
    problems = problems_of(doc, demo_data)
    assert any(p.startswith("patient_xref") and "xref" in p for p in problems), problems


def test_config_xref_not_required_without_xref_trusts(doc, demo_data):
    del doc["patient_xref"]
    doc["trusts"] = [t for t in doc["trusts"] if t["nhs_number"]["match"] != "xref"]
    assert problems_of(doc, demo_data) == []


def test_config_xref_file_must_exist(doc, demo_data, tmp_path):
    doc["patient_xref"] = str(tmp_path / "missing.csv")
    problems = problems_of(doc, demo_data)
    assert any(p.startswith("patient_xref") and "missing.csv" in p for p in problems), problems


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "GMT+25", "../etc/passwd"])
def test_config_unknown_timezone(doc, demo_data, zone):
    doc["timezone"] = zone
    problems = problems_of(doc, demo_data)
    assert names_key(problems, "timezone"), problems


def test_config_default_count_above_max(doc, demo_data):
    doc["search"] = {"default_count": 300, "max_count": 100}
    assert names_key(problems_of(doc, demo_data), "search.default_count")


def test_config_reports_every_schema_problem(doc, demo_data):
    doc["trusts"][0]["ods_code"] = "bad"
    _rename(doc["trusts"][1], "archive", "archiv")
    del doc["trusts"][2]["name"]
    problems = problems_of(doc, demo_data)
    assert names_key(problems, "trusts[0].ods_code"), problems
    assert names_key(problems, "trusts[1]", "archiv"), problems
    assert names_key(problems, "trusts[2].name"), problems


def test_config_reports_every_problem_at_once(doc, demo_data, tmp_path):
    # The module promises all problems in one pass: a schema problem must not hide the others.
    doc["trusts"][0]["ods_code"] = "bad"
    doc["trusts"][3]["archive"]["path"] = str(tmp_path / "no-such-archive")
    doc["timezone"] = "Mars/Olympus_Mons"
    problems = problems_of(doc, demo_data)
    assert names_key(problems, "trusts[0].ods_code"), problems
    assert names_key(problems, "trusts[3].archive.path"), problems
    assert names_key(problems, "timezone"), problems


def test_config_settings_from_document_raises_with_every_problem(doc, demo_data):
    doc["trusts"][0]["ods_code"] = "bad"
    del doc["base_url"]
    with pytest.raises(ConfigError) as raised:
        settings_from_document(doc, demo_data, "broken.yaml")
    assert len(raised.value.problems) >= 2
    assert "broken.yaml" in str(raised.value)
    assert "trusts[0].ods_code" in str(raised.value) and "base_url" in str(raised.value)


@pytest.mark.parametrize("document", [None, [], "text", 3])
def test_config_document_must_be_a_mapping(demo_data, document):
    assert check_document(document, demo_data)


# ----------------------------------------------------------------------------- files and CLI


def write_config(folder: Path, doc: Any, suffix: str = ".yaml") -> Path:
    path = folder / f"facade{suffix}"
    path.write_text(json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc), encoding="utf-8")
    return path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "check-config", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_load_settings_accepts_yaml_and_json(doc, tmp_path, suffix):
    settings = load_settings(write_config(tmp_path, doc, suffix))
    assert [t.ods_code for t in settings.trusts] == [t["ods_code"] for t in doc["trusts"]]
    assert settings.cursor_secret == doc["cursor_secret"].encode()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_check_config_cli_ok(doc, tmp_path, suffix):
    result = check_config(write_config(tmp_path, doc, suffix))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_cli_demo_yaml_ok_for_generated_data(demo_data, tmp_path):
    # config/demo.yaml as shipped, its relative paths pointing at the generated data.
    text = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8").replace("../demo-data/", f"{demo_data}/")
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_cli_prints_every_problem(doc, tmp_path):
    doc["trusts"][0]["ods_code"] = "bad"
    _rename(doc["trusts"][1], "archive", "archiv")
    doc["trusts"][2]["nhs_number"]["match"] = "fuzzy"
    result = check_config(write_config(tmp_path, doc))
    assert result.returncode == 1
    problems = [line.strip().removeprefix("- ") for line in result.stderr.splitlines() if line.strip().startswith("- ")]
    assert names_key(problems, "trusts[0].ods_code"), result.stderr
    assert names_key(problems, "trusts[1]", "archiv"), result.stderr
    assert names_key(problems, "trusts[2].nhs_number.match"), result.stderr
    assert "OK" not in result.stdout


def test_check_config_cli_prints_semantic_problems(doc, tmp_path):
    doc["trusts"][5]["id"] = doc["trusts"][0]["id"]
    doc["timezone"] = "Mars/Olympus_Mons"
    result = check_config(write_config(tmp_path, doc))
    assert result.returncode == 1
    assert "trusts[5].id" in result.stderr and "timezone" in result.stderr


@pytest.mark.parametrize(("content", "text"), [(None, "cannot read"), ("trusts: [unclosed", "not valid YAML")])
def test_check_config_cli_unreadable_file(tmp_path, content, text):
    path = tmp_path / "facade.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 1
    assert text in result.stderr


# ----------------------------------------------------------------------------- S22: demo credentials

DEMO_PROBLEMS = ("cursor_secret", "auth.clients[0].jwks", "auth.users[0].password_hash", "auth.users[1].password_hash")


@pytest.fixture
def production(doc: Doc, monkeypatch: pytest.MonkeyPatch) -> Doc:
    """The demo document with `demo` false and no cursor secret in it or in the environment."""
    monkeypatch.delenv(CURSOR_SECRET_ENV, raising=False)
    doc["demo"] = False
    del doc["cursor_secret"]
    return doc


def own_credentials(doc: Doc) -> Doc:
    """The document with a cursor secret and credentials of its own instead of the demo's."""
    from app.auth.server.clients import hash_secret

    doc["cursor_secret"] = "a-secret-of-this-deployment-only"
    portal = doc["auth"]["clients"][0]
    portal["jwks"] = {"keys": [{"kty": "EC", "crv": "P-384", "kid": "own", "x": "A" * 64, "y": "B" * 64}]}
    for user in doc["auth"]["users"]:
        user["password_hash"] = hash_secret(f"{user['username']}-own-password")
    return doc


def test_config_demo_document_says_demo(doc, demo_data):
    assert yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))["demo"] is True
    assert settings_from_document(doc, demo_data).demo is True


def test_config_demo_credentials_are_refused_unless_demo(production, demo_data):
    """S22: without `demo: true`, a missing cursor secret and the published demo key and passwords are refused."""
    problems = problems_of(production, demo_data)
    for key in DEMO_PROBLEMS:
        assert names_key(problems, key), (key, problems)
    assert any("portal-demo-2026" in p for p in problems)
    with pytest.raises(ConfigError) as raised:
        settings_from_document(production, demo_data, "production.yaml")
    assert all(key in str(raised.value) for key in DEMO_PROBLEMS)


def test_config_demo_default_is_false(production, demo_data):
    del production["demo"]
    assert names_key(problems_of(production, demo_data), "cursor_secret")


def test_config_own_credentials_pass_without_demo(production, demo_data):
    doc = own_credentials(production)
    assert problems_of(doc, demo_data) == []
    assert settings_from_document(doc, demo_data).demo is False


def test_config_cursor_secret_from_the_environment(production, demo_data, monkeypatch):
    doc = own_credentials(production)
    del doc["cursor_secret"]
    assert names_key(problems_of(doc, demo_data), "cursor_secret")
    monkeypatch.setenv(CURSOR_SECRET_ENV, "from-the-environment-0123456789")
    assert problems_of(doc, demo_data) == []
    assert settings_from_document(doc, demo_data).cursor_secret == b"from-the-environment-0123456789"


def test_config_demo_users_recognised_by_hash_not_name(production, demo_data):
    """A deployment may keep the user name dr.khan; it may not keep the published password."""
    doc = own_credentials(production)
    assert doc["auth"]["users"][0]["username"] == "dr.khan"
    assert problems_of(doc, demo_data) == []
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    doc["auth"]["users"][1]["password_hash"] = demo["auth"]["users"][0]["password_hash"]
    problems = problems_of(doc, demo_data)
    assert len(problems) == 1 and names_key(problems, "auth.users[1].password_hash"), problems


def test_config_demo_credentials_constants_match_the_committed_files():
    """The fingerprints app.settings recognises are those of config/demo-keys/* and config/demo.yaml's users."""
    from app.settings import DEMO_KEY_THUMBPRINTS, DEMO_PASSWORD_HASHES, jwk_thumbprint

    keys = sorted((ROOT / "config" / "demo-keys").glob("*.json"))
    assert keys
    assert {jwk_thumbprint(json.loads(k.read_text())) for k in keys} == set(DEMO_KEY_THUMBPRINTS)
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    assert {u["password_hash"] for u in demo["auth"]["users"]} == set(DEMO_PASSWORD_HASHES)
    # RFC 7638 section 3.1's example key and thumbprint.
    example = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCi"
        "FV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zg"
        "dAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
        "kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_start_up_refuses_demo_credentials_unless_demo(production, tmp_path):
    """`python -m app serve` and create_app() stop before serving anything; check-config says the same."""
    from app import create_app

    path = write_config(tmp_path, production)
    env = {k: v for k, v in os.environ.items() if k != CURSOR_SECRET_ENV}
    for command in (["serve", "--config", str(path), "--port", "9"], ["check-config", str(path)]):
        result = subprocess.run(
            [sys.executable, "-m", "app", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, result
        assert all(key in result.stderr for key in DEMO_PROBLEMS), result.stderr
    with pytest.raises(ConfigError):
        create_app(path)


def test_config_gateway_relay_defaults_to_python(doc, demo_data):
    from app.settings import settings_from_document

    assert settings_from_document(doc, demo_data).gateway_relay == "python"
    doc["gateway"] = {"relay": "nginx"}
    assert settings_from_document(doc, demo_data).gateway_relay == "nginx"


def test_config_wrong_gateway_relay_is_named(doc, demo_data):
    doc["gateway"] = {"relay": "apache"}
    problems = problems_of(doc, demo_data)
    assert names_key(problems, "gateway.relay") and any("apache" in p for p in problems), problems


def test_start_up_stops_on_a_wrong_gateway_relay(doc, demo_data, tmp_path):
    """A relay that is not python or nginx: `serve` stops before serving, naming the setting."""
    doc["gateway"] = {"relay": "haproxy"}
    path = write_config(tmp_path, doc)
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--config", str(path), "--port", "9"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "gateway.relay" in result.stderr and "haproxy" in result.stderr, result
