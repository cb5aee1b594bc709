"""The DICOMweb adapter: QIDO-RS conversations (app.archives.exchange), run over one urllib3 pool per
archive (app.archives.http.UpstreamPool), or with every other archive's at once by a search's fan-out.

Every answer an archive may give is turned into data, an `incomplete` note, or an ArchiveError
with a short, patient-free reason: 200 (also with an empty body), 204, 206, 4xx/5xx, 429 with
Retry-After, malformed JSON, a wrong content type, a Warning 299 header, results cut at `limit`
(paged with `offset` until complete, at most `max_pages` pages per query: federation.max_pages, from
the registry; beyond, an `incomplete` note, never an ArchiveError), refused connections, TLS
failures and hangs.

Query strings are built here, not by requests: values are already validated plain keys, and some
archives (Orthanc 1.10's plugin) do not decode percent-encoding, so only characters that must be
escaped are. `probe_dicomweb` is the archive's readiness probe (app.archives.registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
import requests

from app.archives import attributes, budget
from app.archives.exchange import Origin, Request, Steps, Unanswered, run
from app.archives.http import UpstreamAuth, UpstreamPool, failure_reason, new_session, retry_after_seconds
from app.archives.protocol import Archive, ArchiveError, ArchiveRejected, ArchiveRetryLater, Capabilities, Found, Probe
from app.core import dicom_json as dj
from app.core.dicom_json import Dataset
from app.core.query import StudyQuery, pn_pattern
from app.telemetry.logs import upstream_headers

_SAFE = "-._~:^,"  # left unescaped in values (RFC 3986 unreserved plus what QIDO needs verbatim)
_JSON_TYPES = ("application/dicom+json", "application/json")
PROBE_STUDY_UID = "2.25.0"  # a syntactically valid UID under the UUID root that no study has


class DicomWebArchive:
    """An Archive over QIDO-RS. `url` is the DICOMweb base (…/dicom-web)."""

    # /series?PatientID= needs no study UIDs; every query is a conversation (app.archives.exchange)
    capabilities = Capabilities(series_by_patient=True, conversations=True)

    def __init__(
        self,
        name: str,
        url: str,
        timeout_s: float = 3.0,
        page_size: int = 500,
        auth: dict[str, Any] | None = None,
        tls: dict[str, Any] | None = None,
        *,
        max_pages: int = 20,  # the registry passes federation.max_pages; this serves adapters built by hand
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.page_size = page_size
        self.max_pages = max_pages
        self.session = new_session(tls)
        self.pool = UpstreamPool(self.url, self.session)  # the QIDO-RS requests: urllib3 directly (hot path)
        self.auth = UpstreamAuth(auth or {}, self.session, name, timeout_s)
        self.requests_made = 0  # upstream requests, for P7 and the metrics

    @property
    def adapter(self) -> Archive:
        return self

    # -- query building --------------------------------------------------------------------
    @staticmethod
    def _study_keys(query: StudyQuery) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        if query.patient is not None:
            keys.append(("PatientID", query.patient.patient_id))
            if query.patient.issuer:
                keys.append(("IssuerOfPatientID", query.patient.issuer))
        if query.study_uids:
            keys.append(("StudyInstanceUID", ",".join(query.study_uids)))
        if query.accession_number is not None:
            keys.append(("AccessionNumber", query.accession_number))
        if query.modalities:
            keys.append(("ModalitiesInStudy", ",".join(query.modalities)))
        if query.date_from or query.date_to:
            keys.append(("StudyDate", f"{query.date_from or ''}-{query.date_to or ''}"))
        if query.patient_name is not None:
            keys.append(("PatientName", pn_pattern(query.patient_name)))
        return keys

    @staticmethod
    def _query_string(keys: list[tuple[str, str]], fields: tuple[str, ...], offset: int, limit: int) -> str:
        # The only wildcard ever sent is the one pn_pattern() appends to a validated name.
        parts = [f"{k}={quote(v, safe=_SAFE + ('*' if k == 'PatientName' else ''))}" for k, v in keys]
        parts += [f"includefield={f}" for f in fields]
        parts += [f"limit={limit}", f"offset={offset}"]
        return "&".join(parts)

    # -- HTTP ------------------------------------------------------------------------------
    def _get_page(self, path: str, query: str) -> Steps[tuple[list[Dataset], str | None]]:
        left = budget.remaining(self.timeout_s)
        if left <= 0:
            raise ArchiveError(self.name, f"no answer within {self.timeout_s:g} s")
        self.requests_made += 1
        try:
            reply = yield Request(
                f"{self.url}/{path}?{query}",
                {"Accept": "application/dicom+json", **self.auth.headers(), **upstream_headers()},
                self.auth.basic(),
                left,
            )
        except Unanswered as exc:
            raise ArchiveError(self.name, exc.reason(self.timeout_s)) from None
        return self._read(reply.status, reply.headers, reply.body)

    def _read(self, status: int, headers: Mapping[str, str], content: bytes) -> tuple[list[Dataset], str | None]:
        if status == 204:
            return [], None
        wait = retry_after_seconds(headers.get("Retry-After")) if status in (429, 503) else None
        if wait is not None:
            raise ArchiveRetryLater(self.name, f"HTTP {status}, retry after {wait:g} s", wait)
        if status == 413:
            raise ArchiveRejected(self.name, "HTTP 413: the archive found the query too broad")
        if status in (401, 403):
            raise ArchiveRejected(self.name, f"HTTP {status}: the archive refused the facade's credentials")
        if status not in (200, 206):
            kind = ArchiveRejected if 400 <= status < 500 else ArchiveError  # 5xx: the archive is failing
            raise kind(self.name, f"HTTP {status}")
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content and content_type not in _JSON_TYPES:
            raise ArchiveRejected(self.name, f"wrong content type {content_type or 'none'!r}")
        try:
            body = orjson.loads(content) if content.strip() else []
        except orjson.JSONDecodeError:
            raise ArchiveRejected(self.name, "malformed JSON") from None
        if not isinstance(body, list) or not all(isinstance(d, dict) for d in body):
            raise ArchiveRejected(self.name, "malformed answer: not an array of DICOM JSON datasets")
        note = None
        if status == 206:
            note = "the archive returned partial content (206)"
        warning = headers.get("Warning", "")
        if warning.startswith("299"):
            note = "the archive reported that it returned only part of the results (Warning 299)"
        return body, note

    def _search(self, path: str, keys: list[tuple[str, str]], fields: tuple[str, ...]) -> Steps[Found]:
        """One query, paged with `offset` until a short page, for at most `max_pages` pages: the page cap
        bounds what one query may cost, and reaching it is an incomplete answer, not an archive failure."""
        found: list[Dataset] = []
        for _page in range(self.max_pages):
            batch, note = yield from self._get_page(path, self._query_string(keys, fields, len(found), self.page_size))
            found.extend(batch)
            if note:
                return Found(found, note)
            if len(batch) < self.page_size:
                return Found(found)
        return Found(
            found,
            f"more than {self.max_pages * self.page_size} results ({self.max_pages} pages, federation.max_pages); "
            "the rest were not fetched",
        )

    # -- Archive protocol: each call is a conversation (app.archives.exchange), run here one request
    # at a time, or by a search's fan-out with every other archive's at once (studies_steps, series_steps).
    def find_studies(self, query: StudyQuery) -> Found:
        return run(self.studies_steps(query), self.pool.exchange)

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Found:
        return run(self.series_steps(query, study_uids), self.pool.exchange)

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        keys = [("StudyInstanceUID", study_uid)] + ([("SeriesInstanceUID", series_uid)] if series_uid else [])
        return run(self._search("instances", keys, attributes.INSTANCE), self.pool.exchange)

    @property
    def origin(self) -> Origin | None:
        """Where a multiplexer reaches this archive; None when it must go through the pool (a proxy)."""
        return self.pool.origin if self.pool.multiplexable else None

    def studies_steps(self, query: StudyQuery) -> Steps[Found]:
        keys = self._study_keys(query)
        if query.series_uid is not None or query.sop_instance_uid is not None:
            return self._studies_holding(query, keys)
        return self._search("studies", keys, attributes.STUDY)

    def _studies_holding(self, query: StudyQuery, keys: list[tuple[str, str]]) -> Steps[Found]:
        level, key, value = (
            ("series", "SeriesInstanceUID", query.series_uid)
            if query.series_uid is not None
            else ("instances", "SOPInstanceUID", query.sop_instance_uid)
        )
        holders = yield from self._search(level, [*keys, (key, value or "")], ("StudyInstanceUID",))
        uids = sorted(
            {
                str(d[dj.STUDY_INSTANCE_UID]["Value"][0])
                for d in holders.datasets
                if d.get(dj.STUDY_INSTANCE_UID, {}).get("Value")
            }
        )
        if not uids:
            return Found([], holders.incomplete)
        by_uid = [k for k in keys if k[0] != "StudyInstanceUID"] + [("StudyInstanceUID", ",".join(uids))]
        studies = yield from self._search("studies", by_uid, attributes.STUDY)
        return Found(studies.datasets, holders.incomplete or studies.incomplete)

    def series_steps(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Steps[Found]:
        """All series of the query's studies in one request (by patient, or by the study UIDs)."""
        keys = self._study_keys(query) if query.patient is not None else []
        if query.patient is None or query.study_uids:
            keys = [k for k in keys if k[0] != "StudyInstanceUID"]
            keys.append(("StudyInstanceUID", ",".join(query.study_uids or study_uids)))
        keys = [k for k in keys if k[0] not in ("ModalitiesInStudy", "StudyDate", "AccessionNumber")]
        return self._search("series", keys, attributes.SERIES)

    def close(self) -> None:
        self.pool.close()
        self.session.close()


def probe_dicomweb(archive: DicomWebArchive, timeout_s: float) -> Probe:
    """One harmless QIDO-RS request with the archive's own session and credentials: an exact study
    UID that matches nothing (never a wildcard), at most one result."""
    url = f"{archive.url}/studies?StudyInstanceUID={PROBE_STUDY_UID}&limit=1"
    try:
        response = archive.session.get(
            url,
            timeout=timeout_s,
            auth=archive.auth.basic(),
            headers={"Accept": "application/dicom+json", **archive.auth.headers()},
        )
    except requests.RequestException as exc:
        return Probe(False, failure_reason(exc, timeout_s))
    except Exception:  # e.g. no upstream access token (ArchiveError), a malformed URL
        return Probe(False, "request failed")
    if response.status_code in (200, 204):
        return Probe(True)
    return Probe(False, f"HTTP {response.status_code}")
