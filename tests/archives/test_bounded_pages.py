"""S1, bounded upstream cost at the archives (docs/security.md): the DICOMweb adapter pages a query at
most `federation.max_pages` times, given it by the registry from the settings, and every archive type
the schema admits has its own cap on the queries of one search (`federation.max_queries_per_archive`).

The DICOMweb service of tests/archives/support.py answers one dataset to every request: with a page
size of 1 every page is full, so the answer never ends and only the page cap stops the paging.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.archives import registry
from app.archives.dicomweb.qido import DicomWebArchive
from app.core.query import PatientKey, StudyQuery
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, ArchiveLimits, Settings, settings_from_document
from tests.archives.support import DicomWebService

pytestmark = pytest.mark.integration

SCHEMA = Path(__file__).resolve().parents[2] / "app" / "settings" / "schema.json"
QUERY = StudyQuery(patient=PatientKey("9434765919", "NHS"))


def settings_of(
    config_document: dict[str, Any], tmp_path: Path, archives: dict[str, dict[str, Any]], **sections: Any
) -> Settings:
    """The demo configuration cut to the trusts named in `archives`, with those archives and sections."""
    doc = copy.deepcopy(config_document)
    doc["trusts"] = [{**t, "archive": archives[t["id"]]} for t in doc["trusts"] if t["id"] in archives]
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc.update(sections)
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        return settings_from_document(doc, tmp_path, "tests/archives/bounded-pages")


def test_dicomweb_page_cap_cuts_an_endless_answer_with_an_incomplete_note(dicomweb_service: DicomWebService) -> None:
    archive = DicomWebArchive("paged", dicomweb_service.url, timeout_s=2, page_size=1, max_pages=3)
    try:
        found = archive.find_studies(QUERY)  # not an ArchiveError: the archive answered, the facade stopped
    finally:
        archive.close()
    offsets = [target.split("offset=")[1] for target, _auth in dicomweb_service.requests]
    assert offsets == ["0", "1", "2"]
    assert len(found.datasets) == 3
    assert found.incomplete == "more than 3 results (3 pages, federation.max_pages); the rest were not fetched"


@pytest.mark.parametrize(("federation", "pages"), [({}, 20), ({"max_pages": 4}, 4)], ids=["default", "configured"])
def test_registry_gives_the_dicomweb_adapter_the_page_cap_of_the_settings(
    config_document: dict[str, Any],
    dicomweb_service: DicomWebService,
    tmp_path: Path,
    federation: dict[str, Any],
    pages: int,
) -> None:
    archives = {"mft": {"type": "dicomweb", "url": dicomweb_service.url, "page_size": 1}}
    settings = settings_of(config_document, tmp_path, archives, federation=federation)
    [mft] = settings.trusts
    assert mft.limits.max_pages == pages
    archive = registry.build_archive(mft, 2.0)
    try:
        found = archive.find_studies(QUERY)
    finally:
        archive.close()
    assert len(dicomweb_service.requests) == pages
    assert found.incomplete is not None and f"({pages} pages, federation.max_pages)" in found.incomplete


def test_every_archive_type_has_its_own_cap_on_the_queries_of_a_search(
    config_document: dict[str, Any], tmp_path: Path
) -> None:
    """A new archive type cannot be added without its cap: the schema's types and the caps' keys agree,
    and each trust's limits take the cap of its archive's type (default 4; here one type set to 7)."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    types = schema["$defs"]["archive"]["properties"]["type"]["enum"]
    caps = schema["properties"]["federation"]["properties"]["max_queries_per_archive"]["properties"]
    assert sorted(caps) == sorted(types) == sorted(registry.ARCHIVE_TYPES)
    assert {t: caps[t]["default"] for t in types} == {"dicomweb": 4, "dimse": 4, "folder": 4}

    (tmp_path / "bolton").mkdir()
    archives: dict[str, dict[str, Any]] = {
        "bolton": {"type": "folder", "path": str(tmp_path / "bolton")},
        "mft": {"type": "dicomweb", "url": "http://127.0.0.1:9/dicom-web"},
        "wwl": {"type": "dimse", "host": "127.0.0.1", "port": 104, "called_aet": "LEGACY"},
    }
    settings = settings_of(
        config_document,
        tmp_path,
        archives,
        federation={"max_queries_per_archive": {"dimse": 7}},
        search={"max_values_per_parameter": 12},
    )
    limits = {t.id: t.limits for t in settings.trusts}
    assert limits == {
        "bolton": ArchiveLimits(
            max_values_per_parameter=12,
            max_queries=4,
            max_study_reads=50,
            max_pages=20,
            max_instance_reads=20,
            max_dimse_matches=10_000,
        ),
        "mft": ArchiveLimits(
            max_values_per_parameter=12,
            max_queries=4,
            max_study_reads=50,
            max_pages=20,
            max_instance_reads=20,
            max_dimse_matches=10_000,
        ),
        "wwl": ArchiveLimits(
            max_values_per_parameter=12,
            max_queries=7,
            max_study_reads=50,
            max_pages=20,
            max_instance_reads=20,
            max_dimse_matches=10_000,
        ),
    }
