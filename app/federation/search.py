"""Federation: one search fanned out to every trust archive concurrently, mapped and merged.

The query plan turns a validated StudySearch into typed per-trust StudyQuery values (patient
keys resolved per trust), the archives answer in parallel within a deadline, each study is
mapped by the pure core, and the answers are merged into one deterministic list. A trust that
fails becomes an OperationOutcome issue; the others still answer.

Bounded cost (S1, docs/security.md): before anything is asked of anyone (the cross-reference
included), the plan checks the search against each planned archive's limits (settings
ArchiveLimits): no parameter may carry more than `search.max_values_per_parameter` values, and
the queries the plan would send one archive (the product of the values of patient, accession
numbers, series and instances) may not exceed `federation.max_queries_per_archive.<type>`. Over
either, the search is refused with 400 too-costly naming the cap: no archive is asked and no
circuit breaker hears of it, so a search too large for its own deadline can never count as an
archive's failure. At a trust matched through the cross-reference, the archive receives the
patient's local ids, not the NHS numbers: once the cross-reference has named them (in memory for
the CSV; a PIXm service is asked), the plan counts them in place of the NHS numbers and refuses the
same way, still before any archive is asked.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from app.core import dicom_json as dj
from app.core import systems
from app.core.dicom_json import Dataset
from app.core.errors import TooCostly
from app.core.mapping.context import TrustMapping
from app.core.mapping.engine import StudyMapper
from app.core.mapping.patient import local_patient_key, nhs_number_of, patient_resource, subject_reference
from app.core.query import NameQuery, PatientKey, StudyQuery
from app.core.search.dates import DateRange, DateValueError, dicom_bounds, parse_range
from app.core.search.study import StudySearch
from app.federation.fanout import TrustAnswer, TrustArchive, fan_out
from app.federation.xref import CrossReference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holding:
    """One trust's copy of a study, as its archive answered it (before the merge)."""

    trust: TrustMapping
    study: dict[str, Any]  # the ImagingStudy mapped from this trust's answer alone
    local_patient: tuple[str, str] | None  # (PatientID, IssuerOfPatientID) of the trust's record


@dataclass
class FederatedResult:
    """Mapped, merged, filtered and sorted studies, with the raw patient data behind them."""

    studies: list[dict[str, Any]] = field(default_factory=list)
    holdings: dict[str, list[Holding]] = field(default_factory=dict)  # study UID -> each trust's copy, in trust order
    patient_records: dict[str, list[tuple[str, Dataset]]] = field(default_factory=lambda: defaultdict(list))
    issues: list[dict[str, Any]] = field(default_factory=list)
    conflicts: set[str] = field(default_factory=set)


class Federation:
    """Queries the trust archives for a search, in parallel, and merges what they answer."""

    def __init__(
        self, trusts: list[TrustArchive], mapper: StudyMapper, xref: CrossReference, zone: tzinfo, deadline_s: float
    ) -> None:
        self.trusts = trusts
        self.mapper = mapper
        self.xref = xref
        self.zone = zone
        self.deadline_s = deadline_s

    # -- planning -------------------------------------------------------------------------
    def patient_keys(self, trust: TrustArchive, nhs_number: str) -> tuple[PatientKey, ...]:
        rule = trust.settings.nhs_number
        if rule.match == "patient_id":
            return (PatientKey(nhs_number, rule.issuer),)
        return self.xref.local_keys(nhs_number, trust.settings.id)

    def plan(self, search: StudySearch) -> dict[str, list[StudyQuery]]:
        """Per trust id, the archive queries that together cover the search (empty: ask nobody).

        Raises TooCostly, before any I/O, when the search is over a planned archive's limits."""
        if search.statuses and "available" not in search.statuses:
            return {}
        if search.matches_nothing or (search.study_uids is not None and not search.study_uids):
            return {}
        planned = [t for t in self.trusts if _selected(t, search)]
        for trust in planned:
            check_cost(search, trust)
        date_from, date_to = dicom_bounds(search.started, self.zone)
        uids = tuple(sorted(search.study_uids or ()))
        plans: dict[str, list[StudyQuery]] = {}
        for trust in planned:
            patients: list[PatientKey | None] = [None]
            if search.nhs_numbers is not None:
                patients = [k for n in sorted(search.nhs_numbers) for k in self.patient_keys(trust, n)]
            accessions: list[str | None] = [*sorted({a.code for a in search.accessions})] or [None]
            series: list[str | None] = list(dict.fromkeys(search.series_uids)) or [None]
            sops: list[str | None] = list(dict.fromkeys(search.instance_uids)) or [None]
            if search.nhs_numbers is not None and trust.settings.nhs_number.match != "patient_id":
                # The cross-reference's local ids are what this archive receives: the cap counts them.
                others = [f for f in multiplying(search) if f[0] != "patient"]
                check_planned(trust, [("local patient ids", len(patients)), *others])
            queries = [
                StudyQuery(
                    patient=p,
                    study_uids=uids,
                    accession_number=a,
                    series_uid=s,
                    sop_instance_uid=i,
                    modalities=search.modalities,
                    date_from=date_from,
                    date_to=date_to,
                )
                for p, a, s, i in itertools.product(patients, accessions, series, sops)
            ]
            if queries:
                plans[trust.settings.id] = queries
        return plans

    # -- mapping and merging --------------------------------------------------------------
    def search(self, search: StudySearch, with_instances: bool = False) -> FederatedResult:
        result = FederatedResult()
        needs_instances = with_instances or bool(search.dicom_classes) or bool(search.instance_uids)
        copies: dict[str, list[tuple[str | None, dict[str, Any], TrustArchive, Dataset]]] = defaultdict(list)
        fan_out(
            self.trusts,
            self.plan(search),
            needs_instances,
            self.deadline_s,
            result.issues,
            lambda answer: self._map_answer(answer, search, copies, result),
        )
        order = {t.settings.id: i for i, t in enumerate(self.trusts)}
        for found in copies.values():  # answers arrive in any order; the merge must not depend on it
            found.sort(key=lambda copy: order[copy[2].settings.id])
        merged = [
            m
            for m in (self._resolve(uid, [c[:3] for c in found], result) for uid, found in sorted(copies.items()))
            if m
        ]
        kept = [s for s in merged if _matches(s, search, self.zone)]
        result.holdings = {
            s["id"]: [Holding(t.mapping, copy, local_patient_key(raw)) for _, copy, t, raw in copies[s["id"]]]
            for s in kept
        }
        result.studies = sorted(kept, key=lambda s: _sort_key(s, self.zone, search.paging.sort_descending))
        result.issues.extend(demographic_conflicts(result.patient_records, self.trusts))
        result.issues.sort(key=lambda i: (i["code"], i.get("diagnostics", "")))  # arrival order must not show
        return result

    def _map_answer(
        self,
        answer: TrustAnswer,
        search: StudySearch,
        copies: dict[str, list[tuple[str | None, dict[str, Any], TrustArchive, Dataset]]],
        result: FederatedResult,
    ) -> None:
        trust = answer.trust
        rule = trust.settings.nhs_number
        series_by_study: dict[str, list[Dataset]] = defaultdict(list)
        for series in answer.series:
            series_by_study[dj.first_text(series, dj.STUDY_INSTANCE_UID) or ""].append(series)
        local_system = systems.local_patient_identifier(trust.settings.ods_code)
        for study in answer.studies:
            uid = dj.first_text(study, dj.STUDY_INSTANCE_UID) or ""
            nhs = nhs_number_of(study, rule.match, rule.issuer, trust.settings.id, self.xref.reverse)
            if search.nhs_numbers is not None and nhs not in search.nhs_numbers:
                # The archive matched on its key but the record resolves to someone else: never show it.
                result.issues.append(
                    {
                        "severity": "warning",
                        "code": "conflict",
                        "diagnostics": f"{trust.settings.name}: a study whose patient identity does not resolve to "
                        "the requested NHS number was withheld",
                    }
                )
                continue
            mapped = self.mapper.map_study(
                study,
                series_by_study.get(uid, []),
                answer.instances.get(uid),
                trust.mapping,
                subject_reference(nhs, study, local_system),
                result.issues,
            )
            if mapped is None:
                continue
            if nhs:
                result.patient_records[nhs].append((trust.settings.id, study))
            copies[uid].append((nhs, mapped, trust, study))

    def _resolve(
        self, uid: str, found: list[tuple[str | None, dict[str, Any], TrustArchive]], result: FederatedResult
    ) -> dict[str, Any] | None:
        """One StudyInstanceUID from one or more archives -> one ImagingStudy, or none.

        Copies of one patient are merged. Copies held under different patients are never merged
        and never shown under one id: the study is withheld with a `conflict` warning naming the
        archives, so that images cannot be attached to the wrong patient.
        """
        patients = {nhs for nhs, _, _ in found}
        if len(patients) > 1 or (None in patients and len(found) > 1):
            names = ", ".join(sorted({t.settings.name for _, _, t in found}))
            result.conflicts.add(uid)
            result.issues.append(
                {
                    "severity": "warning",
                    "code": "conflict",
                    "diagnostics": f"study {uid} is held by {names} under different patient identities; it is "
                    "withheld until the archives agree (see docs/clinical-safety.md)",
                }
            )
            return None
        study = found[0][1]
        for _, other, trust in found[1:]:
            study = merge_copies(study, other, trust.mapping)
        return study

    def patients_by_name(self, name: NameQuery) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Patients whose name starts so, from every archive (studies only: no series are asked for).

        Only records that resolve to a valid NHS number are returned, as Patients keyed by it.
        """
        issues: list[dict[str, Any]] = []
        records: dict[str, list[Dataset]] = defaultdict(list)

        def collect(answer: TrustAnswer) -> None:
            rule = answer.trust.settings.nhs_number
            for study in answer.studies:
                nhs = nhs_number_of(study, rule.match, rule.issuer, answer.trust.settings.id, self.xref.reverse)
                if nhs:
                    records[nhs].append(study)

        plans = {t.settings.id: [StudyQuery(patient_name=name)] for t in self.trusts}
        fan_out(self.trusts, plans, False, self.deadline_s, issues, collect, studies_only=True)
        found = [patient_resource(nhs, studies) for nhs, studies in records.items()]
        return sorted(found, key=lambda p: ((p.get("name") or [{}])[0].get("text", ""), p["id"])), issues

    def patients(self, numbers: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Patients for NHS numbers, from the imaging records of every trust, in one fan-out; a number
        with no records is left out. In the order given."""
        result = self.search(StudySearch(nhs_numbers=frozenset(numbers)))
        found = [
            patient_resource(n, [s for _, s in result.patient_records[n]])
            for n in dict.fromkeys(numbers)
            if result.patient_records.get(n)
        ]
        return found, result.issues

    def patient(self, nhs_number: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The Patient for an NHS number from the imaging records of every trust, or None."""
        found, issues = self.patients([nhs_number])
        return (found[0] if found else None), issues

    def close(self) -> None:
        for trust in self.trusts:
            trust.pool.shutdown(wait=False, cancel_futures=True)
            trust.archive.close()


def _selected(trust: TrustArchive, search: StudySearch) -> bool:
    """False when the search's `endpoint` leaves the trust out: nothing is asked of it."""
    ids = {trust.mapping.endpoint_id, trust.mapping.viewer_endpoint_id}
    return search.endpoint_ids is None or bool(ids & search.endpoint_ids)


def multiplying(search: StudySearch) -> list[tuple[str, int]]:
    """The criteria whose values each need a query of their own (the plan's product), with their counts."""
    factors = (
        ("patient", len(search.nhs_numbers or ())),
        ("identifier", len({a.code for a in search.accessions})),
        ("series", len(set(search.series_uids))),
        ("instance", len(set(search.instance_uids))),
    )
    return [(name, count) for name, count in factors if count]


def check_cost(search: StudySearch, trust: TrustArchive) -> None:
    """Refuse (400 too-costly) a search over what the trust's archive may be asked for one search:
    too many values of one parameter, or a plan of too many queries. Pure: asks nobody anything."""
    limits = trust.settings.limits
    for criterion in search.values_by_parameter():
        if criterion.values > limits.max_values_per_parameter:
            raise TooCostly(
                f"{criterion.values} {criterion.what}: at most {limits.max_values_per_parameter} values of one "
                "search parameter are sent to an archive (search.max_values_per_parameter); split the search",
                criterion.parameter,
            )
    check_planned(trust, multiplying(search))


def check_planned(trust: TrustArchive, factors: list[tuple[str, int]]) -> None:
    """Refuse (400 too-costly) a plan whose factors multiply into more queries than the trust's archive may
    be sent for one search (federation.max_queries_per_archive.<type>)."""
    limits = trust.settings.limits
    queries = math.prod(count for _, count in factors)
    if queries > limits.max_queries:
        names = " x ".join(name for name, _ in factors)
        counts = " x ".join(str(count) for _, count in factors)
        raise TooCostly(
            f"this search would send {queries} queries ({names}: {counts}) to the {trust.settings.archive.type} "
            f"archive of {trust.settings.name}, more than its cap of {limits.max_queries} per search "
            f"({limits.queries_key(trust.settings.archive.type)}); narrow the search or split it"
        )


def demographic_conflicts(
    records: dict[str, list[tuple[str, Dataset]]], trusts: list[TrustArchive]
) -> list[dict[str, Any]]:
    """Warnings for NHS numbers whose birth date or sex differ between archives (values not shown)."""
    names = {t.settings.id: t.settings.name for t in trusts}
    issues = []
    for nhs, found in records.items():
        for label, tag in (("birth date", dj.PATIENT_BIRTH_DATE), ("sex", dj.PATIENT_SEX)):
            values: dict[str, set[str]] = defaultdict(set)
            for trust_id, study in found:
                value = dj.first_text(study, tag)
                if value:
                    values[value.upper()].add(names[trust_id])
            if len(values) > 1:
                where = "; ".join(sorted(", ".join(sorted(v)) for v in values.values()))
                issues.append(
                    {
                        "severity": "warning",
                        "code": "conflict",
                        "diagnostics": f"Patient/{nhs}: the {label} recorded differs between archives ({where}); "
                        "check the patient's identity before relying on these images",
                    }
                )
    return issues


def merge_copies(first: dict[str, Any], other: dict[str, Any], other_trust: TrustMapping) -> dict[str, Any]:
    """One study held by two archives: the union of series, counts recomputed.

    Series only the second archive holds point at its Endpoint, so a viewer retrieves each
    series from the archive that has it.
    """
    merged = dict(first)
    series = list(first.get("series", ()))
    known = {s["uid"] for s in series}
    for extra in other.get("series", ()):
        if extra["uid"] not in known:
            series.append({**extra, "endpoint": [other_trust.endpoint_reference]})
            known.add(extra["uid"])
    if series:
        merged["series"] = series
        merged["numberOfSeries"] = len(series)
        if all("numberOfInstances" in s for s in series):
            merged["numberOfInstances"] = sum(s["numberOfInstances"] for s in series)
    codes = {c["code"] for c in merged.get("modality", ())}
    extra_modalities = [c for c in other.get("modality", ()) if c["code"] not in codes]
    if extra_modalities:
        merged["modality"] = [*merged.get("modality", ()), *extra_modalities]
    return merged


def _started(study: dict[str, Any], zone: tzinfo) -> tuple[datetime, datetime] | None:
    started = study.get("started")
    if not started:
        return None
    try:
        found = parse_range(started, zone)
    except DateValueError:
        return None
    return found.start, found.end


def _matches(study: dict[str, Any], search: StudySearch, zone: tzinfo) -> bool:
    """The criteria an archive may not have applied exactly, checked on the mapped resource."""
    if search.started:
        found = _started(study, zone)
        if found is None:
            return False
        span = DateRange(*found)
        if not all(f.matches(span) for f in search.started):
            return False
    if search.modalities and not {c["code"] for c in study.get("modality", ())} & set(search.modalities):
        return False
    series = study.get("series", ())
    if search.series_uids and not {s["uid"] for s in series} & set(search.series_uids):
        return False
    held = {i["uid"] for s in series for i in s.get("instance", ())}
    if search.instance_uids and not held & set(search.instance_uids):
        return False
    if search.body_sites:
        codes = {s["bodySite"]["code"] for s in series if "bodySite" in s}
        if not codes & {t.code for t in search.body_sites}:
            return False
    if search.dicom_classes:
        classes = {
            i["sopClass"]["code"].removeprefix(systems.OID_PREFIX) for s in series for i in s.get("instance", ())
        }
        if not classes & set(search.dicom_classes):
            return False
    if search.accessions:
        held = {
            (i.get("system"), i["value"])
            for i in study.get("identifier", ())
            if i.get("type", {}).get("coding", [{}])[0].get("code") == "ACSN"
        }
        if not any(
            (a.system is None and any(v == a.code for _, v in held)) or (a.system, a.code) in held
            for a in search.accessions
        ):
            return False
    return True


def _sort_key(study: dict[str, Any], zone: tzinfo, descending: bool) -> tuple[int, float, str]:
    stamp = _start_stamp(study.get("started"), zone)
    if stamp is None:
        return (1, 0.0, study["id"])  # studies without a date come last, whatever the direction
    return (0, -stamp if descending else stamp, study["id"])


def _start_stamp(started: str | None, zone: tzinfo) -> float | None:
    """When a study started, as a POSIX time. A full dateTime with its offset (what the mapping writes when
    the archive gives a time) is read by datetime.fromisoformat; anything else as a search date is."""
    if started and len(started) > 19 and started[10] == "T":
        try:
            instant = datetime.fromisoformat(started)
        except ValueError:
            instant = None
        if instant is not None and instant.tzinfo is not None:
            return instant.timestamp()
    found = _started({"started": started}, zone)
    return None if found is None else found[0].timestamp()
