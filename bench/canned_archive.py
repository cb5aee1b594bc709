"""A canned DICOMweb archive: QIDO-RS answers prepared in memory, served by a low-CPU asyncio server.

It stands in for a trust's PACS when the bench must measure the facade and not the archive: eight
Orthancs on a shared 2-core machine cost ~43 ms of CPU per QIDO request, this server a few dozen
microseconds. Each archive answers, in the shape Orthanc 1.10's DICOMweb plugin gives with
`includefield=all` (every attribute with its `vr`, tags in ascending order, PN as
`{"Alphabetic": ...}`), and with `limit`/`offset` paging:

  GET /dicom-web/studies?PatientID=...[&IssuerOfPatientID=...]   the patient's studies
  GET /dicom-web/series?PatientID=...                             the patient's series
  GET /dicom-web/studies?StudyInstanceUID=2.25.0&limit=1          the readiness probe: []
  GET /_count                                                     {"studies": n, "series": n, ...}
  POST /_reset                                                    zeroes the counters

Every QIDO request is answered after `delay` seconds plus a uniform jitter in [0, jitter) (the WAN
and the PACS), without using CPU while it waits. Answers are serialised once, at start, per
(archive, level, patient, offset, limit) on first use.

Run (the bench starts it as a child process): python -m bench.canned_archive --archives 8
--studies 13 --delay 0.03 [--jitter 0.005]; it prints one JSON line {"ports": [...], "patient": ...}
when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from app.core.identity import nhs_check_digit

PATIENT_ISSUER = "NHS"
MODALITIES = ("CT", "MR", "CR", "US", "DX", "NM")
BODY_PARTS = ("HEAD", "CHEST", "ABDOMEN", "KNEE", "PELVIS", "SPINE")
SERIES_PER_STUDY = (1, 2, 3)


def bench_nhs_number(seed: int = 20260101) -> str:
    rng = random.Random(seed)
    while True:
        first = "999" + f"{rng.randrange(10**6):06d}"
        check = nhs_check_digit(first)
        if check is not None:
            return f"{first}{check}"


def _e(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


@dataclass
class CannedArchive:
    """One trust's prepared answers for one patient."""

    index: int
    patient: str
    studies: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)


def make_archive(index: int, patient: str, studies: int, base_url: str = "http://127.0.0.1") -> CannedArchive:
    """`studies` studies of the patient, 1-3 series each, as Orthanc answers them with includefield=all."""
    rng = random.Random(1000 + index)
    out = CannedArchive(index, patient)
    patient_part = {
        "00100010": _pn("BENCH^PATIENT"),
        "00100020": _e("LO", patient),
        "00100021": _e("LO", PATIENT_ISSUER),
        "00100030": _e("DA", "19600101"),
        "00100040": _e("CS", "F"),
    }
    for number in range(studies):
        study_uid = f"2.25.{index + 1}{number:04d}{rng.randrange(10**12):012d}"
        count = SERIES_PER_STUDY[(index + number) % 3]
        modalities = sorted({MODALITIES[(number + k) % len(MODALITIES)] for k in range(count)})
        date = f"20{10 + number % 15:02d}{1 + number % 12:02d}{1 + number % 28:02d}"
        instances = 0
        for k in range(count):
            modality = MODALITIES[(number + k) % len(MODALITIES)]
            n_instances = 1 + rng.randrange(200)
            instances += n_instances
            series_uid = f"{study_uid}.{k + 1}"
            out.series.append(
                {
                    "00080005": _e("CS", "ISO_IR 192"),
                    "00080021": _e("DA", date),
                    "00080031": _e("TM", "101500"),
                    "00080060": _e("CS", modality),
                    "0008103E": _e("LO", f"{modality} series {k + 1}"),
                    "00081070": _pn("Op^Erator"),
                    "00081190": _e("UR", f"{base_url}/dicom-web/studies/{study_uid}/series/{series_uid}"),
                    "00180015": _e("CS", BODY_PARTS[(number + k) % len(BODY_PARTS)]),
                    "0020000D": _e("UI", study_uid),
                    "0020000E": _e("UI", series_uid),
                    "00200011": _e("IS", k + 1),
                    "00200060": _e("CS"),
                    "00201209": _e("IS", n_instances),
                }
            )
        out.studies.append(
            {
                "00080005": _e("CS", "ISO_IR 192"),
                "00080020": _e("DA", date),
                "00080030": _e("TM", "101500"),
                "00080050": _e("SH", f"ACC{index}{number:05d}"),
                "00080056": _e("CS", "ONLINE"),
                "00080061": _e("CS", *modalities),
                "00080090": _pn("Ref^Doc"),
                "00081030": _e("LO", f"Study {number} of archive {index}"),
                "00081190": _e("UR", f"{base_url}/dicom-web/studies/{study_uid}"),
                **patient_part,
                "0020000D": _e("UI", study_uid),
                "00200010": _e("SH", f"{number:04d}"),
                "00201206": _e("IS", count),
                "00201208": _e("IS", instances),
            }
        )
    return out


class _Server:
    def __init__(self, archive: CannedArchive, delay: float, jitter: float, counts: dict[str, int]) -> None:
        self.archive = archive
        self.delay = delay
        self.jitter = jitter
        self.counts = counts
        self.cache: dict[tuple[str, bool, int, int], bytes] = {}
        self.rng = random.Random(archive.index)

    def answer(self, level: str, params: dict[str, str]) -> bytes:
        matches = (
            params.get("PatientID") == self.archive.patient
            and params.get("IssuerOfPatientID", PATIENT_ISSUER) == PATIENT_ISSUER
            and "StudyInstanceUID" not in params
        )
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 0)
        key = (level, matches, offset, limit)
        body = self.cache.get(key)
        if body is None:
            rows = (self.archive.studies if level == "studies" else self.archive.series) if matches else []
            rows = rows[offset : offset + limit] if limit else rows[offset:]
            body = json.dumps(rows, separators=(",", ":")).encode()
            self.cache[key] = body
        return body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ", 2)
                length = 0
                for line in header_lines:
                    if line[:15].lower() == "content-length:":
                        length = int(line[15:].strip())
                if length:
                    await reader.readexactly(length)
                path, _, query = target.partition("?")
                params = dict(parse_qsl(query, keep_blank_values=True))
                status, content_type = "200 OK", "application/dicom+json"
                if path == "/_count":
                    body, content_type = json.dumps(self.counts).encode(), "application/json"
                elif path == "/_reset" and method == "POST":
                    for name in self.counts:
                        self.counts[name] = 0
                    body, content_type = b"{}", "application/json"
                elif path in ("/dicom-web/studies", "/dicom-web/series"):
                    level = path.rsplit("/", 1)[1]
                    self.counts[level] += 1
                    body = self.answer(level, params)
                    wait = self.delay + (self.rng.random() * self.jitter if self.jitter else 0.0)
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    status, body, content_type = "404 Not Found", b"", "text/plain"
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def serve(archives: int, studies: int, delay: float, jitter: float, ports: list[int]) -> None:
    patient = bench_nhs_number()
    servers = []
    bound = []
    for index in range(archives):
        counts = {"studies": 0, "series": 0}
        port = ports[index] if index < len(ports) else 0
        # The RetrieveURL names the archive's own port: bind first, then build the answers.
        holder: dict[str, _Server] = {}

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, h: dict[str, _Server] = holder) -> None:
            await h["s"].handle(r, w)

        server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
        actual = server.sockets[0].getsockname()[1]
        holder["s"] = _Server(
            make_archive(index, patient, studies, f"http://127.0.0.1:{actual}"), delay, jitter, counts
        )
        servers.append(server)
        bound.append(actual)
    print(json.dumps({"ports": bound, "patient": patient, "issuer": PATIENT_ISSUER}), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--archives", type=int, default=8)
    parser.add_argument("--studies", type=int, default=13, help="studies of the bench patient per archive")
    parser.add_argument("--delay", type=float, default=0.030, help="seconds before each QIDO answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="uniform extra delay in [0, jitter) seconds")
    parser.add_argument("--ports", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.archives, args.studies, args.delay, args.jitter, args.ports))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
