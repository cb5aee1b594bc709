"""S1.8 (docs/security.md) end to end: a DIMSE trust's study C-FIND over `federation.max_dimse_matches` is
cancelled (C-CANCEL, seen in the real dcmqrscp's own log) and the search answers with an `incomplete`
outcome naming the setting, not an archive failure: the trust's circuit stays closed with no failure.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.settings import settings_from_document
from app.web.components import components
from tests.federation.support import issues, issues_naming, match_ids
from tests.infra.dcmqrscp import DcmqrscpServer

try:  # pytest "prepend" import mode puts tests/ on sys.path (tests/conftest.py does the same)
    from fhir_validation import validate_resource
    from smart_tokens import system_token
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]
    from tests.smart_tokens import system_token  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

DIMSE_TRUST = "wwl"  # PatientID = NHS number, issuer NHS


@pytest.fixture(scope="module")
def dcmqrscp(demo_data: Path) -> Iterator[DcmqrscpServer]:
    with DcmqrscpServer(aet="WWLPACS", extra_args=["-v"]) as server:
        server.store(sorted((demo_data / DIMSE_TRUST).rglob("*.dcm")))
        yield server


@pytest.fixture()
def capped_app(
    config_document: dict[str, Any], demo_data: Path, dcmqrscp: DcmqrscpServer, tmp_path: Path
) -> Iterator[Flask]:
    """The demo facade with wwl answering by C-FIND, each C-FIND read for at most two matches."""
    doc = copy.deepcopy(config_document)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(tmp_path / "keys.json")
    doc["auth"]["store"] = f"sqlite:{tmp_path / 'auth.sqlite'}"
    doc["federation"] = {**doc.get("federation", {}), "max_dimse_matches": 2}
    for trust in doc["trusts"]:
        if trust["id"] == DIMSE_TRUST:
            trust["archive"] = {
                "type": "dimse",
                "host": dcmqrscp.host,
                "port": dcmqrscp.port,
                "called_aet": dcmqrscp.aet,
                "timeout_s": 5,
            }
    app = create_app(settings_from_document(doc, demo_data, "tests/federation/dimse-cap"))
    yield app
    components(app).services.close()


def cancels(server: DcmqrscpServer) -> int:
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    return sum("C-CANCEL" in line for line in text.splitlines())


def test_dimse_match_cap_is_an_incomplete_outcome_not_a_failure(
    capped_app: Flask, dcmqrscp: DcmqrscpServer, manifest: dict[str, Any]
) -> None:
    patient = max(manifest["patients"], key=lambda p: sum(s["trusts"] == [DIMSE_TRUST] for s in p["studies"]))
    only_there = {s["study_uid"] for s in patient["studies"] if s["trusts"] == [DIMSE_TRUST]}
    assert len(only_there) >= 3
    before = cancels(dcmqrscp)
    response = capped_app.test_client().get(
        f"/fhir/ImagingStudy?patient={patient['nhs_number']}&_count=200",
        headers={"Authorization": f"Bearer {system_token(capped_app)}"},
    )
    assert response.status_code == 200
    bundle = response.get_json()
    validate_resource(bundle)
    assert len(set(match_ids(bundle)) & only_there) == 2
    wwl = next(t for t in components(capped_app).services.federation.trusts if t.settings.id == DIMSE_TRUST)
    cut = issues_naming(bundle, wwl.settings.name, "incomplete")
    assert any("federation.max_dimse_matches" in i["diagnostics"] for i in cut), issues(bundle)
    assert not any("did not answer" in i["diagnostics"] for i in cut), cut
    assert (wwl.breaker.state, wwl.breaker._failures) == ("closed", 0)
    deadline = time.monotonic() + 2  # the log is written by another process
    while cancels(dcmqrscp) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    # On this small record dcmqrscp has sent every match before the C-CANCEL arrives ("late C-CANCEL-RQ,
    # ignoring"); the adapter reads no match past the cap either way.
    assert cancels(dcmqrscp) > before, "no C-CANCEL reached the archive"
