"""Fixtures for the mapping-core tests: the real tables from mappings/ and a real trust."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from app.core.mapping.context import TrustMapping
from app.core.mapping.engine import StudyMapper
from app.core.mapping.tables import load_mapper


@pytest.fixture(scope="session")
def mapper() -> StudyMapper:
    return load_mapper()


@pytest.fixture(scope="session")
def trust() -> TrustMapping:
    return TrustMapping(
        id="mft",
        ods_code="R0A",
        name="Manchester University NHS Foundation Trust",
        accession_system="https://fhir.nhs.uk/R0A/Id/accession-number",
        zone=ZoneInfo("Europe/London"),
        endpoint_id="R0A-wado-rs",
    )
