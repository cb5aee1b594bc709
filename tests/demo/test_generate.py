"""The demo dataset generator: every fact the manifest states must be true in the files.

The dataset is the suite's (tests/demo_dataset.py: generated once per generator version) and
every file is read back with pydicom (bulk pixel data on demand); the tests compare what the files
say against the manifest, the cross-reference file and independent expectations (SOP Class UIDs
written out in full, an independent Modulus 11 check, image sizes a viewer expects, tissue values
in Hounsfield units, a plausible ECG). One test generates the dataset afresh to check that the
same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import itertools
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `import app` wherever pytest is started from
    sys.path.insert(0, str(ROOT))

from demo_dataset import demo_dataset  # noqa: E402

from app.core.identity import is_nhs_number  # noqa: E402
from tools.demo import generate as generator  # noqa: E402
from tools.demo.generate import GENERATOR_VERSION, TRUSTS, ensure_demo_data, generate  # noqa: E402
from tools.demo.reports import PDF_REPORTS, report_state, report_text  # noqa: E402

# Written out in full rather than taken from pydicom, so a wrong constant name is caught.
EXPECTED_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "RF": "1.2.840.10008.5.1.4.1.1.12.2",
    "ES": "1.2.840.10008.5.1.4.1.1.77.1.1",
    "XC": "1.2.840.10008.5.1.4.1.1.77.1.4",
    "GM": "1.2.840.10008.5.1.4.1.1.77.1.2",
    "SM": "1.2.840.10008.5.1.4.1.1.77.1.6",
    "OP": "1.2.840.10008.5.1.4.1.1.77.1.5.1",
    "OPT": "1.2.840.10008.5.1.4.1.1.77.1.5.4",
    "ECG": "1.2.840.10008.5.1.4.1.1.9.1.1",
    "HD": "1.2.840.10008.5.1.4.1.1.9.2.1",
    "SR": "1.2.840.10008.5.1.4.1.1.88.33",
    "DOC": "1.2.840.10008.5.1.4.1.1.104.1",
    "KO": "1.2.840.10008.5.1.4.1.1.88.59",
    "PR": "1.2.840.10008.5.1.4.1.1.11.1",
    "SEG": "1.2.840.10008.5.1.4.1.1.66.4",
}
EXPECTED_TRUSTS = {
    "bolton": ("RMC", "nhs"),
    "christie": ("RBV", "xref"),
    "mft": ("R0A", "nhs"),
    "stockport": ("RWJ", "xref"),
    "wwl": ("RRF", "nhs"),
    "tameside": ("RMP", "xref"),
    "salford": ("RM3", "nhs"),
    "pennine": ("RW6", "nhs"),
}
# The PS3.16 Annex L terms the generator may use (all checked against Annex L).
ANNEX_L_TERMS = {
    "ABDOMEN",
    "BACK",
    "BREAST",
    "CHEST",
    "CHESTABDPELVIS",
    "COLON",
    "ESOPHAGUS",
    "EYE",
    "FOOT",
    "HEAD",
    "HEART",
    "HIP",
    "KNEE",
    "LSPINE",
    "PROSTATE",
    "STOMACH",
    "WHOLEBODY",
}
IMAGE_MODALITIES = set(EXPECTED_SOP_CLASS) - {"ECG", "HD", "SR", "DOC", "KO", "PR", "SEG"}
NHS_OID = "2.16.840.1.113883.2.1.4.1"


def mod11_ok(number: str) -> bool:
    """Independent NHS number check: weights 10..2, check = 11 - sum % 11, 11 -> 0, 10 invalid."""
    if len(number) != 10 or not number.isdigit():
        return False
    check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(number[:9])) % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(number[9])


@dataclass(frozen=True)
class Record:
    trust: str
    path: Path
    ds: Dataset


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return demo_dataset()


@pytest.fixture(scope="session")
def manifest(demo_dir: Path) -> dict[str, Any]:
    return json.loads((demo_dir / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def facts(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["facts"]


@pytest.fixture(scope="session")
def records(demo_dir: Path) -> list[Record]:
    # Values over 64 KiB (pixel data) are read when a test asks for them, not held for the session.
    return [
        Record(path.relative_to(demo_dir).parts[0], path, pydicom.dcmread(path, defer_size="64 KB"))
        for path in sorted(demo_dir.glob("*/*/*/*.dcm"))
    ]


@pytest.fixture(scope="session")
def by_study(records: list[Record]) -> dict[str, list[Record]]:
    index: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        index[record.ds.StudyInstanceUID].append(record)
    return index


@pytest.fixture(scope="session")
def studies(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["study_uid"]: s for p in manifest["patients"] for s in p["studies"]}


@pytest.fixture(scope="session")
def xref_rows(demo_dir: Path) -> list[dict[str, str]]:
    with (demo_dir / "xref.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def walk(ds: Dataset) -> Iterator[Any]:
    """Every element value, sequences included (forces pydicom to decode each one); bulk pixel
    data is bytes, nothing to decode, and is left on disk."""
    for element in ds:
        if element.tag == 0x7FE00010:
            continue
        if element.VR == "SQ":
            for item in element.value:
                yield from walk(item)
        else:
            yield element.value


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- shape


def test_trusts_constant_matches_the_brief() -> None:
    assert {t.id: (t.ods_code, t.identity) for t in TRUSTS} == EXPECTED_TRUSTS
    assert all(t.name.endswith(("Trust", "(Salford Royal)", "(Pennine Acute)")) for t in TRUSTS)
    with pytest.raises(FrozenInstanceError):
        TRUSTS[0].id = "x"  # type: ignore[misc]


def test_at_least_sixty_patients_with_unique_nhs_numbers(manifest: dict[str, Any]) -> None:
    numbers = [p["nhs_number"] for p in manifest["patients"]]
    assert len(numbers) >= 60
    assert len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("trust", sorted(EXPECTED_TRUSTS))
def test_every_trust_has_data(demo_dir: Path, trust: str) -> None:
    assert any((demo_dir / trust).glob("*/*/*.dcm"))


def test_counts_in_manifest_match_disk(demo_dir: Path, manifest: dict[str, Any], records: list[Record]) -> None:
    counts = manifest["counts"]
    assert counts["files"] == len(records)
    assert counts["bytes"] == sum(r.path.stat().st_size for r in records)
    assert counts["patients"] == len(manifest["patients"])
    assert counts["studies"] == sum(len(p["studies"]) for p in manifest["patients"])


def test_studies_per_patient_and_trusts_per_patient(manifest: dict[str, Any]) -> None:
    per_patient = [len(p["studies"]) for p in manifest["patients"]]
    assert min(per_patient) >= 4 and max(per_patient) <= 6
    spread = [len(p["trusts"]) for p in manifest["patients"]]
    assert sum(2 <= n <= 4 for n in spread) / len(spread) >= 0.8  # most in 2-4 trusts


def test_exactly_one_patient_of_sex_other(manifest: dict[str, Any], facts: dict[str, Any]) -> None:
    others = [p["nhs_number"] for p in manifest["patients"] if p["sex"] == "O"]
    assert others == [facts["sex_other_patient"]]
    assert {p["sex"] for p in manifest["patients"]} == {"M", "F", "O"}


# --------------------------------------------------------------------------- NHS numbers


@pytest.mark.parametrize(
    ("number", "valid"),
    [("9434765919", True), ("9434765918", False), ("4010232137", True), ("943476591", False), ("94347659AB", False)],
)
def test_mod11_reference_cases(number: str, valid: bool) -> None:
    assert mod11_ok(number) is valid
    assert is_nhs_number(number) is valid


def test_every_nhs_number_passes_modulus_11_and_is_in_the_test_range(
    manifest: dict[str, Any], xref_rows: list[dict[str, str]], records: list[Record]
) -> None:
    numbers = {p["nhs_number"] for p in manifest["patients"]}
    numbers |= {row["nhs_number"] for row in xref_rows}
    for record in records:
        if record.ds.get("IssuerOfPatientID") == "NHS":
            numbers.add(record.ds.PatientID)
        numbers |= {item.PatientID for item in record.ds.get("OtherPatientIDsSequence", [])}
    assert numbers
    for number in numbers:
        assert mod11_ok(number), number
        assert number.startswith("999"), number


# --------------------------------------------------------------------------- files


def test_every_file_is_part10_explicit_vr_little_endian(records: list[Record]) -> None:
    for record in records:
        with record.path.open("rb") as handle:
            assert handle.read(132)[128:] == b"DICM"
        meta = record.ds.file_meta
        assert meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert meta.MediaStorageSOPClassUID == record.ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == record.ds.SOPInstanceUID
        list(walk(record.ds))  # every element decodes


def test_assembled_files_equal_what_pydicom_itself_writes(records: list[Record]) -> None:
    """The generator assembles files from pre-encoded layers; pydicom must agree byte for byte."""
    sample: dict[str, Record] = {}
    for record in records:
        sample.setdefault(f"{record.ds.Modality}/{record.ds.get('SpecificCharacterSet')}", record)
    assert len(sample) > len(EXPECTED_SOP_CLASS)
    for record in sample.values():
        ds = pydicom.dcmread(record.path)
        list(walk(ds))  # turn every raw element into a decoded one, so all are re-encoded
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert buffer.getvalue() == record.path.read_bytes(), record.path


def test_paths_follow_trust_study_series_instance(demo_dir: Path, records: list[Record]) -> None:
    for record in records:
        trust, study, series, name = record.path.relative_to(demo_dir).parts
        assert trust in EXPECTED_TRUSTS
        assert (study, series, name) == (
            record.ds.StudyInstanceUID,
            record.ds.SeriesInstanceUID,
            f"{record.ds.SOPInstanceUID}.dcm",
        )


def test_uids_are_valid_and_instance_uids_unique_per_archive(records: list[Record]) -> None:
    seen: set[tuple[str, str]] = set()
    for record in records:
        ds = record.ds
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid.is_valid, uid
        key = (record.trust, ds.SOPInstanceUID)
        assert key not in seen
        seen.add(key)


def test_manifest_studies_match_the_files(
    studies: dict[str, dict[str, Any]], by_study: dict[str, list[Record]]
) -> None:
    assert set(studies) == set(by_study)
    for uid, study in studies.items():
        files = by_study[uid]
        assert sorted({r.trust for r in files}) == sorted(study["trusts"])
        assert sorted({r.ds.Modality for r in files}) == study["modalities"]
        assert len({r.ds.SeriesInstanceUID for r in files}) == study["number_of_series"]
        assert len({r.ds.SOPInstanceUID for r in files}) == study["number_of_instances"]
        for trust, held in study["holdings"].items():
            mine = [r for r in files if r.trust == trust]
            assert len({r.ds.SeriesInstanceUID for r in mine}) == held["series"]
            assert len(mine) == held["instances"]
            assert 1 <= held["series"] <= 4
        for record in files:
            ds = record.ds
            assert ds.AccessionNumber == study["accession"]
            assert ds.StudyDate == study["study_date"]
            assert ds.get("StudyTime") == study["study_time"]
            assert ds.get("StudyDescription") == study["description"]
            assert ds.get("TimezoneOffsetFromUTC") == study["timezone_offset"]


def test_series_hold_few_instances_and_full_size_stacks_several_slices(
    records: list[Record], facts: dict[str, Any]
) -> None:
    """Few instances per series (the catalogue's 1-3), except the cross-sectional series of the
    full-size studies: stacks of 8-12 slices a viewer can scroll through (a CT scout stays one image)."""
    full = set(facts["full_size_studies"])
    per_series: dict[tuple[str, str], list[Dataset]] = defaultdict(list)
    for record in records:
        per_series[(record.trust, record.ds.SeriesInstanceUID)].append(record.ds)
    stacks = 0
    for files in per_series.values():
        ds = files[0]
        localizer = "LOCALIZER" in ds.get("ImageType", [])
        if ds.StudyInstanceUID in full and ds.Modality in {"CT", "MR", "PT"} and not localizer:
            assert 8 <= len(files) <= 12, (ds.Modality, ds.SeriesDescription, len(files))
            stacks += 1
        else:
            assert 1 <= len(files) <= 3, (ds.Modality, ds.SeriesDescription, len(files))
    assert stacks >= 8


def test_study_dates_are_2015_to_2026(studies: dict[str, dict[str, Any]], facts: dict[str, Any]) -> None:
    invalid = facts["odd_data_by_issue"]["invalid_study_date"]
    for uid, study in studies.items():
        if uid != invalid:
            assert "20150101" <= study["study_date"] <= "20261231"


def test_patient_attributes_match_manifest(manifest: dict[str, Any], records: list[Record]) -> None:
    patients = {p["nhs_number"]: p for p in manifest["patients"]}
    conflict = manifest["facts"]["demographic_conflict"]
    for record in records:
        ds = record.ds
        nhs = ds.PatientID if ds.IssuerOfPatientID == "NHS" else ds.OtherPatientIDsSequence[0].PatientID
        patient = patients[nhs]
        assert ds.PatientSex == patient["sex"]
        assert str(ds.PatientName).casefold() == patient["name"].casefold()
        if nhs != conflict["nhs_number"]:
            assert ds.PatientBirthDate == patient["birth_date"]


# --------------------------------------------------------------------------- identity


def test_identity_style_per_trust(manifest: dict[str, Any], records: list[Record]) -> None:
    ods = {t["id"]: t["ods_code"] for t in manifest["trusts"]}
    local_ids = {(p["nhs_number"], t): local for p in manifest["patients"] for t, local in p["local_ids"].items()}
    for record in records:
        ds = record.ds
        if EXPECTED_TRUSTS[record.trust][1] == "nhs":
            assert ds.IssuerOfPatientID == "NHS"
            assert mod11_ok(ds.PatientID)
            qualifier = ds.IssuerOfPatientIDQualifiersSequence[0]
            assert (qualifier.UniversalEntityID, qualifier.UniversalEntityIDType) == (NHS_OID, "ISO")
            assert "OtherPatientIDsSequence" not in ds
        else:
            assert ds.IssuerOfPatientID == ods[record.trust]
            assert ds.PatientID.startswith(ods[record.trust]) and not mod11_ok(ds.PatientID)
            (other,) = ds.OtherPatientIDsSequence
            assert (other.IssuerOfPatientID, other.TypeOfPatientID) == ("NHS", "TEXT")
            assert local_ids[(other.PatientID, record.trust)] == ds.PatientID


def test_xref_csv_header_and_rows_map_to_patient_ids_that_exist(
    demo_dir: Path, xref_rows: list[dict[str, str]], records: list[Record]
) -> None:
    header = (demo_dir / "xref.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "nhs_number,trust,local_patient_id,issuer"
    in_files = {
        (r.ds.OtherPatientIDsSequence[0].PatientID, r.trust): (r.ds.PatientID, r.ds.IssuerOfPatientID)
        for r in records
        if "OtherPatientIDsSequence" in r.ds
    }
    rows = {(row["nhs_number"], row["trust"]): (row["local_patient_id"], row["issuer"]) for row in xref_rows}
    assert len(rows) == len(xref_rows)  # no duplicate (nhs, trust)
    assert rows == in_files  # every row is used, every xref-style patient has a row
    for _, trust in rows:
        assert EXPECTED_TRUSTS[trust][1] == "xref"


# --------------------------------------------------------------------------- special cases


def test_shared_study_is_in_both_archives_with_one_extra_series(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    shared = facts["shared_study"]
    files = by_study[shared["study_uid"]]
    assert sorted({r.trust for r in files}) == sorted(shared["trusts"]) == ["bolton", "christie"]
    series = {t: {r.ds.SeriesInstanceUID for r in files if r.trust == t} for t in shared["trusts"]}
    instances = {t: {r.ds.SOPInstanceUID for r in files if r.trust == t} for t in shared["trusts"]}
    assert series["christie"] - series["bolton"] == {shared["extra_series_uid"]}
    assert series["bolton"] < series["christie"]
    assert instances["bolton"] < instances["christie"]
    # The copy keeps the source's accession, but identifies the patient the receiving trust's way.
    assert len({r.ds.AccessionNumber for r in files}) == 1
    issuers = {r.trust: r.ds.IssuerOfPatientID for r in files}
    assert issuers == {"bolton": "NHS", "christie": "RBV"}


def test_multi_trust_patient_spans_three_archives_and_both_identity_styles(
    facts: dict[str, Any], records: list[Record]
) -> None:
    patient = facts["multi_trust_patient"]
    nhs = patient["nhs_number"]
    held: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for record in records:
        ds = record.ds
        ids = {ds.PatientID} | {o.PatientID for o in ds.get("OtherPatientIDsSequence", [])}
        if nhs in ids:
            held[record.trust].add((ds.PatientID, ds.IssuerOfPatientID))
    assert len(held) >= 3
    assert {EXPECTED_TRUSTS[t][1] for t in held} == {"nhs", "xref"}
    assert set(held) == set(patient["trusts"])
    for trust, expected in patient["trusts"].items():
        assert held[trust] == {(expected["patient_id"], expected["issuer"])}


@pytest.mark.parametrize("modality", sorted(EXPECTED_SOP_CLASS))
def test_specialty_study_has_modality_with_correct_sop_class(
    facts: dict[str, Any], by_study: dict[str, list[Record]], modality: str
) -> None:
    files = [r for r in by_study[facts["specialty_studies"][modality]] if r.ds.Modality == modality]
    assert files
    assert {r.ds.SOPClassUID for r in files} == {EXPECTED_SOP_CLASS[modality]}
    assert generator.SOP_CLASS_BY_MODALITY[modality] == EXPECTED_SOP_CLASS[modality]


def test_every_file_uses_its_modality_sop_class(records: list[Record]) -> None:
    for record in records:
        assert record.ds.SOPClassUID == EXPECTED_SOP_CLASS[record.ds.Modality]


@pytest.mark.parametrize(
    ("modality", "description"),
    [
        ("PT", "PET-CT FDG Half Body"),
        ("ES", "Colonoscopy"),
        ("XC", "Wound photography left foot"),
        ("SM", "Histopathology whole slide"),
        ("ECG", "12-lead ECG"),
        ("XA", "Coronary angiogram"),
        ("MG", "Mammogram bilateral screening"),
        ("NM", "NM Bone Scan Whole Body"),
        ("OPT", "OCT macula"),
        ("OP", "Fundus photography"),
    ],
)
def test_specialty_descriptions(
    facts: dict[str, Any], studies: dict[str, dict[str, Any]], modality: str, description: str
) -> None:
    candidates = [s for s in studies.values() if s["description"] == description]
    assert candidates and all(modality in s["modalities"] for s in candidates)
    if modality == "PT":
        assert {t for s in candidates for t in s["trusts"]} == {"christie"}


def test_non_ascii_names_decode_in_their_character_set(facts: dict[str, Any], records: list[Record]) -> None:
    expected = {
        "Ó'Brien^Zoë": "ISO_IR 192",
        "Nowak^Łucja": "ISO_IR 192",
        "Müller^Renée": "ISO_IR 100",
    }
    assert {p["name"]: p["specific_character_set"] for p in facts["non_ascii_patients"]} == expected
    codec = {"ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1"}
    for entry in facts["non_ascii_patients"]:
        mine = [
            r
            for r in records
            if entry["nhs_number"] in {r.ds.PatientID} | {o.PatientID for o in r.ds.get("OtherPatientIDsSequence", [])}
        ]
        assert mine
        for record in mine:
            assert record.ds.SpecificCharacterSet == entry["specific_character_set"]
            assert str(record.ds.PatientName) == entry["name"]
            raw = record.path.read_bytes()
            assert entry["name"].encode(codec[entry["specific_character_set"]]) in raw


def test_ascii_only_files_may_omit_the_character_set(facts: dict[str, Any], records: list[Record]) -> None:
    for record in records:
        charset = record.ds.get("SpecificCharacterSet")
        if charset is None:
            assert str(record.ds.PatientName).isascii()
        else:
            assert charset in {"ISO_IR 100", "ISO_IR 192"}
    assert facts["charset_by_trust"]["tameside"] is None


def _first(files: list[Record]) -> Dataset:
    return files[0].ds


ODD_CHECKS: dict[str, Callable[[Dataset], bool]] = {
    "invalid_study_date": lambda ds: ds.StudyDate == "20231345",
    "missing_description_and_time": lambda ds: "StudyDescription" not in ds and "StudyTime" not in ds,
    "multi_valued_referrer": lambda ds: ds["ReferringPhysicianName"].VM == 2
    and [str(name) for name in ds.ReferringPhysicianName] == ["Khan^Imran^^Dr", "Evans^Rhiannon^^Dr"],
    "empty_accession": lambda ds: ds.AccessionNumber == "" and "IssuerOfAccessionNumberSequence" not in ds,
    "partial_time_hour": lambda ds: ds.get("StudyTime") == "14",
    "partial_time_minute": lambda ds: ds.get("StudyTime") == "1430",
    "no_body_part": lambda ds: "BodyPartExamined" not in ds,
}


@pytest.mark.parametrize("issue", sorted(ODD_CHECKS))
def test_odd_data_cases_are_in_the_files(
    facts: dict[str, Any], by_study: dict[str, list[Record]], records: list[Record], issue: str
) -> None:
    uid = facts["odd_data_by_issue"][issue]
    assert facts["odd_data_studies"][uid]["issue"] == issue
    files = by_study[uid]
    assert files and all(ODD_CHECKS[issue](r.ds) for r in files)
    # Each oddity is confined to its study (among the radiology files that could have it).
    others = [r for r in records if r.ds.StudyInstanceUID != uid and r.ds.Modality in {"CT", "MR", "CR", "DX"}]
    assert not any(ODD_CHECKS[issue](r.ds) for r in others)


def test_odd_data_studies_are_distinct(facts: dict[str, Any]) -> None:
    assert len(set(facts["odd_data_by_issue"].values())) == len(facts["odd_data_by_issue"]) == 7


def test_operators_name_is_sometimes_multi_valued(records: list[Record]) -> None:
    assert any(r.ds["OperatorsName"].VM == 2 for r in records)


def test_demographic_conflict_birth_dates_differ_between_two_trusts(
    facts: dict[str, Any], records: list[Record]
) -> None:
    conflict = facts["demographic_conflict"]
    assert len(conflict["birth_dates"]) == 2
    assert len(set(conflict["birth_dates"].values())) == 2
    assert conflict["canonical_birth_date"] in conflict["birth_dates"].values()
    seen: dict[str, set[str]] = defaultdict(set)
    for record in records:
        ds = record.ds
        ids = {ds.PatientID} | {o.PatientID for o in ds.get("OtherPatientIDsSequence", [])}
        if conflict["nhs_number"] in ids:
            seen[record.trust].add(ds.PatientBirthDate)
    for trust, birth_date in conflict["birth_dates"].items():
        assert seen[trust] == {birth_date}


# --------------------------------------------------------------------------- clinical content


def test_accession_numbers_are_issued_by_the_acquiring_trust(
    facts: dict[str, Any], studies: dict[str, dict[str, Any]], by_study: dict[str, list[Record]]
) -> None:
    ods = {t: code for t, (code, _) in EXPECTED_TRUSTS.items()}
    empty = facts["odd_data_by_issue"]["empty_accession"]
    for uid, study in studies.items():
        if uid == empty:
            continue
        owner = ods[study["trusts"][0]]
        assert study["accession"].startswith(owner)
        for record in by_study[uid]:
            assert record.ds.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == owner


def test_body_parts_and_laterality_use_defined_terms(records: list[Record]) -> None:
    for record in records:
        ds = record.ds
        if "BodyPartExamined" in ds:
            assert ds.BodyPartExamined in ANNEX_L_TERMS
        if "Laterality" in ds:
            assert ds.Laterality in {"L", "R"}
        if "ImageLaterality" in ds:
            assert ds.ImageLaterality in {"L", "R", "B"}
    lateral = {r.ds.get("ImageLaterality") for r in records}
    assert {"L", "R", "B"} <= lateral


def test_sided_descriptions_agree_with_laterality(by_study: dict[str, list[Record]]) -> None:
    checked = 0
    for files in by_study.values():
        description = files[0].ds.get("StudyDescription", "")
        for side, word in (("L", "Left"), ("R", "Right")):
            if description.endswith(f" {word}"):
                image_sides = {r.ds.Laterality for r in files if r.ds.Modality in IMAGE_MODALITIES}
                assert image_sides == {side}, description
                checked += 1
    assert checked


def test_procedure_codes_use_standard_or_local_schemes(records: list[Record]) -> None:
    schemes = set()
    for record in records:
        (code,) = record.ds.ProcedureCodeSequence
        schemes.add(code.CodingSchemeDesignator)
        assert code.CodeValue and code.CodeMeaning
    assert {"SCT", "LN"} <= schemes
    assert any(s.startswith("99") for s in schemes)


def test_timezone_offsets_follow_uk_summer_time(facts: dict[str, Any], studies: dict[str, dict[str, Any]]) -> None:
    with_offset = [s for s in studies.values() if s["timezone_offset"]]
    assert {s["timezone_offset"] for s in with_offset} == {"+0000", "+0100"}
    for study in with_offset:
        assert study["trusts"][0] in facts["timezone_offset_trusts"]
        date = dt.datetime.strptime(study["study_date"], "%Y%m%d").date()
        if date.month in (6, 7, 8):
            assert study["timezone_offset"] == "+0100"
        if date.month in (12, 1, 2):
            assert study["timezone_offset"] == "+0000"


def test_people_and_places_are_filled_in(records: list[Record]) -> None:
    for record in records:
        ds = record.ds
        for keyword in (
            "ReferringPhysicianName",
            "NameOfPhysiciansReadingStudy",
            "OperatorsName",
            "InstitutionName",
            "InstitutionAddress",
            "InstitutionalDepartmentName",
            "StudyID",
            "SeriesNumber",
            "InstanceNumber",
            "SeriesDate",
            "SeriesTime",
            "SeriesDescription",
            "ReasonForTheRequestedProcedure",
        ):
            assert keyword in ds and str(ds[keyword].value) != "", keyword
    departments = {r.ds.InstitutionalDepartmentName for r in records}
    assert {"Cardiology", "Endoscopy Unit", "Medical Illustration", "Cellular Pathology"} <= departments
    clinicians = [r for r in records if r.ds.InstitutionalDepartmentName == "Cardiology"]
    assert all("PerformingPhysicianName" in r.ds for r in clinicians)


# Image sizes at full size: what a viewer expects of each modality (rows, columns, samples per pixel).
FULL_SIZE: dict[str, Callable[[Dataset], bool]] = {
    "CT": lambda ds: (ds.Rows, ds.Columns, ds.BitsAllocated) == (512, 512, 16),
    "MR": lambda ds: (ds.Rows, ds.Columns) == (256, 256),
    "PT": lambda ds: (ds.Rows, ds.Columns) == (128, 128),
    "CR": lambda ds: min(ds.Rows, ds.Columns) >= 1024,
    "DX": lambda ds: min(ds.Rows, ds.Columns) >= 1024,
    "MG": lambda ds: min(ds.Rows, ds.Columns) >= 800,
    "US": lambda ds: (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (480, 640, 3),
    "ES": lambda ds: ds.Columns >= 1024 and ds.Rows >= 768 and ds.SamplesPerPixel == 3,
    "XC": lambda ds: ds.Columns >= 1024 and ds.Rows >= 768 and ds.SamplesPerPixel == 3,
    "GM": lambda ds: ds.Columns >= 1024 and ds.Rows >= 768 and ds.SamplesPerPixel == 3,
    "OP": lambda ds: ds.Columns >= 1024 and ds.Rows >= 768 and ds.SamplesPerPixel == 3,
    "XA": lambda ds: (ds.Rows, ds.Columns) == (512, 512) and int(ds.NumberOfFrames) >= 10,
    "RF": lambda ds: (ds.Rows, ds.Columns) == (512, 512) and int(ds.NumberOfFrames) >= 6,
    "OPT": lambda ds: ds.Columns >= 512 and int(ds.NumberOfFrames) >= 16,
    "NM": lambda ds: (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) in {(1024, 256, 1), (128, 128, 32)},
    "SM": lambda ds: (ds.Rows, ds.Columns) == (256, 256)
    and ds.DimensionOrganizationType == "TILED_FULL"
    and (ds.ImageType[3] == "RESAMPLED" or int(ds.TotalPixelMatrixColumns) >= 1024),
}


def test_image_objects_carry_valid_pixel_data(records: list[Record]) -> None:
    for record in records:
        ds = record.ds
        if ds.Modality not in IMAGE_MODALITIES and ds.Modality != "SEG":
            assert "PixelData" not in ds
            continue
        frames = int(ds.get("NumberOfFrames", 1))
        expected = ds.Rows * ds.Columns * ds.SamplesPerPixel * frames * ds.BitsAllocated // 8
        if ds.Modality == "SEG":  # 1 bit per pixel, packed
            expected = -(-ds.Rows * ds.Columns * frames // 8)
        assert ds.Rows >= 64 and ds.Columns >= 64, (ds.Modality, ds.Rows, ds.Columns)
        with record.path.open("rb") as handle:  # the length from the file, without loading the value
            assert ds["PixelData"].file_tell is not None
            handle.seek(ds["PixelData"].file_tell - 4)
            assert int.from_bytes(handle.read(4), "little") == expected + expected % 2
        assert ds.PhotometricInterpretation == ("RGB" if ds.SamplesPerPixel == 3 else "MONOCHROME2")


def test_full_size_studies_have_the_sizes_a_viewer_expects(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    full = facts["full_size_studies"]
    # The multi-trust patient's studies and each image modality's example study, nothing else.
    assert facts["specialty_studies"]["CT"] in full and facts["shared_study"]["study_uid"] in full
    assert len(full) < len(by_study) / 5
    seen = set()
    for uid in full:
        for record in by_study[uid]:
            ds = record.ds
            if ds.Modality in FULL_SIZE and "LOCALIZER" not in ds.get("ImageType", []):
                assert FULL_SIZE[ds.Modality](ds), (ds.Modality, ds.SeriesDescription, ds.Rows, ds.Columns)
                seen.add(ds.Modality)
    assert seen == set(FULL_SIZE)


def test_reduced_studies_keep_the_content_at_a_smaller_matrix(facts: dict[str, Any], records: list[Record]) -> None:
    full = set(facts["full_size_studies"])
    reduced = [
        r.ds
        for r in records
        if r.ds.StudyInstanceUID not in full
        and r.ds.Modality in FULL_SIZE
        and "RESAMPLED" not in r.ds.ImageType  # lower pyramid levels are small at any size
    ]
    assert reduced
    for ds in reduced:
        assert not FULL_SIZE[ds.Modality](ds) or ds.Modality == "PT", (ds.Modality, ds.Rows, ds.Columns)


def _pixels(record: Record) -> Any:
    return pydicom.dcmread(record.path).pixel_array


def _hounsfield(record: Record) -> Any:
    return _pixels(record).astype("float64") * float(record.ds.RescaleSlope) + float(record.ds.RescaleIntercept)


def test_ct_slices_hold_tissue_classes_in_hounsfield_units(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    """A full-size chest slice of the CT chest-abdomen-pelvis shows air, lung, fat, soft tissue and bone
    at their Hounsfield units, with a window that shows soft tissue."""
    files = [
        r
        for r in by_study[facts["shared_study"]["study_uid"]]
        if r.trust == "bolton" and r.ds.Modality == "CT" and r.ds.SeriesDescription.startswith("Axial")
    ]

    # The slice through the middle of the chest: the one with the most lung.
    def lung(record: Record) -> float:
        hu = _hounsfield(record)
        return float(((hu > -920) & (hu < -750)).mean())

    chest = max(files, key=lung)
    hu = _hounsfield(chest)
    fractions = {
        "air": (hu < -950).mean(),
        "lung": ((hu > -920) & (hu < -750)).mean(),
        "fat": ((hu > -140) & (hu < -60)).mean(),
        "soft tissue": ((hu > 10) & (hu < 90)).mean(),
        "bone": (hu > 300).mean(),
    }
    assert all(f > 0.005 for f in fractions.values()), fractions
    assert chest.ds.RescaleType == "HU" and float(chest.ds.RescaleIntercept) == -1024
    assert (float(chest.ds.WindowCenter), float(chest.ds.WindowWidth)) == (40, 400)


def test_cross_sectional_series_stack_in_patient_space(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    """What a viewer needs to stack slices: one orientation and matrix per series, positions that
    step along the normal, SliceLocation and SliceThickness that agree with them."""
    checked = 0
    for uid in facts["full_size_studies"]:
        series: dict[str, list[Dataset]] = defaultdict(list)
        for record in by_study[uid]:
            if record.ds.Modality in {"CT", "MR", "PT"} and "LOCALIZER" not in record.ds.ImageType:
                series[record.ds.SeriesInstanceUID + record.trust].append(record.ds)
        for files in series.values():
            orientation = {tuple(float(v) for v in ds.ImageOrientationPatient) for ds in files}
            assert len(orientation) == 1
            (cosines,) = orientation
            row, col = cosines[:3], cosines[3:]
            normal = [
                row[1] * col[2] - row[2] * col[1],
                row[2] * col[0] - row[0] * col[2],
                row[0] * col[1] - row[1] * col[0],
            ]
            assert {(ds.Rows, ds.Columns, tuple(ds.PixelSpacing)) for ds in files} == {
                (files[0].Rows, files[0].Columns, tuple(files[0].PixelSpacing))
            }
            by_number = sorted(files, key=lambda ds: int(ds.InstanceNumber))
            along = [
                sum(float(p) * n for p, n in zip(ds.ImagePositionPatient, normal, strict=True)) for ds in by_number
            ]
            steps = {round(b - a, 2) for a, b in itertools.pairwise(along)}
            assert len(steps) == 1 and next(iter(steps)) > 0, steps  # evenly spaced, in order
            for ds, position in zip(by_number, along, strict=True):
                assert abs(abs(float(ds.SliceLocation)) - abs(position)) < 0.01
                assert float(ds.SliceThickness) > 0
            checked += 1
    assert checked >= 8


def test_a_stack_changes_from_slice_to_slice(facts: dict[str, Any], by_study: dict[str, list[Record]]) -> None:
    files = sorted(
        (r for r in by_study[facts["specialty_studies"]["MR"]] if r.ds.Modality == "MR"),
        key=lambda r: (r.ds.SeriesNumber, r.ds.InstanceNumber),
    )[:10]
    first, middle = _pixels(files[0]).astype("float64"), _pixels(files[5]).astype("float64")
    assert abs(first - middle).mean() > 20  # different anatomy, not the same picture with new noise
    assert middle.std() > 100  # contrast, not a flat field


def test_nuclear_medicine_has_a_whole_body_pair_and_a_dynamic_series(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    files = [r.ds for r in by_study[facts["specialty_studies"]["NM"]] if r.ds.Modality == "NM"]
    dynamic = [ds for ds in files if "DYNAMIC" in ds.ImageType]
    whole_body = [ds for ds in files if "WHOLE BODY" in ds.ImageType]
    assert len(dynamic) == 1 and len(whole_body) == 2
    (ds,) = dynamic
    assert int(ds.NumberOfFrames) == 32 == len(ds.EnergyWindowVector) == len(ds.PhaseVector)
    assert [int(t) for t in ds.FrameIncrementPointer] == [0x00540010, 0x00540020, 0x00540030]
    (path,) = [r.path for r in by_study[ds.StudyInstanceUID] if r.ds.SOPInstanceUID == ds.SOPInstanceUID]
    frames = pydicom.dcmread(path).pixel_array
    totals = frames.reshape(32, -1).sum(axis=1)
    assert totals[0] < totals[15]  # the tracer arrives


def test_whole_slide_series_is_a_tiled_pyramid(facts: dict[str, Any], by_study: dict[str, list[Record]]) -> None:
    series: dict[str, list[Dataset]] = defaultdict(list)
    for record in by_study[facts["specialty_studies"]["SM"]]:
        if record.ds.Modality == "SM":
            series[record.ds.SeriesInstanceUID].append(record.ds)
    assert series
    for levels in series.values():
        levels.sort(key=lambda ds: -int(ds.TotalPixelMatrixColumns))
        assert 2 <= len(levels) <= 3
        assert levels[0].ImageType[2:] == ["VOLUME", "NONE"]
        assert all(ds.ImageType[3] == "RESAMPLED" for ds in levels[1:])
        for bigger, smaller in itertools.pairwise(levels):
            assert int(bigger.TotalPixelMatrixColumns) == 2 * int(smaller.TotalPixelMatrixColumns)
        for ds in levels:
            tiles = -(-int(ds.TotalPixelMatrixRows) // ds.Rows) * -(-int(ds.TotalPixelMatrixColumns) // ds.Columns)
            assert int(ds.NumberOfFrames) == tiles
            spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
            assert float(spacing[0]) * int(ds.TotalPixelMatrixColumns) == pytest.approx(float(ds.ImagedVolumeWidth))


def test_segmentation_matches_the_image_it_was_drawn_on(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    seg = _only(by_study, facts, "SEG")
    source_uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    (source,) = [r.ds for r in by_study[seg.StudyInstanceUID] if r.ds.SOPInstanceUID == source_uid]
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    mask = pydicom.dcmread(next(r.path for r in by_study[seg.StudyInstanceUID] if r.ds is seg)).pixel_array
    assert 0 < mask.sum() < mask.size / 20  # a lesion, not the whole image


def _only(by_study: dict[str, list[Record]], facts: dict[str, Any], modality: str) -> Dataset:
    files = [r for r in by_study[facts["specialty_studies"][modality]] if r.ds.Modality == modality]
    return _first(files)


def test_encapsulated_pdf_is_a_well_formed_pdf(facts: dict[str, Any], by_study: dict[str, list[Record]]) -> None:
    ds = _only(by_study, facts, "DOC")
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle
    pdf = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
    assert pdf.startswith(b"%PDF-1.") and pdf.rstrip().endswith(b"%%EOF")
    startxref = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[startxref:].startswith(b"xref")
    entries = pdf[startxref:].split(b"\n")[3:8]  # objects 1..5
    for number, entry in enumerate(entries, start=1):
        offset = int(entry.split()[0])
        assert pdf[offset:].startswith(b"%d 0 obj" % number)


def test_pdf_reports_cover_several_specialties_each_with_a_title_and_readable_text(
    records: list[Record], studies: dict[str, dict[str, Any]]
) -> None:
    """Encapsulated PDF reports in five specialties; each one page whose text is its DocumentTitle, the study's
    accession and the findings and conclusion tools/demo/reports.py writes for that kind of study."""
    pdfs = [r.ds for r in records if r.ds.Modality == "DOC"]
    by_department = defaultdict(list)
    for ds in pdfs:
        by_department[str(ds.InstitutionalDepartmentName)].append(ds)
    assert set(by_department) == {
        "Endoscopy Unit",
        "Cardiology",
        "Orthopaedic Imaging",
        "Nuclear Medicine",
        "Cellular Pathology",
    }
    for ds in pdfs:
        pdf = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
        assert pdf.startswith(b"%PDF-1.") and pdf.count(b"/Type /Page ") == 1
        assert ds.DocumentTitle == f"{ds.StudyDescription} report"
        shown = pdf.decode("latin-1")
        study = studies[ds.StudyInstanceUID]
        assert f"({ds.DocumentTitle}) '" in shown
        assert f"Accession: {study['accession'] or '-'}" in shown
        key = next(k for k in PDF_REPORTS if PDF_REPORTS[k][2] in shown)  # one template's text, not another's
        assert PDF_REPORTS[key][1] in shown


def test_key_object_selection_is_of_interest_and_points_at_images(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    ds = _only(by_study, facts, "KO")
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning) == ("113000", "DCM", "Of Interest")
    study_instances = {r.ds.SOPInstanceUID for r in by_study[ds.StudyInstanceUID]}
    images = [item for item in ds.ContentSequence if item.ValueType == "IMAGE"]
    assert images
    for item in images:
        assert item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in study_instances


def test_structured_report_has_content(facts: dict[str, Any], by_study: dict[str, list[Record]]) -> None:
    ds = _only(by_study, facts, "SR")
    assert ds.ValueType == "CONTAINER"
    # TID 2000: an observer, then the Findings and Impressions sections, each with its text
    assert [item.ValueType for item in ds.ContentSequence] == ["PNAME", "CONTAINER", "CONTAINER"]
    sections = {item.ConceptNameCodeSequence[0].CodeValue: item for item in ds.ContentSequence[1:]}
    findings, impression = report_text(ds.StudyInstanceUID)
    assert sections["121070"].ContentSequence[0].TextValue == findings
    assert sections["121072"].ContentSequence[0].TextValue == impression
    state = report_state(ds.StudyInstanceUID)
    assert (ds.CompletionFlag, ds.VerificationFlag) == (
        ("PARTIAL", "UNVERIFIED") if state == "preliminary" else ("COMPLETE", "VERIFIED")
    )
    assert ("PredecessorDocumentsSequence" in ds) == (state == "amended")
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == ds.StudyInstanceUID


def test_presentation_state_and_segmentation_reference_the_study(
    facts: dict[str, Any], by_study: dict[str, list[Record]]
) -> None:
    pr = _only(by_study, facts, "PR")
    assert pr.ContentLabel
    series = {r.ds.SeriesInstanceUID for r in by_study[pr.StudyInstanceUID]}
    assert pr.ReferencedSeriesSequence[0].SeriesInstanceUID in series
    seg = _only(by_study, facts, "SEG")
    assert seg.SegmentationType == "BINARY" and seg.SegmentSequence[0].SegmentLabel
    series = {r.ds.SeriesInstanceUID for r in by_study[seg.StudyInstanceUID]}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID in series


@pytest.mark.parametrize(("modality", "channels", "rate"), [("ECG", 12, 500), ("HD", 2, 250)])
def test_waveforms_are_ten_seconds_of_every_channel(
    facts: dict[str, Any], by_study: dict[str, list[Record]], modality: str, channels: int, rate: int
) -> None:
    ds = _only(by_study, facts, modality)
    (group,) = ds.WaveformSequence
    assert group.NumberOfWaveformChannels == channels == len(group.ChannelDefinitionSequence)
    assert float(group.SamplingFrequency) == rate and group.NumberOfWaveformSamples == 10 * rate
    assert len(group.WaveformData) == channels * group.NumberOfWaveformSamples * group.WaveformBitsAllocated // 8


def test_ecg_traces_are_plausible(facts: dict[str, Any], by_study: dict[str, list[Record]]) -> None:
    """Lead II shows sinus rhythm (R waves of ~1 mV at 50-100 a minute); the limb leads obey Einthoven
    (III = II - I) and aVR is upside down."""
    import numpy as np

    ds = _only(by_study, facts, "ECG")
    (group,) = ds.WaveformSequence
    microvolts = [float(c.ChannelSensitivity) for c in group.ChannelDefinitionSequence]
    data = np.frombuffer(group.WaveformData, dtype="<i2").reshape(-1, 12).astype("float64") * microvolts
    one, two, three, avr = data[:, 0], data[:, 1], data[:, 2], data[:, 3]
    peaks = [i for i in range(1, len(two) - 1) if two[i] > 600 and two[i] >= two[i - 1] and two[i] > two[i + 1]]
    beats_per_minute = len(peaks) * 6
    assert 45 <= beats_per_minute <= 105, beats_per_minute
    assert 700 < np.median(two[peaks]) < 2000
    assert np.abs(three - (two - one)).max() <= 3 * max(microvolts)  # rounding only: III is derived
    assert np.median(avr[peaks]) < -300


# --------------------------------------------------------------------------- determinism and entry points


def test_same_seed_gives_identical_bytes(demo_dir: Path, tmp_path: Path) -> None:
    generate(tmp_path)
    assert tree_digest(tmp_path) == tree_digest(demo_dir)


def test_different_seed_gives_different_uids_and_patients() -> None:
    # Planning only (no files): the UIDs and NHS numbers come from the plan.
    first, second = generator._plan(generator.DEFAULT_SEED), generator._plan(1)
    assert first.shared.uid != second.shared.uid
    assert {p.nhs_number for p in first.patients} != {p.nhs_number for p in second.patients}


def test_previous_output_is_cleared_but_other_files_are_kept(tmp_path: Path) -> None:
    stale = tmp_path / "bolton" / "old-study" / "x.dcm"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    (tmp_path / "manifest.json").write_text("{}")
    keep = tmp_path / "README.txt"
    keep.write_text("mine")
    generator._clear_previous(tmp_path)  # what generate() does before writing
    assert not stale.exists() and not (tmp_path / "manifest.json").exists()
    assert keep.read_text() == "mine"


def test_ensure_demo_data_generates_only_when_missing_or_of_another_version(tmp_path: Path, monkeypatch) -> None:
    calls: list[Path] = []

    def fake_generate(out_dir: Path, *, seed: int = 0, progress: Any = None) -> None:
        calls.append(out_dir)
        (out_dir / "manifest.json").write_text(json.dumps({"generator_version": GENERATOR_VERSION}))

    monkeypatch.setattr(generator, "generate", fake_generate)
    assert ensure_demo_data(tmp_path) is True
    assert ensure_demo_data(tmp_path) is False
    assert calls == [tmp_path]
    (tmp_path / "manifest.json").write_text("{}")  # the 8x8 dataset of version 1 had no version
    assert ensure_demo_data(tmp_path) is True
    assert calls == [tmp_path, tmp_path]


def test_manifest_names_the_generator_version(manifest: dict[str, Any]) -> None:
    assert manifest["generator_version"] == GENERATOR_VERSION


def test_cli_prints_a_one_line_summary(tmp_path: Path, monkeypatch, capsys) -> None:
    seen: dict[str, Any] = {}

    def fake_generate(out_dir: Path, *, seed: int, progress: Any = None) -> generator.Manifest:
        seen.update(out_dir=out_dir, seed=seed)
        counts = {"patients": 1, "studies": 2, "files": 3, "bytes": 4000, "xref_rows": 0}
        return generator.Manifest(seed, [], counts, [], {})

    monkeypatch.setattr(generator, "generate", fake_generate)
    assert generator.main([str(tmp_path), "--seed", "5"]) == 0
    assert seen == {"out_dir": tmp_path, "seed": 5}
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "1 patients, 2 studies, 3 files" in lines[0]


def test_the_demo_data_stays_within_its_budget(demo_dir: Path) -> None:
    """Issue 15's budget: the whole demo dataset (every trust's files, the manifest and xref) under 200 MB."""
    size = sum(p.stat().st_size for p in demo_dir.rglob("*") if p.is_file())
    assert 50_000_000 < size < 200_000_000, f"{size / 1e6:.1f} MB"  # real-sized images, and under the budget
