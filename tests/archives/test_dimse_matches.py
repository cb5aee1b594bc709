"""S1 residual (docs/security.md, S1.8): a DIMSE C-FIND reads at most `federation.max_dimse_matches` matches.

Beyond the cap the adapter sends C-CANCEL to a real dcmqrscp, reads no further match and answers what it
has with an `incomplete` note naming the setting: never an ArchiveError (the circuit does not hear of it),
and the association goes on serving the next C-FIND. Before, a C-FIND was read to its end, however long.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from app.archives import registry
from app.archives.dimse import DimseArchive
from app.core.query import PatientKey, StudyQuery
from app.settings import BASE_URL_ENV, CURSOR_SECRET_ENV, settings_from_document
from tests.infra.dcmqrscp import DcmqrscpServer
from tests.infra.test_infra import Spec, write_instance

pytestmark = pytest.mark.integration

PATIENT = StudyQuery(patient=PatientKey("H12P1", None))


@dataclass(frozen=True)
class Corpus:
    studies: tuple[str, ...]  # three studies of H12P1; the first has three series, the others one each


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Corpus, DcmqrscpServer]]:
    folder = tmp_path_factory.mktemp("dimse-matches")
    studies = tuple(generate_uid() for _ in range(3))
    specs = [Spec(f"s{n}", "H12P1", "", studies[0], generate_uid(), "CT", "20200101", "H12A0", n) for n in (1, 2, 3)]
    specs += [
        Spec(f"t{i}", "H12P1", "", uid, generate_uid(), "MR", f"2021010{i}", f"H12A{i}")
        for i, uid in enumerate(studies[1:], 1)
    ]
    files = [write_instance(folder / f"{spec.name}.dcm", spec) for spec in specs]
    with DcmqrscpServer(aet="CAPPED") as server:
        server.store(sorted(files))
        yield Corpus(studies), server


def archive_of(server: DcmqrscpServer, max_matches: int) -> DimseArchive:
    return DimseArchive("capped", server.host, server.port, server.aet, "FACADE", 5.0, max_matches=max_matches)


def test_study_cfind_over_the_cap_is_cancelled_with_an_incomplete_note(
    corpus_server: tuple[Corpus, DcmqrscpServer],
) -> None:
    _corpus, server = corpus_server
    archive = archive_of(server, 2)
    try:
        found = archive.find_studies(PATIENT)  # not an ArchiveError: the archive answered, the facade stopped
        again = archive.find_studies(PATIENT)  # the archive still answers the next association
    finally:
        archive.close()
    assert len(found.datasets) == 2
    assert found.incomplete is not None and "more than 2 matches" in found.incomplete
    assert "federation.max_dimse_matches" in found.incomplete
    assert len(again.datasets) == 2


def test_the_association_serves_the_next_cfind_after_a_cancel(corpus_server: tuple[Corpus, DcmqrscpServer]) -> None:
    """Series of two studies on one association: the first study's three series are cut at two (C-CANCEL),
    the second study's series still come on the same association."""
    corpus, server = corpus_server
    archive = archive_of(server, 2)
    try:
        found = archive.find_series(PATIENT, corpus.studies[:2])
    finally:
        archive.close()
    by_study = [s["0020000D"]["Value"][0] for s in found.datasets]
    assert by_study.count(corpus.studies[0]) == 2
    assert by_study.count(corpus.studies[1]) == 1
    assert found.incomplete is not None and "federation.max_dimse_matches" in found.incomplete


def test_at_the_cap_is_complete(corpus_server: tuple[Corpus, DcmqrscpServer]) -> None:
    """Control: exactly as many matches as the cap is a complete answer (passes on the old code too)."""
    _corpus, server = corpus_server
    archive = archive_of(server, 3)
    try:
        found = archive.find_studies(PATIENT)
    finally:
        archive.close()
    assert (len(found.datasets), found.incomplete) == (3, None)


def test_registry_gives_the_dimse_adapter_the_cap_of_the_settings(
    config_document: dict[str, Any], corpus_server: tuple[Corpus, DcmqrscpServer], tmp_path: Path
) -> None:
    _corpus, server = corpus_server
    doc = copy.deepcopy(config_document)
    doc["trusts"] = [
        {**t, "archive": {"type": "dimse", "host": server.host, "port": server.port, "called_aet": server.aet}}
        for t in doc["trusts"]
        if t["id"] == "wwl"
    ]
    doc.pop("patient_xref", None)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc["federation"] = {"max_dimse_matches": 1}
    with pytest.MonkeyPatch.context() as env:
        env.delenv(BASE_URL_ENV, raising=False)
        env.delenv(CURSOR_SECRET_ENV, raising=False)
        settings = settings_from_document(doc, tmp_path, "tests/archives/dimse-matches")
    [wwl] = settings.trusts
    archive = registry.build_archive(wwl, 5.0)
    try:
        found = archive.find_studies(PATIENT)
    finally:
        archive.close()
    assert len(found.datasets) == 1 and "federation.max_dimse_matches" in (found.incomplete or "")
