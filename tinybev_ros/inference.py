"""`Predictor`: six camera images + calibration -> `Predictions`, the call the ROS node (and the demo) make.

Device: CUDA when available, in fp16 autocast there (float32 weights, as in training; the BEV pooling stays
float32), else CPU, in bf16 autocast where the CPU has native bf16 (the precision the student trained in;
tinybev_ros/precision.py), else fp32. The LSS splat index depends only on the calibration, so it is computed once per
calibration (keyed by the bytes of the preprocessed K and camera->ego matrices) and reused every frame.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tinybev_ros.checkpoint import load_checkpoint
from tinybev_ros.device import resolve_device
from tinybev_ros.ego_motion import EGO_STATUS_SIZE, unknown_ego_status
from tinybev_ros.geometry import CAMERA_NAMES, Rig, Transform
from tinybev_ros.model import ModelConfig, SplatIndex, TinyBEV, build_student
from tinybev_ros.model.decode import decode
from tinybev_ros.model.preprocess import preprocess_cameras
from tinybev_ros.precision import autocast_dtype
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import Command

log = logging.getLogger(__name__)

SPLAT_CACHE_SIZE = 4  # calibrations kept (a robot has one; a replay of several logs a few)


class Predictor:
    """Runs the student on one synchronized frame at a time."""

    def __init__(self, model: TinyBEV, config: ModelConfig, device: str | torch.device | None = None,
                 precision: str = "auto") -> None:
        self.device = resolve_device(device)  # DeviceError names a device this machine cannot run
        # Autocast with float32 weights, as in training: the LSS pooling returns float32 BEV features on purpose
        # (view_transform.py), which a model cast with .half() cannot take (its first BEV convolution raised a
        # dtype error on every CUDA frame).
        self.autocast = autocast_dtype(precision, self.device)  # DeviceError names an impossible precision
        self.precision = {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32"}[self.autocast]
        self.config = config
        self.model = model.to(self.device).eval()
        self._splats: OrderedDict[str, SplatIndex] = OrderedDict()
        self.splat_computations = 0
        self.last_timing_ms: dict[str, float] = {}

    @staticmethod
    def from_checkpoint(path: str | Path, device: str | torch.device | None = None,
                        precision: str = "auto") -> Predictor:
        model, config = load_checkpoint(path)
        log.info("loaded student checkpoint %s (%s config)", path, config.name)
        return Predictor(model, config, device, precision)

    @staticmethod
    def untrained(config: ModelConfig, seed: int = 0, device: str | torch.device | None = None) -> Predictor:
        """A randomly initialised student: for plumbing tests and timing only, its outputs mean nothing."""
        torch.manual_seed(seed)
        log.warning("using an UNTRAINED %s student (random weights): outputs are meaningless", config.name)
        return Predictor(build_student(config), config, device)

    def warm_up(self, rig: Rig | None = None) -> float:
        """One frame of black images through the whole path, so the first real frame does not pay for lazy
        initialisation (thread pools, allocator, CUDA kernels) and, on this rig, for its splat index: a node
        fed at its frame rate would otherwise drop the frames that arrive meanwhile. Returns milliseconds."""
        rig = rig or Rig.load()
        cameras = [rig.cameras[name] for name in CAMERA_NAMES]
        start = time.perf_counter()
        self.predict([np.zeros((c.height, c.width, 3), np.uint8) for c in cameras], [c.intrinsic for c in cameras],
                     [c.sensor_to_ego for c in cameras], command=int(Command.STRAIGHT), stamp_ns=0)
        return 1e3 * (time.perf_counter() - start)

    def _splat(self, intrinsics: np.ndarray, cam_to_ego: np.ndarray) -> SplatIndex:
        key = hashlib.sha1(intrinsics.tobytes() + cam_to_ego.tobytes()).hexdigest()
        if key in self._splats:
            self._splats.move_to_end(key)
            return self._splats[key]
        k = torch.from_numpy(intrinsics).to(self.device)[None]
        pose = torch.from_numpy(cam_to_ego).to(self.device)[None]
        splat = self.model.splat_index(k, pose)
        self.splat_computations += 1
        self._splats[key] = splat
        while len(self._splats) > SPLAT_CACHE_SIZE:
            self._splats.popitem(last=False)
        return splat

    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray], intrinsics: Sequence[np.ndarray] | np.ndarray,
                cam_to_ego: Sequence[np.ndarray | Transform] | np.ndarray, command: int,
                stamp_ns: int, ego_status: np.ndarray | None = None) -> Predictions:
        """images: six HxWx3 uint8 RGB arrays in CAMERA_NAMES order; intrinsics: their 3x3 K; cam_to_ego: 4x4
        matrices (or `Transform`s) optical camera -> base_link; command: taxonomy.Command value; ego_status:
        (vx, vy, known) from tinybev_ros.ego_motion (None = unknown, e.g. before the second ego pose)."""
        start = time.perf_counter()
        poses = np.stack([p.matrix if isinstance(p, Transform) else np.asarray(p, dtype=np.float64)
                          for p in cam_to_ego]).astype(np.float32)
        if poses.shape != (len(CAMERA_NAMES), 4, 4):
            raise ValueError(f"cam_to_ego must be {len(CAMERA_NAMES)} 4x4 matrices, got shape {poses.shape}")
        if int(command) not in (0, 1, 2):
            raise ValueError(f"command must be a taxonomy.Command value (0, 1, 2), got {command}")
        status = unknown_ego_status() if ego_status is None else np.asarray(ego_status, dtype=np.float32)
        if status.shape != (EGO_STATUS_SIZE,) or not np.isfinite(status).all():
            raise ValueError(f"ego_status must be {EGO_STATUS_SIZE} finite numbers (vx, vy, known), got {status}")
        inputs, ks = preprocess_cameras(images, list(intrinsics), self.config, CAMERA_NAMES)
        splat = self._splat(ks, poses)
        tensor = torch.from_numpy(inputs).to(self.device)[None]
        prepared = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            outputs = self.model(tensor, None, None, torch.tensor([int(command)], device=self.device), splat,
                                 torch.from_numpy(status).to(self.device)[None])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ran = time.perf_counter()
        prediction = decode(outputs, self.config, [stamp_ns], [int(command)])[0]
        done = time.perf_counter()
        self.last_timing_ms = {"preprocess": 1e3 * (prepared - start), "model": 1e3 * (ran - prepared),
                               "decode": 1e3 * (done - ran)}
        return prediction
