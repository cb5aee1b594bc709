"""The FHIR API end to end through the Flask test client, over the generated demo dataset.

Expected answers come from the dataset itself (manifest.json and the DICOM files on disk), never
from the facade: a search must return exactly the studies the manifest says the patient has.
Every response is also checked by the `client` fixture (valid FHIR R4, FHIR JSON, never a 500).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import pydicom
import pytest

from app.core.identity import is_nhs_number
from tests.federation.support import endpoint_trusts
from tools.demo.generate import SPECIALTY_MODALITIES

BASE_URL = "http://127.0.0.1:8080/fhir"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
ACSN = "http://terminology.hl7.org/CodeSystem/v2-0203|ACSN"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"
WADO_RS = "dicom-wado-rs"
LONDON = ZoneInfo("Europe/London")
BODY_SITES = json.loads(
    (Path(__file__).resolve().parents[2] / "mappings" / "terminology" / "bodysite-annex-l.json").read_text(
        encoding="utf-8"
    )
)["terms"]


# ----------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class DiskStudy:
    """One study as the DICOM files hold it, over every trust folder that has a copy."""

    series: dict[str, frozenset[str]]  # SeriesInstanceUID -> SOPInstanceUIDs
    holders: dict[str, frozenset[str]]  # SeriesInstanceUID -> trust ids holding it
    sop_classes: frozenset[str]
    body_parts: frozenset[str]


@cache
def disk_study(data: Path, uid: str) -> DiskStudy:
    series: dict[str, set[str]] = {}
    holders: dict[str, set[str]] = {}
    classes: set[str] = set()
    parts: set[str] = set()
    for study_dir in sorted(data.glob(f"*/{uid}")):
        for series_dir in sorted(study_dir.iterdir()):
            holders.setdefault(series_dir.name, set()).add(study_dir.parent.name)
            for file in sorted(series_dir.glob("*.dcm")):
                series.setdefault(series_dir.name, set()).add(file.stem)
                ds = pydicom.dcmread(file, stop_before_pixels=True, specific_tags=["SOPClassUID", "BodyPartExamined"])
                classes.add(str(ds.SOPClassUID))
                if ds.get("BodyPartExamined"):
                    parts.add(str(ds.BodyPartExamined))
    assert series, f"study {uid} has no files under {data}"
    return DiskStudy(
        {k: frozenset(v) for k, v in series.items()},
        {k: frozenset(v) for k, v in holders.items()},
        frozenset(classes),
        frozenset(parts),
    )


@dataclass(frozen=True)
class Demo:
    """Questions about the generated dataset, answered from its manifest and files."""

    manifest: dict[str, Any]
    data: Path

    @property
    def facts(self) -> dict[str, Any]:
        return self.manifest["facts"]

    @property
    def multi(self) -> str:
        return self.facts["multi_trust_patient"]["nhs_number"]

    def patient(self, nhs: str) -> dict[str, Any]:
        return next(p for p in self.manifest["patients"] if p["nhs_number"] == nhs)

    def uids(self, nhs: str) -> set[str]:
        return {s["study_uid"] for s in self.patient(nhs)["studies"]}

    def study(self, uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(patient, study) of a StudyInstanceUID."""
        return next((p, s) for p in self.manifest["patients"] for s in p["studies"] if s["study_uid"] == uid)

    def ods(self, trust_id: str) -> str:
        return next(t["ods_code"] for t in self.manifest["trusts"] if t["id"] == trust_id)

    def identity(self, trust_id: str) -> str:
        return next(t["identity"] for t in self.manifest["trusts"] if t["id"] == trust_id)

    def accession_system(self, trust_id: str) -> str:
        return f"https://fhir.nhs.uk/{self.ods(trust_id)}/Id/accession-number"

    def unknown_nhs_number(self) -> str:
        known = {p["nhs_number"] for p in self.manifest["patients"]}
        return next(n for n in (f"943476{i:04d}" for i in range(10_000)) if is_nhs_number(n) and n not in known)

    def disk(self, uid: str) -> DiskStudy:
        return disk_study(self.data, uid)


@pytest.fixture(scope="module")
def demo(manifest: dict[str, Any], demo_data: Path) -> Demo:
    return Demo(manifest, demo_data)


# ----------------------------------------------------------------------------- helpers


def get(client, path: str, pairs: list[tuple[str, str]] | None = None, **kwargs: Any):
    return client.get(f"/fhir/{path}" + (f"?{urlencode(pairs)}" if pairs else ""), **kwargs)


def search(client, resource_type: str, pairs: list[tuple[str, str]], **kwargs: Any) -> dict[str, Any]:
    response = get(client, resource_type, pairs, **kwargs)
    assert response.status_code == 200, response.get_json()
    bundle = response.get_json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e for e in bundle.get("entry", ()) if e["search"]["mode"] == mode]


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in entries(bundle)]


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return [r["id"] for r in matches(bundle)]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in bundle["link"] if x["relation"] == relation), None)


def link_url(bundle: dict[str, Any], relation: str) -> str:
    """The url of a link the bundle must have."""
    url = link(bundle, relation)
    assert url is not None, f"no {relation!r} link in {bundle['link']}"
    return url


def local_path(url: str) -> str:
    """An absolute link of the facade as a path for the test client."""
    assert url.startswith(BASE_URL + "/"), url
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def all_pages(client, bundle: dict[str, Any]) -> list[dict[str, Any]]:
    pages = [bundle]
    while (url := link(pages[-1], "next")) is not None:
        assert len(pages) < 100, "paging does not end"
        response = client.get(local_path(url))
        assert response.status_code == 200, response.get_json()
        pages.append(response.get_json())
    return pages


def assert_outcome(response, status: int, code: str | None = None, text: str | None = None) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] in ("error", "fatal"), issue
    if code is not None:
        assert issue["code"] == code, issue
    if text is not None:
        assert text.casefold() in issue.get("diagnostics", "").casefold(), issue
    return issue


def started_instant(value: str) -> datetime:
    """Start of a FHIR date/dateTime (zone-less values in Europe/London)."""
    padded = value + "-01-01"[len(value) - 4 :] if len(value) < 10 else value
    moment = datetime.fromisoformat(padded)
    return moment if moment.tzinfo else moment.replace(tzinfo=LONDON)


# ----------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("resource_type", ["ImagingStudy", "Patient", "Endpoint", "Organization"])
def test_metadata_lists_resource_with_read_and_search(client, resource_type):
    statement = get(client, "metadata").get_json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert "application/fhir+json" in statement["format"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {i["code"] for i in resources[resource_type]["interaction"]} == {"read", "search-type"}


@pytest.mark.parametrize(
    ("resource_type", "parameter"),
    [
        *[
            ("ImagingStudy", name)
            for name in (
                "_id",
                "identifier",
                "patient",
                "subject",
                "started",
                "modality",
                "series",
                "instance",
                "dicom-class",
                "bodysite",
                "endpoint",
                "status",
                "_count",
                "_summary",
                "_elements",
            )
        ],
        ("Patient", "_id"),
        ("Patient", "identifier"),
        ("Endpoint", "_id"),
        ("Endpoint", "organization"),
        ("Endpoint", "connection-type"),
        ("Organization", "_id"),
        ("Organization", "identifier"),
        ("Organization", "name"),
    ],
)
def test_metadata_lists_search_parameter(client, resource_type, parameter):
    statement = get(client, "metadata").get_json()
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    assert parameter in {p["name"] for p in resource["searchParam"]}


def test_metadata_lists_endpoint_include(client):
    statement = get(client, "metadata").get_json()
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == "ImagingStudy")
    assert "ImagingStudy:endpoint" in resource["searchInclude"]


# ----------------------------------------------------------------------------- by patient

PATIENT_STYLES: list[tuple[str, Callable[[str], list[tuple[str, str]]]]] = [
    ("patient reference", lambda n: [("patient", f"Patient/{n}")]),
    ("patient bare id", lambda n: [("patient", n)]),
    ("patient absolute reference", lambda n: [("patient", f"{BASE_URL}/Patient/{n}")]),
    ("subject reference", lambda n: [("subject", f"Patient/{n}")]),
    ("patient.identifier", lambda n: [("patient.identifier", f"{NHS}|{n}")]),
    ("patient:identifier", lambda n: [("patient:identifier", f"{NHS}|{n}")]),
    ("subject:identifier", lambda n: [("subject:identifier", f"{NHS}|{n}")]),
]


@pytest.mark.parametrize(("style", "build"), PATIENT_STYLES, ids=[s for s, _ in PATIENT_STYLES])
def test_imaging_study_search_by_patient_finds_every_study(client, demo, style, build):
    bundle = search(client, "ImagingStudy", [*build(demo.multi), ("_count", "200")])
    assert sorted(match_ids(bundle)) == sorted(demo.uids(demo.multi))
    assert bundle["total"] == len(demo.uids(demo.multi))
    assert {s["subject"]["reference"] for s in matches(bundle)} == {f"Patient/{demo.multi}"}


def test_imaging_study_search_by_patient_matches_manifest_for_every_patient(client, demo):
    wrong = {}
    for patient in demo.manifest["patients"]:
        bundle = search(client, "ImagingStudy", [("patient", patient["nhs_number"]), ("_count", "200")])
        if sorted(match_ids(bundle)) != sorted(demo.uids(patient["nhs_number"])):
            wrong[patient["nhs_number"]] = (sorted(match_ids(bundle)), sorted(demo.uids(patient["nhs_number"])))
    assert not wrong


def test_imaging_study_search_multi_trust_patient_spans_trusts_and_identity_styles(client, demo):
    bundle = search(client, "ImagingStudy", [("patient.identifier", f"{NHS}|{demo.multi}")])
    trusts = set().union(*(endpoint_trusts(s) for s in matches(bundle)))
    assert trusts == set(demo.facts["multi_trust_patient"]["trusts"])
    assert len(trusts) >= 3
    assert {demo.identity(t) for t in trusts} == {"nhs", "xref"}


def test_imaging_study_search_shared_study_appears_once_with_union_of_series(client, demo):
    shared = demo.facts["shared_study"]
    _, entry = demo.study(shared["study_uid"])
    bundle = search(client, "ImagingStudy", [("patient", shared["nhs_number"])])
    copies = [s for s in matches(bundle) if s["id"] == shared["study_uid"]]
    assert len(copies) == 1
    study = copies[0]
    assert {s["uid"] for s in study["series"]} == set(demo.disk(shared["study_uid"]).series)
    assert study["numberOfSeries"] == entry["number_of_series"]
    assert study["numberOfInstances"] == entry["number_of_instances"]
    assert study["endpoint"] == [{"reference": f"Endpoint/{shared['source_trust']}-wado-rs"}]
    extra = next(s for s in study["series"] if s["uid"] == shared["extra_series_uid"])
    assert extra["endpoint"] == [{"reference": f"Endpoint/{shared['extra_series_trust']}-wado-rs"}]
    others = [s for s in study["series"] if s["uid"] != shared["extra_series_uid"]]
    assert all(s.get("endpoint", study["endpoint"]) == study["endpoint"] for s in others)


@pytest.mark.parametrize("modality", SPECIALTY_MODALITIES)
def test_imaging_study_search_finds_specialty_study(client, demo, modality):
    uid = demo.facts["specialty_studies"][modality]
    patient, _ = demo.study(uid)
    bundle = search(client, "ImagingStudy", [("patient", patient["nhs_number"]), ("modality", modality)])
    assert uid in match_ids(bundle)
    study = next(s for s in matches(bundle) if s["id"] == uid)
    assert modality in {s["modality"]["code"] for s in study["series"]}
    assert modality in {c["code"] for c in study["modality"]}


# ----------------------------------------------------------------------------- by study


def _study_of(demo: Demo, trust: str) -> dict[str, Any]:
    """A study of the multi-trust patient acquired at `trust` (held by it alone)."""
    return next(s for s in demo.patient(demo.multi)["studies"] if s["trusts"] == [trust])


IDENTIFIER_CASES: list[tuple[str, Callable[[Demo, dict[str, Any]], list[tuple[str, str]]]]] = [
    ("_id", lambda d, s: [("_id", s["study_uid"])]),
    ("dicom uid system", lambda d, s: [("identifier", f"urn:dicom:uid|urn:oid:{s['study_uid']}")]),
    ("bare urn:oid", lambda d, s: [("identifier", f"urn:oid:{s['study_uid']}")]),
    (
        "accession with trust system",
        lambda d, s: [("identifier", f"{d.accession_system(s['trusts'][0])}|{s['accession']}")],
    ),
    ("bare accession", lambda d, s: [("identifier", s["accession"])]),
    ("accession of-type ACSN", lambda d, s: [("identifier:of-type", f"{ACSN}|{s['accession']}")]),
    ("accession with patient", lambda d, s: [("identifier", s["accession"]), ("patient", d.multi)]),
]


@pytest.mark.parametrize("trust", ["mft", "stockport"])  # one trust of each identity style
@pytest.mark.parametrize(("case", "build"), IDENTIFIER_CASES, ids=[c for c, _ in IDENTIFIER_CASES])
def test_imaging_study_search_by_identifier_finds_the_study(client, demo, trust, case, build):
    study = _study_of(demo, trust)
    bundle = search(client, "ImagingStudy", build(demo, study))
    assert match_ids(bundle) == [study["study_uid"]]
    assert bundle["total"] == 1


@pytest.mark.parametrize(
    ("case", "build"),
    [
        (
            "accession of another trust's system",
            lambda d, s: [("identifier", f"{d.accession_system('bolton')}|{s['accession']}")],
        ),
        ("unknown accession", lambda d, s: [("identifier", f"{d.accession_system('mft')}|R0A999999999")]),
        ("unknown study uid", lambda d, s: [("_id", "2.25.1")]),
        ("study of another patient", lambda d, s: [("_id", s["study_uid"]), ("patient", d.unknown_nhs_number())]),
        ("two study criteria that exclude each other", lambda d, s: [("_id", s["study_uid"]), ("_id", "2.25.1")]),
    ],
)
def test_imaging_study_search_by_identifier_finds_nothing(client, demo, case, build):
    bundle = search(client, "ImagingStudy", build(demo, _study_of(demo, "mft")))
    assert bundle["total"] == 0 and not entries(bundle)


def test_imaging_study_search_comma_is_or(client, demo):
    a, b = _study_of(demo, "mft"), _study_of(demo, "stockport")
    by_id = search(client, "ImagingStudy", [("_id", f"{a['study_uid']},{b['study_uid']}")])
    by_accession = search(client, "ImagingStudy", [("identifier", f"{a['accession']},{b['accession']}")])
    assert sorted(match_ids(by_id)) == sorted(match_ids(by_accession)) == sorted([a["study_uid"], b["study_uid"]])


def test_imaging_study_search_shared_study_by_source_accession_at_second_trust(client, demo):
    # Christie holds a copy of Bolton's study: its accession was issued by Bolton (the
    # IssuerOfAccessionNumberSequence says so), so it keeps Bolton's accession system.
    shared = demo.facts["shared_study"]
    _, study = demo.study(shared["study_uid"])
    bundle = search(
        client,
        "ImagingStudy",
        [
            ("identifier", f"{demo.accession_system(shared['source_trust'])}|{study['accession']}"),
            ("endpoint", f"Endpoint/{shared['extra_series_trust']}-wado-rs"),
        ],
    )
    assert match_ids(bundle) == [shared["study_uid"]]


# ----------------------------------------------------------------------------- started


def _day_matches(prefix: str, value: str, day: date) -> bool:
    """FHIR date prefixes at day precision: a study's date against a YYYY / YYYY-MM / YYYY-MM-DD value."""
    low = date(int(value[:4]), int(value[5:7] or 1) if len(value) > 4 else 1, int(value[8:10]) if len(value) > 7 else 1)
    if len(value) == 4:
        high = date(low.year + 1, 1, 1)
    elif len(value) == 7:
        high = date(low.year + low.month // 12, low.month % 12 + 1, 1)
    else:
        high = low + timedelta(days=1)
    inside = low <= day < high
    return {
        "eq": inside,
        "ne": not inside,
        "lt": day < low,
        "le": day < high,
        "gt": day >= high,
        "ge": day >= low,
        "sa": day >= high,
        "eb": day < low,
    }[prefix]


def _study_day(study: dict[str, Any]) -> date | None:
    try:
        return datetime.strptime(study["study_date"], "%Y%m%d").date()
    except ValueError:
        return None


def _known_study_day(study: dict[str, Any]) -> date:
    """The day of a study whose StudyDate must be a valid date."""
    day = _study_day(study)
    assert day is not None, f"study {study['study_uid']} has no valid study date: {study['study_date']!r}"
    return day


def _pivot(demo: Demo, precision: int) -> str:
    """A date the multi-trust patient has a study on (the middle one), cut to 4, 7 or 10 characters."""
    days = sorted(d for s in demo.patient(demo.multi)["studies"] if (d := _study_day(s)))
    return days[len(days) // 2].isoformat()[:precision]


@pytest.mark.parametrize("precision", [4, 7, 10], ids=["year", "month", "day"])
@pytest.mark.parametrize("prefix", ["", "eq", "ne", "lt", "le", "gt", "ge", "sa", "eb"])
def test_imaging_study_search_started_prefix(client, demo, prefix, precision):
    value = _pivot(demo, precision)
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("started", f"{prefix}{value}")])
    expected = {
        s["study_uid"]
        for s in demo.patient(demo.multi)["studies"]
        if (day := _study_day(s)) and _day_matches(prefix or "eq", value, day)
    }
    assert set(match_ids(bundle)) == expected


def test_imaging_study_search_started_repeated_is_a_range(client, demo):
    studies = sorted(demo.patient(demo.multi)["studies"], key=lambda s: s["study_date"])
    low, high = _known_study_day(studies[1]), _known_study_day(studies[-2])
    bundle = search(
        client,
        "ImagingStudy",
        [("patient", demo.multi), ("started", f"ge{low.isoformat()}"), ("started", f"le{high.isoformat()}")],
    )
    assert set(match_ids(bundle)) == {s["study_uid"] for s in studies[1:-1]}


@pytest.mark.parametrize(
    ("prefix", "shift", "included"),
    [
        ("lt", timedelta(minutes=1), True),
        ("lt", timedelta(minutes=-1), False),
        ("gt", timedelta(minutes=-1), True),
        ("gt", timedelta(minutes=1), False),
    ],
)
def test_imaging_study_search_started_instant_in_utc(client, demo, prefix, shift, included):
    # The study time is local (Europe/London) or has its own offset; the search value is UTC.
    _, study = demo.study(demo.facts["shared_study"]["study_uid"])
    local = datetime.strptime(study["study_date"] + study["study_time"][:6], "%Y%m%d%H%M%S")
    zone = LONDON if not study["timezone_offset"] else datetime.strptime(study["timezone_offset"], "%z").tzinfo
    when = (local.replace(tzinfo=zone) + shift).astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("started", f"{prefix}{when}")])
    assert (study["study_uid"] in match_ids(bundle)) is included


@pytest.mark.parametrize(
    "issue",
    [
        "partial_time_hour",
        "partial_time_minute",
        "missing_description_and_time",
        "empty_accession",
        "multi_valued_referrer",
        "no_body_part",
    ],
)
def test_imaging_study_search_started_finds_odd_data_study(client, demo, issue):
    uid = demo.facts["odd_data_by_issue"][issue]
    patient, study = demo.study(uid)
    day = _known_study_day(study).isoformat()
    bundle = search(client, "ImagingStudy", [("patient", patient["nhs_number"]), ("started", day)])
    assert uid in match_ids(bundle)
    assert next(s for s in matches(bundle) if s["id"] == uid)["started"].startswith(day)


def test_imaging_study_invalid_study_date_is_returned_without_started(client, demo):
    uid = demo.facts["odd_data_by_issue"]["invalid_study_date"]
    patient, _ = demo.study(uid)
    study = get(client, f"ImagingStudy/{uid}").get_json()
    assert study["id"] == uid and "started" not in study
    dated = search(client, "ImagingStudy", [("patient", patient["nhs_number"]), ("started", "ge1900")])
    assert uid not in match_ids(dated)


# ----------------------------------------------------------------------------- other criteria


@pytest.mark.parametrize("value", ["MR", f"{DCM}|MR", "MR,US", f"{DCM}|MR,{DCM}|US"])
def test_imaging_study_search_by_modality(client, demo, value):
    wanted = {v.split("|")[-1] for v in value.split(",")}
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("modality", value)])
    expected = {s["study_uid"] for s in demo.patient(demo.multi)["studies"] if wanted & set(s["modalities"])}
    assert expected and set(match_ids(bundle)) == expected


@pytest.mark.parametrize("with_patient", [False, True], ids=["alone", "with patient"])
@pytest.mark.parametrize("level", ["series", "instance"])
def test_imaging_study_search_by_series_or_instance(client, demo, level, with_patient):
    study = _study_of(demo, "mft")
    series_uid, sops = sorted(demo.disk(study["study_uid"]).series.items())[-1]
    value = series_uid if level == "series" else sorted(sops)[0]
    pairs = [(level, value)] + ([("patient", demo.multi)] if with_patient else [])
    bundle = search(client, "ImagingStudy", pairs)
    assert match_ids(bundle) == [study["study_uid"]]


def test_imaging_study_search_by_extra_series_of_shared_study(client, demo):
    shared = demo.facts["shared_study"]
    bundle = search(client, "ImagingStudy", [("series", shared["extra_series_uid"])])
    assert match_ids(bundle) == [shared["study_uid"]]


@pytest.mark.parametrize("form", ["bare", "urn:oid", "system"])
def test_imaging_study_search_by_dicom_class(client, demo, form):
    sop_class = sorted(demo.disk(_study_of(demo, "mft")["study_uid"]).sop_classes)[0]
    value = {"bare": sop_class, "urn:oid": f"urn:oid:{sop_class}", "system": f"urn:ietf:rfc:3986|urn:oid:{sop_class}"}[
        form
    ]
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("dicom-class", value)])
    expected = {
        s["study_uid"]
        for s in demo.patient(demo.multi)["studies"]
        if sop_class in demo.disk(s["study_uid"]).sop_classes
    }
    assert expected and set(match_ids(bundle)) == expected


@pytest.mark.parametrize("with_system", [True, False], ids=["system", "bare"])
def test_imaging_study_search_by_bodysite(client, demo, with_system):
    part = sorted(demo.disk(_study_of(demo, "mft")["study_uid"]).body_parts)[0]
    code = BODY_SITES[part]["code"]
    bundle = search(
        client, "ImagingStudy", [("patient", demo.multi), ("bodysite", f"{SNOMED}|{code}" if with_system else code)]
    )
    expected = {
        s["study_uid"]
        for s in demo.patient(demo.multi)["studies"]
        if any(BODY_SITES.get(p, {}).get("code") == code for p in demo.disk(s["study_uid"]).body_parts)
    }
    assert expected and set(match_ids(bundle)) == expected


@pytest.mark.parametrize("trust", ["bolton", "christie", "mft", "stockport"])
def test_imaging_study_search_by_endpoint(client, demo, trust):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("endpoint", f"Endpoint/{trust}-wado-rs")])
    expected = {s["study_uid"] for s in demo.patient(demo.multi)["studies"] if trust in s["trusts"]}
    assert expected and set(match_ids(bundle)) == expected


@pytest.mark.parametrize(
    ("value", "finds"),
    [("available", True), ("available,cancelled", True), ("cancelled", False), ("registered", False)],
)
def test_imaging_study_search_by_status(client, demo, value, finds):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("status", value)])
    assert set(match_ids(bundle)) == (demo.uids(demo.multi) if finds else set())
    assert all(s["status"] == "available" for s in matches(bundle))


def test_imaging_study_search_post_form_body(client, demo):
    response = client.post(
        "/fhir/ImagingStudy/_search",
        data={"patient": demo.multi, "_count": "200"},
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.get_json()
    assert sorted(match_ids(response.get_json())) == sorted(demo.uids(demo.multi))


# ----------------------------------------------------------------------------- bundles, paging


def test_imaging_study_search_bundle_shape(client, demo):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("modality", "MR"), ("x-unknown", "1")])
    assert bundle["type"] == "searchset"
    assert bundle["total"] == len(entries(bundle)) > 0
    for entry in entries(bundle):
        assert entry["fullUrl"] == f"{BASE_URL}/ImagingStudy/{entry['resource']['id']}"
    self_url = link_url(bundle, "self")
    assert self_url.startswith(f"{BASE_URL}/ImagingStudy?")
    assert sorted(parse_qsl(urlsplit(self_url).query)) == sorted([("patient", demo.multi), ("modality", "MR")])


def test_imaging_study_search_count_capped_at_max(client, demo, settings):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("_count", "100000")])
    assert ("_count", str(settings.max_count)) in parse_qsl(urlsplit(link_url(bundle, "self")).query)
    assert sorted(match_ids(bundle)) == sorted(demo.uids(demo.multi))


def test_imaging_study_search_post_strict_unknown_parameter_is_400(client, demo):
    response = client.post(
        "/fhir/ImagingStudy/_search", data={"patient": demo.multi, "foo": "bar"}, headers={"Prefer": "handling=strict"}
    )
    assert "foo" in assert_outcome(response, 400, "invalid")["diagnostics"]


def test_imaging_study_search_unknown_parameter_ignored(client, demo):
    plain = search(client, "ImagingStudy", [("patient", demo.multi)])
    extra = search(client, "ImagingStudy", [("patient", demo.multi), ("_lastUpdated", "gt2020"), ("foo", "bar")])
    assert match_ids(extra) == match_ids(plain)
    assert link(extra, "self") == link(plain, "self")


def test_imaging_study_search_unknown_parameter_strict_is_400(client, demo):
    response = get(
        client, "ImagingStudy", [("patient", demo.multi), ("foo", "bar")], headers={"Prefer": "handling=strict"}
    )
    assert "foo" in assert_outcome(response, 400)["diagnostics"]


def test_imaging_study_search_outcome_entry_for_odd_data(client, demo):
    uid = demo.facts["odd_data_by_issue"]["invalid_study_date"]
    patient, _ = demo.study(uid)
    bundle = search(client, "ImagingStudy", [("patient", patient["nhs_number"])])
    assert uid in match_ids(bundle)
    outcomes = entries(bundle, "outcome")
    assert len(outcomes) == 1
    assert outcomes[0]["resource"]["resourceType"] == "OperationOutcome"
    assert outcomes[0]["fullUrl"].startswith("urn:uuid:")
    assert any(uid in i.get("diagnostics", "") for i in outcomes[0]["resource"]["issue"])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_imaging_study_search_paging_covers_result_once(client, demo, count):
    full = search(client, "ImagingStudy", [("patient", demo.multi), ("_count", "200")])
    pages = all_pages(client, search(client, "ImagingStudy", [("patient", demo.multi), ("_count", str(count))]))
    paged = [i for page in pages for i in match_ids(page)]
    assert paged == match_ids(full)
    assert len(paged) == len(set(paged))
    assert len(pages) == -(-len(paged) // count)
    assert all(len(match_ids(page)) <= count for page in pages)
    assert all(page["total"] == len(paged) for page in pages)


def test_imaging_study_search_previous_link_returns_previous_page(client, demo):
    first = search(client, "ImagingStudy", [("patient", demo.multi), ("_count", "2")])
    assert link(first, "previous") is None
    second = client.get(local_path(link_url(first, "next"))).get_json()
    back = client.get(local_path(link_url(second, "previous"))).get_json()
    assert match_ids(back) == match_ids(first)
    assert match_ids(second) and set(match_ids(second)).isdisjoint(match_ids(first))


def test_imaging_study_search_paging_is_stable(client, demo):
    runs = [
        [
            i
            for p in all_pages(client, search(client, "ImagingStudy", [("patient", demo.multi), ("_count", "2")]))
            for i in match_ids(p)
        ]
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("tamper", ["body", "signature", "garbage", "other type"])
def test_imaging_study_search_tampered_cursor_is_400(client, demo, tamper):
    first = search(client, "ImagingStudy", [("patient", demo.multi), ("_count", "2")])
    cursor = dict(parse_qsl(urlsplit(link_url(first, "next")).query))["_cursor"]
    body, signature = cursor.split(".")
    swap = {"A": "B"}.get(body[5], "A")
    path = "ImagingStudy"
    value = {
        "body": f"{body[:5]}{swap}{body[6:]}.{signature}",
        "signature": f"{body}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        "garbage": "not-a-cursor",
    }.get(tamper, cursor)
    if tamper == "other type":
        path = "Patient"
    assert_outcome(client.get(f"/fhir/{path}?_cursor={quote(value)}"), 400, "invalid")


@pytest.mark.parametrize(("sort", "descending"), [("started", False), ("-started", True)])
def test_imaging_study_search_sort_by_started(client, demo, sort, descending):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("_sort", sort)])
    starts = [started_instant(s["started"]) for s in matches(bundle)]
    assert len(starts) == len(demo.uids(demo.multi))
    assert starts == sorted(starts, reverse=descending)


@pytest.mark.parametrize("include", ["ImagingStudy:patient", "ImagingStudy:subject"])
def test_imaging_study_search_include_patient(client, demo, include):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("_include", include)])
    included = [e["resource"] for e in entries(bundle, "include")]
    assert [(r["resourceType"], r["id"]) for r in included] == [("Patient", demo.multi)]
    assert entries(bundle, "include")[0]["fullUrl"] == f"{BASE_URL}/Patient/{demo.multi}"


@pytest.mark.parametrize("count", ["1", "200"])
def test_imaging_study_search_include_endpoint(client, demo, count):
    bundle = search(
        client, "ImagingStudy", [("patient", demo.multi), ("_include", "ImagingStudy:endpoint"), ("_count", count)]
    )
    included = [e["resource"] for e in entries(bundle, "include")]
    referenced = set().union(*(endpoint_trusts(s) for s in matches(bundle)))
    assert included and all(r["resourceType"] == "Endpoint" for r in included)
    assert sorted(r["id"] for r in included) == sorted(
        [f"{t}-wado-rs" for t in referenced] + [f"{t}-ihe-iid" for t in referenced if t in VIEWER_TRUSTS]
    )
    for entry in entries(bundle, "include"):
        assert entry["fullUrl"] == f"{BASE_URL}/Endpoint/{entry['resource']['id']}"
        code = "ihe-iid" if entry["resource"]["id"].endswith("-ihe-iid") else WADO_RS
        assert entry["resource"]["connectionType"]["code"] == code
    assert ("_include", "ImagingStudy:endpoint") in parse_qsl(urlsplit(link_url(bundle, "self")).query)


@pytest.mark.parametrize(
    "pairs",
    [
        [("_summary", "count")],
        [("_count", "0")],
        [("_summary", "count"), ("_include", "ImagingStudy:endpoint")],
        [("_count", "0"), ("_include", "ImagingStudy:patient")],
    ],
    ids=["_summary=count", "_count=0", "_summary=count with _include", "_count=0 with _include"],
)
def test_imaging_study_search_summary_count(client, demo, pairs):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), *pairs])
    assert bundle["total"] == len(demo.uids(demo.multi))
    assert not entries(bundle) and not entries(bundle, "include")
    assert link(bundle, "next") is None


def test_imaging_study_search_elements_subsets(client, demo):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("_elements", "modality,started")])
    studies = matches(bundle)
    assert len(studies) == len(demo.uids(demo.multi))
    for study in studies:
        assert set(study) == {"resourceType", "id", "meta", "modality", "started", "status", "subject"}
        assert {(t["system"], t["code"]) for t in study["meta"]["tag"]} == {
            ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")
        }


# ----------------------------------------------------------------------------- reads


def test_imaging_study_read_returns_study_with_instances(client, demo):
    shared = demo.facts["shared_study"]
    response = get(client, f"ImagingStudy/{shared['study_uid']}")
    assert response.status_code == 200
    study = response.get_json()
    assert study["id"] == shared["study_uid"]
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{shared['study_uid']}"} in study["identifier"]
    on_disk = demo.disk(shared["study_uid"]).series
    assert {s["uid"]: {i["uid"] for i in s["instance"]} for s in study["series"]} == on_disk
    assert all(i["sopClass"]["system"] == "urn:ietf:rfc:3986" for s in study["series"] for i in s["instance"])


@pytest.mark.parametrize("study_id", ["2.25.1", "not-a-uid", "1.2.3.", "2.25." + "1" * 70])
def test_imaging_study_read_unknown_is_404(client, study_id):
    assert_outcome(get(client, f"ImagingStudy/{study_id}"), 404, "not-found")


def test_patient_read_returns_demographics(client, demo):
    patient = demo.patient(demo.multi)
    resource = get(client, f"Patient/{demo.multi}").get_json()
    assert resource["id"] == demo.multi
    assert resource["identifier"] == [{"system": NHS, "value": demo.multi}]
    family, given = patient["name"].split("^")[:2]
    assert resource["name"][0]["family"].casefold() == family.casefold()
    assert [g.casefold() for g in resource["name"][0]["given"]][:1] == [given.casefold()]
    assert resource["gender"] == {"M": "male", "F": "female", "O": "other"}[patient["sex"]]
    assert resource["birthDate"] == datetime.strptime(patient["birth_date"], "%Y%m%d").date().isoformat()


def test_patient_read_demographic_conflict_gives_canonical_birth_date(client, demo):
    conflict = demo.facts["demographic_conflict"]
    resource = get(client, f"Patient/{conflict['nhs_number']}").get_json()
    expected = datetime.strptime(conflict["canonical_birth_date"], "%Y%m%d").date().isoformat()
    assert resource["birthDate"] == expected


def test_patient_read_unknown_nhs_number_is_404(client, demo):
    assert_outcome(get(client, f"Patient/{demo.unknown_nhs_number()}"), 404, "not-found")


@pytest.mark.parametrize("patient_id", ["9434765918", "123", "abc"])
def test_patient_read_invalid_nhs_number_is_refused(client, patient_id):
    response = get(client, f"Patient/{patient_id}")
    assert response.status_code in (400, 404)
    assert_outcome(response, response.status_code)


@pytest.mark.parametrize("parameter", ["_id", "identifier", "identifier with system"])
def test_patient_search_finds_patient(client, demo, parameter):
    value = f"{NHS}|{demo.multi}" if parameter == "identifier with system" else demo.multi
    bundle = search(client, "Patient", [(parameter.split()[0], value)])
    assert match_ids(bundle) == [demo.multi]
    assert entries(bundle)[0]["fullUrl"] == f"{BASE_URL}/Patient/{demo.multi}"


def test_patient_search_or_and_paging(client, demo):
    first, second = sorted(
        {demo.multi, demo.facts["shared_study"]["nhs_number"], demo.facts["demographic_conflict"]["nhs_number"]}
    )[:2]
    bundle = search(client, "Patient", [("_id", f"{first},{second}"), ("_count", "1")])
    pages = all_pages(client, bundle)
    assert sorted(i for page in pages for i in match_ids(page)) == [first, second]
    assert len(pages) == 2 and bundle["total"] == 2


@pytest.mark.parametrize("index", [0, 1, 2])
def test_patient_read_non_ascii_name(client, demo, index):
    patient = demo.facts["non_ascii_patients"][index]
    family, given = patient["name"].split("^")[:2]
    name = get(client, f"Patient/{patient['nhs_number']}").get_json()["name"][0]
    assert name["family"].casefold() == family.casefold()
    assert name["given"][0].casefold() == given.casefold()


def test_patient_search_unknown_nhs_number_is_empty(client, demo):
    bundle = search(client, "Patient", [("identifier", f"{NHS}|{demo.unknown_nhs_number()}")])
    assert bundle["total"] == 0 and not entries(bundle)


TRUST_IDS = ["bolton", "christie", "mft", "stockport", "wwl", "tameside", "salford", "pennine"]
VIEWER_TRUSTS = ["mft", "salford"]  # trusts with an ihe-iid viewer in config/demo.yaml


@pytest.mark.parametrize("trust", TRUST_IDS)
def test_endpoint_read_is_wado_rs_of_trust(client, demo, trust):
    endpoint = get(client, f"Endpoint/{trust}-wado-rs").get_json()
    assert endpoint["resourceType"] == "Endpoint" and endpoint["id"] == f"{trust}-wado-rs"
    assert endpoint["connectionType"]["system"] == "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
    assert endpoint["connectionType"]["code"] == WADO_RS
    assert endpoint["managingOrganization"]["reference"] == f"Organization/{demo.ods(trust)}"
    assert endpoint["address"].startswith(("http://", "https://"))


@pytest.mark.parametrize("trust", TRUST_IDS)
def test_organization_read_by_ods_code(client, demo, trust):
    organization = get(client, f"Organization/{demo.ods(trust)}").get_json()
    assert organization["id"] == demo.ods(trust)
    assert {"system": ODS, "value": demo.ods(trust)} in [
        {k: i[k] for k in ("system", "value")} for i in organization["identifier"]
    ]
    assert organization["name"] == next(t["name"] for t in demo.manifest["trusts"] if t["id"] == trust)


@pytest.mark.parametrize(
    ("resource_type", "pairs", "expected"),
    [
        ("Endpoint", [], [f"{t}-wado-rs" for t in TRUST_IDS] + [f"{t}-ihe-iid" for t in VIEWER_TRUSTS]),
        ("Endpoint", [("connection-type", WADO_RS)], [f"{t}-wado-rs" for t in TRUST_IDS]),
        (
            "Endpoint",
            [("connection-type", f"http://terminology.hl7.org/CodeSystem/endpoint-connection-type|{WADO_RS}")],
            [f"{t}-wado-rs" for t in TRUST_IDS],
        ),
        ("Endpoint", [("connection-type", "ihe-iid")], [f"{t}-ihe-iid" for t in VIEWER_TRUSTS]),
        ("Endpoint", [("connection-type", "dicom-qido-rs")], []),
        ("Endpoint", [("organization", "Organization/RMC")], ["bolton-wado-rs"]),
        ("Endpoint", [("_id", "mft-wado-rs")], ["mft-wado-rs"]),
        ("Organization", [], ["RMC", "RBV", "R0A", "RWJ", "RRF", "RMP", "RM3", "RW6"]),
        ("Organization", [("identifier", f"{ODS}|RBV")], ["RBV"]),
        ("Organization", [("identifier", "RWJ")], ["RWJ"]),
        ("Organization", [("_id", "R0A,RM3")], ["R0A", "RM3"]),
        ("Organization", [("name", "northern care")], ["RM3", "RW6"]),
        ("Organization", [("identifier", f"{ODS}|XXX")], []),
    ],
)
def test_directory_search(client, resource_type, pairs, expected):
    bundle = search(client, resource_type, pairs)
    assert sorted(match_ids(bundle)) == sorted(expected)
    assert bundle["total"] == len(expected)
    assert all(e["fullUrl"] == f"{BASE_URL}/{resource_type}/{e['resource']['id']}" for e in entries(bundle))


@pytest.mark.parametrize("resource_type", ["Endpoint", "Organization"])
def test_directory_search_paging(client, resource_type):
    pages = all_pages(client, search(client, resource_type, [("_count", "3")]))
    ids = [i for page in pages for i in match_ids(page)]
    total = len(TRUST_IDS) + (len(VIEWER_TRUSTS) if resource_type == "Endpoint" else 0)
    assert len(pages) == -(-total // 3) and len(ids) == len(set(ids)) == total


# ----------------------------------------------------------------------------- errors

BAD_NHS = "9434765918"  # 9434765919 is valid: the last digit fails the Modulus 11 check

ERROR_CASES = [
    # (id, method, path + query, headers, status, issue code, diagnostics contain)
    ("bad nhs number patient", "GET", f"ImagingStudy?patient={BAD_NHS}", {}, 400, "invalid", "Modulus 11"),
    (
        "bad nhs number identifier",
        "GET",
        f"ImagingStudy?patient.identifier={quote(NHS)}%7C{BAD_NHS}",
        {},
        400,
        "invalid",
        "Modulus 11",
    ),
    (
        "bad nhs number subject",
        "GET",
        f"ImagingStudy?subject:identifier={quote(NHS)}%7C{BAD_NHS}",
        {},
        400,
        "invalid",
        "Modulus 11",
    ),
    ("bad nhs number patient search", "GET", f"Patient?identifier={BAD_NHS}", {}, 400, "invalid", "Modulus 11"),
    ("nine digits", "GET", "ImagingStudy?patient=943476591", {}, 400, "invalid", None),
    ("patient wildcard", "GET", "ImagingStudy?patient=943476591*", {}, 400, "invalid", None),
    ("patient encoded wildcard", "GET", "ImagingStudy?patient=943476591%2A", {}, 400, "invalid", None),
    ("patient question mark", "GET", "ImagingStudy?patient=943476591%3F", {}, 400, "invalid", None),
    ("patient only star", "GET", "ImagingStudy?patient=%2A", {}, 400, "invalid", None),
    (
        "patient identifier wildcard",
        "GET",
        f"ImagingStudy?patient.identifier={quote(NHS)}%7C94347659%2A",
        {},
        400,
        "invalid",
        None,
    ),
    ("patient search wildcard", "GET", "Patient?identifier=943476591%2A", {}, 400, "invalid", None),
    ("accession star", "GET", "ImagingStudy?identifier=RMC*", {}, 400, "invalid", None),
    ("accession encoded star", "GET", "ImagingStudy?identifier=%2A", {}, 400, "invalid", None),
    ("accession question mark", "GET", "ImagingStudy?identifier=RMC%3F123", {}, 400, "invalid", None),
    ("accession backslash", "GET", "ImagingStudy?identifier=RMC%5C123", {}, 400, "invalid", None),
    ("accession percent", "GET", "ImagingStudy?identifier=RMC%25", {}, 400, "invalid", None),
    ("accession newline", "GET", "ImagingStudy?identifier=RMC%0A123", {}, 400, "invalid", None),
    ("accession nul", "GET", "ImagingStudy?identifier=RMC%00123", {}, 400, "invalid", None),
    ("accession tab", "GET", "ImagingStudy?identifier=RMC%09123", {}, 400, "invalid", None),
    (
        "accession with system star",
        "GET",
        f"ImagingStudy?identifier={quote('https://fhir.nhs.uk/RMC/Id/accession-number')}%7CRMC*",
        {},
        400,
        "invalid",
        None,
    ),
    ("of-type star", "GET", f"ImagingStudy?identifier:of-type={quote(ACSN)}%7CRMC*", {}, 400, "invalid", None),
    ("study uid star", "GET", "ImagingStudy?identifier=urn:dicom:uid%7Curn:oid:1.2.*", {}, 400, "invalid", None),
    ("_id star", "GET", "ImagingStudy?_id=2.25.*", {}, 400, "invalid", None),
    ("series star", "GET", "ImagingStudy?series=2.25.*", {}, 400, "invalid", None),
    ("instance question mark", "GET", "ImagingStudy?instance=2.25.1%3F", {}, 400, "invalid", None),
    ("empty alternative", "GET", "ImagingStudy?patient=9434765919,", {}, 400, "invalid", None),
    ("non-patient subject", "GET", "ImagingStudy?subject=Group/1", {}, 400, "invalid", None),
    ("bad date month", "GET", "ImagingStudy?patient=9434765919&started=2019-13", {}, 400, "invalid", None),
    ("bad date day", "GET", "ImagingStudy?patient=9434765919&started=2019-02-30", {}, 400, "invalid", None),
    ("bad date text", "GET", "ImagingStudy?patient=9434765919&started=yesterday", {}, 400, "invalid", None),
    ("bad date prefix", "GET", "ImagingStudy?patient=9434765919&started=xx2019", {}, 400, "invalid", None),
    ("bad date dicom form", "GET", "ImagingStudy?patient=9434765919&started=20190101", {}, 400, "invalid", None),
    ("unknown modality", "GET", "ImagingStudy?patient=9434765919&modality=XX", {}, 400, "invalid", "XX"),
    ("lowercase modality", "GET", "ImagingStudy?patient=9434765919&modality=ct", {}, 400, "invalid", None),
    (
        "modality wrong system",
        "GET",
        f"ImagingStudy?patient=9434765919&modality={quote(SNOMED)}%7CCT",
        {},
        400,
        "invalid",
        None,
    ),
    ("bodysite not snomed", "GET", "ImagingStudy?patient=9434765919&bodysite=CHEST", {}, 400, "invalid", None),
    ("bad status", "GET", "ImagingStudy?patient=9434765919&status=done", {}, 400, "invalid", None),
    ("bad endpoint", "GET", "ImagingStudy?patient=9434765919&endpoint=Organization/RMC", {}, 400, "invalid", None),
    ("bad _count", "GET", "ImagingStudy?patient=9434765919&_count=-1", {}, 400, "invalid", None),
    ("bad _sort", "GET", "ImagingStudy?patient=9434765919&_sort=modality", {}, 400, "invalid", None),
    ("bad _include", "GET", "ImagingStudy?patient=9434765919&_include=ImagingStudy:basedon", {}, 400, "invalid", None),
    ("bad _elements", "GET", "ImagingStudy?patient=9434765919&_elements=foo", {}, 400, "invalid", None),
    ("no criterion", "GET", "ImagingStudy", {}, 400, "too-costly", None),
    ("modality only", "GET", "ImagingStudy?modality=CT", {}, 400, "too-costly", None),
    ("date only", "GET", "ImagingStudy?started=ge2019", {}, 400, "too-costly", None),
    ("status only", "GET", "ImagingStudy?status=available", {}, 400, "too-costly", None),
    ("unknown parameter only", "GET", "ImagingStudy?foo=bar", {}, 400, "too-costly", None),
    ("patient search without criterion", "GET", "Patient", {}, 400, "invalid", None),
    (
        "strict unknown parameter",
        "GET",
        "ImagingStudy?patient=9434765919&foo=bar",
        {"Prefer": "handling=strict"},
        400,
        "invalid",
        "foo",
    ),
    (
        "strict unknown patient parameter",
        "GET",
        "Patient?_id=9434765919&name=x",
        {"Prefer": "handling=strict"},
        400,
        "invalid",
        "name",
    ),
    (
        "strict unknown endpoint parameter",
        "GET",
        "Endpoint?foo=bar",
        {"Prefer": "handling=strict"},
        400,
        "invalid",
        "foo",
    ),
    ("unknown resource type", "GET", "Observation", {}, 404, "not-found", None),
    ("unknown resource type read", "GET", "Observation/1", {}, 404, "not-found", None),
    ("unknown endpoint", "GET", "Endpoint/nowhere-wado-rs", {}, 404, "not-found", None),
    ("unknown organization", "GET", "Organization/XXX", {}, 404, "not-found", None),
    ("post search type", "POST", "ImagingStudy", {}, 405, "not-supported", None),
    ("put imaging study", "PUT", "ImagingStudy/2.25.1", {}, 405, "not-supported", None),
    ("delete imaging study", "DELETE", "ImagingStudy/2.25.1", {}, 405, "not-supported", None),
    ("patch imaging study", "PATCH", "ImagingStudy/2.25.1", {}, 405, "not-supported", None),
    ("post patient", "POST", "Patient", {}, 405, "not-supported", None),
    ("put patient", "PUT", "Patient/9434765919", {}, 405, "not-supported", None),
    ("delete endpoint", "DELETE", "Endpoint/bolton-wado-rs", {}, 405, "not-supported", None),
    ("put organization", "PUT", "Organization/RMC", {}, 405, "not-supported", None),
    ("_format xml", "GET", "metadata?_format=xml", {}, 406, "not-supported", None),
    (
        "_format fhir xml",
        "GET",
        "ImagingStudy?patient=9434765919&_format=application/fhir%2Bxml",
        {},
        406,
        "not-supported",
        None,
    ),
    ("accept fhir xml", "GET", "metadata", {"Accept": "application/fhir+xml"}, 406, "not-supported", None),
    (
        "accept xml on search",
        "GET",
        "ImagingStudy?patient=9434765919",
        {"Accept": "application/xml"},
        406,
        "not-supported",
        None,
    ),
    ("accept xml on read", "GET", "Patient/9434765919", {"Accept": "application/fhir+xml"}, 406, "not-supported", None),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code", "text"),
    [c[1:] for c in ERROR_CASES],
    ids=[c[0] for c in ERROR_CASES],
)
def test_api_error_is_operation_outcome(client, method, path, headers, status, code, text):
    response = client.open(f"/fhir/{path}", method=method, headers=headers)
    assert_outcome(response, status, code, text)


@pytest.mark.parametrize(
    "accept", ["application/fhir+json", "application/json", "*/*", "application/fhir+xml;q=0.9, application/fhir+json"]
)
def test_api_accepts_json_media_types(client, accept):
    assert get(client, "metadata", headers={"Accept": accept}).status_code == 200


@pytest.mark.parametrize("value", ["json", "application/json", "application/fhir+json"])
def test_api_format_json_accepted(client, demo, value):
    bundle = search(client, "ImagingStudy", [("patient", demo.multi), ("_format", value)])
    assert sorted(match_ids(bundle)) == sorted(demo.uids(demo.multi))


def test_capability_statement_lists_elements_where_it_works(client):
    """C2: every search offers _elements (FHIR R4: any root element), and the CapabilityStatement says so;
    the answer keeps the asked-for and mandatory elements, tagged SUBSETTED."""
    statement = client.get("/fhir/metadata").get_json()
    params = {r["type"]: {p["name"] for p in r.get("searchParam", ())} for r in statement["rest"][0]["resource"]}
    for kind in ("ImagingStudy", "Patient", "Endpoint", "Organization", "AuditEvent"):
        assert "_elements" in params[kind], kind
    for kind, element in (("Endpoint", "name"), ("Organization", "name"), ("Endpoint", "id"), ("Organization", "meta")):
        response = client.get(f"/fhir/{kind}?_elements={element}")
        assert response.status_code == 200, response.get_json()
        found = [e["resource"] for e in response.get_json()["entry"]]
        assert found and all(r["meta"]["tag"][-1]["code"] == "SUBSETTED" for r in found)
        assert all(
            set(r) <= {"resourceType", "id", "meta", element, "status", "connectionType", "payloadType", "address"}
            for r in found
        )
    audit = client.get("/fhir/AuditEvent?_elements=outcome&_count=2")
    assert audit.status_code == 200, audit.get_json()
    assert all(
        set(e["resource"]) <= {"resourceType", "id", "meta", "outcome", "type", "recorded", "agent", "source"}
        for e in audit.get_json().get("entry", ())
    )


def test_fhir_user_of_a_token_can_be_read(app, client):
    """The id_token's fhirUser (Practitioner/dr-khan) is a resource a SMART app can read."""
    from smart_tokens import patient_token

    user_token = {"Authorization": f"Bearer {patient_token(app, '9992975962', 'launch/patient patient/*.rs')}"}
    practitioner = client.get("/fhir/Practitioner/dr-khan", headers=user_token).get_json()
    assert practitioner["resourceType"] == "Practitioner" and practitioner["name"] == [{"text": "Dr Aisha Khan"}]
    assert client.get("/fhir/Practitioner/dr-khan").status_code == 200  # a system token too
    assert client.get("/fhir/Practitioner/nobody").status_code == 404
    assert client.get("/fhir/Practitioner/dr-khan", headers={"Authorization": ""}).status_code == 401
    statement = client.get("/fhir/metadata").get_json()
    assert {"type": "Practitioner", "interaction": [{"code": "read"}]}.items() <= next(
        r for r in statement["rest"][0]["resource"] if r["type"] == "Practitioner"
    ).items()
