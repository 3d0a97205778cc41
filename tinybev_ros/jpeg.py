"""JPEG byte checks shared by the dataset reader and the bag converter (no OpenCV or torch import needed)."""

from __future__ import annotations

JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"


def is_truncated_jpeg(data: bytes) -> bool:
    """A JPEG without its end-of-image marker: a file cut short (OpenCV would decode its top part silently).
    Zero padding after the marker, which some writers add, is allowed."""
    return data.startswith(JPEG_SOI) and not data.rstrip(b"\x00").endswith(JPEG_EOI)
