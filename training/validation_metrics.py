"""Detection metrics of a student while it trains: NDS and mAP on a small held-out split, every validation.

A loss curve says little about whether boxes land; the nuScenes devkit's NDS does. This runs the evaluation's
own path (the `Predictor` on the split's JPEGs, boxes decoded down to the evaluation threshold, `DetectionEval`)
on a copy of the model being trained, so the curve it gives is what `tinybev eval` would say of a checkpoint
saved at that step. Ground truth is loaded once. Meant for a small split (e.g. a fresh synthetic world of 4 scenes,
80 keyframes: ~20 s on a 2-core CPU per validation).
"""

from __future__ import annotations

import copy
import logging

import torch
from nuscenes.nuscenes import NuScenes
from torch import nn

from tinybev_ros.inference import Predictor
from tinybev_ros.model.config import ModelConfig
from training.evaluation.inference import for_evaluation, predict_split
from training.evaluation.suite import evaluate, load_ground_truths
from training.splits import split_sample_tokens

log = logging.getLogger(__name__)


class DetectionValidation:
    """Callable for `Trainer.validation_metrics`: model -> {"NDS", "mAP"} on `split` of `nusc`."""

    def __init__(self, nusc: NuScenes, split: str, config: ModelConfig, device: str | torch.device) -> None:
        self.nusc, self.split, self.device = nusc, split, device
        self.config = for_evaluation(config)
        self.tokens = split_sample_tokens(nusc, split)
        self.truths = load_ground_truths(nusc, self.tokens, config.grid, progress=False)
        log.info("detection validation on %d keyframes of %s in %s", len(self.tokens), split, nusc.dataroot)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        # A copy: the Predictor switches its model to eval mode (and to float16 on CUDA).
        predictor = Predictor(copy.deepcopy(model), self.config, self.device)
        predictions = predict_split(predictor, self.nusc, self.tokens, self.truths, progress=False)
        metrics = evaluate(predictions, self.nusc, self.split, tasks=("detection",), ground_truths=self.truths,
                           progress=False)["detection"]
        return {"NDS": float(metrics["NDS"]), "mAP": float(metrics["mAP"])}
