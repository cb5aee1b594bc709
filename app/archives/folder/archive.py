"""The embedded archive: a folder of DICOM Part 10 files, indexed with pydicom at start-up.

It answers the same study/series/instance queries, in the same DICOM JSON, as a QIDO-RS archive
asked for the attributes in attributes.py, with the study-level counts a QIDO-RS archive computes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from app.archives import attributes
from app.archives.protocol import Archive, ArchiveError, Capabilities, Found, Probe
from app.core import dicom_json as dj
from app.core.dicom_json import Dataset
from app.core.query import NameQuery, StudyQuery

log = logging.getLogger(__name__)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # attributes.py names only dictionary keywords: a typo there must not pass silently
        raise ValueError(f"attributes.py: {keyword!r} is not a DICOM keyword")
    return tag


_TAGS = {
    level: tuple(_tag(k) for k in keywords)
    for level, keywords in (
        ("study", attributes.STUDY),
        ("series", attributes.SERIES),
        ("instance", attributes.INSTANCE),
    )
}


def _select(ds: pydicom.Dataset, level: str) -> Dataset:
    """The DICOM JSON of the attributes wanted at `level` (bulk data never included)."""
    out: Dataset = {}
    for tag in _TAGS[level]:
        if tag in ds:
            element = ds[tag]
            out[f"{tag:08X}"] = element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1 << 20)
    return out


def _name_matches(study: Dataset, wanted: NameQuery) -> bool:
    """DICOM PN wildcard matching of `Family*` / `Family^Given*`, case-insensitive as QIDO archives do."""
    value = (study.get(dj.PATIENT_NAME, {}).get("Value") or [{}])[0]
    alphabetic = value.get("Alphabetic", "") if isinstance(value, dict) else str(value)
    family, _, rest = alphabetic.partition("^")
    given = rest.split("^", 1)[0]
    if wanted.given is None:
        return family.casefold().startswith(wanted.family.casefold())
    return family.casefold() == wanted.family.casefold() and given.casefold().startswith(wanted.given.casefold())


def _first(ds: Dataset, tag: str) -> str | None:
    values = ds.get(tag, {}).get("Value") or []
    return str(values[0]) if values and values[0] is not None else None


class StoredFile(NamedTuple):
    """One Part 10 file of the folder, as image retrieval needs it (folder_wado.py)."""

    sop_instance_uid: str
    path: Path
    transfer_syntax: str


class FolderArchive:
    """An Archive over `path/**/*.dcm`; the index is read once and is immutable afterwards."""

    capabilities = Capabilities(series_by_patient=True)  # the index answers a patient's series directly

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self._studies: dict[str, Dataset] = {}
        self._series: dict[str, Dataset] = {}
        self._instances: dict[str, list[Dataset]] = defaultdict(list)
        # study UID -> series UID -> its files, for image retrieval (folder_wado.py)
        self.files: dict[str, dict[str, list[StoredFile]]] = defaultdict(lambda: defaultdict(list))
        self._index()

    @property
    def adapter(self) -> Archive:
        return self

    def _index(self) -> None:
        if not self.path.is_dir():
            raise ArchiveError(self.name, f"folder {self.path} does not exist")
        series_of_study: dict[str, set[str]] = defaultdict(set)
        for file in sorted(self.path.rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(file, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError) as exc:
                log.warning("folder archive %s: skipped unreadable file %s (%s)", self.name, file, exc)
                continue
            study_uid, series_uid = ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID")
            if not study_uid or not series_uid:
                log.warning("folder archive %s: skipped %s without study or series UID", self.name, file)
                continue
            self._studies.setdefault(str(study_uid), _select(ds, "study"))
            self._series.setdefault(str(series_uid), _select(ds, "series"))
            self._instances[str(series_uid)].append(_select(ds, "instance"))
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
            self.files[str(study_uid)][str(series_uid)].append(
                StoredFile(str(ds.get("SOPInstanceUID", "")), file, syntax)
            )
            series_of_study[str(study_uid)].add(str(series_uid))
        for study_uid, series_uids in series_of_study.items():
            self._add_counts(self._studies[study_uid], sorted(series_uids))

    def _add_counts(self, study: Dataset, series_uids: list[str]) -> None:
        modalities: list[str] = []
        total = 0
        for uid in series_uids:
            count = len(self._instances[uid])
            self._series[uid][dj.NUMBER_OF_SERIES_RELATED_INSTANCES] = {"vr": "IS", "Value": [count]}
            total += count
            modality = _first(self._series[uid], dj.MODALITY)
            if modality and modality not in modalities:
                modalities.append(modality)
        study[dj.MODALITIES_IN_STUDY] = {"vr": "CS", "Value": modalities}
        study[dj.NUMBER_OF_STUDY_RELATED_SERIES] = {"vr": "IS", "Value": [len(series_uids)]}
        study[dj.NUMBER_OF_STUDY_RELATED_INSTANCES] = {"vr": "IS", "Value": [total]}

    # -- matching -------------------------------------------------------------------------
    def _matches(self, study: Dataset, query: StudyQuery, study_uid: str) -> bool:
        if query.patient is not None:
            if _first(study, dj.PATIENT_ID) != query.patient.patient_id:
                return False
            if query.patient.issuer is not None and _first(study, dj.ISSUER_OF_PATIENT_ID) != query.patient.issuer:
                return False
        if query.study_uids and study_uid not in query.study_uids:
            return False
        if query.accession_number is not None and _first(study, dj.ACCESSION_NUMBER) != query.accession_number:
            return False
        if query.patient_name is not None and not _name_matches(study, query.patient_name):
            return False
        if query.modalities:
            held = set(study.get(dj.MODALITIES_IN_STUDY, {}).get("Value") or [])
            if not held.intersection(query.modalities):
                return False
        if query.date_from or query.date_to:
            date = _first(study, dj.STUDY_DATE) or ""
            if not (len(date) == 8 and date.isdigit()):
                return False
            if (query.date_from and date < query.date_from) or (query.date_to and date > query.date_to):
                return False
        return True

    def _study_uids_for(self, query: StudyQuery) -> list[str]:
        candidates: list[str] | Any = self._studies
        if query.series_uid is not None:
            series = self._series.get(query.series_uid)
            candidates = [_first(series, dj.STUDY_INSTANCE_UID)] if series else []
        if query.sop_instance_uid is not None:
            candidates = [uid for uid in candidates if self._holds_instance(uid, query.sop_instance_uid)]
        return [uid for uid in candidates if uid in self._studies and self._matches(self._studies[uid], query, uid)]

    def _holds_instance(self, study_uid: str, sop_uid: str) -> bool:
        return any(
            _first(i, dj.SOP_INSTANCE_UID) == sop_uid
            for series_uid, series in self._series.items()
            if _first(series, dj.STUDY_INSTANCE_UID) == study_uid
            for i in self._instances[series_uid]
        )

    # -- Archive protocol -----------------------------------------------------------------
    def find_studies(self, query: StudyQuery) -> Found:
        return Found([self._studies[uid] for uid in self._study_uids_for(query)])

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Found:
        wanted = set(self._study_uids_for(query))
        return Found([s for s in self._series.values() if _first(s, dj.STUDY_INSTANCE_UID) in wanted])

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        return Found(
            [
                i
                for uid, series in self._series.items()
                if _first(series, dj.STUDY_INSTANCE_UID) == study_uid and (series_uid is None or uid == series_uid)
                for i in self._instances[uid]
            ]
        )

    def close(self) -> None:
        """Nothing to release: the index is in memory."""


def probe_folder(archive: FolderArchive, timeout_s: float) -> Probe:
    """The folder is still there (the index was read at start-up; `timeout_s` is not needed)."""
    return Probe(True) if archive.path.is_dir() else Probe(False, "folder missing")
