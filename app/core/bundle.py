"""Searchset Bundles: entries with absolute fullUrl and search.mode, total, and paging links."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from app.core import systems
from app.core.errors import operation_outcome
from app.core.instants import utc_instant
from app.core.search.cursor import encode_cursor
from app.core.search.registry import Paging

SUBSETTED = {
    "system": systems.OBSERVATION_VALUE,
    "code": "SUBSETTED",
    "display": "subsetted",
}
MANDATORY = {
    "ImagingStudy": ("status", "subject"),
    "Patient": (),
    "Endpoint": ("status", "connectionType", "payloadType", "address"),
    "Organization": (),
    "AuditEvent": ("type", "recorded", "agent", "source"),
    "DocumentReference": ("status", "content"),
    "DiagnosticReport": ("status", "code"),
}


def subset(resource: dict[str, Any], elements: tuple[str, ...]) -> dict[str, Any]:
    """`_elements`: the asked-for top-level elements plus the mandatory ones, tagged SUBSETTED."""
    keep = {"resourceType", "id", *elements, *MANDATORY.get(resource["resourceType"], ())}
    out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(resource.get("meta", {}))
    meta["tag"] = [*meta.get("tag", ()), SUBSETTED]
    out["meta"] = meta
    return out


def _dedupe(issues: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in issues:
        key = (item["code"], item.get("diagnostics", ""))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def searchset(
    *,
    base_url: str,
    resource_type: str,
    matches: list[dict[str, Any]],
    paging: Paging,
    used: list[tuple[str, str]],
    secret: bytes,
    includes: list[dict[str, Any]] | None = None,
    issues: list[dict[str, Any]] | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    """One page of a search: `matches` is the whole ordered result and the page is cut here, or,
    when `total` is given, `matches` is already the page (a store that pages itself)."""
    if total is None:
        total = len(matches)
        page = [] if paging.summary_count else matches[paging.offset : paging.offset + paging.count]
    else:
        page = [] if paging.summary_count else matches
    link_base = f"{base_url}/{resource_type}"
    pairs = [(n, v) for n, v in used if n != "_cursor"]

    def cursor_link(relation: str, offset: int) -> dict[str, str]:
        return {
            "relation": relation,
            "url": f"{link_base}?{urlencode({'_cursor': encode_cursor(secret, resource_type, pairs, offset)})}",
        }

    links = [
        {
            "relation": "self",
            "url": f"{link_base}?{urlencode(pairs)}"
            if paging.offset == 0
            else cursor_link("self", paging.offset)["url"],
        }
    ]
    if not paging.summary_count and paging.count:
        if paging.offset > 0:
            links.append(cursor_link("first", 0))
            links.append(cursor_link("previous", max(paging.offset - paging.count, 0)))
        if paging.offset + paging.count < total:
            links.append(cursor_link("next", paging.offset + paging.count))
    entries: list[dict[str, Any]] = []
    for resource in page:
        shown = subset(resource, paging.elements) if paging.elements else resource
        entries.append(
            {"fullUrl": f"{base_url}/{resource_type}/{resource['id']}", "resource": shown, "search": {"mode": "match"}}
        )
    for resource in includes or ():
        entries.append(
            {
                "fullUrl": f"{base_url}/{resource['resourceType']}/{resource['id']}",
                "resource": resource,
                "search": {"mode": "include"},
            }
        )
    found_issues = _dedupe(issues or ())
    if found_issues:
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": operation_outcome(found_issues),
                "search": {"mode": "outcome"},
            }
        )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": utc_instant()},
        "type": "searchset",
        "total": total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle
