"""The facade's services as the views see them: searches, reads, includes, the trust directory.

One place turns settings into adapters (build_facade); the views never touch an archive.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .archives import build_archive
from .archives.cache import CachedArchive
from .circuit import CircuitBreaker
from .config import Settings
from .errors import Conflict, NotFound, TooCostly
from .fanout import TrustArchive
from .federation import FederatedResult, Federation
from .fhir import params as p
from .mapping.context import TrustMapping
from .mapping.dicom_json import UID_PATTERN
from .mapping.directory import endpoint_resource, organization_resource
from .mapping.engine import StudyMapper
from .mapping.patient import patient_resource
from .mapping_tables import load_mapper
from .xref import load_xref


@dataclass
class Facade:
    settings: Settings
    federation: Federation
    mapper: StudyMapper
    endpoints: list[dict[str, Any]]
    organizations: list[dict[str, Any]]

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def parse_study_search(self, pairs: list[tuple[str, str]]) -> p.ParsedQuery:
        return p.parse_study_search(pairs, self.zone, frozenset(self.mapper.terminology.modalities),
                                    self.settings.default_count, self.settings.max_count)

    def search_studies(self, search: p.StudySearch) -> FederatedResult:
        bounded = (search.nhs_numbers is not None or search.study_uids is not None or search.accessions
                   or search.series_uids or search.instance_uids)
        if not bounded:
            raise TooCostly("an ImagingStudy search must name a patient (patient, subject, patient.identifier), "
                            "a study (_id, identifier), a series or an instance: a search of whole archives "
                            "is not offered")
        return self.federation.search(search)

    def read_study(self, study_id: str) -> dict[str, Any]:
        if len(study_id) > 64 or not UID_PATTERN.match(study_id):
            raise NotFound(f"ImagingStudy/{study_id} does not exist: the id of an ImagingStudy is its StudyInstanceUID")
        result = self.federation.search(p.StudySearch(study_uids=frozenset({study_id})), with_instances=True)
        if study_id in result.conflicts:
            raise Conflict(f"ImagingStudy/{study_id} is held by several archives under different patients; "
                           "it is withheld until the archives agree")
        if not result.studies:
            unavailable = [i for i in result.issues if i["code"] == "incomplete"]
            detail = f" ({len(unavailable)} archive(s) did not answer)" if unavailable else ""
            raise NotFound(f"ImagingStudy/{study_id} was not found in any trust archive{detail}")
        return result.studies[0]

    def read_patient(self, nhs_number: str) -> dict[str, Any]:
        patient, _issues = self.federation.patient(nhs_number)
        if patient is None:
            raise NotFound(f"Patient/{nhs_number} has no imaging records in any trust archive")
        return patient

    def patients(self, numbers: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        found, issues = [], []
        for number in numbers:
            patient, more = self.federation.patient(number)
            issues.extend(more)
            if patient:
                found.append(patient)
        return found, issues

    def includes(self, result: FederatedResult, wanted: tuple[str, ...],
                 page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The resources `_include` asks for, referenced by the studies of this page only."""
        out: list[dict[str, Any]] = []
        if "ImagingStudy:endpoint" in wanted:
            refs = {r["reference"] for s in page for r in s.get("endpoint", ())}
            refs |= {r["reference"] for s in page for series in s.get("series", ()) for r in series.get("endpoint", ())}
            out += [e for e in self.endpoints if f"Endpoint/{e['id']}" in refs]
        if {"ImagingStudy:patient", "ImagingStudy:subject"} & set(wanted):
            numbers = sorted({s["subject"]["reference"].split("/")[1] for s in page
                              if s["subject"].get("reference", "").startswith("Patient/")})
            out += [patient_resource(n, [s for _, s in result.patient_records[n]]) for n in numbers
                    if result.patient_records.get(n)]
        return out

    def directory_read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        resources = self.endpoints if resource_type == "Endpoint" else self.organizations
        found = next((r for r in resources if r["id"] == resource_id), None)
        if found is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        return found


def build_facade(settings: Settings) -> Facade:
    """Settings -> archive adapters, mapper, federation and directory: the one place this happens."""
    mapper = load_mapper()
    zone = ZoneInfo(settings.timezone)
    xref = load_xref(settings.patient_xref, {t.id for t in settings.trusts})
    trusts = []
    issuers: dict[str, tuple[str, dict[str, Any]]] = {}
    for trust in settings.trusts:
        mapping = TrustMapping(trust.id, trust.ods_code, trust.name, trust.accession_system, zone,
                               f"{trust.id}-wado-rs", issuers)
        issuers[trust.ods_code] = (trust.accession_system, mapping.organization_reference)
        timeout = float(trust.archive.get("timeout_s", settings.archive_timeout_s))
        breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        archive = build_archive(trust, timeout)
        if settings.cache_ttl_s > 0:
            archive = CachedArchive(archive, settings.cache_ttl_s)
        pool = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=f"archive-{trust.id}")
        trusts.append(TrustArchive(trust, archive, mapping, timeout, breaker, pool))
    federation = Federation(trusts, mapper, xref, zone, settings.deadline_s)
    endpoints = [endpoint_resource(t.mapping, t.settings.wado_url or t.settings.archive.get("wado_url")
                                   or f"{settings.public_root}/dicomweb/{t.settings.id}") for t in trusts]
    organizations = [organization_resource(t.mapping) for t in trusts]
    return Facade(settings, federation, mapper, endpoints, organizations)
