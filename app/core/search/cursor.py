"""Stateless, tamper-proof paging cursors: the canonical query and offset, signed with HMAC-SHA256.

A cursor carries the whole query, so a `next` link cannot be edited into a different (wider)
search: any change breaks the signature and the request is refused with 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from app.core.errors import InvalidRequest


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(secret: bytes, resource_type: str, pairs: list[tuple[str, str]], offset: int) -> str:
    body = _b64(orjson.dumps({"t": resource_type, "q": pairs, "o": offset}))
    signature = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def decode_cursor(secret: bytes, resource_type: str, token: str) -> tuple[list[tuple[str, str]], int]:
    """The query pairs and offset of a cursor this server signed; 400 for anything else."""
    body, _, signature = token.partition(".")
    expected = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a refusal).
    if not signature or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidRequest("_cursor is not a paging cursor issued by this server (or it has been altered)", "_cursor")
    try:
        payload: Any = orjson.loads(_unb64(body))
        pairs = [(str(n), str(v)) for n, v in payload["q"]]
        offset = int(payload["o"])
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("_cursor is malformed", "_cursor") from None
    if payload.get("t") != resource_type or offset < 0:
        raise InvalidRequest(f"_cursor does not belong to a {resource_type} search", "_cursor")
    return pairs, offset
