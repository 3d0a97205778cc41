"""The truncated-JPEG check the dataset reader and the bag converter share, on real JPEG bytes."""

from __future__ import annotations

import struct

import cv2
import numpy as np

from tinybev_ros.jpeg import is_truncated_jpeg


def encoded(width: int, height: int) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def with_exif_thumbnail(jpeg: bytes) -> bytes:
    """An APP1 (EXIF) segment holding a whole small JPEG, with its own scan and end marker, after SOI."""
    payload = b"Exif\x00\x00" + encoded(16, 16)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_a_cut_jpeg_is_truncated_and_bytes_after_its_end_are_not():
    """Bytes some cameras append after the end marker made a whole image 'truncated'."""
    whole = encoded(320, 240)
    assert not is_truncated_jpeg(whole)
    assert is_truncated_jpeg(whole[: len(whole) // 2])
    assert not is_truncated_jpeg(whole + b"\x00" * 7) and not is_truncated_jpeg(whole + b"trailer\x01\x02")
    assert cv2.imdecode(np.frombuffer(whole + b"trailer", np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    thumbed = with_exif_thumbnail(whole)
    assert not is_truncated_jpeg(thumbed)
    assert is_truncated_jpeg(thumbed[: len(thumbed) - len(whole) // 2])  # cut in the main scan, after the thumbnail
    assert not is_truncated_jpeg(b"\x89PNG\r\n")  # not a JPEG: the decoders judge it
