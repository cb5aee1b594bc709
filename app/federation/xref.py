"""The patient cross-reference: NHS number <-> each trust's local PatientID (for match: xref).

The embedded default is a CSV file (nhs_number,trust,local_patient_id,issuer), read at start-up;
an IHE PIXm service ($ihe-pix, the region's master patient index) can stand in its place behind the
same two look-ups: `local_keys` and `reverse.get`.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cachetools import TTLCache

from app.archives.http import failure_reason, new_session
from app.core import systems
from app.core.identity import nhs_number_problem
from app.core.query import PatientKey, is_plain_key
from app.telemetry.logs import upstream_headers

log = logging.getLogger(__name__)

COLUMNS = ("nhs_number", "trust", "local_patient_id", "issuer")


class XrefError(ValueError):
    """The cross-reference file is unusable; the message names the line."""


@dataclass(frozen=True)
class PatientXref:
    """The CSV cross-reference: both directions held in memory."""

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


class _PixmReverse:
    """(trust, local id, issuer) -> NHS number, asked of the PIXm service on first use, then cached."""

    def __init__(self, owner: PixmXref) -> None:
        self.owner = owner

    def get(self, key: tuple[str, str, str], default: str | None = None) -> str | None:
        trust, local, issuer = key
        if issuer:  # the index keys local ids by trust; an issuer-qualified lookup must agree with it
            found = self.owner.nhs_number_for(trust, local)
            expected = self.owner.issuers.get(trust)
            return found if found is not None and (expected is None or expected == issuer) else default
        found = self.owner.nhs_number_for(trust, local)
        return found if found is not None else default


class PixmXref:
    """The cross-reference held by an IHE PIXm service ($ihe-pix), e.g. the region's master patient index.

    Answers (found or not) are cached for `ttl_s`, at most `max_entries` of them, the least recently
    used going first; a service that cannot be reached, or answers an error, means "not known" and is
    asked again next time, so a study whose identity cannot be resolved is withheld, never guessed.
    """

    def __init__(
        self,
        url: str,
        trusts: dict[str, str],
        issuers: dict[str, str],
        headers: Callable[[], dict[str, str]],
        timeout_s: float = 5.0,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.trusts = trusts  # trust id -> ODS code
        self.issuers = issuers  # trust id -> IssuerOfPatientID the archive uses (if any)
        self.headers = headers
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.session = new_session()
        self._cache: TTLCache[tuple[str, str], list[tuple[str, str]], float] = TTLCache(max_entries, ttl_s, timer=clock)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe; searches ask from many threads
        self.reverse = _PixmReverse(self)

    def _ask(self, system: str, value: str) -> list[tuple[str, str]]:
        """(system, value) of every identifier the service cross-references with this one."""
        key = (system, value)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            response = self.session.get(
                f"{self.url}/Patient/$ihe-pix",
                timeout=self.timeout_s,
                params={"sourceIdentifier": f"{system}|{value}"},
                headers={"Accept": "application/fhir+json", **self.headers(), **upstream_headers()},
            )
        except requests.RequestException as exc:
            log.warning("PIXm service %s could not be reached (%s)", self.url, failure_reason(exc, self.timeout_s))
            return []
        found: list[tuple[str, str]] = []
        if response.status_code == 200:
            try:
                body = response.json()
                found = [
                    (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
                    for p in body.get("parameter", ())
                    if p.get("name") == "targetIdentifier"
                ]
            except (ValueError, KeyError, TypeError):
                log.warning("PIXm service %s answered something that is not a Parameters resource", self.url)
        elif response.status_code != 404:
            log.warning("PIXm service %s answered HTTP %s", self.url, response.status_code)
            return []
        with self._lock:
            self._cache[key] = found
        return found

    def local_keys(self, nhs_number: str, trust_id: str) -> tuple[PatientKey, ...]:
        wanted = systems.local_patient_identifier(self.trusts[trust_id])
        return tuple(
            PatientKey(value, self.issuers.get(trust_id))
            for system, value in self._ask(systems.NHS_NUMBER, nhs_number)
            if system == wanted and is_plain_key(value)
        )

    def nhs_number_for(self, trust_id: str, local_id: str) -> str | None:
        numbers = {
            v
            for s, v in self._ask(systems.local_patient_identifier(self.trusts[trust_id]), local_id)
            if s == systems.NHS_NUMBER
        }
        valid = {n for n in numbers if nhs_number_problem(n) is None}
        return valid.pop() if len(valid) == 1 else None  # two NHS numbers for one local id: nobody's
