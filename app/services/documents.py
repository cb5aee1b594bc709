"""DocumentReference (IHE MHD DocumentEntry) searches and reads: one entry per study and holding trust, built
from the same federated study answers as ImagingStudy (no request of its own), under the request's compartment."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from app.core import systems
from app.core.compartment import Compartment, narrow_studies
from app.core.errors import Forbidden, NotFound, TooCostly
from app.core.mapping.document_reference import (
    accession_identifiers,
    document_id,
    fill_viewer,
    parse_document_id,
    report_document,
    study_document,
)
from app.core.mapping.patient import subject_number
from app.core.search.document_reference import DocumentSearch, ParsedDocumentQuery, parse_document_search
from app.core.search.study import StudySearch
from app.core.search.values import Token
from app.federation.search import FederatedResult, Holding

if TYPE_CHECKING:
    from app.services.imaging import ImagingService
    from app.services.reports import Located, ReportService

Resource = dict[str, Any]
NOT_HELD = "the DocumentReference was not found in any trust archive"


@dataclass(frozen=True)
class TrustLinks:
    """Where one trust's studies are opened: its WADO-RS base (the gateway, or its own) and its viewer."""

    wado_base: str
    viewer_template: str | None


@dataclass
class DocumentResult:
    documents: list[Resource] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)
    studies: FederatedResult | None = None


class DocumentService:
    """DocumentReference search and read, answered by the federated study search."""

    def __init__(self, imaging: ImagingService, endpoints: list[Resource], reports: ReportService) -> None:
        self.imaging = imaging
        self.reports = reports
        settings = imaging.settings
        addresses = {e["id"]: e["address"] for e in endpoints}
        self.links = {
            t.ods_code: TrustLinks(addresses[f"{t.id}-wado-rs"], t.viewer["url_template"] if t.viewer else None)
            for t in settings.trusts
        }
        self.trust_ids = {t.ods_code: t.id for t in settings.trusts}

    def parse(self, pairs: list[tuple[str, str]]) -> ParsedDocumentQuery:
        """A search's parameters, validated before any I/O (400 naming the parameter at fault)."""
        s = self.imaging.settings
        return parse_document_search(pairs, self.imaging.zone, self.imaging.modalities, s.default_count, s.max_count)

    def _study_search(self, search: DocumentSearch) -> StudySearch:
        study = search.study
        if search.custodians is not None:  # only the named trusts are asked (an unknown ODS code: nobody)
            endpoints = frozenset(f"{self.trust_ids[c]}-wado-rs" for c in search.custodians if c in self.trust_ids)
            current = study.endpoint_ids
            study = replace(study, endpoint_ids=endpoints if current is None else current & endpoints)
        return study

    def search(self, search: DocumentSearch, compartment: Compartment) -> DocumentResult:
        study = narrow_studies(self._study_search(search), compartment, self.imaging._scope_filter)
        if study.nhs_numbers is None and study.study_uids is None and not study.accessions:
            raise TooCostly(
                "a DocumentReference search must name a patient (patient, subject, patient.identifier), "
                "a study (_id, identifier) or an accession (related, identifier): a search of whole archives "
                "is not offered"
            )
        result = self.imaging.federation.search(study)
        result.studies = compartment.keep(result.studies, subject_number)
        issues = list(result.issues)
        found: list[Resource] = []
        budget = self.reports.budget()  # one cap on report reads for the whole search
        for s in result.studies:
            holdings = result.holdings.get(s["id"], ())
            found += self._documents(holdings)
            # the study's report objects: their metadata read as a DiagnosticReport search reads it (capped, cached)
            found += [self._report_document(x, holdings) for x in self.reports.located(holdings, issues, budget)]
        if search.uid_identifiers and search.ids is None:  # identifier UIDs naming no study: report objects
            missing = search.uid_identifiers - {s["id"] for s in result.studies}
            if missing:
                found += self._by_report_uid(search, missing, compartment, issues, budget)
        if search.ids is not None:  # an _id naming a report object: read where it is
            for ods, uid in sorted(search.ids):
                wanted = document_id(ods, uid)
                if not any(d["id"] == wanted for d in found):
                    found += self._read_report_document(wanted, compartment)
        documents = [d for d in found if compartment.admits(subject_number(d)) and _matches(d, search)]
        return DocumentResult(documents, issues, result)

    def _by_report_uid(
        self,
        search: DocumentSearch,
        uids: frozenset[str],
        compartment: Compartment,
        issues: list[dict[str, Any]],
        budget: list[int],
    ) -> list[Resource]:
        """The entries of the report objects these SOPInstanceUIDs name (the search's other criteria kept)."""
        wanted = replace(self._study_search(search), study_uids=None, instance_uids=tuple(sorted(uids)))
        study = narrow_studies(wanted, compartment, self.imaging._scope_filter)
        result = self.imaging.federation.search(study)
        result.studies = compartment.keep(result.studies, subject_number)
        issues += result.issues
        out = []
        for s in result.studies:
            holdings = result.holdings.get(s["id"], ())
            for x in self.reports.located(holdings, issues, budget):
                if {i["value"].removeprefix(systems.OID_PREFIX) for i in x.report["identifier"]} & uids:
                    out.append(self._report_document(x, holdings))
        return out

    def _report_document(self, located: Located, holdings: Iterable[Holding]) -> Resource:
        holding = next(h for h in holdings if h.trust.id == located.trust_id)
        return report_document(located.report, holding.trust, holding.study, replaces=located.replaces)

    def _read_report_document(self, wanted: str, compartment: Compartment) -> list[Resource]:
        try:
            located, holding = self.reports.locate_with_holding(wanted, compartment)
        except NotFound:
            return []
        return [report_document(located.report, holding.trust, holding.study, replaces=located.replaces)]

    def read(self, document_id: str, compartment: Compartment) -> Resource:
        parsed = parse_document_id(document_id)
        if parsed is None or parsed[0] not in self.trust_ids:  # the message never names the id asked for
            raise NotFound(f"no such DocumentReference: {NOT_HELD}")
        ods, uid = parsed
        study = StudySearch(study_uids=frozenset({uid}), endpoint_ids=frozenset({f"{self.trust_ids[ods]}-wado-rs"}))
        try:
            study = narrow_studies(study, compartment, self.imaging._scope_filter)
        except Forbidden:
            raise NotFound(NOT_HELD) from None
        result = self.imaging.federation.search(study)
        result.studies = compartment.keep(result.studies, subject_number)
        found = [
            d
            for s in result.studies
            for d in self._documents(result.holdings.get(s["id"], ()))
            if d["id"] == document_id and compartment.admits(subject_number(d))
        ]
        if not found:
            found = self._read_report_document(document_id, compartment)
        if not found:
            unavailable = [i for i in result.issues if i["code"] == "incomplete"]
            detail = f" ({len(unavailable)} archive(s) did not answer)" if unavailable else ""
            raise NotFound(f"{NOT_HELD}{detail}")
        return found[0]

    def _documents(self, holdings: Iterable[Holding]) -> list[Resource]:
        out = []
        for holding in holdings:
            trust, study = holding.trust, holding.study
            links = self.links[trust.ods_code]
            nhs = subject_number(study)
            accession = next((a["value"] for a in accession_identifiers(study)), None)
            viewer = fill_viewer(links.viewer_template, study["id"], accession, nhs) if links.viewer_template else None
            local = None
            if holding.local_patient:
                pid = holding.local_patient[0]
                system = systems.NHS_NUMBER if pid == nhs else systems.local_patient_identifier(trust.ods_code)
                local = {"system": system, "value": pid}
            out.append(
                study_document(
                    study,
                    trust,
                    metadata_url=f"{links.wado_base}/studies/{study['id']}/metadata",
                    viewer_url=viewer,
                    local_patient=local,
                )
            )
        return out


def _token_in(tokens: tuple[Token, ...], codings: Iterable[dict[str, Any]]) -> bool:
    return any(t.code == c.get("code") and t.system in (None, c.get("system")) for t in tokens for c in codings)


def _matches(document: Resource, search: DocumentSearch) -> bool:
    """The criteria checked on the built DocumentReference (the study search applied the others)."""
    if search.ids is not None and document["id"] not in {document_id(ods, uid) for ods, uid in search.ids}:
        return False
    custodian = document["custodian"]["identifier"]["value"]
    if search.custodians is not None and custodian not in search.custodians:
        return False
    if any(not _token_in(t, document["type"].get("coding", ())) for t in search.types):
        return False
    categories = [c for cc in document.get("category", ()) for c in cc.get("coding", ())]
    if any(not _token_in(t, categories) for t in search.categories):
        return False
    formats = [c["format"] for c in document["content"] if "format" in c]
    if any(not _token_in(t, formats) for t in search.formats):
        return False
    if any(document["status"] not in s for s in search.statuses):
        return False
    if search.study.accessions:
        held = {(a.get("system"), a["value"]) for a in accession_identifiers(document)}
        if not any(
            (a.system is None and any(v == a.code for _, v in held)) or (a.system, a.code) in held
            for a in search.study.accessions
        ):
            return False
    return True
