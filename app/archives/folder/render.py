"""Rendering one frame of a DICOM image as JPEG or PNG (PS3.18 rendered resources), for archives that
cannot render themselves (the embedded folder archive). numpy and Pillow do the pixel work.

Rendering costs memory and CPU in the worker, and any token that may see a study may ask for it, so
it is bounded three ways: an image is never drawn larger than its source (a viewport is a box to fit
in, never a reason to upscale), never wider or taller than MAX_VIEWPORT, and at most
MAX_CONCURRENT_RENDERS renderings run at once in a process (a request that finds no slot within
RENDER_WAIT_S is refused: RenderBusy, the gateway's 503 with Retry-After).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydicom

from app.archives.images import MAX_VIEWPORT

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
MAX_CONCURRENT_RENDERS = 2  # per process (a gunicorn worker); each holds a decoded frame in memory
RENDER_WAIT_S = 1.0  # how long a request waits for a free slot before it is refused
RENDER_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT_RENDERS)


class NotRenderable(ValueError):
    """The object holds no pixel data this renderer can read."""


class RenderBusy(RuntimeError):
    """Every rendering slot of this process is taken: come back shortly."""


@contextmanager
def render_slot(wait_s: float = RENDER_WAIT_S) -> Iterator[None]:
    """One of the process's MAX_CONCURRENT_RENDERS slots for the duration of a rendering; RenderBusy
    when none frees up within `wait_s`."""
    if not RENDER_SLOTS.acquire(timeout=wait_s):
        raise RenderBusy(f"{MAX_CONCURRENT_RENDERS} images are being rendered already")
    try:
        yield
    finally:
        RENDER_SLOTS.release()


def output_size(width: int, height: int, viewport: tuple[int, int] | None) -> tuple[int, int]:
    """The size an image of `width` x `height` is drawn at: fitted into the viewport (when given) and into
    MAX_VIEWPORT x MAX_VIEWPORT, aspect ratio kept, and never larger than the source."""
    box_w, box_h = viewport or (MAX_VIEWPORT, MAX_VIEWPORT)
    ratio = min(1.0, min(box_w, MAX_VIEWPORT) / width, min(box_h, MAX_VIEWPORT) / height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def render(
    ds: pydicom.Dataset,
    frame: int,
    viewport: tuple[int, int] | None,
    window: tuple[float, float, str] | None,
    image_format: str,
    quality: int = 90,
) -> bytes:
    """Frame `frame` (0-based) as an 8-bit image, scaled down to fit `viewport` (never up), in `image_format`.
    The caller holds a `render_slot`."""
    import numpy as np
    from PIL import Image
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise NotRenderable("the object has no pixel data")
    try:
        pixels: Any = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported encodings
        raise NotRenderable(f"the pixel data cannot be decoded here ({type(exc).__name__})") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise IndexError(frame)
        pixels = pixels[frame]
    elif frame != 0:
        raise IndexError(frame)
    if int(ds.get("SamplesPerPixel", 1)) == 1:
        values = apply_modality_lut(pixels, ds).astype("float64")
        if window is not None:
            center, width, _function = window
            low, high = center - width / 2, center + width / 2
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_voi_lut(values, ds).astype("float64")
            low, high = float(values.min()), float(values.max())
        else:
            low, high = float(values.min()), float(values.max())
        scaled = np.clip((values - low) / max(high - low, 1e-9), 0.0, 1.0) * 255.0
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            scaled = 255.0 - scaled
        image = Image.fromarray(scaled.astype("uint8"), mode="L")
    else:
        image = Image.fromarray(np.asarray(pixels, dtype="uint8"), mode="RGB")
    size = output_size(image.width, image.height, viewport)
    if size != (image.width, image.height):  # only ever smaller: LANCZOS
        image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
