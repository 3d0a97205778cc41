"""Predictions of a checkpoint over a split, read exactly as the node reads its frames.

Students run through the runtime `Predictor` on the split's JPEGs (decoded at the scale the node uses, K scaled to
match), boxes decoded down to the evaluation threshold; teachers need LiDAR and run on the sample cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from nuscenes.nuscenes import NuScenes
from tqdm import tqdm

from tinybev_ros.checkpoint import load_checkpoint
from tinybev_ros.device import resolve_device
from tinybev_ros.geometry import CAMERA_NAMES, BevGrid
from tinybev_ros.inference import Predictor
from tinybev_ros.model.config import ModelConfig
from tinybev_ros.model.preprocess import decode_reduction, scale_intrinsics
from tinybev_ros.nuscenes_dataset import sample_images, sample_rig
from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from training.ground_truth import GroundTruth, sample_ego_status


def for_evaluation(config: ModelConfig) -> ModelConfig:
    """`config` decoding boxes down to the evaluation threshold (tinybev_ros/score_thresholds.py; the peak count
    `max_detections` still bounds them)."""
    threshold = min(config.decode.score_threshold, SCORE_THRESHOLDS.evaluate)
    return replace(config, decode=replace(config.decode, score_threshold=threshold))


def evaluation_predictor(checkpoint: str | Path, device: str | None = None) -> Predictor:
    """A `Predictor` for a student checkpoint that decodes as the evaluation protocol needs (`for_evaluation`)."""
    model, config = load_checkpoint(checkpoint)
    return Predictor(model, for_evaluation(config), device)


def model_frame(nusc: NuScenes, sample_token: str, config: ModelConfig) -> tuple[list, list, list]:
    """(images, K, camera -> ego) of a keyframe as the node hands them to the Predictor: JPEGs decoded at the
    scale `decode_reduction` picks (the node's default), K scaled to match."""
    rig = sample_rig(nusc, sample_token)
    cameras = [rig.cameras[name] for name in CAMERA_NAMES]
    reduction = decode_reduction(cameras[0].width, config)
    images = sample_images(nusc, sample_token, reduction)
    return ([images[name] for name in CAMERA_NAMES],
            [scale_intrinsics(c.intrinsic, 1 / reduction, 1 / reduction) for c in cameras],
            [c.sensor_to_ego for c in cameras])


def predict_sample(predictor: Any, nusc: NuScenes, token: str, ground_truth: GroundTruth,
                   times_ms: list[float] | None = None) -> Predictions:
    """Run a `tinybev_ros.inference.Predictor` on one sample, planning with the ground-truth command and the
    ego status from the dataset's ego poses.

    When `times_ms` is given, the wall-clock milliseconds of the `predict` call (preprocess, network, decode;
    image loading excluded) are appended to it: the latency reported is that of real frames.
    """
    images, intrinsics, cam_to_ego = model_frame(nusc, token, predictor.config)
    status = sample_ego_status(nusc, nusc.get("sample", token))  # what the node derives from /tf
    start = time.perf_counter()
    prediction = predictor.predict(images, intrinsics, cam_to_ego, ground_truth.command,
                                   int(ground_truth.timestamp_us) * 1000, status)
    if times_ms is not None:
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return prediction


def predict_split(predictor: Any, nusc: NuScenes, sample_tokens: list[str],
                  ground_truths: Mapping[str, GroundTruth], progress: bool = True,
                  times_ms: list[float] | None = None) -> dict[str, Predictions]:
    """`predict_sample` of every sample."""
    return {token: predict_sample(predictor, nusc, token, ground_truths[token], times_ms)
            for token in tqdm(sample_tokens, desc="inference", disable=not progress)}


def predictor_speed(predictor: Any, nusc: NuScenes, sample_token: str, times_ms: list[float]) -> dict[str, Any]:
    """Parameters, FLOPs of one frame (one extra call) and the latency statistics of the evaluation's frames
    (the first call, which builds the splat index and warms up, is left out when there are others)."""
    from training.metrics.speed import count_flops, count_parameters

    frame = (*model_frame(nusc, sample_token, predictor.config), 2, 0)
    timed = np.array(times_ms[1:] if len(times_ms) > 1 else times_ms)
    return {
        "parameters_M": count_parameters(predictor.model) / 1e6,
        "gflops": count_flops(lambda: predictor.predict(*frame)) / 1e9,
        "latency": {"median_ms": float(np.median(timed)), "p90_ms": float(np.percentile(timed, 90)),
                    "mean_ms": float(timed.mean()), "frames": int(timed.size), "device": str(predictor.device)},
    }


def teacher_stream(checkpoint: str | Path, device: str | None, nusc: NuScenes, eval_set: str, tokens: list[str],
                   sample_cache: str | Path = "") -> tuple[BevGrid, Iterator[tuple[str, Predictions]]]:
    """A teacher checkpoint needs LiDAR: its predictions come from the sample cache (training/teachers/predict.py),
    as a stream of (sample token, Predictions) over `tokens`, with the grid they are on."""
    from training.teachers import load_teacher_checkpoint
    from training.teachers.predict import teacher_dataset, teacher_prediction_stream

    device = resolve_device(device)
    net, config = load_teacher_checkpoint(checkpoint, device)
    print(f"tinybev eval: teacher {config.name}, {len(tokens)} samples of {eval_set} on {device}")
    dataset = teacher_dataset(nusc, eval_set, config, sample_cache)  # the whole split, in `tokens`' order
    return config.camera.grid, teacher_prediction_stream(net, for_evaluation(config.camera), dataset, device)
