"""WADO-RS over the embedded folder archive: the same resources an archive's DICOMweb service gives.

Files are streamed from disk in chunks inside a multipart/related body whose length is known in
advance; metadata is the files' DICOM JSON without pixel data; frames are the raw pixel data of
uncompressed images; rendered and thumbnail resources are drawn by render.py. Nothing is transcoded:
asking for a transfer syntax the files are not in answers 406. Rendering is bounded (render.py): never
larger than the source, and a few renderings at a time per process (503 with Retry-After beyond).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pydicom
from pydicom.uid import UID

from app.archives.folder.archive import FolderArchive, StoredFile
from app.archives.folder.render import MEDIA_TYPES, NotRenderable, RenderBusy, render, render_slot
from app.archives.images import Retrieval, RetrievalError, WadoTarget

RENDER_RETRY_AFTER_S = 1.0
_UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def _ranges(accept: str | None) -> list[tuple[str, dict[str, str]]]:
    """Accept as (media type, parameters) pairs, in the order given; no Accept means anything."""
    if not accept:
        return [("*/*", {})]
    out = []
    for item in accept.split(","):
        media, *params = [p.strip() for p in item.split(";")]
        values = {}
        for param in params:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip().strip('"')
        out.append((media.lower(), values))
    return out


class FolderWado:
    name: str

    def __init__(self, archive: FolderArchive, chunk_bytes: int, thumbnail_px: int) -> None:
        self.name = archive.name
        self.archive = archive
        self.chunk_bytes = chunk_bytes
        self.thumbnail_px = thumbnail_px

    # -- selection --------------------------------------------------------------------------
    def _files(self, target: WadoTarget) -> list[StoredFile]:
        series = self.archive.files.get(target.study)
        if not series:
            raise RetrievalError(self.name, 404, "the archive does not hold this study")
        if target.series is None:
            return [f for uid in sorted(series) for f in series[uid]]
        files = series.get(target.series)
        if not files:
            raise RetrievalError(self.name, 404, "the archive does not hold this series in this study")
        if target.instance is None:
            return list(files)
        found = [f for f in files if f.sop_instance_uid == target.instance]
        if not found:
            raise RetrievalError(self.name, 404, "the archive does not hold this instance in this series")
        return found

    def retrieve(
        self,
        target: WadoTarget,
        accept: str | None,
        accept_encoding: str | None,
        params: list[tuple[str, str]],
        request_id: str | None = None,
    ) -> Retrieval:
        files = self._files(target)
        if target.resource == "metadata":
            return self._metadata(files, accept)
        if target.resource in ("rendered", "thumbnail"):
            return self._rendered(target, files[0].path, accept, dict(params))
        if target.frames:
            return self._frames(target, files[0].path, accept)
        return self._objects(files, accept)

    # -- resources --------------------------------------------------------------------------
    def _objects(self, files: list[StoredFile], accept: str | None) -> Retrieval:
        wanted = None
        for media, params in _ranges(accept):
            if media in ("*/*", "multipart/*") or (
                media == "multipart/related" and params.get("type", "application/dicom") == "application/dicom"
            ):
                wanted = params.get("transfer-syntax", "*")
                break
        if wanted is None:
            raise RetrievalError(self.name, 406, 'this archive sends multipart/related; type="application/dicom"')
        if wanted != "*" and any(f.transfer_syntax != wanted for f in files):
            raise RetrievalError(
                self.name, 406, "the archive holds these objects in another transfer syntax and does not transcode"
            )
        boundary = uuid.uuid4().hex
        sizes = [f.path.stat().st_size for f in files]
        heads = [
            f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={f.transfer_syntax}\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
            for f, size in zip(files, sizes, strict=True)
        ]
        tail = f"--{boundary}--\r\n".encode()
        length = sum(len(h) + size + 2 for h, size in zip(heads, sizes, strict=True)) + len(tail)

        def body() -> Iterator[bytes]:
            for head, stored in zip(heads, files, strict=True):
                yield head
                with stored.path.open("rb") as handle:
                    while chunk := handle.read(self.chunk_bytes):
                        yield chunk
                yield b"\r\n"
            yield tail

        return Retrieval(
            200,
            {
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Content-Length": str(length),
            },
            body(),
        )

    def _metadata(self, files: list[StoredFile], accept: str | None) -> Retrieval:
        if not any(
            m in ("*/*", "application/*", "application/dicom+json", "application/json") for m, _ in _ranges(accept)
        ):
            raise RetrievalError(self.name, 406, "metadata is sent as application/dicom+json")
        datasets = [
            pydicom.dcmread(f.path, stop_before_pixels=True).to_json_dict(bulk_data_threshold=1 << 20) for f in files
        ]
        body = orjson.dumps(datasets)
        return Retrieval(
            200, {"Content-Type": "application/dicom+json", "Content-Length": str(len(body))}, iter((body,))
        )

    def _frames(self, target: WadoTarget, path: Path, accept: str | None) -> Retrieval:
        octets = "application/octet-stream"
        if not any(
            m in ("*/*", "multipart/*") or (m == "multipart/related" and p.get("type", octets) == octets)
            for m, p in _ranges(accept)
        ):
            raise RetrievalError(self.name, 406, f'frames are sent as multipart/related; type="{octets}"')
        ds = pydicom.dcmread(path)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if syntax not in _UNCOMPRESSED or "PixelData" not in ds:
            raise RetrievalError(self.name, 406, "frames are only offered uncompressed here, and these are not")
        count = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
        frame_bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits
        data: bytes = ds.PixelData
        if any(n > count for n in target.frames) or frame_bits % 8:
            raise RetrievalError(self.name, 404, f"the instance has {count} frame(s)")
        size = frame_bits // 8
        boundary = uuid.uuid4().hex
        head = f"--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax={UID(syntax)}\r\n\r\n"
        parts = (
            b"".join(head.encode() + data[(n - 1) * size : n * size] + b"\r\n" for n in target.frames)
            + f"--{boundary}--\r\n".encode()
        )
        media = f'multipart/related; type="{octets}"; boundary={boundary}'
        return Retrieval(200, {"Content-Type": media, "Content-Length": str(len(parts))}, iter((parts,)))

    def _rendered(self, target: WadoTarget, path: Path, accept: str | None, params: dict[str, str]) -> Retrieval:
        image_format = None
        for media, _ in _ranges(accept):
            if media in ("image/jpeg", "image/png"):
                image_format = media.split("/")[1]
                break
            if media in ("*/*", "image/*"):
                image_format = "jpeg"
                break
        if image_format is None:
            raise RetrievalError(self.name, 406, "rendered images are sent as image/jpeg or image/png")
        viewport = None
        if "viewport" in params:
            width, height = params["viewport"].split(",")
            viewport = (int(width), int(height))
        elif target.resource == "thumbnail":
            viewport = (self.thumbnail_px, self.thumbnail_px)
        window = None
        if "window" in params:
            center, width_, function = params["window"].split(",")
            window = (float(center), float(width_), function)
        frame = target.frames[0] - 1 if target.frames else 0
        try:
            with render_slot():  # the file is read inside: its pixel data is what costs memory
                image = render(
                    pydicom.dcmread(path), frame, viewport, window, image_format, int(params.get("quality", 90))
                )
        except RenderBusy as exc:
            raise RetrievalError(self.name, 503, f"busy: {exc}; retry shortly", RENDER_RETRY_AFTER_S) from None
        except NotRenderable as exc:
            raise RetrievalError(self.name, 406, str(exc)) from None
        except IndexError:
            raise RetrievalError(self.name, 404, "the instance has no such frame") from None
        return Retrieval(
            200, {"Content-Type": MEDIA_TYPES[image_format], "Content-Length": str(len(image))}, iter((image,))
        )
