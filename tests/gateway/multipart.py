"""A strict reader of multipart/related bodies (RFC 2046), to compare retrievals part by part.

Two retrievals of the same objects differ only in their boundaries, which each server picks at
random: comparing parts is comparing bytes.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


def parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(headers, payload) of every part; AssertionError when the body is not well formed."""
    assert content_type.lower().startswith("multipart/related"), content_type
    found = _BOUNDARY.search(content_type)
    assert found, f"no boundary in {content_type!r}"
    delimiter = b"--" + found.group(1).encode()
    assert body.startswith(delimiter), "the body does not start with the boundary"
    closing = body.rstrip(b"\r\n").endswith(delimiter + b"--")
    assert closing, "the body does not end with the closing boundary (cut short?)"
    out = []
    for chunk in body.split(b"\r\n" + delimiter)[0:]:
        chunk = chunk.removeprefix(delimiter)
        if chunk.startswith(b"--"):
            break
        head, separator, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert separator, "a part without a header/body separator"
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        out.append((headers, payload))
    return out
