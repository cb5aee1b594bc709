"""The patient cross-reference: NHS number <-> each trust's local PatientID (for match: xref).

The embedded default is a CSV file (nhs_number,trust,local_patient_id,issuer), read at start-up;
an IHE PIXm service can stand in its place behind the same two look-ups.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .archives.protocol import PatientKey, is_plain_key
from .mapping.patient import nhs_number_problem

COLUMNS = ("nhs_number", "trust", "local_patient_id", "issuer")


class XrefError(ValueError):
    """The cross-reference file is unusable; the message names the line."""


@dataclass(frozen=True)
class PatientXref:
    forward: dict[tuple[str, str], tuple[PatientKey, ...]] = field(default_factory=dict)
    reverse: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def local_keys(self, nhs_number: str, trust_id: str) -> tuple[PatientKey, ...]:
        return self.forward.get((nhs_number, trust_id), ())


def load_xref(path: Path | None, trust_ids: set[str]) -> PatientXref:
    """Read and check the CSV: valid NHS numbers, known trusts, ids safe to send upstream."""
    if path is None:
        return PatientXref()
    forward: dict[tuple[str, str], list[PatientKey]] = defaultdict(list)
    reverse: dict[tuple[str, str, str], str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise XrefError(f"{path}: header must be {','.join(COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            nhs, trust, local, issuer = (row[c].strip() for c in COLUMNS)
            problem = nhs_number_problem(nhs)
            if problem:
                raise XrefError(f"{path}:{line}: {problem}")
            if trust not in trust_ids:
                raise XrefError(f"{path}:{line}: unknown trust {trust!r}")
            if not is_plain_key(local) or (issuer and not is_plain_key(issuer)):
                raise XrefError(f"{path}:{line}: local id or issuer holds a wildcard or list character")
            if reverse.get((trust, local, issuer), nhs) != nhs:
                raise XrefError(f"{path}:{line}: {trust} {local} is already mapped to another NHS number")
            reverse[(trust, local, issuer)] = nhs
            forward[(nhs, trust)].append(PatientKey(local, issuer or None))
    return PatientXref({k: tuple(v) for k, v in forward.items()}, reverse)
