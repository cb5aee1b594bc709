"""The production servers: `python -m app serve` and `gunicorn wsgi:app`, started for real.

Each test starts the server as a subprocess on a free loopback port, waits for /fhir/metadata,
searches a patient over HTTP, follows the paging links, and stops it. Both must be gunicorn,
never Flask's development server.
"""

from __future__ import annotations

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
from smart_tokens import system_token

from tests.infra import free_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
START_TIMEOUT_S = 120
NHS = "https://fhir.nhs.uk/Id/nhs-number"

pytestmark = pytest.mark.integration


@pytest.fixture
def config_file(tmp_path: Path, config_document: dict[str, Any]) -> Path:
    path = tmp_path / "facade.yaml"
    path.write_text(yaml.safe_dump(config_document), encoding="utf-8")
    return path


def _server_env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACADE_")}
    env["FACADE_BASE_URL"] = f"http://127.0.0.1:{port}/fhir"
    env.update(extra)
    return env


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """Start a command in its own process group; stop it (and only it) at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], port: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
        log = (tmp_path / f"server-{port}.log").open("wb")
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}/fhir"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, f"server exited with {process.returncode}:\n{_log(tmp_path, port)}"
            try:
                if requests.get(f"{base}/metadata", timeout=5).status_code == 200:
                    return process, base
            except (requests.ConnectionError, requests.Timeout):  # not listening, or workers still loading
                pass
            time.sleep(0.5)
        pytest.fail(f"server not ready within {START_TIMEOUT_S} s:\n{_log(tmp_path, port)}")

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _log(tmp_path: Path, port: int) -> str:
    return (tmp_path / f"server-{port}.log").read_text(errors="replace")[-4000:]


def backend_token(base: str) -> dict[str, str]:
    """A real SMART Backend Services token from the running server, through `python -m app token`."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "token",
            "--base",
            base,
            "--client",
            "portal",
            "--key",
            str(ROOT / "config" / "demo-keys" / "portal.private.jwk.json"),
            "--scope",
            "system/ImagingStudy.rs",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {"Authorization": f"Bearer {done.stdout.strip()}"}


def _check_patient_search(base: str, manifest: dict[str, Any]) -> requests.Response:
    """A patient search over HTTP, paged two at a time: every page answers, the union is complete."""
    nhs = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    expected = sorted(s["study_uid"] for p in manifest["patients"] if p["nhs_number"] == nhs for s in p["studies"])
    headers = backend_token(base)
    response = requests.get(
        f"{base}/ImagingStudy",
        params={"patient.identifier": f"{NHS}|{nhs}", "_count": "2"},
        timeout=30,
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    found: list[str] = []
    bundle = response.json()
    while True:
        assert bundle["total"] == len(expected)
        found += [e["resource"]["id"] for e in bundle.get("entry", ()) if e["search"]["mode"] == "match"]
        assert all(
            e["fullUrl"].startswith(f"{base}/") for e in bundle.get("entry", ()) if e["search"]["mode"] != "outcome"
        )
        next_url = next((x["url"] for x in bundle["link"] if x["relation"] == "next"), None)
        if next_url is None:
            break
        assert next_url.startswith(f"{base}/ImagingStudy?")
        page = requests.get(next_url, timeout=30, headers=headers)
        assert page.status_code == 200, page.text
        bundle = page.json()
    assert sorted(found) == expected
    return response


def _assert_gunicorn(response: requests.Response, process: subprocess.Popen[bytes]) -> None:
    server = response.headers.get("Server", "")
    assert server.lower().startswith("gunicorn"), f"Server header {server!r}"
    assert "werkzeug" not in server.lower()
    assert process.poll() is None, "the server stopped while being used"


def test_serve_cli_runs_gunicorn(start_server, config_file, manifest):
    port = free_port()
    process, base = start_server(
        [sys.executable, "-m", "app", "serve", "--config", str(config_file), "--port", str(port)],
        port,
        _server_env(port),
    )
    response = _check_patient_search(base, manifest)
    _assert_gunicorn(response, process)


def test_serve_wsgi_under_gunicorn(start_server, config_file, manifest):
    port = free_port()
    process, base = start_server(
        [str(GUNICORN), "--bind", f"127.0.0.1:{port}", "wsgi:app"],
        port,
        _server_env(port, FACADE_CONFIG=str(config_file)),
    )
    response = _check_patient_search(base, manifest)
    _assert_gunicorn(response, process)
    assert "gunicorn" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")


def test_wsgi_processes_share_paging_cursors_without_configured_secret(
    tmp_path, config_document, manifest, monkeypatch
):
    # The Dockerfile runs `gunicorn --workers 2 wsgi:app`, and config/demo.yaml sets no cursor_secret:
    # each worker process builds its own app from FACADE_CONFIG, and a `next` link one of them signed
    # may be followed on the other. Two apps built the way wsgi.py builds them stand for the two workers.
    from app import create_app

    doc = {k: v for k, v in config_document.items() if k not in ("cursor_secret", "patient_xref")}
    doc["trusts"] = [t for t in config_document["trusts"] if t["id"] == "bolton"]
    path = tmp_path / "one-trust.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    monkeypatch.delenv("FACADE_CURSOR_SECRET", raising=False)
    monkeypatch.delenv("FACADE_BASE_URL", raising=False)
    monkeypatch.setenv("FACADE_CONFIG", str(path))
    app_a, app_b = create_app(), create_app()
    worker_a, worker_b = app_a.test_client(), app_b.test_client()
    auth = {"Authorization": f"Bearer {system_token(app_a)}"}  # both workers share the signing keys file
    nhs = max(manifest["patients"], key=lambda p: sum("bolton" in s["trusts"] for s in p["studies"]))["nhs_number"]
    first = worker_a.get(f"/fhir/ImagingStudy?patient={nhs}&_count=1", headers=auth).get_json()
    next_url = next(x["url"] for x in first["link"] if x["relation"] == "next")
    path_and_query = next_url.split("://", 1)[1].split("/", 1)[1]
    assert worker_a.get(f"/{path_and_query}", headers=auth).status_code == 200
    followed = worker_b.get(f"/{path_and_query}", headers=auth)
    assert followed.status_code == 200, followed.get_json()


def test_two_serve_instances_share_the_configured_cursor_secret(start_server, tmp_path, config_document, manifest):
    """A `cursor_secret` in the file is the key of every instance: `serve` never replaces it with a random
    one of its own (it did, in every mode, so a `next` link from one instance was refused by another)."""
    doc = {**config_document, "cursor_secret": "a-configured-cursor-key-0123456789"}
    path = tmp_path / "with-secret.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    bases = []
    for port in (free_port(), free_port()):
        command = [sys.executable, "-m", "app", "serve", "--config", str(path), "--port", str(port)]
        bases.append(start_server(command, port, _server_env(port))[1])
    nhs = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    first = requests.get(
        f"{bases[0]}/ImagingStudy", params={"patient": nhs, "_count": "1"}, headers=backend_token(bases[0]), timeout=30
    )
    assert first.status_code == 200, first.text
    next_url = next(x["url"] for x in first.json()["link"] if x["relation"] == "next")
    followed = requests.get(
        f"{bases[1]}/ImagingStudy?{next_url.split('?', 1)[1]}", headers=backend_token(bases[1]), timeout=30
    )
    assert followed.status_code == 200, followed.text
