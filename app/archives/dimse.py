"""The DIMSE archive: a legacy PACS asked with Study Root C-FIND (pynetdicom), answering DICOM JSON.

Each call opens one association for its C-FINDs: a patient search costs one STUDY C-FIND and one
SERIES C-FIND per study (a hierarchical archive refuses series queries without their study). Keys
come only from the typed StudyQuery, so no wildcard is ever sent; universal matching uses empty
return keys. Identifiers become the DICOM JSON model (PS3.18 Annex F) of attributes.py, minus the
return keys the archive left empty: what it does not give (dcmqrscp: ModalitiesInStudy, the
counts, SOPClassUID, sequences) stays absent for the mapping to derive or omit.

Every C-FIND reads at most `max_matches` matches (federation.max_dimse_matches): beyond it the
facade sends C-CANCEL, reads no further match and reports the answer as incomplete, never as a
failure of the archive. With at most federation.max_queries_per_archive.dimse study queries per
search, that bounds the studies one search reads from a DIMSE archive; their series are asked for
one C-FIND per study for at most federation.max_study_reads of them (app.federation.fanout).

Every pynetdicom timeout is `timeout_s` and each C-FIND must end within it. Failures become an
ArchiveError with a short, patient-free reason; `probe_dimse` (one C-ECHO) is the readiness probe.
Importing this module (the registry does, at start-up) switches off pynetdicom's identifier logging
(patient data at INFO level) for the process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset as DicomDataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification  # type: ignore[attr-defined]

from app.archives import attributes
from app.archives.protocol import Archive, ArchiveError, Capabilities, Found, Probe
from app.core import dicom_json as dj
from app.core.dicom_json import Dataset
from app.core.query import StudyQuery, is_plain_key, pn_pattern

FIND = StudyRootQueryRetrieveInformationModelFind
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

RETURN_KEYS = {"STUDY": attributes.STUDY, "SERIES": attributes.SERIES, "IMAGE": attributes.INSTANCE}
_WANTED = {level: frozenset(tag_for_keyword(k) for k in kws) for level, kws in RETURN_KEYS.items()}
_NOT_KEYS = frozenset({"SpecificCharacterSet"})  # sent by the SCP when needed, never a key
_PENDING = (0xFF00, 0xFF01)
_MSG_ID = 1  # one C-FIND at a time per association: its C-CANCEL names this id
Keys = dict[str, Any]


def identifier(level: str, keys: Keys, return_keys: tuple[str, ...]) -> DicomDataset:
    """A C-FIND identifier: empty return keys, then exact keys (a list only for UIDs)."""
    values = [v for value in keys.values() for v in (value if isinstance(value, list) else [value])]
    # The one wildcard allowed: the trailing `*` pn_pattern() puts after a validated name.
    plain = [
        v[:-1] if k == "PatientName" and isinstance(v, str) and v.endswith("*") else v
        for k, value in keys.items()
        for v in (value if isinstance(value, list) else [value])
    ]
    if not all(isinstance(v, str) and is_plain_key(v) for v in plain):
        raise ValueError("a C-FIND key may not be empty or hold DICOM wildcard or list characters")
    ds = DicomDataset()
    for tag in (tag_for_keyword(k) or 0 for k in return_keys if k not in _NOT_KEYS):
        vr = dictionary_VR(tag)
        ds.add_new(tag, vr, [] if vr == "SQ" else None)
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    ds.QueryRetrieveLevel = level
    if not all(v.isascii() for v in values):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def to_json(ds: DicomDataset, level: str, **uids: str | None) -> Dataset:
    """DICOM JSON of the wanted attributes the archive filled, plus the parent UIDs it omitted."""
    out: Dataset = {}
    for tag in [t for t in ds.keys() if t in _WANTED[level]]:  # noqa: SIM118 (a Dataset iterates elements)
        try:
            element = ds[tag]
            empty = all(len(i) == 0 for i in element.value) if element.VR == "SQ" else element.is_empty
            if not empty:  # an empty return key means "no value"
                out[f"{tag:08X}"] = element.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1 << 20)
        except Exception:  # an undecodable value is left out like any value the archive did not give
            continue
    for key, uid in ((dj.STUDY_INSTANCE_UID, uids.get("study")), (dj.SERIES_INSTANCE_UID, uids.get("series"))):
        if uid is not None:
            out.setdefault(key, {"vr": "UI", "Value": [uid]})
    return out


def study_keys(query: StudyQuery) -> Keys:
    """The STUDY-level matching keys of a query (one modality at most: list matching is for UIDs)."""
    keys: Keys = {}
    if query.patient is not None:
        keys["PatientID"] = query.patient.patient_id
        if query.patient.issuer is not None:
            keys["IssuerOfPatientID"] = query.patient.issuer
    if query.study_uids:
        keys["StudyInstanceUID"] = list(query.study_uids) if len(query.study_uids) > 1 else query.study_uids[0]
    if query.accession_number is not None:
        keys["AccessionNumber"] = query.accession_number
    if query.date_from or query.date_to:
        keys["StudyDate"] = f"{query.date_from or ''}-{query.date_to or ''}"
    if len(query.modalities) == 1:
        keys["ModalitiesInStudy"] = query.modalities[0]
    if query.patient_name is not None:
        keys["PatientName"] = pn_pattern(query.patient_name)
    return keys


def same_patient(study: Dataset, query: StudyQuery) -> bool:
    """False for a study of another patient that an archive matched loosely (ignoring the issuer, say)."""
    wanted = query.patient
    if wanted is None:
        return True
    pid, issuer = ((study.get(t, {}).get("Value") or [None])[0] for t in (dj.PATIENT_ID, dj.ISSUER_OF_PATIENT_ID))
    return pid in (None, wanted.patient_id) and (wanted.issuer is None or issuer in (None, wanted.issuer))


class DimseArchive:
    """An Archive over Study Root C-FIND; one AE, one association per call, safe to share between threads."""

    # A hierarchical archive refuses a SERIES C-FIND without its study: series wait for the studies.
    capabilities = Capabilities(series_by_patient=False)

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        called_aet: str,
        calling_aet: str,
        timeout_s: float,
        max_matches: int = 10_000,  # the registry passes federation.max_dimse_matches; this serves adapters by hand
    ) -> None:
        self.name, self.host, self.port, self.called_aet, self.timeout_s = name, host, port, called_aet, timeout_s
        self.calling_aet = calling_aet
        self.max_matches = max_matches
        self._ae = AE(ae_title=calling_aet)
        self._ae.add_requested_context(FIND)
        for setting in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(self._ae, setting, timeout_s)

    @property
    def adapter(self) -> Archive:
        return self

    @contextmanager
    def _association(self) -> Iterator[Association]:
        connected: list[bool] = []
        # The reject PDU as the reading thread decoded it: pynetdicom may report the association aborted
        # when the peer closes the connection right after rejecting it (the close can be handled first).
        rejected: list[bool] = []

        def on_pdu(event: evt.Event) -> None:
            if isinstance(event.pdu, A_ASSOCIATE_RJ):
                rejected.append(True)

        began = time.monotonic()
        try:
            assoc = self._ae.associate(
                self.host,
                self.port,
                ae_title=self.called_aet,
                evt_handlers=[
                    (evt.EVT_CONN_OPEN, lambda _event: connected.append(True)),
                    (evt.EVT_PDU_RECV, on_pdu),
                ],
            )
        except Exception as exc:  # e.g. a malformed address
            raise ArchiveError(self.name, "could not open a connection") from exc
        if assoc.is_established:
            assoc.unbind(evt.EVT_PDU_RECV, on_pdu)  # only the negotiation's PDUs matter
        else:
            slow = time.monotonic() - began >= self.timeout_s * 0.9
            if assoc.is_rejected or rejected:
                raise ArchiveError(self.name, "association rejected (check the AE titles)")
            if not connected:
                raise ArchiveError(
                    self.name,
                    f"no connection within {self.timeout_s:g} s" if slow else "connection refused or unreachable",
                )
            raise ArchiveError(
                self.name, f"no association response within {self.timeout_s:g} s" if slow else "association aborted"
            )
        try:
            if not assoc.accepted_contexts:
                raise ArchiveError(self.name, "Study Root C-FIND not accepted by the archive")
            yield assoc
        finally:
            try:
                if assoc.is_established:
                    assoc.release()
            except Exception:
                assoc.abort()

    def _find(
        self, assoc: Association, level: str, keys: Keys, return_keys: tuple[str, ...] | None = None
    ) -> tuple[list[DicomDataset], str | None]:
        """One C-FIND, all of it within timeout_s: at most max_matches matches, and why they may be incomplete."""
        query = identifier(level, keys, RETURN_KEYS[level] if return_keys is None else return_keys)
        deadline = time.monotonic() + self.timeout_s
        late = f"C-FIND not finished within {self.timeout_s:g} s"
        found: list[DicomDataset] = []
        cut: str | None = None  # set once C-CANCEL is sent: later matches are not read
        try:
            assoc.dimse_timeout = self.timeout_s
            for status, ident in assoc.send_c_find(query, FIND, msg_id=_MSG_ID):
                code = status.get("Status")
                if code is None:  # pynetdicom aborted on its DIMSE timeout, or the peer aborted
                    raise ArchiveError(
                        self.name, late if time.monotonic() >= deadline - 0.05 else "association aborted during C-FIND"
                    )
                if code == 0x0000:
                    return found, cut
                if code == 0xFE00:
                    return found, cut or "cancelled"
                if 0xB000 <= code <= 0xBFFF or code == 0x0001:
                    return found, cut or f"archive warning 0x{code:04X}"
                if code not in _PENDING:
                    raise ArchiveError(self.name, f"C-FIND failed with status 0x{code:04X}")
                if ident is None or time.monotonic() >= deadline:
                    assoc.abort()
                    raise ArchiveError(self.name, "malformed C-FIND response" if ident is None else late)
                assoc.dimse_timeout = max(deadline - time.monotonic(), 0.001)
                if cut is not None:
                    continue  # sent before our C-CANCEL arrived: not kept
                if len(found) >= self.max_matches:
                    assoc.send_c_cancel(_MSG_ID, query_model=FIND)
                    cut = (
                        f"more than {self.max_matches} matches to one C-FIND (federation.max_dimse_matches); "
                        "the others were not read"
                    )
                    continue
                found.append(ident)
        except ArchiveError:
            raise
        except Exception as exc:  # pynetdicom: association lost between requests, encoding failure...
            raise ArchiveError(self.name, "C-FIND could not be completed") from exc
        raise ArchiveError(self.name, "association ended during C-FIND")

    def _locate(self, assoc: Association, query: StudyQuery) -> list[str]:
        """The studies holding the query's series or instance, by UID keys alone."""
        level = "IMAGE" if query.sop_instance_uid else "SERIES"
        keys = {
            k: v
            for k, v in (("SeriesInstanceUID", query.series_uid), ("SOPInstanceUID", query.sop_instance_uid))
            if v is not None
        }
        found, _ = self._find(assoc, level, keys, ("StudyInstanceUID", "SeriesInstanceUID"))
        held = {ds.get("StudyInstanceUID") for ds in found}
        return sorted(
            u
            for u in held
            if isinstance(u, str) and is_plain_key(u) and (not query.study_uids or u in query.study_uids)
        )

    # -- Archive protocol -----------------------------------------------------------------
    def find_studies(self, query: StudyQuery) -> Found:
        keys = study_keys(query)
        with self._association() as assoc:
            if query.series_uid is not None or query.sop_instance_uid is not None:
                located = self._locate(assoc, query)
                if not located:
                    return Found([])
                keys["StudyInstanceUID"] = located if len(located) > 1 else located[0]
            found, incomplete = self._find(assoc, "STUDY", keys)
        studies = (to_json(ds, "STUDY") for ds in found)
        return Found([s for s in studies if same_patient(s, query)], incomplete)

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...]) -> Found:
        """The series of `study_uids` (what find_studies returned for `query`), one C-FIND per study."""
        uids = [uid for uid in dict.fromkeys(study_uids) if is_plain_key(uid)]
        series: list[Dataset] = []
        incomplete: str | None = None
        if uids:
            with self._association() as assoc:
                for uid in uids:
                    found, flag = self._find(assoc, "SERIES", {"StudyInstanceUID": uid})
                    series += [to_json(ds, "SERIES", study=uid) for ds in found]
                    incomplete = incomplete or flag
        return Found(series, incomplete)

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        keys: Keys = {"StudyInstanceUID": study_uid}
        if series_uid is not None:
            keys["SeriesInstanceUID"] = series_uid
        with self._association() as assoc:
            found, incomplete = self._find(assoc, "IMAGE", keys)
        return Found([to_json(ds, "IMAGE", study=study_uid, series=series_uid) for ds in found], incomplete)

    def close(self) -> None:
        """Abort any association still open; the archive is not used afterwards."""
        self._ae.shutdown()


def probe_dimse(archive: DimseArchive, timeout_s: float) -> Probe:
    """One C-ECHO on an association of its own (the archive's AE offers only C-FIND)."""
    ae = AE(ae_title=archive.calling_aet)
    ae.add_requested_context(Verification)
    for setting in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, setting, timeout_s)
    try:
        assoc = ae.associate(archive.host, archive.port, ae_title=archive.called_aet)
    except Exception:
        return Probe(False, "could not open a connection")
    if not assoc.is_established:
        return Probe(False, "association rejected" if assoc.is_rejected else "connection refused or unreachable")
    try:
        status = assoc.send_c_echo()
        ok = status is not None and status.get("Status") == 0x0000
        return Probe(True) if ok else Probe(False, "C-ECHO failed")
    finally:
        assoc.release()
