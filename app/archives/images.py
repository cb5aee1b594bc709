"""The image-retrieval side of the archive protocol: what the gateway asks of a trust's image source.

A retrieval names its object with a validated WadoTarget (DICOM UIDs only, never a path from the
user); an ImageSource (HTTP WADO-RS, or the folder archive's own files) answers a Retrieval, or a
RetrievalError with the status the gateway answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from app.core import dicom_json as dj

RESOURCES = ("metadata", "rendered", "thumbnail")
_FRAMES = re.compile(r"^[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,99}\Z")
# The largest viewport edge asked of any renderer (the folder archive's or a DICOMweb archive's): a
# rendered image is a picture on a screen, not a way to make a worker allocate gigabytes.
MAX_VIEWPORT = 4096
_EDGE = r"([1-9][0-9]{0,2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6])"  # 1 to MAX_VIEWPORT
# Query parameters of rendered resources (PS3.18 8.3.5.1), each with the only values passed on. They are
# relayed unescaped, so \Z (not $, which also matches before a final newline) ends each pattern.
RENDER_PARAMETERS = {
    "viewport": re.compile(rf"^{_EDGE},{_EDGE}\Z"),
    "quality": re.compile(r"^([1-9][0-9]?|100)\Z"),
    "window": re.compile(r"^-?[0-9]{1,6}(\.[0-9]{1,4})?,[0-9]{1,6}(\.[0-9]{1,4})?,(linear|linear-exact|sigmoid)\Z"),
}


class BadTarget(ValueError):
    """The path does not name a WADO-RS resource (400)."""


@dataclass(frozen=True)
class WadoTarget:
    """One WADO-RS resource of one study: /studies/{study}[/series/{s}[/instances/{i}[/frames/{n}]]][/{resource}]."""

    study: str
    series: str | None = None
    instance: str | None = None
    frames: tuple[int, ...] = ()
    resource: str = ""  # "" (the DICOM objects, or frames' pixel data), metadata, rendered or thumbnail

    @property
    def level(self) -> str:
        return "frames" if self.frames else "instance" if self.instance else "series" if self.series else "study"

    def path(self) -> str:
        parts = ["studies", self.study]
        if self.series:
            parts += ["series", self.series]
        if self.instance:
            parts += ["instances", self.instance]
        if self.frames:
            parts += ["frames", ",".join(map(str, self.frames))]
        if self.resource:
            parts.append(self.resource)
        return "/".join(parts)

    def with_resource(self, resource: str) -> WadoTarget:
        return WadoTarget(self.study, self.series, self.instance, self.frames, resource)


def parse_target(segments: list[str]) -> WadoTarget:
    """`studies/{uid}/...` split on '/', checked segment by segment; BadTarget says what is wrong."""
    names = ("studies", "series", "instances", "frames")
    values: dict[str, str] = {}
    position = 0
    resource = ""
    i = 0
    while i < len(segments):
        segment = segments[i]
        if segment in RESOURCES and i == len(segments) - 1 and values:
            resource = segment
            break
        if position >= len(names) or segment != names[position]:
            expected = " or ".join(
                [f"'{n}'" for n in names[position : position + 1]] + ([f"'{r}'" for r in RESOURCES] if values else [])
            )
            raise BadTarget(f"unexpected path segment {segment[:40]!r}: expected {expected or 'the end of the path'}")
        if i + 1 >= len(segments) or not segments[i + 1]:
            raise BadTarget(f"'{segment}' must be followed by {'frame numbers' if segment == 'frames' else 'a UID'}")
        value = segments[i + 1]
        if segment == "frames":
            if not _FRAMES.match(value):
                raise BadTarget("frame numbers are a comma-separated list of positive integers (at most 100)")
        elif not dj.is_uid(value):
            raise BadTarget(f"{value[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
        values[segment] = value
        position += 1
        i += 2
    if "studies" not in values:
        raise BadTarget("the path must start with studies/{StudyInstanceUID}")
    frames = tuple(int(n) for n in values["frames"].split(",")) if "frames" in values else ()
    if frames and resource in ("metadata",):
        raise BadTarget("frames have no metadata resource")
    return WadoTarget(values["studies"], values.get("series"), values.get("instances"), frames, resource)


@dataclass
class Retrieval:
    """An archive's answer being relayed: status and entity headers now, the body as it comes."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class Handoff:
    """What another relay (nginx, gateway.relay: nginx) needs to fetch one validated resource itself:
    the WADO-RS path and query below the archive's WADO-RS base URL, built only from a WadoTarget and
    RENDER_PARAMETERS values, and the archive's own credentials and Accept-Encoding."""

    path: str
    authorization: str | None
    accept_encoding: str


class RetrievalError(Exception):
    """No byte can be relayed: the status and a short, patient-free reason for the OperationOutcome."""

    def __init__(self, archive: str, status: int, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{archive}: {reason}")
        self.archive = archive
        self.status = status
        self.reason = reason
        self.retry_after_s = retry_after_s


class StreamAborted(Exception):
    """The archive's answer broke off after the first byte was relayed (the caller logs it)."""


class ImageSource(Protocol):
    """Where a trust's images come from."""

    name: str

    def retrieve(
        self,
        target: WadoTarget,
        accept: str | None,
        accept_encoding: str | None,
        params: list[tuple[str, str]],
        request_id: str | None = None,
    ) -> Retrieval: ...
