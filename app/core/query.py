"""What may be asked of an archive: typed query values, never strings from the user. Pure.

An adapter builds its upstream request from these fields only, so a wildcard can only reach an
archive if a field holds one, and the constructors below refuse that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Characters with a meaning in DICOM matching (PS3.4 C.2.2.2.4) or in QIDO/C-FIND lists.
FORBIDDEN_IN_KEYS = frozenset("*?\\,%") | {chr(c) for c in range(32)} | {"\x7f"}


def is_plain_key(value: str) -> bool:
    """True when `value` can be sent upstream as an exact-match key (no wildcard, no list)."""
    return bool(value) and not any(ch in FORBIDDEN_IN_KEYS for ch in value)


@dataclass(frozen=True)
class PatientKey:
    """A patient as one archive knows it: PatientID and, when the trust uses one, its issuer."""

    patient_id: str
    issuer: str | None = None

    def __post_init__(self) -> None:
        if not is_plain_key(self.patient_id) or (self.issuer is not None and not is_plain_key(self.issuer)):
            raise ValueError("a patient key may not contain DICOM wildcard or list characters")


_NAME = re.compile(r"^[^\W\d_]+(?:[ '-][^\W\d_]+)*$")


@dataclass(frozen=True)
class NameQuery:
    """A patient picker's name search: family name, optionally a given name, each matched from its start.

    Only letters with single spaces, hyphens or apostrophes between them: the adapter appends the one
    trailing wildcard itself, so a user's `*`, `?`, `\\` or `,` can never reach an archive.
    """

    family: str
    given: str | None = None

    def __post_init__(self) -> None:
        for part in (self.family, self.given):
            if part is not None and (len(part) < 2 or len(part) > 64 or not _NAME.match(part)):
                raise ValueError("a name search needs letters only (at least two per name)")


@dataclass(frozen=True)
class StudyQuery:
    """What to ask an archive. Empty fields do not constrain; dates are inclusive YYYYMMDD bounds."""

    patient: PatientKey | None = None
    study_uids: tuple[str, ...] = ()
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    accession_number: str | None = None
    modalities: tuple[str, ...] = ()
    date_from: str | None = None
    date_to: str | None = None
    patient_name: NameQuery | None = None

    def __post_init__(self) -> None:
        keys = [*self.study_uids, *self.modalities]
        keys += [
            k
            for k in (self.series_uid, self.sop_instance_uid, self.accession_number, self.date_from, self.date_to)
            if k is not None
        ]
        if not all(is_plain_key(k) for k in keys):
            raise ValueError("a study query may not contain DICOM wildcard or list characters")


def pn_pattern(name: NameQuery) -> str:
    """`FAMILY*` or `FAMILY^GIVEN*`: the name's start, the one wildcard added by us, never by the user."""
    return f"{name.family}^{name.given}*" if name.given else f"{name.family}*"
