"""Postman without a browser: `python -m app postman-env` writes a local environment with freshly minted demo
tokens, and `newman run` of the whole collection with it passes against a running server, unattended.

A run without tokens, or with the server down, fails with one clear message in the first request and stops
there (the collection's preflight), instead of failing every request after it. The committed environment
holds no token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from tests.infra import free_port

pytestmark = pytest.mark.integration

COLLECTION = ROOT / "postman" / "gm-imaging-facade.postman_collection.json"
COMMITTED = ROOT / "postman" / "demo.postman_environment.json"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
TOKENS = ("access_token", "patient_access_token", "audit_access_token", "system_access_token")
FIX = "python -m app postman-env"


@pytest.fixture(scope="module")
def facade(start_facade: Any) -> Any:
    return start_facade("postman-env")


def newman(environment: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    assert NEWMAN.is_file(), f"{NEWMAN} is missing: run `npm ci` (package.json pins newman)"
    report = out / f"newman-{len(list(out.iterdir()))}.json"
    command = [str(NEWMAN), "run", str(COLLECTION), "-e", str(environment), "--reporters", "cli,json"]
    command += ["--reporter-json-export", str(report), "--color", "off", "--disable-unicode", *extra]
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    return done, json.loads(report.read_text(encoding="utf-8"))


def request_ids(items: list[dict[str, Any]]) -> set[str]:
    return {r for i in items for r in (request_ids(i["item"]) if "item" in i else {i["name"]})}


def failures(report: dict[str, Any]) -> list[str]:
    return [f"{f['source'].get('name', '')}: {f['error']['message']}" for f in report["run"]["failures"]]


def test_committed_environment_holds_no_token():
    values = {v["key"]: v["value"] for v in json.loads(COMMITTED.read_text(encoding="utf-8"))["values"]}
    assert all(not values.get(key) for key in TOKENS), "postman/demo.postman_environment.json must stay token-free"
    ignored = subprocess.run(
        ["git", "check-ignore", "postman/local.postman_environment.json"], cwd=ROOT, capture_output=True, check=False
    )
    assert ignored.returncode == 0, "the minted environment must be git-ignored"


def test_newman_passes_with_the_minted_environment(facade, tmp_path):
    local = tmp_path / "local.postman_environment.json"
    done = subprocess.run(
        [sys.executable, "-m", "app", "postman-env", "--config", str(facade.config_path), "--base", facade.base]
        + ["--out", str(local)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert oct(local.stat().st_mode & 0o777) == "0o600"
    values = {v["key"]: v["value"] for v in json.loads(local.read_text(encoding="utf-8"))["values"]}
    assert all(values[key].count(".") == 2 for key in TOKENS), "four signed JWTs"
    assert values["base_url"] == facade.base and values["auth_base"] == f"{facade.origin}/auth"

    run, report = newman(local, tmp_path)

    stats = report["run"]["stats"]
    assert run.returncode == 0, f"{failures(report)}\n{run.stdout[-5000:]}"
    assert failures(report) == []
    collection = json.loads(COLLECTION.read_text(encoding="utf-8"))
    executed = {e["item"]["name"] for e in report["run"]["executions"]}
    assert executed == request_ids(collection["item"]), "every request of the collection ran"
    assert stats["assertions"]["total"] > 0 and stats["assertions"]["failed"] == 0, stats


def test_a_run_without_tokens_stops_at_once_with_one_message(facade, tmp_path):
    run, report = newman(COMMITTED, tmp_path, "--env-var", f"base_url={facade.base}")
    assert run.returncode != 0
    found = failures(report)
    assert len(found) == 1, found
    assert "no token" in found[0] and FIX in found[0], found
    assert report["run"]["stats"]["requests"]["total"] == 0  # not one request was sent


def test_a_run_with_the_server_down_stops_at_the_first_request(tmp_path):
    down = f"http://127.0.0.1:{free_port()}/fhir"  # nothing listens there
    tokens = [arg for key in TOKENS for arg in ("--env-var", f"{key}=a.b.c")]
    run, report = newman(COMMITTED, tmp_path, "--env-var", f"base_url={down}", *tokens)
    assert run.returncode != 0
    found = failures(report)
    # newman's own line for the refused connection, then the preflight's explanation; nothing after.
    assert any("does not answer" in f and FIX in f for f in found), found
    assert len(found) <= 2, found
    assert len(report["run"]["executions"]) <= 1
