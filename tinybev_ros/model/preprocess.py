"""Camera image -> model input: resize, crop, K update, ImageNet normalisation.

One implementation for run time (the `Predictor`) and for training/validation (DATA adds random scale/crop on
top by building its own `ResizeCrop`), so the network always sees images prepared the same way.

Pixel convention: integer pixel coordinates are pixel centres (OpenCV, nuScenes K). Resizing by s maps
u -> s * (u + 0.5) - 0.5, so fx' = s fx and cx' = s (cx + 0.5) - 0.5; cropping subtracts the crop origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tinybev_ros.model.config import ModelConfig

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class ResizeCrop:
    """Resize a (src_h, src_w) image to (resized_h, resized_w), then take the out_h x out_w window at
    (crop_top, crop_left) of the resized image; parts of the window outside the image are zero-filled."""

    src_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    crop_top: int
    crop_left: int
    out_hw: tuple[int, int]

    @staticmethod
    def fit_width(src_hw: tuple[int, int], out_hw: tuple[int, int], scale_jitter: float = 1.0,
                  crop_shift: tuple[int, int] = (0, 0)) -> ResizeCrop:
        """Scale so the width matches out_w (times `scale_jitter`), keep the bottom rows (the top is sky),
        centre horizontally; `crop_shift` (rows, cols) moves the window (augmentation)."""
        src_h, src_w = src_hw
        out_h, out_w = out_hw
        scale = out_w / src_w * scale_jitter
        resized = (int(round(src_h * scale)), int(round(src_w * scale)))
        top = resized[0] - out_h + crop_shift[0]
        left = (resized[1] - out_w) // 2 + crop_shift[1]
        return ResizeCrop(tuple(src_hw), resized, top, left, tuple(out_hw))

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.resized_hw[1] / self.src_hw[1], self.resized_hw[0] / self.src_hw[0]

    def intrinsics(self, k: np.ndarray) -> np.ndarray:
        """K of the output image given K of the source image."""
        out = scale_intrinsics(k, *self.scale_xy)
        out[0, 2] -= self.crop_left
        out[1, 2] -= self.crop_top
        return out

    def image(self, image: np.ndarray) -> np.ndarray:
        """The resized and cropped uint8 image (out_h, out_w, 3)."""
        if image.shape[:2] != self.src_hw:
            raise ValueError(f"image is {image.shape[:2]}, this transform expects {self.src_hw}")
        h, w = self.resized_hw
        shrink = h < image.shape[0]
        resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        out_h, out_w = self.out_hw
        out = np.zeros((out_h, out_w, image.shape[2]), dtype=image.dtype)
        top, left = self.crop_top, self.crop_left
        src_rows = slice(max(top, 0), min(top + out_h, h))
        src_cols = slice(max(left, 0), min(left + out_w, w))
        dst_rows = slice(src_rows.start - top, src_rows.stop - top)
        dst_cols = slice(src_cols.start - left, src_cols.stop - left)
        if src_rows.stop > src_rows.start and src_cols.stop > src_cols.start:
            out[dst_rows, dst_cols] = resized[src_rows, src_cols]
        return out


def scale_intrinsics(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of an image resized by (sx, sy), pixel centres kept: fx' = sx fx, cx' = sx (cx + 0.5) - 0.5."""
    out = np.array(k, dtype=np.float64, copy=True)
    out[0] *= sx
    out[1] *= sy
    out[0, 2] += 0.5 * sx - 0.5
    out[1, 2] += 0.5 * sy - 0.5
    out[2] = (0.0, 0.0, 1.0)
    return out


REDUCED_DECODE = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_reduction(image_width: int, config: ModelConfig) -> int:
    """The JPEG decode scale 1/r for a camera image: the largest r in 8, 4, 2 that keeps the decoded width at
    least the model's input width (so the resize after it only shrinks), else 1. libjpeg scales in the DCT, so
    decoding 1600x900 at 1/4 is several times faster than a full decode followed by a resize to 352 pixels."""
    return next((r for r in (8, 4, 2) if image_width // r >= config.image_width), 1)


def decode_image(data: bytes, reduction: int = 1) -> np.ndarray | None:
    """RGB uint8 of JPEG/PNG bytes decoded at 1/`reduction` scale (K scales by `scale_intrinsics(k, 1/r, 1/r)`);
    None when the bytes do not decode. The node and the evaluation both read images here."""
    if not data:
        return None
    buffer = np.frombuffer(data, np.uint8)
    if reduction == 1 or data[:2] == b"\xff\xd8":  # JPEG: libjpeg scales in the DCT, sizes rounded up
        image = cv2.imdecode(buffer, REDUCED_DECODE[reduction])
    else:  # PNG: OpenCV's reduced read rounds sizes down; decode whole and shrink to the JPEG sizes instead
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if image is not None:
            height, width = image.shape[:2]
            image = cv2.resize(image, (-(-width // reduction), -(-height // reduction)), interpolation=cv2.INTER_AREA)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W) with ImageNet mean/std (what the ResNet-18 weights expect)."""
    return ((image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def check_image(image: np.ndarray, where: str) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{where}: expected an HxWx3 uint8 RGB array, got {desc}")


def preprocess_image(image: np.ndarray, intrinsic: np.ndarray, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image and its K -> normalised (3, H, W) float32 model input and the input's K."""
    check_image(image, "preprocess_image")
    transform = ResizeCrop.fit_width(image.shape[:2], (config.image_height, config.image_width))
    return normalize(transform.image(image)), transform.intrinsics(intrinsic)


def preprocess_cameras(
    images: Sequence[np.ndarray], intrinsics: Sequence[np.ndarray], config: ModelConfig, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Six camera images (CAMERA_NAMES order) -> (6, 3, H, W) float32 and (6, 3, 3) float32 K."""
    if len(images) != len(names) or len(intrinsics) != len(names):
        raise ValueError(f"expected {len(names)} images and intrinsics ({', '.join(names)}), "
                         f"got {len(images)} and {len(intrinsics)}")
    tensors, ks = [], []
    for name, image, k in zip(names, images, intrinsics, strict=True):
        check_image(image, f"camera {name}")
        k = np.asarray(k, dtype=np.float64)
        if k.shape != (3, 3):
            raise ValueError(f"camera {name}: intrinsic matrix must be 3x3, got {k.shape}")
        tensor, k_new = preprocess_image(image, k, config)
        tensors.append(tensor)
        ks.append(k_new)
    return np.stack(tensors), np.stack(ks).astype(np.float32)
