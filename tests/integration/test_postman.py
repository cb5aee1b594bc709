"""The Postman collection (postman/), run by newman against the facade served for real by gunicorn.

The facade starts on a free loopback port over the demo dataset with its embedded SMART server. Tokens are got
the ways docs/integrating.md tells a person to: SMART Backend Services through `python -m app token` for the
portal (`access_token`, `audit_access_token`), and the collection's own OAuth 2.0 settings (authorization code +
PKCE, public client `postman`) followed through the sign-in, patient picker and consent pages as Postman's window
would (`patient_access_token`, and, in the second run, `access_token` as the Postman app gets it). newman runs
every folder except those whose description says `ci: skip` (none today); every
request of those folders must run and every assertion pass.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from oauth_browser import authorization_code_token, postman_oauth2

from app.auth.server.keys import SigningKeys
from tests.infra import free_port

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "postman" / "gm-imaging-facade.postman_collection.json"
ENVIRONMENT = ROOT / "postman" / "demo.postman_environment.json"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
GUNICORN = Path(sys.executable).with_name("gunicorn")
PORTAL_KEY = ROOT / "config" / "demo-keys" / "portal.private.jwk.json"
PORTAL_SCOPE = (
    "system/ImagingStudy.rs system/Patient.rs system/Endpoint.rs system/Organization.rs "
    "system/DocumentReference.rs system/DiagnosticReport.rs"
)
AUDIT_SCOPE = "system/AuditEvent.rs"
USER, PASSWORD = "dr.khan", "imaging-demo"
SKIP_MARKER = "ci: skip"
START_TIMEOUT_S = 120
NEWMAN_TIMEOUT_S = 600

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def collection() -> dict[str, Any]:
    return dict(json.loads(COLLECTION.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    values = json.loads(ENVIRONMENT.read_text(encoding="utf-8"))["values"]
    return {v["key"]: v["value"] for v in values if v.get("enabled", True)}


@pytest.fixture(scope="module")
def facade(config_document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """gunicorn serving wsgi:app as the Dockerfile does; the URLs the environment needs to point at it."""
    folder = tmp_path_factory.mktemp("postman-facade")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    doc = copy.deepcopy(config_document)
    doc["base_url"] = f"{origin}/fhir"
    doc["audit"] = {"path": str(folder / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(folder / "signing-keys.json")
    doc["auth"]["store"] = f"sqlite:{folder / 'auth-state.sqlite'}"
    config = folder / "facade.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    # The keys file exists before the two workers start, so that they cannot each create one (the login
    # session's secret is derived from it).
    SigningKeys(Path(doc["auth"]["signing_keys"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACADE_")}
    env["FACADE_CONFIG"] = str(config)
    log_path = folder / "gunicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(GUNICORN),
                "--bind",
                f"127.0.0.1:{port}",
                "--worker-class",
                "gthread",
                "--workers",
                "2",
                "--threads",
                "8",
                "--timeout",
                "120",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_serving(process, f"{origin}/fhir/metadata", log_path)
        yield {"base_url": f"{origin}/fhir", "auth_base": f"{origin}/auth", "dicomweb_base": f"{origin}/dicomweb"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"gunicorn exited:\n{log_path.read_text(errors='replace')[-4000:]}"
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or workers still loading
            pass
        time.sleep(0.5)
    pytest.fail(f"gunicorn not serving within {START_TIMEOUT_S} s:\n{log_path.read_text(errors='replace')[-4000:]}")


def backend_token(base_url: str, scope: str) -> str:
    """SMART Backend Services for the portal client, as CI does it: `python -m app token`."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "token",
            "--base",
            base_url,
            "--client",
            "portal",
            "--key",
            str(PORTAL_KEY),
            "--scope",
            scope,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ci_folders(collection: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Top-level folders newman runs, and those marked `ci: skip` in their description."""
    run: list[str] = []
    skipped: list[str] = []
    for item in collection["item"]:
        (skipped if SKIP_MARKER in item.get("description", "") else run).append(item["name"])
    return run, skipped


def request_names(items: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for item in items:
        names |= request_names(item["item"]) if "item" in item else {item["name"]}
    return names


def folder_auth(collection: dict[str, Any], name: str) -> dict[str, Any]:
    return next(item["auth"] for item in collection["item"] if item["name"] == name)


def run_newman(
    variables: dict[str, str], folders: list[str], out: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    assert NEWMAN.is_file(), f"{NEWMAN} is missing: run `npm ci` (package.json pins newman)"
    report = out / "newman-report.json"
    command = [
        str(NEWMAN),
        "run",
        str(COLLECTION),
        "--environment",
        str(ENVIRONMENT),
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
        "--timeout-request",
        "60000",
        "--color",
        "off",
        "--disable-unicode",
    ]
    for key, value in variables.items():
        command += ["--env-var", f"{key}={value}"]
    for folder in folders:
        command += ["--folder", folder]
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}  # a log without terminal escapes
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=NEWMAN_TIMEOUT_S, check=False
    )
    (out / "newman.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert report.is_file(), f"newman wrote no report (exit {done.returncode}):\n{done.stdout[-4000:]}{done.stderr}"
    return done, json.loads(report.read_text(encoding="utf-8"))


def test_ci_skips_only_the_image_gateway(collection):
    run, skipped = ci_folders(collection)
    assert skipped == []  # every folder runs in CI, the image gateway included
    assert {
        "Discovery",
        "Token",
        "ImagingStudy search",
        "Paging",
        "Reads and other resources",
        "Errors",
        "Patient compartment",
        "AuditEvent",
    } <= set(run)


@pytest.mark.parametrize("access", ["backend services token", "token as the Postman app gets it"])
def test_postman_collection_passes_under_newman(access, facade, collection, environment, tmp_path):
    variables = {**environment, **facade}
    if access == "backend services token":
        variables["access_token"] = backend_token(facade["base_url"], PORTAL_SCOPE)
    else:  # the collection's own OAuth 2.0 settings: user scopes, no patient picked
        answer = authorization_code_token(postman_oauth2(collection["auth"]), variables, USER, PASSWORD)
        assert answer["token_type"] == "Bearer" and "user/*.rs" in answer["scope"].split()
        assert "patient" not in answer
        variables["access_token"] = answer["access_token"]
    patient = authorization_code_token(
        postman_oauth2(folder_auth(collection, "Patient compartment")),
        variables,
        USER,
        PASSWORD,
        patient=environment["nhs_number"],
    )
    assert patient["patient"] == environment["nhs_number"] and "patient/*.rs" in patient["scope"].split()
    variables["patient_access_token"] = patient["access_token"]
    variables["audit_access_token"] = backend_token(facade["base_url"], AUDIT_SCOPE)
    folders, skipped = ci_folders(collection)

    done, report = run_newman(
        {k: variables[k] for k in (*facade, "access_token", "patient_access_token", "audit_access_token")},
        folders,
        tmp_path,
    )

    stats = report["run"]["stats"]
    failures = [(f["source"]["name"], f["error"]["message"]) for f in report["run"]["failures"]]
    assert done.returncode == 0, f"newman exited {done.returncode}: {failures}\n{done.stdout[-6000:]}"
    assert failures == []
    assert stats["assertions"]["total"] > 0 and stats["assertions"]["failed"] == 0, stats["assertions"]
    assert stats["requests"]["failed"] == 0 and stats["testScripts"]["failed"] == 0, stats
    executed = {e["item"]["name"] for e in report["run"]["executions"]}
    wanted = request_names([i for i in collection["item"] if i["name"] in folders])
    assert executed == wanted, f"not run: {sorted(wanted - executed)}; run but skipped: {sorted(executed - wanted)}"
    assert not executed & request_names([i for i in collection["item"] if i["name"] in skipped])
    assert all(e["assertions"] for e in report["run"]["executions"]), "a request without a single assertion"
