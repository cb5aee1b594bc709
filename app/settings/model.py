"""The typed, frozen settings the facade runs on. Defaults are not written here: the loader fills them
from the schema (app/settings/schema.json), the one place each default is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

Config = Mapping[str, Any]  # a validated section handed to its one reader as it is (upstream credentials)


@dataclass(frozen=True)
class NhsNumberRule:
    """How a trust's archive carries the NHS number: as PatientID (with an issuer) or via the xref."""

    match: str
    issuer: str | None = None


# -- archives: one class per `trusts[].archive.type` ---------------------------------------------------
@dataclass(frozen=True)
class FolderArchiveSettings:
    """Part 10 files in a folder, indexed at start (the demo's embedded archives)."""

    type: Literal["folder"]
    path: Path


@dataclass(frozen=True)
class DicomWebArchiveSettings:
    """A DICOMweb service: QIDO-RS at `url`, WADO-RS at `wado_url` (default: `url`)."""

    type: Literal["dicomweb"]
    url: str
    page_size: int
    auth: Config  # upstream credentials (app.archives.http.UpstreamAuth)
    tls: Config
    wado_url: str | None = None
    timeout_s: float | None = None  # None: federation.archive_timeout_s


@dataclass(frozen=True)
class DimseArchiveSettings:
    """A DIMSE archive: C-FIND at host:port; images only through a `wado_url` of its own."""

    type: Literal["dimse"]
    host: str
    port: int
    called_aet: str
    calling_aet: str
    wado_url: str | None = None
    timeout_s: float | None = None  # None: federation.archive_timeout_s


ArchiveSettings = FolderArchiveSettings | DicomWebArchiveSettings | DimseArchiveSettings
# `trusts[].archive.type` -> its settings class; the class's fields are the schema branch's keys.
ARCHIVE_SETTINGS: Mapping[str, type[ArchiveSettings]] = {
    "folder": FolderArchiveSettings,
    "dicomweb": DicomWebArchiveSettings,
    "dimse": DimseArchiveSettings,
}


@dataclass(frozen=True)
class ArchiveLimits:
    """What one search may cost one archive (S1, docs/security.md): the loader takes them from `search` and
    `federation` (the queries cap by the archive's type); the federation and the adapter enforce them."""

    max_values_per_parameter: int  # search.max_values_per_parameter: distinct values of one parameter
    max_queries: int  # federation.max_queries_per_archive.<type>: queries of one search's plan, before paging
    max_study_reads: int  # federation.max_study_reads: studies whose series or instances are read one by one
    max_pages: int  # federation.max_pages: QIDO-RS pages per query
    max_instance_reads: int  # federation.max_instance_reads: studies whose instance metadata is read
    max_dimse_matches: int  # federation.max_dimse_matches: matches read from one DIMSE C-FIND

    def queries_key(self, archive_type: str) -> str:
        """The setting that holds `max_queries` for an archive of this type (named in a refusal)."""
        return f"federation.max_queries_per_archive.{archive_type}"


@dataclass(frozen=True)
class TrustSettings:
    id: str
    name: str
    ods_code: str
    accession_system: str
    wado_url: str | None
    archive: ArchiveSettings
    nhs_number: NhsNumberRule
    limits: ArchiveLimits
    viewer: Config | None = None

    @property
    def archive_timeout_s(self) -> float | None:
        """The archive's own timeout, when it has one (folder archives answer from memory)."""
        return None if isinstance(self.archive, FolderArchiveSettings) else self.archive.timeout_s


# -- authorization: one class per `auth.mode` -------------------------------------------------------------
@dataclass(frozen=True)
class NoAuthSettings:
    """No authorization at all (insecure_no_auth: true; logged loudly, never with real data)."""

    mode: Literal["none"]
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExternalAuthSettings:
    """Tokens of the region's identity provider: JWTs by JWKS, or opaque tokens by introspection."""

    mode: Literal["external"]
    issuers: tuple[Config, ...]
    smart_configuration: Config
    cors_origins: tuple[str, ...]


@dataclass(frozen=True)
class SignInSettings:
    """The embedded server's sign-in throttle and login sessions (`auth.sign_in`; app.auth.server.signin)."""

    failures_per_account: int
    failures_per_address: int
    failure_window_s: int
    max_wait_s: int
    session_idle_s: int
    session_max_s: int


@dataclass(frozen=True)
class EmbeddedAuthSettings:
    """The facade's own SMART App Launch authorization server under /auth."""

    mode: Literal["embedded"]
    signing_keys: Path
    store: str  # sqlite:<absolute path>, redis://..., unix://... or postgresql://...
    access_token_lifetime_s: int
    clients: tuple[Config, ...]
    users: tuple[Config, ...]
    cors_origins: tuple[str, ...]
    sign_in: SignInSettings


AuthSettings = NoAuthSettings | ExternalAuthSettings | EmbeddedAuthSettings


@dataclass(frozen=True)
class PatientIndexSettings:
    """An IHE PIXm service holding the cross-reference (instead of the CSV patient_xref)."""

    url: str
    timeout_s: float
    cache_ttl_s: float
    auth: Config  # upstream credentials (app.archives.http.UpstreamAuth)


# -- operations --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateLimitSettings:
    """A token bucket per client: `burst` requests at once, refilled at `requests_per_minute`."""

    requests_per_minute: int
    burst: int
    store: str  # memory, or a Redis URL shared by every facade process


@dataclass(frozen=True)
class OpsSettings:
    """The `ops` section: probes, metrics, logs and rate limiting (README, Operations)."""

    metrics_allow: tuple[str, ...]
    trusted_proxies: int
    log_level: str
    log_patient_data: bool
    gc_thresholds: tuple[int, int, int]
    probe_timeout_s: float
    readiness_cache_s: float
    archives_required: str
    rate_limit: RateLimitSettings | None


@dataclass(frozen=True)
class Settings:
    base_url: str
    timezone: str
    cursor_secret: bytes
    trusts: tuple[TrustSettings, ...]
    auth: AuthSettings
    audit_store: str  # sqlite:<absolute path> (audit.path) or postgresql://... (audit.url)
    patient_index: PatientIndexSettings | None
    patient_xref: Path | None
    default_count: int
    max_count: int
    max_workers: int
    deadline_s: float
    archive_timeout_s: float
    breaker_threshold: int
    breaker_cooldown_s: float
    cache_ttl_s: float
    max_report_reads: int  # federation.max_report_reads: report metadata reads per DiagnosticReport search
    report_cache_s: float  # federation.report_cache_s
    gateway_owner_cache_s: float
    gateway_chunk_bytes: int
    gateway_thumbnail_px: int
    gateway_relay: str  # gateway.relay: "python" or "nginx" (X-Accel-Redirect, app.web.accel)
    ops: OpsSettings
    apps_frame_ancestors: tuple[str, ...]  # origins that may frame the sample apps (empty: none)
    source: str = "<dict>"
    demo: bool = False  # the demo's published credentials are allowed (app.settings.demo_problems)

    @property
    def base_path(self) -> str:
        """The URL path at which the FHIR API is mounted, e.g. ``/fhir``."""
        return urlsplit(self.base_url).path.rstrip("/")

    @property
    def public_root(self) -> str:
        """Scheme and authority of the public base URL, e.g. ``http://127.0.0.1:8080``."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def trust(self, trust_id: str) -> TrustSettings | None:
        return next((t for t in self.trusts if t.id == trust_id), None)

    def timeout_of(self, trust: TrustSettings) -> float:
        """A trust's time budget per search: its archive's own timeout, else the federation's."""
        own = trust.archive_timeout_s
        return self.archive_timeout_s if own is None else own
