"""Configuration: one YAML (or JSON) file -> JSON Schema -> frozen settings.

Every problem is named by its key (``trusts[2].ods_code: ...``) and all of them are reported at
once, so that an operator fixes a file in one pass. Relative paths are resolved against the
directory of the configuration file, not the working directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml

from app.core import systems

SCHEMA_PATH = Path(__file__).with_name("schema.json")
CURSOR_SECRET_ENV = "FACADE_CURSOR_SECRET"
BASE_URL_ENV = "FACADE_BASE_URL"


VIEWER_VARIABLES = frozenset({"studyUID", "accessionNumber", "patientID"})
_TEMPLATE_VARIABLE = re.compile(r"\{([^{}]*)\}")


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every reason, one sentence each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"configuration {source} is invalid ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class NhsNumberRule:
    """How a trust's archive carries the NHS number: as PatientID (with an issuer) or via the xref."""

    match: str
    issuer: str | None = None


@dataclass(frozen=True)
class TrustSettings:
    id: str
    name: str
    ods_code: str
    accession_system: str
    wado_url: str | None
    archive: dict[str, Any]
    nhs_number: NhsNumberRule
    viewer: dict[str, Any] | None = None


@dataclass(frozen=True)
class RateLimitSettings:
    """A token bucket per client: `burst` requests at once, refilled at `requests_per_minute`."""

    requests_per_minute: int
    burst: int
    store: str = "memory"  # or a Redis URL shared by every facade process


@dataclass(frozen=True)
class OpsSettings:
    """The `ops` section: probes, metrics, logs and rate limiting (README, Operations)."""

    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    trusted_proxies: int = 0
    log_level: str = "INFO"
    log_patient_data: bool = False
    probe_timeout_s: float = 2.0
    readiness_cache_s: float = 5.0
    archives_required: str = "any"
    rate_limit: RateLimitSettings | None = None


@dataclass(frozen=True)
class Settings:
    base_url: str
    timezone: str
    cursor_secret: bytes
    trusts: tuple[TrustSettings, ...]
    auth: dict[str, Any]
    audit_path: Path
    patient_index: dict[str, Any] | None
    patient_xref: Path | None = None
    default_count: int = 50
    max_count: int = 200
    max_workers: int = 16
    deadline_s: float = 10.0
    archive_timeout_s: float = 5.0
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 30.0
    cache_ttl_s: float = 0.0
    gateway_owner_cache_s: float = 30.0
    gateway_chunk_bytes: int = 1 << 20
    gateway_thumbnail_px: int = 128
    source: str = "<dict>"
    ops: OpsSettings = field(default_factory=OpsSettings)

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


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _key_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed) if isinstance(error.instance, dict) else []
        names = ", ".join(repr(k) for k in unknown)
        return f"{where}: unknown key {names} (allowed: {', '.join(sorted(allowed))})"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        prefix = "" if where == "(top level)" else f"{where}."
        return f"{prefix}{missing}: required key is missing"
    return f"{where}: {error.message}"


def _leaf_errors(errors: list[jsonschema.ValidationError]) -> list[jsonschema.ValidationError]:
    """Replace if/then/allOf wrappers by the errors inside them, the ones that name a key."""
    out: list[jsonschema.ValidationError] = []
    for error in errors:
        if error.context:
            out.extend(_leaf_errors(list(error.context)))
        else:
            out.append(error)
    return out


def schema_problems(doc: Any) -> list[str]:
    """Every JSON Schema violation in `doc`, one sentence each, sorted by key."""
    errors = _leaf_errors(list(_validator().iter_errors(doc)))
    messages = {_describe(e) for e in errors}
    return sorted(messages)


def config_secret(doc: dict[str, Any], key: str) -> str:
    """A secret from configuration: the environment variable named by `<key>_env`, else `<key>` itself."""
    env = doc.get(f"{key}_env")
    return os.environ.get(env, "") if env else str(doc.get(key, ""))


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(os.path.expandvars(value)).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def semantic_problems(doc: dict[str, Any], base_dir: Path) -> list[str]:
    """Problems that a schema cannot express: uniqueness, files that must exist, known zones."""
    problems: list[str] = []
    trusts = doc.get("trusts", [])
    for key in ("id", "ods_code"):
        seen: dict[str, int] = {}
        for i, trust in enumerate(trusts):
            value = trust.get(key)
            if value in seen:
                problems.append(f"trusts[{i}].{key}: {value!r} is already used by trusts[{seen[value]}]")
            elif value is not None:
                seen[value] = i
    for i, trust in enumerate(trusts):
        archive = trust.get("archive", {})
        if archive.get("type") == "folder" and isinstance(archive.get("path"), str):
            path = _resolve(base_dir, archive["path"])
            if not path.is_dir():
                problems.append(f"trusts[{i}].archive.path: folder {path} does not exist")
        template = trust.get("viewer", {}).get("url_template")
        if isinstance(template, str):
            unknown = sorted(set(_TEMPLATE_VARIABLE.findall(template)) - VIEWER_VARIABLES)
            if unknown or template.count("{") != template.count("}"):
                problems.append(
                    f"trusts[{i}].viewer.url_template: only the variables "
                    f"{', '.join('{' + v + '}' for v in sorted(VIEWER_VARIABLES))} may be used"
                    + (f" (found {', '.join(unknown)})" if unknown else "")
                )
    uses_xref = any(t.get("nhs_number", {}).get("match") == "xref" for t in trusts)
    xref = doc.get("patient_xref")
    if uses_xref and not xref and not doc.get("patient_index"):
        problems.append("patient_xref: required (or patient_index) because a trust uses nhs_number.match 'xref'")
    if xref and doc.get("patient_index"):
        problems.append("patient_index: give patient_xref or patient_index, not both")
    if isinstance(xref, str) and not _resolve(base_dir, xref).is_file():
        problems.append(f"patient_xref: file {_resolve(base_dir, xref)} does not exist")
    zone = doc.get("timezone", "Europe/London")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone: {zone!r} is not a known IANA time zone")
    search = doc.get("search", {})
    if search.get("default_count", 50) > search.get("max_count", 200):
        problems.append("search.default_count: larger than search.max_count")
    for i, network in enumerate(doc.get("ops", {}).get("metrics_allow", ())):
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            problems.append(f"ops.metrics_allow[{i}]: {exc}")
    return problems


def read_document(path: Path) -> Any:
    """Parse the file as YAML (a superset of JSON), naming the line of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"not valid YAML or JSON: {exc}"]) from None


def check_document(doc: Any, base_dir: Path) -> list[str]:
    """All problems of a parsed configuration document; empty when it is usable."""
    if not isinstance(doc, dict):
        return ["(top level): the configuration must be a mapping of keys to values"]
    problems = schema_problems(doc)
    # When the document's shape is wrong the schema problems above already say where.
    with contextlib.suppress(TypeError, AttributeError, KeyError):
        problems += semantic_problems(doc, base_dir)
    return sorted(set(problems))


def settings_from_document(doc: Any, base_dir: Path, source: str = "<dict>") -> Settings:
    problems = check_document(doc, base_dir)
    if problems:
        raise ConfigError(source, problems)
    secret = os.environ.get(CURSOR_SECRET_ENV) or doc.get("cursor_secret") or _derived_secret(doc)
    trusts = tuple(_trust(t, base_dir) for t in doc["trusts"])
    search = doc.get("search", {})
    federation = doc.get("federation", {})
    gateway = doc.get("gateway", {})
    xref = doc.get("patient_xref")
    return Settings(
        base_url=(os.environ.get(BASE_URL_ENV) or doc["base_url"]).rstrip("/"),
        timezone=doc.get("timezone", "Europe/London"),
        cursor_secret=secret.encode(),
        trusts=trusts,
        patient_xref=_resolve(base_dir, xref) if xref else None,
        default_count=search.get("default_count", 50),
        max_count=search.get("max_count", 200),
        max_workers=federation.get("max_workers", 16),
        deadline_s=float(federation.get("deadline_s", 10)),
        archive_timeout_s=float(federation.get("archive_timeout_s", 5)),
        breaker_threshold=federation.get("circuit_breaker", {}).get("threshold", 3),
        breaker_cooldown_s=float(federation.get("circuit_breaker", {}).get("cooldown_s", 30)),
        cache_ttl_s=float(federation.get("cache_ttl_s", 0)),
        gateway_owner_cache_s=float(gateway.get("owner_cache_s", 30)),
        gateway_chunk_bytes=int(gateway.get("chunk_bytes", 1 << 20)),
        gateway_thumbnail_px=int(gateway.get("thumbnail_px", 128)),
        source=source,
        auth=_auth(doc["auth"], base_dir),
        patient_index=doc.get("patient_index"),
        audit_path=_resolve(base_dir, doc["audit"]["path"]),
        ops=_ops(doc.get("ops", {}), doc["auth"]),
    )


def _ops(doc: dict[str, Any], auth: dict[str, Any]) -> OpsSettings:
    readiness = doc.get("readiness", {})
    limit = doc.get("rate_limit")
    rate_limit = None
    if limit is not None:
        per_minute = limit["requests_per_minute"]
        # Without a store of its own, the limiter shares the authorization state's Redis when there is one.
        shared = auth.get("store", "") if str(auth.get("store", "")).startswith(("redis", "unix://")) else "memory"
        rate_limit = RateLimitSettings(
            per_minute, limit.get("burst", max(1, per_minute // 6)), limit.get("store", shared)
        )
    return OpsSettings(
        metrics_allow=tuple(doc.get("metrics_allow", OpsSettings.metrics_allow)),
        trusted_proxies=int(doc.get("trusted_proxies", 0)),
        log_level=doc.get("log_level", "INFO"),
        log_patient_data=doc.get("log_patient_data", False),
        probe_timeout_s=float(readiness.get("probe_timeout_s", 2)),
        readiness_cache_s=float(readiness.get("cache_s", 5)),
        archives_required=readiness.get("archives_required", "any"),
        rate_limit=rate_limit,
    )


def _auth(doc: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The auth section with its file paths resolved against the configuration's folder."""
    auth = dict(doc)
    if auth["mode"] == "embedded":
        auth["signing_keys"] = str(_resolve(base_dir, auth["signing_keys"]))
        store = auth.get("store", "sqlite:auth-state.sqlite")
        if store.startswith("sqlite:"):
            store = "sqlite:" + str(_resolve(base_dir, store.removeprefix("sqlite:")))
        auth["store"] = store
    return auth


def _derived_secret(doc: dict[str, Any]) -> str:
    """Without a configured key, one derived from the whole configuration, so that every worker
    started from the same file signs cursors alike. A cursor's signature guards its integrity
    (each request is re-authorised anyway); set FACADE_CURSOR_SECRET to keep it secret as well."""
    canonical = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(b"gm-facade paging cursors\n" + canonical).hexdigest()


def _trust(doc: dict[str, Any], base_dir: Path) -> TrustSettings:
    archive = dict(doc["archive"])
    if archive["type"] == "folder":
        archive["path"] = _resolve(base_dir, archive["path"])
    rule = doc["nhs_number"]
    return TrustSettings(
        id=doc["id"],
        name=doc["name"],
        ods_code=doc["ods_code"],
        accession_system=doc.get("accession_system") or systems.accession_number(doc["ods_code"]),
        wado_url=doc.get("wado_url"),
        archive=archive,
        nhs_number=NhsNumberRule(rule["match"], rule.get("issuer", "NHS" if rule["match"] == "patient_id" else None)),
        viewer=doc.get("viewer"),
    )


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, validate and freeze a configuration file; raises ConfigError naming every problem."""
    file = Path(path)
    return settings_from_document(read_document(file), file.resolve().parent, str(file))
