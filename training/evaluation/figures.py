"""Per-sample figures and a GIF of a scene: predictions beside the ground truth (tinybev_ros/visualization.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nuscenes.nuscenes import NuScenes
from tqdm import tqdm

from tinybev_ros.nuscenes_dataset import sample_images, sample_rig
from tinybev_ros.predictions import Predictions
from tinybev_ros.visualization import render_sample, write_gif, write_png
from training.ground_truth import GroundTruth
from training.metrics.oracle import ground_truth_as_predictions


def render_scene(nusc: NuScenes, sample_tokens: list[str], predictions_by_sample: Mapping[str, Predictions],
                 ground_truths: Mapping[str, GroundTruth] | None, out_dir: str | Path, fps: float = 2.0,
                 png_every: int = 1, progress: bool = True) -> tuple[list[Path], Path]:
    """A figure per sample (PNG for every `png_every`-th) and the scene as a GIF; returns their paths."""
    out_dir = Path(out_dir)
    frames, pngs = [], []
    for index, token in enumerate(tqdm(sample_tokens, desc="figures", disable=not progress, leave=False)):
        pred = predictions_by_sample[token]
        reference = (ground_truth_as_predictions(ground_truths[token], grid=pred.grid, visible_only=False)
                     if ground_truths else None)
        scene = nusc.get("scene", nusc.get("sample", token)["scene_token"])["name"]
        title = f"{scene}  sample {index + 1}/{len(sample_tokens)}  {token[:8]}   boxes: prediction filled, GT outlined"
        figure = render_sample(pred, sample_rig(nusc, token), sample_images(nusc, token), reference, title)
        frames.append(figure)
        if index % png_every == 0:
            pngs.append(write_png(figure, out_dir / f"{scene}_{index:03d}_{token[:8]}.png"))
    first_scene = nusc.get("scene", nusc.get("sample", sample_tokens[0])["scene_token"])["name"]
    gif = write_gif(frames, out_dir / f"{first_scene}.gif", fps=fps)
    return pngs, gif
