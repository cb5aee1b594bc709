"""The one small interface every trust archive adapter implements (folder, DICOMweb, DIMSE).

Queries are typed values, never strings from the user: an adapter builds its upstream request
from these fields only, so a wildcard can only reach an archive if a field holds one, and the
constructors below refuse that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

Dataset = dict[str, Any]

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

    @property
    def is_bounded(self) -> bool:
        """True when the query names a patient or an object: never a scan of a whole archive."""
        return bool(
            self.patient
            or self.study_uids
            or self.series_uid
            or self.sop_instance_uid
            or self.accession_number
            or self.patient_name
        )


@dataclass
class Found:
    """What an archive answered. `incomplete` says why it may not be everything (truncation, 206...)."""

    datasets: list[Dataset]
    incomplete: str | None = None


class ArchiveError(Exception):
    """An archive could not answer; `reason` is a short, patient-free phrase for the outcome."""

    def __init__(self, archive: str, reason: str) -> None:
        super().__init__(f"{archive}: {reason}")
        self.archive = archive
        self.reason = reason


@runtime_checkable
class Archive(Protocol):
    """A trust archive, queried at study, series and instance level in DICOM JSON."""

    name: str

    def find_studies(self, query: StudyQuery) -> Found:
        """Study-level datasets (with patient attributes) matching the query."""
        ...

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...]) -> Found:
        """Series-level datasets, each with its StudyInstanceUID, of the studies matching the query.

        `study_uids` are the studies find_studies returned for the same query: an archive that can
        ask for all of a patient's series at once ignores them; one that cannot (DIMSE) uses them.
        """
        ...

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        """Instance-level datasets of one study (optionally one series), each with its series UID."""
        ...

    def close(self) -> None:
        """Release connections; the archive is not used afterwards."""
        ...
