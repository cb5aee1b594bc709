"""Rendering one frame of a DICOM image as JPEG or PNG (PS3.18 rendered resources), for archives that
cannot render themselves (the embedded folder archive). numpy and Pillow do the pixel work."""

from __future__ import annotations

import io
from typing import Any

import pydicom

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


class NotRenderable(ValueError):
    """The object holds no pixel data this renderer can read."""


def render(
    ds: pydicom.Dataset,
    frame: int,
    viewport: tuple[int, int] | None,
    window: tuple[float, float, str] | None,
    image_format: str,
    quality: int = 90,
) -> bytes:
    """Frame `frame` (0-based) as an 8-bit image, scaled to fit `viewport`, in `image_format`."""
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
    if viewport is not None:
        ratio = min(viewport[0] / image.width, viewport[1] / image.height)
        size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
        image = image.resize(size, Image.Resampling.NEAREST if ratio > 1 else Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
