"""The facade's services as the views see them: searches, reads, includes, the trust directory.

One place turns settings into adapters (build_facade); the views never touch an archive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from app.archives import budget
from app.archives.dicomweb.wado import ImageSource, RetrievalError
from app.archives.protocol import ArchiveError
from app.core.dicom_json import UID_PATTERN
from app.core.errors import Conflict, FhirError, InvalidRequest, NotFound, TooCostly
from app.core.mapping.engine import StudyMapper
from app.core.mapping.patient import NHS_NUMBER_SYSTEM, nhs_number_of, patient_resource
from app.core.query import StudyQuery
from app.core.scopes import Decision
from app.core.search import params as p
from app.federation.circuit import CircuitOpen
from app.federation.search import FederatedResult, Federation
from app.federation.xref import PatientXref, local_system
from app.settings import Settings


class ScopeRefused(FhirError):
    """The token's scopes forbid this search (403, insufficient_scope); raised before any archive is asked."""

    status_code = 403
    issue_code = "forbidden"

    def __init__(self, realm: str, reason: str) -> None:
        super().__init__(
            reason,
            headers={
                "WWW-Authenticate": f'Bearer realm="{realm}", error="insufficient_scope", error_description="{reason}"'
            },
        )


@dataclass
class Facade:
    settings: Settings
    federation: Federation
    mapper: StudyMapper
    endpoints: list[dict[str, Any]]
    organizations: list[dict[str, Any]]
    image_sources: dict[str, ImageSource] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def parse_study_search(self, pairs: list[tuple[str, str]]) -> p.ParsedQuery:
        return p.parse_study_search(
            pairs,
            self.zone,
            frozenset(self.mapper.terminology.modalities),
            self.settings.default_count,
            self.settings.max_count,
        )

    def narrow(self, search: p.StudySearch, decision: Decision) -> p.StudySearch:
        """Apply the token's patient compartment and v2 scope filters to a search (before any I/O).

        Without a patient parameter the search is narrowed to the context patient; naming another
        patient is refused (403, as SMART Imaging Access says); filters are ANDed in.
        """
        patient = decision.compartment_patient
        if patient is not None:
            if search.nhs_numbers is None:
                search.nhs_numbers = frozenset({patient})
            elif search.nhs_numbers - {patient}:
                raise ScopeRefused(
                    self.settings.base_url, "the search names a patient outside the token's patient context"
                )
        if len(decision.filters) > 1:
            raise ScopeRefused(
                self.settings.base_url, "several filtered scopes for one type cannot be combined; ask for one"
            )
        if decision.filters:
            extra = self.parse_study_search(list(decision.filters[0])).search
            for name in ("modalities", "statuses", "body_sites", "dicom_classes"):
                if getattr(extra, name):
                    setattr(search, name, getattr(extra, name))
            if extra.endpoint_ids is not None:
                search.endpoint_ids = (
                    extra.endpoint_ids if search.endpoint_ids is None else search.endpoint_ids & extra.endpoint_ids
                )
        return search

    def search_studies(self, search: p.StudySearch, decision: Decision) -> FederatedResult:
        search = self.narrow(search, decision)
        bounded = (
            search.nhs_numbers is not None
            or search.study_uids is not None
            or search.accessions
            or search.series_uids
            or search.instance_uids
        )
        if not bounded:
            raise TooCostly(
                "an ImagingStudy search must name a patient (patient, subject, patient.identifier), "
                "a study (_id, identifier), a series or an instance: a search of whole archives "
                "is not offered"
            )
        result = self.federation.search(search)
        if decision.compartment_patient is not None:  # defence in depth: never another patient's study
            own = f"Patient/{decision.compartment_patient}"
            result.studies = [s for s in result.studies if s["subject"].get("reference") == own]
        return result

    @staticmethod
    def subjects(studies: list[dict[str, Any]]) -> list[str]:
        """NHS numbers of the patients these studies belong to (for the audit)."""
        return [
            s["subject"]["reference"].split("/", 1)[1]
            for s in studies
            if s["subject"].get("reference", "").startswith("Patient/")
        ]

    def read_study(self, study_id: str, decision: Decision) -> dict[str, Any]:
        if len(study_id) > 64 or not UID_PATTERN.match(study_id):
            raise NotFound(f"ImagingStudy/{study_id} does not exist: the id of an ImagingStudy is its StudyInstanceUID")
        try:
            search = self.narrow(p.StudySearch(study_uids=frozenset({study_id})), decision)
        except ScopeRefused:
            raise NotFound(f"ImagingStudy/{study_id} is not known") from None
        result = self.federation.search(search, with_instances=True)
        if decision.compartment_patient is not None:
            own = f"Patient/{decision.compartment_patient}"
            result.studies = [s for s in result.studies if s["subject"].get("reference") == own]
        if study_id in result.conflicts:
            raise Conflict(
                f"ImagingStudy/{study_id} is held by several archives under different patients; "
                "it is withheld until the archives agree"
            )
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
        return self.federation.patients(numbers)

    def includes(
        self, result: FederatedResult, wanted: tuple[str, ...], page: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The resources `_include` asks for, referenced by the studies of this page only."""
        out: list[dict[str, Any]] = []
        if "ImagingStudy:endpoint" in wanted:
            refs = {r["reference"] for s in page for r in s.get("endpoint", ())}
            refs |= {r["reference"] for s in page for series in s.get("series", ()) for r in series.get("endpoint", ())}
            out += [e for e in self.endpoints if f"Endpoint/{e['id']}" in refs]
        if {"ImagingStudy:patient", "ImagingStudy:subject"} & set(wanted):
            numbers = sorted(
                {
                    s["subject"]["reference"].split("/")[1]
                    for s in page
                    if s["subject"].get("reference", "").startswith("Patient/")
                }
            )
            out += [
                patient_resource(n, [s for _, s in result.patient_records[n]])
                for n in numbers
                if result.patient_records.get(n)
            ]
        return out

    def pix(self, system: str, value: str, target_systems: set[str]) -> dict[str, Any]:
        """IHE PIXm $ihe-pix over the CSV cross-reference: every identifier of the same patient."""
        xref = self.federation.xref
        if not isinstance(xref, PatientXref):
            raise NotFound("this facade reads its cross-reference from another PIXm service")
        trusts = {local_system(t.ods_code): t.id for t in self.settings.trusts}
        known = {NHS_NUMBER_SYSTEM, *trusts}
        if system not in known:
            raise InvalidRequest(f"sourceIdentifier Assigning Authority {system!r} not found", "sourceIdentifier")
        if target_systems - known:
            raise ScopeRefused(self.settings.base_url, "targetSystem not found")  # PIXm: 403
        if system == NHS_NUMBER_SYSTEM:
            nhs: str | None = value if xref.forward and any(k[0] == value for k in xref.forward) else None
        else:
            nhs = next(
                (
                    n
                    for (trust, local, _issuer), n in xref.reverse.items()
                    if trust == trusts[system] and local == value
                ),
                None,
            )
        if nhs is None:
            raise NotFound(f"no patient with identifier {system}|{value} in the cross-reference")
        identifiers = [(NHS_NUMBER_SYSTEM, nhs)]
        for trust in self.settings.trusts:
            identifiers += [(local_system(trust.ods_code), key.patient_id) for key in xref.local_keys(nhs, trust.id)]
        wanted = [
            (s, v) for s, v in identifiers if (s, v) != (system, value) and (not target_systems or s in target_systems)
        ]
        parameters = [{"name": "targetIdentifier", "valueIdentifier": {"system": s, "value": v}} for s, v in wanted]
        parameters.append({"name": "targetId", "valueReference": {"reference": f"Patient/{nhs}"}})
        return {"resourceType": "Parameters", "parameter": parameters}

    def study_owners(self, trust_id: str, study_uid: str, cache: Any) -> tuple[str | None, ...]:
        """The NHS numbers the trust's archive files this study under (None: identity unresolved).

        Empty when the archive does not hold the study. Asked of the archive itself (its breaker
        respected), so the gateway's compartment check never trusts the caller's word.
        """
        key = (trust_id, study_uid)
        cached = cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        trust = next(t for t in self.federation.trusts if t.settings.id == trust_id)
        try:
            trust.breaker.before_call()
        except CircuitOpen:
            raise RetrievalError(trust_id, 503, "the archive is not answering (circuit open)", 30.0) from None
        try:
            with budget.until(time.monotonic() + trust.timeout_s):
                found = trust.archive.find_studies(StudyQuery(study_uids=(study_uid,)))
        except ArchiveError as exc:
            trust.breaker.failure()
            raise RetrievalError(trust_id, 502, exc.reason) from None
        trust.breaker.success()
        rule = trust.settings.nhs_number
        owners = tuple(
            nhs_number_of(d, rule.match, rule.issuer, trust_id, self.federation.xref.reverse) for d in found.datasets
        )
        cache.put(key, owners)
        return owners

    def directory_read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        resources = self.endpoints if resource_type == "Endpoint" else self.organizations
        found = next((r for r in resources if r["id"] == resource_id), None)
        if found is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        return found
