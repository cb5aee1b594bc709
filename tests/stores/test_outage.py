"""The audit trail's PostgreSQL gone while the facade runs: every audited request answers 503 (an
OperationOutcome, Retry-After), never its data unaudited and never a 500; /readyz says not ready."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from smart_tokens import system_token

from app import create_app
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from tests.infra.postgres import PostgresServer


def test_requests_answer_503_while_the_audit_database_is_gone(
    config_document: dict[str, Any], demo_data: Path, manifest: dict[str, Any], tmp_path: Path
) -> None:
    patient = str(manifest["facts"]["multi_trust_patient"]["nhs_number"])
    with PostgresServer() as server:
        doc = copy.deepcopy(config_document)
        doc["audit"] = {"url": server.url}
        doc["auth"]["signing_keys"] = str(tmp_path / "keys.json")
        doc["auth"]["store"] = f"sqlite:{tmp_path / 'auth-state.sqlite'}"
        with pytest.MonkeyPatch.context() as env:
            env.delenv(BASE_URL_ENV, raising=False)
            env.delenv(CURSOR_SECRET_ENV, raising=False)
            app = create_app(settings_from_document(doc, demo_data, "tests/stores/outage"))
        headers = {"Authorization": f"Bearer {system_token(app)}"}
        client = app.test_client()
        assert client.get(f"/fhir/Patient/{patient}", headers=headers).status_code == 200
        assert client.get("/readyz").status_code == 200
        server.stop()
        for path in (f"/fhir/Patient/{patient}", "/fhir/AuditEvent"):
            response = client.get(path, headers=headers)
            assert response.status_code == 503, (path, response.get_data(as_text=True)[:300])
            body = response.get_json()
            assert body["resourceType"] == "OperationOutcome"
            assert body["issue"][0]["code"] == "transient"
            assert response.headers["Retry-After"]
            assert patient not in response.get_data(as_text=True)
        assert client.get("/readyz").status_code == 503
