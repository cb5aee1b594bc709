"""DiagnosticReport searches and reads, and the report PDF route's document: reports are read from the report
objects (SR, encapsulated PDF) the trust archives hold, under the request's compartment.

Cost: a report needs its object's metadata. It is read through the trust's WADO-RS image source, one request
per report series, plus one per report object whose series answer was abbreviated (an archive that serves only
main tags at series level), only when reports are asked for; one search reads
at most `federation.max_report_reads` series (the reports beyond are left out with an `incomplete` outcome),
and a series' metadata is kept `federation.report_cache_s` seconds (cachetools TTLCache).

Safety (docs/clinical-safety.md H16-H18): each report object's own patient attributes must resolve to the NHS
number of its study (else it is withheld with a warning); a report that cannot be read is named in an outcome,
never guessed at.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
import pydicom
from cachetools import TTLCache

from app.archives.images import ImageSource, RetrievalError, WadoTarget
from app.core import dicom_json as dj
from app.core.compartment import Compartment, narrow_studies
from app.core.errors import Forbidden, NotFound, TooCostly
from app.core.mapping.diagnostic_report import build_report, tables
from app.core.mapping.document_reference import document_id, parse_document_id
from app.core.mapping.patient import nhs_number_of, subject_number
from app.core.search.diagnostic_report import ParsedReportQuery, ReportSearch, parse_report_search
from app.core.search.study import StudySearch
from app.core.search.values import Token
from app.federation.search import Holding

if TYPE_CHECKING:
    from app.services.imaging import ImagingService

log = logging.getLogger(__name__)
Resource = dict[str, Any]
NOT_HELD = "the DiagnosticReport was not found in any trust archive"
REPORT_MODALITIES = frozenset({"SR", "DOC"})
MAX_METADATA_BYTES = 16 << 20
MAX_DOCUMENT_BYTES = 64 << 20
SOP_CLASS = dj.tag("SOPClassUID")
CONTENT = dj.tag("ContentSequence")


@dataclass(frozen=True)
class Located:
    """A built report and where its object is: the trust, study and series."""

    report: Resource
    trust_id: str
    study: str
    series: str
    replaces: tuple[str, ...] = ()  # SOPInstanceUIDs of the documents an amended SR replaces


@dataclass
class ReportResult:
    reports: list[Resource] = field(default_factory=list)
    issues: list[dict[str, Any]] = field(default_factory=list)


def _issue(severity: str, code: str, diagnostics: str) -> dict[str, Any]:
    return {"severity": severity, "code": code, "diagnostics": diagnostics}


def _read_all(chunks: Iterable[bytes], limit: int) -> bytes | None:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            return None
    return bytes(out)


class ReportService:
    """DiagnosticReport search and read, and the encapsulated PDF of a report."""

    def __init__(self, imaging: ImagingService, image_sources: dict[str, ImageSource]) -> None:
        self.imaging = imaging
        self.sources = image_sources
        settings = imaging.settings
        self.max_reads = settings.max_report_reads
        self.trusts = {t.settings.ods_code: t for t in imaging.federation.trusts}
        self.base_url = settings.base_url
        self.public_root = settings.public_root
        self._cache: TTLCache[tuple[str, str, str], list[dj.Dataset]] | None = (
            TTLCache(maxsize=512, ttl=settings.report_cache_s) if settings.report_cache_s > 0 else None
        )
        self._lock = threading.Lock()

    def parse(self, pairs: list[tuple[str, str]]) -> ParsedReportQuery:
        s = self.imaging.settings
        return parse_report_search(pairs, self.imaging.zone, self.imaging.modalities, s.default_count, s.max_count)

    def pdf_url(self, report_id: str) -> str:
        return f"{self.public_root}/dicomweb/reports/{report_id}/document.pdf"

    # -- metadata ------------------------------------------------------------------------------
    def _metadata(self, trust_id: str, target: WadoTarget) -> list[dj.Dataset]:
        source = self.sources.get(trust_id)
        if source is None:
            raise RetrievalError(trust_id, 502, "the trust offers no WADO-RS retrieval")
        retrieval = source.retrieve(target, "application/dicom+json", None, [])
        try:
            body = _read_all(retrieval.chunks, MAX_METADATA_BYTES)
        finally:
            retrieval.close()
        if retrieval.status != 200 or body is None:
            raise RetrievalError(trust_id, 502, "the report metadata could not be read")
        found = orjson.loads(body)
        return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []

    def _series_metadata(self, trust_id: str, study: str, series: str) -> list[dj.Dataset]:
        """The full metadata of a report series' objects: the series' metadata (one request), and, for an object
        that answer abbreviates (an archive serving only main tags at series level, as Orthanc's
        `SeriesMetadata: MainDicomTags`), that object's own metadata (one request each). Cached briefly."""
        key = (trust_id, study, series)
        if self._cache is not None:
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None:
                return cached
        datasets = []
        for dataset in self._metadata(trust_id, WadoTarget(study, series, resource="metadata")):
            sop = dj.first_text(dataset, dj.SOP_INSTANCE_UID)
            if _abbreviated(dataset) and sop and dj.is_uid(sop):
                full = self._metadata(trust_id, WadoTarget(study, series, sop, resource="metadata"))
                dataset = next((d for d in full if dj.first_text(d, dj.SOP_INSTANCE_UID) == sop), dataset)
            datasets.append(dataset)
        if self._cache is not None:
            with self._lock:
                self._cache[key] = datasets
        return datasets

    # -- building ------------------------------------------------------------------------------
    def _reports(self, holdings: Iterable[Holding], budget: list[int], result: ReportResult) -> list[Located]:
        out: list[Located] = []
        t = tables()
        for holding in holdings:
            trust = self.trusts[holding.trust.ods_code]
            study = holding.study
            nhs = subject_number(study)
            for series in study.get("series", ()):
                if series.get("modality", {}).get("code") not in REPORT_MODALITIES:
                    continue
                if budget[0] <= 0:
                    result.issues.append(
                        _issue(
                            "warning",
                            "incomplete",
                            f"{trust.settings.name}: the reports of study {study['id']} were not read: this search "
                            f"reached its cap of {self.max_reads} report reads (federation.max_report_reads); "
                            "narrow the search",
                        )
                    )
                    continue
                budget[0] -= 1
                try:
                    datasets = self._series_metadata(trust.settings.id, study["id"], series["uid"])
                except (RetrievalError, orjson.JSONDecodeError) as exc:
                    reason = exc.reason if isinstance(exc, RetrievalError) else "not DICOM JSON"
                    result.issues.append(
                        _issue(
                            "warning",
                            "incomplete",
                            f"{trust.settings.name}: the reports of study {study['id']} could not be read ({reason})",
                        )
                    )
                    continue
                rule = trust.settings.nhs_number
                for instance in datasets:
                    if not t.is_report(dj.first_text(instance, SOP_CLASS)):
                        continue
                    owner = nhs_number_of(
                        instance, rule.match, rule.issuer, trust.settings.id, self.imaging.federation.xref.reverse
                    )
                    if owner is None or owner != nhs:
                        result.issues.append(
                            _issue(
                                "warning",
                                "conflict",
                                f"{trust.settings.name}: a report whose patient identity does not resolve to the "
                                f"patient of study {study['id']} was withheld (see docs/clinical-safety.md)",
                            )
                        )
                        continue
                    sop = dj.first_text(instance, dj.SOP_INSTANCE_UID) or ""
                    built = build_report(
                        instance,
                        study,
                        holding.trust,
                        self.imaging.zone,
                        pdf_url=self.pdf_url(document_id(holding.trust.ods_code, sop)),
                    )
                    if built.report is None:
                        result.issues.append(_issue("warning", "processing", built.problem or "unreadable report"))
                        continue
                    out.append(Located(built.report, trust.settings.id, study["id"], series["uid"], built.replaces))
        return out

    def _bounded(self, study: StudySearch) -> None:
        if study.nhs_numbers is None and study.study_uids is None and not study.accessions and not study.instance_uids:
            raise TooCostly(
                "a DiagnosticReport search must name a patient (patient, subject, patient.identifier), a study "
                "(imaging-study), a report (_id, identifier) or an accession (based-on): a search of whole "
                "archives is not offered"
            )

    def search(self, search: ReportSearch, compartment: Compartment) -> ReportResult:
        study = narrow_studies(search.study, compartment, self.imaging._scope_filter)
        self._bounded(study)
        if search.ids is not None:
            known = frozenset(f"{self.trusts[o].settings.id}-wado-rs" for o, _ in search.ids if o in self.trusts)
            current = study.endpoint_ids
            study = replace(study, endpoint_ids=known if current is None else current & known)
        found = self.imaging.federation.search(study)
        found.studies = compartment.keep(found.studies, subject_number)
        result = ReportResult(issues=list(found.issues))
        budget = [self.max_reads]
        holdings = [h for s in found.studies for h in found.holdings.get(s["id"], ())]
        reports = [x.report for x in self._reports(holdings, budget, result)]
        result.reports = [r for r in reports if compartment.admits(subject_number(r)) and _matches(r, search)]
        return result

    def read(self, report_id: str, compartment: Compartment) -> Resource:
        return self._locate(report_id, compartment)[0].report

    def budget(self) -> list[int]:
        """One search's budget of report series reads (federation.max_report_reads), shared by its `located` calls."""
        return [self.max_reads]

    def located(self, holdings: Iterable[Holding], issues: list[dict[str, Any]], budget: list[int]) -> list[Located]:
        """The reports of these study copies (for DocumentReference), within the search's `budget` (spent here);
        issues appended."""
        result = ReportResult()
        found = self._reports(holdings, budget, result)
        issues += result.issues
        return found

    def locate_with_holding(self, report_id: str, compartment: Compartment) -> tuple[Located, Holding]:
        """A report by id, with the study copy it was found in (404 as for a read)."""
        return self._locate(report_id, compartment)

    def _locate(self, report_id: str, compartment: Compartment) -> tuple[Located, Holding]:
        parsed = parse_document_id(report_id)
        if parsed is None or parsed[0] not in self.trusts:
            raise NotFound(f"no such DiagnosticReport: {NOT_HELD}")
        ods, sop = parsed
        study = StudySearch(instance_uids=(sop,), endpoint_ids=frozenset({f"{self.trusts[ods].settings.id}-wado-rs"}))
        try:
            study = narrow_studies(study, compartment, self.imaging._scope_filter)
        except Forbidden:
            raise NotFound(NOT_HELD) from None
        found = self.imaging.federation.search(study)
        found.studies = compartment.keep(found.studies, subject_number)
        result = ReportResult()
        holdings = [h for s in found.studies for h in found.holdings.get(s["id"], ()) if h.trust.ods_code == ods]
        reports = [
            x
            for x in self._reports(holdings, [self.max_reads], result)
            if x.report["id"] == report_id and compartment.admits(subject_number(x.report))
        ]
        if not reports:
            unreadable = [i for i in result.issues if report_id.split("-", 1)[1] in i["diagnostics"]]
            detail = f" ({unreadable[0]['diagnostics']})" if unreadable else ""
            raise NotFound(f"{NOT_HELD}{detail}")
        holding = next(h for h in holdings if h.trust.id == reports[0].trust_id and h.study["id"] == reports[0].study)
        return reports[0], holding

    def includes(
        self, wanted: tuple[str, ...], page: list[Resource], readable: dict[str, Compartment]
    ) -> list[Resource]:
        """`_include=DiagnosticReport:imaging-study`: the page's studies, under the ImagingStudy compartment."""
        studies = readable.get("ImagingStudy")
        if "DiagnosticReport:imaging-study" not in wanted or studies is None:
            return []
        uids = sorted({r["reference"].removeprefix("ImagingStudy/") for p in page for r in p.get("imagingStudy", ())})
        if not uids:
            return []
        # A result parameter, not a search criterion: the page's studies are asked for in groups within every
        # archive's value cap (search.max_values_per_parameter), so the client is never refused for a parameter it
        # did not send; the cost stays bounded by the page size.
        cap = min((t.settings.limits.max_values_per_parameter for t in self.imaging.federation.trusts), default=1)
        out: dict[str, Resource] = {}
        for start in range(0, len(uids), max(cap, 1)):
            group = frozenset(uids[start : start + max(cap, 1)])
            for found in self.imaging.search(StudySearch(study_uids=group), studies).studies:
                out.setdefault(found["id"], found)
        return [out[u] for u in uids if u in out]

    def document(self, report_id: str, compartment: Compartment) -> tuple[bytes, Resource]:
        """The encapsulated PDF of a report (its DiagnosticReport is read first: same compartment, same checks)."""
        located = self._locate(report_id, compartment)[0]
        report = located.report
        if not any(f.get("contentType") == "application/pdf" for f in report.get("presentedForm", ())):
            raise NotFound("this DiagnosticReport has no PDF document")
        _, sop = parse_document_id(report_id) or ("", "")
        trust = next(t for t in self.trusts.values() if t.settings.id == located.trust_id)
        source = self.sources.get(located.trust_id)
        if source is None:
            raise NotFound(NOT_HELD)
        retrieval = source.retrieve(
            WadoTarget(located.study, located.series, sop), 'multipart/related; type="application/dicom"', None, []
        )
        try:
            body = _read_all(retrieval.chunks, MAX_DOCUMENT_BYTES)
        finally:
            retrieval.close()
        if retrieval.status != 200 or body is None:
            raise RetrievalError(trust.settings.name, 502, "the report document could not be read")
        part = _first_part(body, retrieval.headers.get("Content-Type", ""))
        dataset = pydicom.dcmread(io.BytesIO(part), force=True)
        document = bytes(dataset.get("EncapsulatedDocument", b"") and dataset.EncapsulatedDocument)
        length = dataset.get("EncapsulatedDocumentLength")
        if length:
            document = document[: int(length)]
        if not document.startswith(b"%PDF"):
            raise RetrievalError(trust.settings.name, 502, "the report object holds no PDF document")
        return document, report


def _abbreviated(dataset: dj.Dataset) -> bool:
    """Whether an object's metadata lacks what a report is read from (its class, or an SR's content)."""
    sop_class = dj.first_text(dataset, SOP_CLASS)
    return sop_class is None or (sop_class in tables().sr_classes and CONTENT not in dataset)


def _first_part(body: bytes, content_type: str) -> bytes:
    """The body of the first part of a multipart/related answer (the one object asked for)."""
    boundary = next(
        (p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")),
        None,
    )
    if not boundary:
        return body
    delimiter = f"--{boundary}".encode()
    start = body.find(delimiter)
    head_end = body.find(b"\r\n\r\n", start)
    end = body.find(b"\r\n" + delimiter, head_end)
    return body[head_end + 4 : end if end >= 0 else len(body)]


def _token_in(tokens: tuple[Token, ...], codings: Iterable[dict[str, Any]]) -> bool:
    return any(t.code == c.get("code") and t.system in (None, c.get("system")) for t in tokens for c in codings)


def _matches(report: Resource, search: ReportSearch) -> bool:
    if search.ids is not None and report["id"] not in {document_id(o, u) for o, u in search.ids}:
        return False
    if search.report_uids is not None:
        held = {i["value"].removeprefix("urn:oid:") for i in report["identifier"]}
        if not held & search.report_uids:
            return False
    categories = [c for cc in report.get("category", ()) for c in cc.get("coding", ())]
    if any(not _token_in(t, categories) for t in search.categories):
        return False
    if any(not _token_in(t, report["code"].get("coding", ())) for t in search.codes):
        return False
    if any(report["status"] not in s for s in search.statuses):
        return False
    if search.study.accessions:
        held_acc = {(b["identifier"].get("system"), b["identifier"]["value"]) for b in report.get("basedOn", ())}
        if not any(
            (a.system is None and any(v == a.code for _, v in held_acc)) or (a.system, a.code) in held_acc
            for a in search.study.accessions
        ):
            return False
    return True
