"""ImagingStudy searches and reads over the federation, under the request's patient compartment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from app.core import dicom_json as dj
from app.core.compartment import Compartment, Filters, narrow_studies
from app.core.errors import Conflict, Forbidden, NotFound, TooCostly
from app.core.mapping.patient import patient_resource, subject_number
from app.core.search.study import ParsedQuery, StudySearch, parse_study_search
from app.federation.search import FederatedResult

if TYPE_CHECKING:
    from app.services.build import Parts

Resource = dict[str, Any]
NOT_HELD = "the ImagingStudy was not found in any trust archive"


class ImagingService:
    """ImagingStudy search, read and `_include`, answered live by every trust archive."""

    def __init__(self, parts: Parts) -> None:
        self.settings = parts.settings
        self.federation = parts.federation
        self.endpoints = parts.endpoints
        self.modalities = frozenset(parts.mapper.terminology.modalities)
        self.zone = ZoneInfo(parts.settings.timezone)

    def parse(self, pairs: list[tuple[str, str]]) -> ParsedQuery:
        """A search's parameters, validated before any I/O (400 naming the parameter at fault)."""
        return parse_study_search(
            pairs, self.zone, self.modalities, self.settings.default_count, self.settings.max_count
        )

    def _scope_filter(self, pairs: Filters) -> StudySearch:
        return self.parse(list(pairs)).search

    def search(self, search: StudySearch, compartment: Compartment) -> FederatedResult:
        search = narrow_studies(search, compartment, self._scope_filter)
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
        result.studies = compartment.keep(result.studies, subject_number)
        return result

    def read(self, study_id: str, compartment: Compartment) -> Resource:
        # No message names the id asked for: another patient's study reads byte for byte like a missing one.
        if not dj.is_uid(study_id):
            raise NotFound("no such ImagingStudy: the id of an ImagingStudy is its StudyInstanceUID")
        try:
            search = narrow_studies(StudySearch(study_uids=frozenset({study_id})), compartment, self._scope_filter)
        except Forbidden:  # scopes that cannot be combined: a read reads like a study nobody holds
            raise NotFound(NOT_HELD) from None
        result = self.federation.search(search, with_instances=True)
        result.studies = compartment.keep(result.studies, subject_number)
        if study_id in result.conflicts:
            raise Conflict(
                "the ImagingStudy is held by several archives under different patients; "
                "it is withheld until the archives agree"
            )
        if not result.studies:
            unavailable = [i for i in result.issues if i["code"] == "incomplete"]
            detail = f" ({len(unavailable)} archive(s) did not answer)" if unavailable else ""
            raise NotFound(f"{NOT_HELD}{detail}", patients=self._targeted(study_id, compartment))
        return result.studies[0]

    def _targeted(self, study_id: str, compartment: Compartment) -> tuple[str, ...]:
        """For the audit only (S16): whose study a compartment's read was refused, when its identity resolves.

        A read under a patient compartment asks the archives for the study of that patient alone, so
        another patient's study is not found at all; the archives are then asked for the study by its
        UID alone (one query each, no instances), and the patients it is held under go to the request's
        AuditEvent, never to the client: the answer is the same 404 whatever this finds."""
        if compartment.patient is None:
            return ()
        found = self.federation.search(StudySearch(study_uids=frozenset({study_id})))
        return tuple(sorted(n for n in found.patient_records if n != compartment.patient))

    def includes(
        self, result: FederatedResult, wanted: tuple[str, ...], page: list[Resource], readable: dict[str, Compartment]
    ) -> list[Resource]:
        """The resources `_include` asks for, referenced by this page's studies, each type under its own
        compartment (`readable`: the types the token may read); another patient's Patient is never included."""
        out: list[Resource] = []
        if "ImagingStudy:endpoint" in wanted and "Endpoint" in readable:
            refs = {r["reference"] for s in page for r in s.get("endpoint", ())}
            refs |= {r["reference"] for s in page for series in s.get("series", ()) for r in series.get("endpoint", ())}
            out += [e for e in self.endpoints if f"Endpoint/{e['id']}" in refs]
        patients = readable.get("Patient")
        if {"ImagingStudy:patient", "ImagingStudy:subject"} & set(wanted) and patients is not None:
            numbers = sorted({n for n in map(subject_number, page) if n and patients.admits(n)})
            out += [
                patient_resource(n, [s for _, s in result.patient_records[n]])
                for n in numbers
                if result.patient_records.get(n)
            ]
        return out
