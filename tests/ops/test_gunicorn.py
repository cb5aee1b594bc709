"""`python -m app serve --workers 2` for real: metrics add up across gunicorn's workers, the log is
JSON lines without patient data, and the multiprocess folder is set up per start and removed after.
"""

from __future__ import annotations

import copy
import json
import os
import re
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

from app import create_app
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from app.web.components import components
from tests.infra import free_port
from tests.ops.support import NHS, bearer, sample, scrape

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180
MAX_REQUESTS = 300


@pytest.fixture
def server(ops_document: dict[str, Any], demo_data: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The facade under gunicorn with two workers; its base URL is the configured one (tokens match)."""
    port = free_port()
    doc = copy.deepcopy(ops_document)
    doc["base_url"] = f"http://127.0.0.1:{port}/fhir"
    config = tmp_path / "facade.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACADE_", "PROMETHEUS_"))}
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--workers",
                "2",
                "--threads",
                "4",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(BASE_URL_ENV, raising=False)
        patch.delenv(CURSOR_SECRET_ENV, raising=False)
        minting = create_app(settings_from_document(copy.deepcopy(doc), demo_data))  # same keys file: same tokens
    found = {"process": process, "base": f"http://127.0.0.1:{port}", "log": log_path, "auth": bearer(minting)}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(_ready_workers(log_path)) < 2:  # both workers have built their app
            assert process.poll() is None, f"server exited:\n{log_path.read_text(errors='replace')[-4000:]}"
            assert time.monotonic() < deadline, f"workers not ready:\n{log_path.read_text(errors='replace')[-4000:]}"
            time.sleep(0.3)
        yield found
    finally:
        components(minting).services.close()
        components(minting).audit.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _lines(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text(errors="replace").splitlines() if line.strip()]


def _ready_workers(log_path: Path) -> set[int]:
    text = log_path.read_text(errors="replace")
    return {int(m.group(1)) for m in re.finditer(r'"message":"facade ready[^\n]*"pid":(\d+)', text)}


def _multiprocess_dirs(log_path: Path) -> set[str]:
    """The folder each worker said it writes its metrics to."""
    return {
        m.group(1)
        for m in re.finditer(
            r'"message":"facade ready[^"]*metrics multiprocess in ([^ ,"]+)', log_path.read_text(errors="replace")
        )
    }


def test_serve_two_workers_metrics_add_up(server):
    base, log = server["base"], server["log"]
    workers = _ready_workers(log)
    folders = _multiprocess_dirs(log)
    assert len(workers) == 2 and len(folders) == 1  # both workers write to one folder that serve created for this start
    folder = Path(folders.pop())
    assert folder.is_dir() and folder.name.startswith("facade-metrics-")

    sent = 0
    served_by: set[int] = set()
    while served_by != workers and sent < MAX_REQUESTS:  # fresh connections until both workers answered
        for _ in range(10):
            assert requests.get(f"{base}/healthz", headers={"Connection": "close"}, timeout=30).status_code == 200
            sent += 1
        served_by = {line["pid"] for line in _lines(log) if line.get("route") == "/healthz"}
    assert served_by == workers, f"one worker answered all {sent} requests"

    for _ in range(3):  # whichever worker answers the scrape reports both workers' requests
        samples = scrape(requests.get(f"{base}/metrics", timeout=30).text)
        assert sample(samples, "facade_http_requests_total", method="GET", route="/healthz", status="200") == sent
        assert sample(samples, "facade_http_request_duration_seconds_count", method="GET", route="/healthz") == sent
        assert sample(samples, "facade_archive_circuit_state", archive="bolton") == 0
    assert {p.name for p in folder.glob("counter_*.db")} == {f"counter_{pid}.db" for pid in workers}

    server["process"].send_signal(signal.SIGTERM)
    server["process"].wait(timeout=60)
    assert not folder.exists()  # removed when serve stops


def test_serve_logs_json_lines_without_patient_data(server, bolton_patient):
    base, log = server["base"], server["log"]
    nhs = bolton_patient["nhs_number"]
    response = requests.get(
        f"{base}/fhir/ImagingStudy",
        timeout=60,
        params={"patient.identifier": f"{NHS}|{nhs}", "_include": "ImagingStudy:patient"},
        headers={**server["auth"], "X-Request-ID": "gunicorn-search-1"},
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "gunicorn-search-1"
    assert nhs in response.text
    read = requests.get(f"{base}/fhir/Patient/{nhs}", timeout=60, headers=server["auth"])
    assert read.status_code == 200
    deadline = time.monotonic() + 30
    while not any(line.get("request_id") == read.headers["X-Request-ID"] for line in _lines(log)):
        assert time.monotonic() < deadline, "the access line never reached the log"
        time.sleep(0.2)
    lines = _lines(log)  # every line is one JSON object: json.loads fails on anything else
    assert {line["logger"] for line in lines} >= {"gunicorn.error", "app", "app.access"}
    search = [line for line in lines if line.get("request_id") == "gunicorn-search-1"]
    assert [(s["method"], s["route"], s["status"]) for s in search] == [("GET", "/fhir/ImagingStudy", 200)]
    text = log.read_text(errors="replace")
    assert nhs not in text
    assert bolton_patient["name"].split("^")[0].casefold() not in text.casefold()
    assert "GET /fhir/ImagingStudy?" not in text  # no access line with a query string (gunicorn's is off)
