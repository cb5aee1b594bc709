"""Reading the declarative tables in mappings/ (the only I/O the mapping needs), once, at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydicom.datadict import tag_for_keyword

from app.core.mapping.compile import compile_fields
from app.core.mapping.context import Terminology
from app.core.mapping.engine import StudyMapper, compile_rows

MAPPINGS_DIR = Path(__file__).resolve().parents[3] / "mappings"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_terminology(root: Path = MAPPINGS_DIR, keywords: dict[str, str] | None = None) -> Terminology:
    folder = root / "terminology"
    body = _json(folder / "bodysite-annex-l.json")
    laterality = _json(folder / "laterality.json")
    modality = _json(folder / "modality-cid33.json")
    sop = _json(folder / "sop-classes.json")
    schemes = _json(folder / "coding-schemes.json")
    return Terminology(
        body_sites={term: {"system": body["system"], **code} for term, code in body["terms"].items()},
        laterality={term: {"system": laterality["system"], **code} for term, code in laterality["terms"].items()},
        modalities={
            code: {"system": modality["system"], "code": code, "display": display}
            for code, display in modality["codes"].items()
        },
        sop_classes=sop["classes"],
        coding_schemes=schemes["schemes"],
        keywords=keywords or {},
        editions={"body_site": body["source"], "modality": modality["source"], "sop_class": sop["source"]},
    )


def _keywords(table: dict[str, Any]) -> dict[str, str]:
    """Tag -> keyword for the messages the mapping reports (``StudyDate`` reads better than 00080020)."""
    out = {}
    for section in ("study", "series", "instance"):
        for row in table[section]:
            for keyword in row.get("tags", ()):
                tag = tag_for_keyword(keyword)
                if tag is not None:
                    out[f"{tag:08X}"] = keyword
    return out


def load_mapper(root: Path = MAPPINGS_DIR, *, compiled: bool = True) -> StudyMapper:
    """Validate mappings/imagingstudy.yaml against its schema and compile it with the terminology.

    `compiled`: the rows turned into generated Python functions (app.core.mapping.compile), as the
    facade runs them; False: the rows interpreted one by one (the reference the compiled mapper is
    tested against)."""
    table = yaml.safe_load((root / "imagingstudy.yaml").read_text(encoding="utf-8"))
    jsonschema.validate(table, _json(root / "mapping.schema.json"))
    study, series, instance = (compile_rows(table[s]) for s in ("study", "series", "instance"))
    terminology = load_terminology(root, _keywords(table))
    fields = compile_fields(study, series, instance, terminology) if compiled else (None, None, None)
    return StudyMapper(study, series, instance, terminology, *fields)
