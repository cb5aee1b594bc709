"""Walk every series of the demo dataset through the facade's image gateway, as a viewer would.

Per series: its metadata (one DICOM JSON object per instance), then the pixel data of the first
frame of its first instance and of the last frame of its last instance (WADO-RS frames, uncompressed,
byte for byte the stored frame: size and content). Series without pixel data (waveforms, reports, key objects,
presentation states, PDFs) are retrieved as DICOM instances and must equal the stored files.
Used against the embedded folder archives (tests/demo) and real Orthanc archives (tests/federation).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from tests.gateway.multipart import parts

OCTETS = 'multipart/related; type="application/octet-stream"'
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class StoredSeries:
    trust: str
    study: str
    series: str
    modality: str
    files: tuple[tuple[Path, pydicom.Dataset], ...]  # by InstanceNumber

    @property
    def path(self) -> str:
        return f"/dicomweb/{self.trust}/studies/{self.study}/series/{self.series}"


def stored_series(demo_data: Path) -> Iterator[StoredSeries]:
    """Every series of every trust folder, its files read without pixel data."""
    for series_dir in sorted(demo_data.glob("*/*/*")):
        if not series_dir.is_dir():
            continue
        files = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in sorted(series_dir.glob("*.dcm"))]
        files.sort(key=lambda f: int(f[1].InstanceNumber))
        trust, study, series = series_dir.relative_to(demo_data).parts
        yield StoredSeries(trust, study, series, str(files[0][1].Modality), tuple(files))


def frame_bytes(ds: pydicom.Dataset) -> int:
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
    return bits // 8


def walk(client: Any, headers: dict[str, str], demo_data: Path) -> Counter[str]:
    """Opens every series through `client` (a Flask test client of the facade); returns the number of
    series opened per modality. AssertionError names the series and resource that failed."""
    opened: Counter[str] = Counter()
    for stored in stored_series(demo_data):
        metadata = client.get(f"{stored.path}/metadata", headers=headers)
        assert metadata.status_code == 200, (stored.path, metadata.status_code, metadata.get_data()[:200])
        assert metadata.mimetype == "application/dicom+json", (stored.path, metadata.mimetype)
        described = {d["00080018"]["Value"][0] for d in metadata.get_json()}
        assert described == {str(ds.SOPInstanceUID) for _, ds in stored.files}, stored.path
        with_pixels = [(p, ds) for p, ds in stored.files if "Rows" in ds]
        if not with_pixels:
            for path, ds in (stored.files[0], stored.files[-1]):
                response = client.get(f"{stored.path}/instances/{ds.SOPInstanceUID}", headers=headers)
                assert response.status_code == 200, (stored.path, response.status_code)
                ((head, payload),) = parts(response.headers["Content-Type"], response.data)
                assert head["content-type"].startswith("application/dicom"), (stored.path, head)
                assert payload == path.read_bytes(), stored.path
            opened[stored.modality] += 1
            continue
        first, last = with_pixels[0], with_pixels[-1]
        wanted = {(first[0], 1): first, (last[0], int(last[1].get("NumberOfFrames", 1) or 1)): last}
        for (path, number), (_, ds) in wanted.items():
            size = frame_bytes(ds)
            url = f"{stored.path}/instances/{ds.SOPInstanceUID}/frames/{number}"
            response = client.get(url, headers={**headers, "Accept": OCTETS})
            assert response.status_code == 200, (url, response.status_code, response.get_data()[:200])
            # Orthanc puts the transfer syntax inside the type parameter, the folder archive in each part.
            media = response.headers["Content-Type"]
            assert media.startswith('multipart/related; type="application/octet-stream'), (url, media)
            ((head, payload),) = parts(response.headers["Content-Type"], response.data)
            assert head["content-type"].startswith("application/octet-stream"), (url, head)
            assert head["content-type"].partition("transfer-syntax=")[2] in ("", EXPLICIT_LE), (url, head)
            assert len(payload) == size, (url, stored.modality, len(payload), size)
            stored_frame = pydicom.dcmread(path).PixelData[(number - 1) * size : number * size]
            assert payload == stored_frame, (url, "the frame differs from the stored one")
        opened[stored.modality] += 1
    return opened
