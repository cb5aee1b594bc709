"""Regenerate the modality (CID 33) and SOP class tables in mappings/terminology from pydicom.

Run when pydicom is upgraded: `python scripts/build_terminology.py`. The tables are committed so
that the mapping core reads data files, not a library's private dictionaries, at run time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.sr.codedict import codes

OUT = Path(__file__).resolve().parent.parent / "mappings" / "terminology"


def main() -> None:
    cid33 = codes.cid33
    modalities = {getattr(cid33, n).value: getattr(cid33, n).meaning for n in cid33.dir()}
    OUT.joinpath("modality-cid33.json").write_text(
        json.dumps(
            {
                "source": f"DICOM PS3.16 CID 33 Modality, as shipped in pydicom {pydicom.__version__}",
                "system": "http://dicom.nema.org/resources/ontology/DCM",
                "codes": dict(sorted(modalities.items())),
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    sop = {uid: name for uid, (name, kind, *_rest) in UID_dictionary.items() if kind == "SOP Class"}
    OUT.joinpath("sop-classes.json").write_text(
        json.dumps(
            {
                "source": f"DICOM PS3.6 Annex A SOP Class UIDs, as shipped in pydicom {pydicom.__version__}",
                "classes": dict(sorted(sop.items())),
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    print(f"{len(modalities)} modalities, {len(sop)} SOP classes written to {OUT}")


if __name__ == "__main__":
    main()
