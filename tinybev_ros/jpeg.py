"""JPEG byte checks shared by the dataset reader and the bag converter (no OpenCV or torch import needed)."""

from __future__ import annotations

JPEG_SOI, JPEG_EOI, JPEG_SOS = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"


def is_truncated_jpeg(data: bytes) -> bool:
    """A JPEG whose last scan has no end-of-image marker after it: a file cut short (OpenCV would decode its top
    part silently). Marker bytes cannot occur inside a scan (0xFF is stuffed there), and an EXIF thumbnail's own
    markers come before the main scan, so bytes some cameras append after the marker are allowed."""
    return data.startswith(JPEG_SOI) and data.find(JPEG_EOI, max(data.rfind(JPEG_SOS), 0)) < 0
