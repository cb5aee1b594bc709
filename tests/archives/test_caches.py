"""The TTL caches (cachetools behind a lock): CachedArchive in front of a real DICOMweb adapter, and
the PIXm answer cache of PixmXref, each against a real HTTP service on loopback that counts requests.
Time is a clock the test turns, so expiry is exact and the tests never sleep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from app.archives.cache import CachedArchive
from app.archives.dicomweb.qido import DicomWebArchive
from app.archives.protocol import Capabilities, Found
from app.core import systems
from app.core.query import PatientKey, StudyQuery
from app.core.systems import local_patient_identifier as local_system
from app.federation.xref import PixmXref
from tests.archives.support import DicomWebService, PixService

pytestmark = pytest.mark.integration


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer(found: Found) -> str:
    """Which upstream request produced this answer (the service numbers them)."""
    return str(found.datasets[0]["00100020"]["Value"][0])


def counted(name: str, archive: str) -> float:
    return REGISTRY.get_sample_value(name, {"archive": archive}) or 0.0


def query(patient: str) -> StudyQuery:
    return StudyQuery(patient=PatientKey(patient, "NHS"))


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def adapter(dicomweb_service: DicomWebService, request: pytest.FixtureRequest) -> Iterator[DicomWebArchive]:
    # One archive name per test: the hit and miss counters are per archive and global to the process.
    archive = DicomWebArchive(f"cache-{request.node.name}"[:60], dicomweb_service.url, timeout_s=2)
    yield archive
    archive.close()


def test_complete_answers_are_reused_until_the_ttl_ends(
    adapter: DicomWebArchive, dicomweb_service: DicomWebService, clock: Clock
) -> None:
    cached = CachedArchive(adapter, ttl_s=60, clock=clock)
    assert (
        cached.capabilities == adapter.capabilities == Capabilities(series_by_patient=True, conversations=True)
        and cached.adapter is adapter
    )
    first = cached.find_studies(query("P1"))
    clock.now += 59.9
    again = cached.find_studies(query("P1"))
    assert answer(first) == answer(again) == "answer-1"
    assert len(dicomweb_service.requests) == 1
    assert counted("facade_archive_cache_hits_total", adapter.name) == 1
    assert counted("facade_archive_cache_misses_total", adapter.name) == 1
    clock.now += 0.1  # 60 s after the answer was stored: expired
    assert answer(cached.find_studies(query("P1"))) == "answer-2"
    assert len(dicomweb_service.requests) == 2
    assert counted("facade_archive_cache_misses_total", adapter.name) == 2


def test_partial_answers_are_never_kept(
    adapter: DicomWebArchive, dicomweb_service: DicomWebService, clock: Clock
) -> None:
    dicomweb_service.status = 206
    cached = CachedArchive(adapter, ttl_s=60, clock=clock)
    answers = [cached.find_studies(query("P1")) for _ in range(3)]
    assert all(a.incomplete is not None and "206" in a.incomplete for a in answers)
    assert [answer(a) for a in answers] == ["answer-1", "answer-2", "answer-3"]
    assert counted("facade_archive_cache_hits_total", adapter.name) == 0
    assert counted("facade_archive_cache_misses_total", adapter.name) == 3


def test_the_key_is_the_whole_upstream_query(
    adapter: DicomWebArchive, dicomweb_service: DicomWebService, clock: Clock
) -> None:
    cached = CachedArchive(adapter, ttl_s=60, clock=clock)
    calls: list[Callable[[], Found]] = [
        lambda: cached.find_studies(query("P1")),
        lambda: cached.find_studies(query("P2")),
        lambda: cached.find_studies(StudyQuery(patient=PatientKey("P1"))),  # no issuer: another query
        lambda: cached.find_series(query("P1"), ()),
        lambda: cached.find_series(query("P1"), ("1.2.3",)),
        lambda: cached.find_instances("1.2.3"),
        lambda: cached.find_instances("1.2.3", "1.2.3.4"),
    ]
    first = [answer(call()) for call in calls]
    second = [answer(call()) for call in calls]
    assert len(set(first)) == len(calls)  # every call went upstream once...
    assert second == first  # ...and was then answered from the cache
    assert len(dicomweb_service.requests) == len(calls)


def test_the_cache_is_bounded_least_recently_used_first(
    adapter: DicomWebArchive, dicomweb_service: DicomWebService, clock: Clock
) -> None:
    cached = CachedArchive(adapter, ttl_s=60, max_entries=2, clock=clock)
    p1, p2 = answer(cached.find_studies(query("P1"))), answer(cached.find_studies(query("P2")))
    assert answer(cached.find_studies(query("P1"))) == p1  # P1 now the most recently used
    cached.find_studies(query("P3"))  # a third answer: P2 makes room
    assert answer(cached.find_studies(query("P1"))) == p1
    assert answer(cached.find_studies(query("P2"))) != p2  # fetched again
    assert len(dicomweb_service.requests) == 4


def test_concurrent_searches_share_one_cache(
    adapter: DicomWebArchive, dicomweb_service: DicomWebService, clock: Clock
) -> None:
    cached = CachedArchive(adapter, ttl_s=60, clock=clock)
    patients = [f"P{n}" for n in range(4)]
    for patient in patients:  # warm: one upstream request each
        cached.find_studies(query(patient))
    warm = {patient: answer(cached.find_studies(query(patient))) for patient in patients}
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: (patients[n % 4], answer(cached.find_studies(query(patients[n % 4])))), range(400))
        )
    assert all(warm[patient] == got for patient, got in results)
    assert len(dicomweb_service.requests) == len(patients)
    assert counted("facade_archive_cache_hits_total", adapter.name) == 4 + 400


# -- PIXm -------------------------------------------------------------------------------------
NHS = "9434765919"
ODS = "RMC"


def pixm(service: PixService, clock: Clock, ttl_s: float = 300, max_entries: int = 100) -> PixmXref:
    return PixmXref(service.url, {"bolton": ODS}, {}, lambda: {}, 2.0, ttl_s, max_entries, clock)


def test_pixm_answers_are_reused_until_the_ttl_ends(pix_service: PixService, clock: Clock) -> None:
    pix_service.targets = [(local_system(ODS), "L1")]
    xref = pixm(pix_service, clock)
    assert xref.local_keys(NHS, "bolton") == (PatientKey("L1"),)
    clock.now += 299
    pix_service.targets = [(local_system(ODS), "L2")]  # the index changed: the cached answer still holds
    assert xref.local_keys(NHS, "bolton") == (PatientKey("L1"),)
    assert pix_service.requests == [f"{systems.NHS_NUMBER}|{NHS}"]
    clock.now += 1
    assert xref.local_keys(NHS, "bolton") == (PatientKey("L2"),)
    assert len(pix_service.requests) == 2


def test_pixm_not_known_is_kept_a_failure_is_not(pix_service: PixService, clock: Clock) -> None:
    xref = pixm(pix_service, clock)
    pix_service.status = 404
    assert xref.local_keys(NHS, "bolton") == ()
    assert xref.local_keys(NHS, "bolton") == ()
    assert len(pix_service.requests) == 1  # "not known" is an answer
    pix_service.status = 500
    assert xref.nhs_number_for("bolton", "L1") is None
    assert xref.nhs_number_for("bolton", "L1") is None
    assert len(pix_service.requests) == 3  # a failing service is asked again


def test_pixm_cache_is_bounded(pix_service: PixService, clock: Clock) -> None:
    pix_service.targets = [(systems.NHS_NUMBER, NHS)]
    xref = pixm(pix_service, clock, max_entries=2)
    for local in ("L1", "L2", "L3", "L1"):
        assert xref.nhs_number_for("bolton", local) == NHS
    assert len(pix_service.requests) == 4  # L1 was let go to make room for L3


def test_pixm_ttl_zero_keeps_nothing(pix_service: PixService, clock: Clock) -> None:
    pix_service.targets = [(systems.NHS_NUMBER, NHS)]
    xref = pixm(pix_service, clock, ttl_s=0)
    assert [xref.nhs_number_for("bolton", "L1") for _ in range(3)] == [NHS] * 3
    assert len(pix_service.requests) == 3
