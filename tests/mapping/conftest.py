"""Fixtures for the mapping-core tests: the real tables from mappings/ and a real trust."""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` run from outside the repository root
    sys.path.insert(0, str(REPO_ROOT))

from app.mapping.context import TrustMapping  # noqa: E402
from app.mapping.engine import StudyMapper  # noqa: E402
from app.mapping_tables import load_mapper  # noqa: E402

LONDON = ZoneInfo("Europe/London")


@pytest.fixture(scope="session")
def mapper() -> StudyMapper:
    return load_mapper()


@pytest.fixture(scope="session")
def trust() -> TrustMapping:
    return TrustMapping(
        id="mft",
        ods_code="R0A",
        name="Manchester University NHS Foundation Trust",
        accession_system="https://fhir.mft.nhs.uk/Id/accession-number",
        zone=LONDON,
        endpoint_id="R0A-wado-rs",
    )
