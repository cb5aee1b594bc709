"""The declarative tables in mappings/ and how they are loaded (app/core/mapping/tables.py, engine.compile_rows)."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries, ImagingStudySeriesInstance
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from app.core.mapping.engine import MappingTableError, compile_rows
from app.core.mapping.tables import MAPPINGS_DIR, load_mapper, load_terminology
from app.core.mapping.transforms import TRANSFORMS

SPECIALTY_MODALITIES = [
    "CT",
    "MR",
    "CR",
    "DX",
    "MG",
    "NM",
    "PT",
    "US",
    "XA",
    "RF",
    "ES",
    "XC",
    "GM",
    "SM",
    "OP",
    "OPT",
    "ECG",
    "HD",
    "SR",
    "DOC",
    "KO",
    "PR",
    "SEG",
]


def read_json(name: str) -> Any:
    return json.loads((MAPPINGS_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def table() -> dict[str, Any]:
    return yaml.safe_load((MAPPINGS_DIR / "imagingstudy.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return read_json("mapping.schema.json")


def copy_mappings(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, root)
    return root


# -- the mapping table and its schema -------------------------------------------------------------


def test_mapping_schema_is_a_valid_schema(schema: dict[str, Any]) -> None:
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_mapping_table_validates_against_schema(table: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.validate(table, schema)


@pytest.mark.parametrize(
    ("section", "row"),
    [
        ("study", {"element": "ImagingStudy.description", "transform": "string", "tag": ["StudyDescription"]}),
        ("study", {"element": "ImagingStudy.description"}),
        ("study", {"element": "Patient.name", "transform": "string", "tags": ["PatientName"]}),
        ("series", {"element": "ImagingStudy.series.uid", "transform": "Uid", "tags": ["SeriesInstanceUID"]}),
        ("series", {"element": "ImagingStudy.series.uid", "transform": "uid", "tags": ["0020000E"]}),
        ("instance", {"element": "ImagingStudy.series.instance.uid", "transform": "uid", "list": "yes"}),
    ],
    ids=["unknown-key", "no-transform", "not-imagingstudy", "transform-case", "tag-not-keyword", "list-not-bool"],
)
def test_mapping_schema_rejects_malformed_row(
    table: dict[str, Any], schema: dict[str, Any], section: str, row: dict[str, Any]
) -> None:
    broken = copy.deepcopy(table)
    broken[section].append(row)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_mapping_schema_rejects_empty_section(table: dict[str, Any], schema: dict[str, Any]) -> None:
    broken = {**table, "instance": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_mapping_table_names_only_known_transforms(table: dict[str, Any]) -> None:
    names = {row["transform"] for section in ("study", "series", "instance") for row in table[section]}
    assert names <= set(TRANSFORMS), names - set(TRANSFORMS)


def test_mapping_table_elements_exist_in_r4_imagingstudy(table: dict[str, Any]) -> None:
    """Every element path is an element of ImagingStudy, its series or its instances."""
    owners: dict[str, type[FHIRAbstractModel]] = {
        "ImagingStudy": ImagingStudy,
        "ImagingStudy.series": ImagingStudySeries,
        "ImagingStudy.series.instance": ImagingStudySeriesInstance,
    }
    for section in ("study", "series", "instance"):
        for row in table[section]:
            owner, name = row["element"].rsplit(".", 1)
            assert owner in owners, row["element"]
            assert name in owners[owner].elements_sequence(), row["element"]


def test_mapping_table_covers_every_reference_row(table: dict[str, Any]) -> None:
    """The rows of docs/mapping-reference.md that the table (rather than the merge) fills."""
    elements = {row["element"] for section in ("study", "series", "instance") for row in table[section]}
    expected = {
        "ImagingStudy.identifier",
        "ImagingStudy.status",
        "ImagingStudy.modality",
        "ImagingStudy.subject",
        "ImagingStudy.started",
        "ImagingStudy.referrer",
        "ImagingStudy.numberOfSeries",
        "ImagingStudy.numberOfInstances",
        "ImagingStudy.description",
        "ImagingStudy.procedureCode",
        "ImagingStudy.reasonCode",
        "ImagingStudy.interpreter",
        "ImagingStudy.location",
        "ImagingStudy.endpoint",
        "ImagingStudy.series.uid",
        "ImagingStudy.series.number",
        "ImagingStudy.series.modality",
        "ImagingStudy.series.description",
        "ImagingStudy.series.numberOfInstances",
        "ImagingStudy.series.bodySite",
        "ImagingStudy.series.laterality",
        "ImagingStudy.series.started",
        "ImagingStudy.series.performer",
        "ImagingStudy.series.instance.uid",
        "ImagingStudy.series.instance.sopClass",
        "ImagingStudy.series.instance.number",
        "ImagingStudy.series.instance.title",
    }
    assert expected <= elements, expected - elements


# -- compile_rows ---------------------------------------------------------------------------------


def test_compile_rows_resolves_keywords_and_transforms() -> None:
    rows = compile_rows(
        [
            {
                "element": "ImagingStudy.started",
                "transform": "date_time",
                "tags": ["StudyDate", "StudyTime", "TimezoneOffsetFromUTC"],
            },
            {
                "element": "ImagingStudy.identifier",
                "list": True,
                "transform": "study_uid_identifier",
                "tags": ["StudyInstanceUID"],
            },
        ]
    )
    first, second = rows
    # (element key, append?, transform, tags, args, ...) as the engine's Row documents it
    assert first[:4] == ("started", False, TRANSFORMS["date_time"], ("00080020", "00080030", "00080201"))
    assert first[4]["element"] == "ImagingStudy.started"
    assert second[:4] == ("identifier", True, TRANSFORMS["study_uid_identifier"], ("0020000D",))


@pytest.mark.parametrize(
    "keyword",
    ["StudyDat", "studydate", "00080020", "NotADicomKeyword"],
    ids=["misspelt", "lower-case", "tag-number", "invented"],
)
def test_compile_rows_unknown_keyword(keyword: str) -> None:
    with pytest.raises(MappingTableError, match=keyword):
        compile_rows([{"element": "ImagingStudy.started", "transform": "date_time", "tags": [keyword]}])


@pytest.mark.parametrize(
    "name", ["no_such_transform", "String", "transform", ""], ids=["invented", "wrong-case", "the-decorator", "empty"]
)
def test_compile_rows_unknown_transform(name: str) -> None:
    with pytest.raises(MappingTableError, match=re.escape("ImagingStudy.description")):
        compile_rows([{"element": "ImagingStudy.description", "transform": name, "tags": ["StudyDescription"]}])


def test_mapping_table_error_is_a_value_error() -> None:
    assert issubclass(MappingTableError, ValueError)


# -- load_mapper on a copy of mappings/ -----------------------------------------------------------


def test_load_mapper_compiles_every_row(table: dict[str, Any]) -> None:
    mapper = load_mapper()
    assert len(mapper.study_rows) == len(table["study"])
    assert len(mapper.series_rows) == len(table["series"])
    assert len(mapper.instance_rows) == len(table["instance"])
    assert mapper.terminology.keywords["00080020"] == "StudyDate"


def test_load_mapper_rejects_table_failing_schema(tmp_path: Path, table: dict[str, Any]) -> None:
    root = copy_mappings(tmp_path)
    broken = copy.deepcopy(table)
    broken["study"][0]["transfrom"] = "typo"
    (root / "imagingstudy.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(jsonschema.ValidationError):
        load_mapper(root)


def test_load_mapper_rejects_unknown_keyword(tmp_path: Path, table: dict[str, Any]) -> None:
    root = copy_mappings(tmp_path)
    broken = copy.deepcopy(table)
    broken["series"].append(
        {"element": "ImagingStudy.series.description", "transform": "string", "tags": ["SeriesDescriptionn"]}
    )
    (root / "imagingstudy.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(MappingTableError, match="SeriesDescriptionn"):
        load_mapper(root)


def test_load_mapper_rejects_unknown_transform(tmp_path: Path, table: dict[str, Any]) -> None:
    root = copy_mappings(tmp_path)
    broken = copy.deepcopy(table)
    broken["instance"][0]["transform"] = "guess_uid"
    (root / "imagingstudy.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    with pytest.raises(MappingTableError, match="guess_uid"):
        load_mapper(root)


# -- terminology ----------------------------------------------------------------------------------


def test_annex_l_table_size_and_edition() -> None:
    body = read_json("terminology/bodysite-annex-l.json")
    assert len(body["terms"]) >= 300
    assert body["edition"] == "2026a"
    assert "2026a" in body["source"] and "Annex L" in body["source"]
    assert body["system"] == "http://snomed.info/sct"
    assert "2026a" in load_terminology().editions["body_site"]


@pytest.mark.parametrize(
    ("term", "code"),
    [
        ("CHEST", "816094009"),
        ("ABDOMEN", "818981001"),
        ("HEAD", "69536005"),
        ("KNEE", "72696002"),
        ("BREAST", "76752008"),
        ("ABDOMENPELVIS", "818982008"),
    ],
)
def test_annex_l_table_pinned_codes(term: str, code: str) -> None:
    assert load_terminology().body_sites[term]["code"] == code


def test_annex_l_table_terms_are_defined_terms() -> None:
    """Keys as BodyPartExamined holds them (CS: upper case, digits, underscore, no spaces); numeric codes."""
    for term, coding in read_json("terminology/bodysite-annex-l.json")["terms"].items():
        assert term == term.upper() and " " not in term and len(term) <= 16, term
        assert coding["code"].isdigit() and coding["display"], term


@pytest.mark.parametrize("modality", SPECIALTY_MODALITIES)
def test_cid33_table_has_specialty_modality(modality: str) -> None:
    cid33 = read_json("terminology/modality-cid33.json")
    assert modality in cid33["codes"]
    assert load_terminology().modalities[modality] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": modality,
        "display": cid33["codes"][modality],
    }


def test_cid33_table_matches_pydicom() -> None:
    collection = codes.CID33
    expected = {getattr(collection, name).value: getattr(collection, name).meaning for name in collection.dir()}
    assert read_json("terminology/modality-cid33.json")["codes"] == expected


def test_sop_class_table_names_match_pydicom() -> None:
    classes = read_json("terminology/sop-classes.json")["classes"]
    assert len(classes) >= 200
    for uid, name in classes.items():
        assert UID(uid).is_valid and UID(uid).name == name, uid


def test_laterality_table_codes() -> None:
    laterality = load_terminology().laterality
    assert {t: c["code"] for t, c in laterality.items()} == {"L": "7771000", "R": "24028007", "B": "51440002"}
    assert all(c["system"] == "http://snomed.info/sct" for c in laterality.values())


@pytest.mark.parametrize(
    ("scheme", "system"),
    [
        ("SCT", "http://snomed.info/sct"),
        ("LN", "http://loinc.org"),
        ("DCM", "http://dicom.nema.org/resources/ontology/DCM"),
    ],
)
def test_coding_scheme_table(scheme: str, system: str) -> None:
    assert load_terminology().coding_schemes[scheme] == system


def test_coding_scheme_table_has_no_local_designators() -> None:
    assert not [s for s in load_terminology().coding_schemes if s.startswith("99")]
