"""Configuration: one YAML (or JSON) file -> JSON Schema -> frozen settings.

Every problem is named by its key (``trusts[2].ods_code: ...``) and all of them are reported at
once, so that an operator fixes a file in one pass. Relative paths are resolved against the
directory of the configuration file, not the working directory.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml

from app.core import systems
from app.settings.model import (
    ARCHIVE_SETTINGS,
    ArchiveLimits,
    ArchiveSettings,
    AuthSettings,
    DicomWebArchiveSettings,
    DimseArchiveSettings,
    EmbeddedAuthSettings,
    ExternalAuthSettings,
    FolderArchiveSettings,
    NhsNumberRule,
    NoAuthSettings,
    OpsSettings,
    PatientIndexSettings,
    RateLimitSettings,
    Settings,
    SignInSettings,
    TrustSettings,
)

__all__ = [
    "BASE_URL_ENV",
    "CURSOR_SECRET_ENV",
    "ArchiveLimits",
    "ArchiveSettings",
    "AuthSettings",
    "ConfigError",
    "DicomWebArchiveSettings",
    "DimseArchiveSettings",
    "EmbeddedAuthSettings",
    "ExternalAuthSettings",
    "FolderArchiveSettings",
    "NhsNumberRule",
    "NoAuthSettings",
    "OpsSettings",
    "PatientIndexSettings",
    "RateLimitSettings",
    "Settings",
    "SignInSettings",
    "TrustSettings",
    "check_document",
    "config_secret",
    "demo_problems",
    "load_settings",
    "read_document",
    "settings_from_document",
    "with_defaults",
]

SCHEMA_PATH = Path(__file__).with_name("schema.json")
CURSOR_SECRET_ENV = "FACADE_CURSOR_SECRET"
BASE_URL_ENV = "FACADE_BASE_URL"


# The demo's credentials, published with the code (config/): anyone who has read the repository holds
# them. Recognised by their public key's RFC 7638 thumbprint (config/demo-keys/*.private.jwk.json) and by
# the password hash of config/demo.yaml's users (password `imaging-demo`, printed in the README); a user
# who keeps a demo user name with a password of its own is accepted. tests/test_config.py checks that
# these match the files.
DEMO_KEY_THUMBPRINTS = frozenset({"nWGDXwLzC2E5FyZHh2ft-Y_Y6oiTZ-0PABRySACwl-o"})  # kid portal-demo-2026
DEMO_PASSWORD_HASHES = frozenset(
    {"scrypt$ZbxDgGCLhYcQDIuWQsx2TQ==$HuBFg6XkAs/6+LYRi2hO27eQdwlWrftyW/zbTnswbqU="}  # imaging-demo
)
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}

_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)[^@/]*@", re.IGNORECASE)
VIEWER_VARIABLES = frozenset({"studyUID", "accessionNumber", "patientID"})
_TEMPLATE_VARIABLE = re.compile(r"\{([^{}]*)\}")


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every reason, one sentence each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"configuration {source} is invalid ({len(problems)} problem(s)):\n{lines}")


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    return jsonschema.validators.validator_for(schema)(schema)


@lru_cache(maxsize=1)
def _filling_validator() -> jsonschema.protocols.Validator:
    """A validator that, on its way, writes every absent key's schema default into the document: the
    schema is the one place a default is written (an object's default `{}` lets its own keys' apply)."""
    schema = _schema()
    base = jsonschema.validators.validator_for(schema)
    check_properties = base.VALIDATORS["properties"]

    def fill(validator: Any, properties: dict[str, Any], instance: Any, subschema: dict[str, Any]) -> Any:
        if isinstance(instance, dict):
            for name, declared in properties.items():
                if "default" in declared and name not in instance:
                    instance[name] = copy.deepcopy(declared["default"])
        yield from check_properties(validator, properties, instance, subschema)

    filling: type[jsonschema.protocols.Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        base, {"properties": fill}
    )
    return filling(schema)


def with_defaults(doc: Any) -> Any:
    """A copy of a valid document with every schema default filled in."""
    filled = copy.deepcopy(doc)
    for _error in _filling_validator().iter_errors(filled):
        pass  # the document was validated before; filling is all this pass is for
    return filled


def _key_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _without_password(value: str) -> str:
    """A URL with its password (user:PASSWORD@) masked; any other string as it is."""
    return _URL_PASSWORD.sub(r"\1***@", value)


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        unknown = sorted(set(error.instance) - allowed) if isinstance(error.instance, dict) else []
        names = ", ".join(repr(k) for k in unknown)
        return f"{where}: unknown key {names} (allowed: {', '.join(sorted(allowed))})"
    if error.validator == "pattern" and isinstance(error.instance, str):  # a URL's password is not repeated
        return f"{where}: {_without_password(error.instance)!r} does not match {error.validator_value!r}"
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


def config_secret(doc: Mapping[str, Any], key: str) -> str:
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
    audit = doc["audit"]
    if ("path" in audit) == ("url" in audit):
        problems.append(
            "audit: give either path (an SQLite file, the embedded default) or url (postgresql://..., shared "
            + ("by several instances), not both" if "path" in audit else "by several instances)")
        )
    zone = doc["timezone"]
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"timezone: {zone!r} is not a known IANA time zone")
    search = doc["search"]
    if search["default_count"] > search["max_count"]:
        problems.append("search.default_count: larger than search.max_count")
    for i, network in enumerate(doc["ops"]["metrics_allow"]):
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            problems.append(f"ops.metrics_allow[{i}]: {exc}")
    return problems + demo_problems(doc)


def jwk_thumbprint(key: Any) -> str | None:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public JWK; None for a key it cannot be computed for."""
    if not isinstance(key, Mapping):
        return None
    members = _THUMBPRINT_MEMBERS.get(str(key.get("kty")))
    if members is None or not all(isinstance(key.get(m), str) for m in members):
        return None
    canonical = json.dumps({m: key[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def demo_problems(doc: Mapping[str, Any]) -> list[str]:
    """Unless the configuration says `demo: true`: a cursor secret must be given (FACADE_CURSOR_SECRET or
    cursor_secret; otherwise the key is derived from the configuration, which is no secret), and none of
    the demo's published credentials may be configured. The one implementation of this rule: start-up
    (load_settings) and `python -m app check-config` both report these problems."""
    if doc.get("demo") is True:
        return []
    problems: list[str] = []
    if not (os.environ.get(CURSOR_SECRET_ENV) or doc.get("cursor_secret")):
        problems.append(
            f"cursor_secret: required unless demo: true (set {CURSOR_SECRET_ENV} or cursor_secret to a random "
            "secret of at least 16 characters, the same for every process behind the base URL)"
        )
    auth = doc.get("auth")
    if not isinstance(auth, Mapping) or auth.get("mode") != "embedded":
        return problems
    for i, client in enumerate(auth.get("clients") or ()):
        jwks = client.get("jwks") if isinstance(client, Mapping) else None
        keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
        for key in keys if isinstance(keys, list) else ():
            if jwk_thumbprint(key) in DEMO_KEY_THUMBPRINTS:
                problems.append(
                    f"auth.clients[{i}].jwks: key {key.get('kid')!r} is the demo's key, whose private half is "
                    "published in config/demo-keys/: register the client's own key (or set demo: true)"
                )
    for i, user in enumerate(auth.get("users") or ()):
        if isinstance(user, Mapping) and user.get("password_hash") in DEMO_PASSWORD_HASHES:
            problems.append(
                f"auth.users[{i}].password_hash: the demo password, published in the README: give "
                f"{user.get('username')!r} a password of its own (python -m app hash-password) (or set demo: true)"
            )
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
        problems += semantic_problems(with_defaults(doc), base_dir)
    return sorted(set(problems))


def settings_from_document(doc: Any, base_dir: Path, source: str = "<dict>") -> Settings:
    problems = check_document(doc, base_dir)
    if problems:
        raise ConfigError(source, problems)
    secret = os.environ.get(CURSOR_SECRET_ENV) or doc.get("cursor_secret") or _derived_secret(doc)
    full = with_defaults(doc)
    search, federation, gateway = full["search"], full["federation"], full["gateway"]
    xref = full.get("patient_xref")
    index = full.get("patient_index")
    auth = _auth(full["auth"], base_dir)
    return Settings(
        base_url=(os.environ.get(BASE_URL_ENV) or full["base_url"]).rstrip("/"),
        timezone=full["timezone"],
        cursor_secret=secret.encode(),
        trusts=tuple(_trust(t, base_dir, search, federation) for t in full["trusts"]),
        patient_xref=_resolve(base_dir, xref) if xref else None,
        default_count=search["default_count"],
        max_count=search["max_count"],
        max_workers=federation["max_workers"],
        deadline_s=float(federation["deadline_s"]),
        archive_timeout_s=float(federation["archive_timeout_s"]),
        breaker_threshold=federation["circuit_breaker"]["threshold"],
        breaker_cooldown_s=float(federation["circuit_breaker"]["cooldown_s"]),
        cache_ttl_s=float(federation["cache_ttl_s"]),
        max_report_reads=int(federation["max_report_reads"]),
        report_cache_s=float(federation["report_cache_s"]),
        gateway_owner_cache_s=float(gateway["owner_cache_s"]),
        gateway_chunk_bytes=int(gateway["chunk_bytes"]),
        gateway_thumbnail_px=int(gateway["thumbnail_px"]),
        gateway_relay=str(gateway["relay"]),
        source=source,
        auth=auth,
        patient_index=PatientIndexSettings(
            index["url"], float(index["timeout_s"]), float(index["cache_ttl_s"]), index["auth"]
        )
        if index
        else None,
        audit_store=_audit_store(full["audit"], base_dir),
        ops=ops_settings(full["ops"], auth),
        apps_frame_ancestors=tuple(full["apps"]["frame_ancestors"]),
        demo=full["demo"],
    )


def ops_settings(doc: dict[str, Any], auth: AuthSettings) -> OpsSettings:
    """The `ops` section of a filled document (with_defaults)."""
    readiness = doc["readiness"]
    limit = doc.get("rate_limit")
    rate_limit = None
    if limit is not None:
        per_minute = limit["requests_per_minute"]
        # Without a store of its own, the limiter shares the authorization state's Redis when there is one.
        store = auth.store if isinstance(auth, EmbeddedAuthSettings) else ""
        shared = store if store.startswith(("redis", "unix://")) else "memory"
        rate_limit = RateLimitSettings(
            per_minute, limit.get("burst", max(1, per_minute // 6)), limit.get("store", shared)
        )
    return OpsSettings(
        metrics_allow=tuple(doc["metrics_allow"]),
        trusted_proxies=int(doc["trusted_proxies"]),
        log_level=doc["log_level"],
        log_patient_data=doc["log_patient_data"],
        gc_thresholds=(int(doc["gc_thresholds"][0]), int(doc["gc_thresholds"][1]), int(doc["gc_thresholds"][2])),
        probe_timeout_s=float(readiness["probe_timeout_s"]),
        readiness_cache_s=float(readiness["cache_s"]),
        archives_required=readiness["archives_required"],
        rate_limit=rate_limit,
    )


def _audit_store(doc: dict[str, Any], base_dir: Path) -> str:
    """`audit.url` (PostgreSQL) or `sqlite:<absolute path>` of `audit.path` (checked: exactly one is given)."""
    return str(doc["url"]) if "url" in doc else f"sqlite:{_resolve(base_dir, doc['path'])}"


def _auth(doc: dict[str, Any], base_dir: Path) -> AuthSettings:
    """The auth section, typed by its mode, with its file paths resolved against the configuration's folder."""
    if doc["mode"] == "none":
        return NoAuthSettings("none")
    if doc["mode"] == "external":
        return ExternalAuthSettings(
            "external", tuple(doc["issuers"]), doc["smart_configuration"], tuple(doc["cors_origins"])
        )
    store = doc["store"]
    if store.startswith("sqlite:"):
        store = "sqlite:" + str(_resolve(base_dir, store.removeprefix("sqlite:")))
    return EmbeddedAuthSettings(
        "embedded",
        _resolve(base_dir, doc["signing_keys"]),
        store,
        int(doc["access_token_lifetime_s"]),
        tuple(doc["clients"]),
        tuple(doc["users"]),
        tuple(doc["cors_origins"]),
        SignInSettings(**doc["sign_in"]),
    )


def _archive(doc: dict[str, Any], base_dir: Path) -> ArchiveSettings:
    """The archive section as its type's settings class (the registry in app.archives maps each to its
    adapter); a `path` is resolved against the configuration's folder."""
    fields: dict[str, Any] = {k: (_resolve(base_dir, v) if k == "path" else v) for k, v in doc.items()}
    return ARCHIVE_SETTINGS[doc["type"]](**fields)


def _derived_secret(doc: dict[str, Any]) -> str:
    """In the demo only (demo_problems refuses it elsewhere): without a configured key, one derived from the
    whole configuration, so that every worker started from the same file signs cursors alike."""
    canonical = json.dumps(doc, sort_keys=True, default=str).encode()
    return hashlib.sha256(b"gm-facade paging cursors\n" + canonical).hexdigest()


def _limits(archive_type: str, search: dict[str, Any], federation: dict[str, Any]) -> ArchiveLimits:
    """What one search may cost an archive of this type (filled sections: every key is there)."""
    return ArchiveLimits(
        max_values_per_parameter=int(search["max_values_per_parameter"]),
        max_queries=int(federation["max_queries_per_archive"][archive_type]),
        max_study_reads=int(federation["max_study_reads"]),
        max_pages=int(federation["max_pages"]),
        max_instance_reads=int(federation["max_instance_reads"]),
        max_dimse_matches=int(federation["max_dimse_matches"]),
    )


def _trust(doc: dict[str, Any], base_dir: Path, search: dict[str, Any], federation: dict[str, Any]) -> TrustSettings:
    rule = doc["nhs_number"]
    return TrustSettings(
        id=doc["id"],
        name=doc["name"],
        ods_code=doc["ods_code"],
        accession_system=doc.get("accession_system") or systems.accession_number(doc["ods_code"]),
        wado_url=doc.get("wado_url"),
        archive=_archive(doc["archive"], base_dir),
        nhs_number=NhsNumberRule(rule["match"], rule.get("issuer")),
        limits=_limits(doc["archive"]["type"], search, federation),
        viewer=doc.get("viewer"),
    )


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, validate and freeze a configuration file; raises ConfigError naming every problem."""
    file = Path(path)
    return settings_from_document(read_document(file), file.resolve().parent, str(file))
