"""The box code's headings: an axis both directions share, and a direction of its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tinybev_ros.checkpoint import FORMAT, load_checkpoint, write_tensors
from tinybev_ros.config import to_dict
from tinybev_ros.model import build_student, load_model_config
from tinybev_ros.model.box_code import (
    AXIS_RANGE_START,
    BOX_CODE_SIZE,
    DIRECTION,
    SIN_COS,
    axis_angle,
    decode_heading,
    decode_yaws,
    encode_heading,
)
from training.losses import LossWeights, box_loss
from training.model_adapter import build_model_spec

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
EDGES = [0.0, np.pi / 2, -np.pi / 2, np.pi, -np.pi, np.pi / 4, -np.pi / 4, 3 * np.pi / 4, -3 * np.pi / 4,
         -np.pi / 4 + 1e-9, -np.pi / 4 - 1e-9, 3 * np.pi / 4 + 1e-9, 3 * np.pi / 4 - 1e-9]


@pytest.mark.parametrize("as_tensor", [False, True])
def test_every_heading_decodes_back_also_at_the_edges_of_the_axis_range(as_tensor: bool):
    yaws = np.concatenate([np.linspace(-np.pi, np.pi, 721), EDGES])
    given = torch.from_numpy(yaws) if as_tensor else yaws
    sin2, cos2, forward = encode_heading(given)
    back = np.asarray(decode_heading(sin2, cos2, forward))
    np.testing.assert_allclose(np.cos(back - yaws), 1.0, atol=1e-12)
    axis = np.asarray(axis_angle(sin2, cos2))
    assert ((axis >= AXIS_RANGE_START - 1e-12) & (axis <= AXIS_RANGE_START + np.pi + 1e-12)).all()  # to rounding


def test_front_and_back_share_the_axis_and_differ_in_direction():
    """Why the axis code: an object whose front and back look alike is labelled yaw and yaw + pi about equally
    often. The best single answer to both is their mean; for (sin 2yaw, cos 2yaw) that is the axis itself, for
    the old (sin yaw, cos yaw) it is the zero vector, whose angle is noise."""
    yaws = np.linspace(-3.0, 3.0, 13)
    ahead, behind = encode_heading(yaws), encode_heading(yaws + np.pi)
    np.testing.assert_allclose(ahead[0], behind[0], atol=1e-12)
    np.testing.assert_allclose(ahead[1], behind[1], atol=1e-12)
    assert (ahead[2] != behind[2]).all()
    mean_axis = (np.stack(ahead[:2]) + np.stack(behind[:2])) / 2
    np.testing.assert_allclose(np.hypot(*mean_axis), 1.0, atol=1e-12)
    mean_old = (np.stack([np.sin(yaws), np.cos(yaws)]) + np.stack([np.sin(yaws + np.pi), np.cos(yaws + np.pi)])) / 2
    np.testing.assert_allclose(mean_old, 0.0, atol=1e-12)


def test_the_direction_logit_picks_the_heading_and_a_legacy_code_decodes_as_before():
    box = torch.zeros(2, BOX_CODE_SIZE)
    sin2, cos2, _ = encode_heading(torch.tensor([2.5, 2.5], dtype=torch.float64))
    box[:, 6], box[:, 7] = sin2.float(), cos2.float()
    box[0, DIRECTION], box[1, DIRECTION] = 4.0, -4.0
    yaws = decode_yaws(box, "axis_direction")
    np.testing.assert_allclose(np.cos(yaws.numpy() - [2.5 - np.pi, 2.5]), 1.0, atol=1e-6)
    legacy = torch.tensor([[0.0] * 6 + [np.sin(2.5), np.cos(2.5), 0.0, 0.0]])
    np.testing.assert_allclose(decode_yaws(legacy, SIN_COS).numpy(), [2.5], atol=1e-6)


def test_a_checkpoint_from_before_the_axis_code_runs_but_does_not_train(tmp_path):
    """The released student predates the axis code: its config has no heading_code and its head 10 channels.
    It must still load and run; training on a sin_cos model is refused in one line."""
    tiny = load_model_config(CONFIG_DIR / "model_tiny.yaml")
    legacy = dataclasses.replace(tiny, heading_code=SIN_COS)
    model = build_student(legacy)
    config = to_dict(legacy)
    del config["heading_code"]
    path = write_tensors(tmp_path / "old.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()},
                         {"format": FORMAT, "kind": "student", "config": yaml.safe_dump(config)})
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config.heading_code == SIN_COS and loaded.heads.box[1].out_channels == 10
    yaml_path = tmp_path / "model.yaml"
    yaml_path.write_text(yaml.safe_dump(to_dict(legacy)))
    with pytest.raises(ValueError, match=r"heading_code 'sin_cos' .* not trained or used as a teacher"):
        build_model_spec("student", yaml_path)
    spec = build_model_spec("student", CONFIG_DIR / "model_tiny.yaml")  # resuming or probing from it: refused too
    with pytest.raises(ValueError, match=rf"checkpoint {path} has heading_code 'sin_cos'"):
        spec.load_weights(spec.model, path, torch.device("cpu"))


def _fit(features: torch.Tensor, loss_of, steps: int = 300) -> torch.Tensor:
    """A linear box head fitted to `features` (N, F) with `loss_of(pred (N, C))`; returns its predictions."""
    torch.manual_seed(0)
    head = torch.nn.Linear(features.shape[1], BOX_CODE_SIZE)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(head(features)).backward()
        optimizer.step()
    return head(features).detach()


def test_the_box_loss_learns_the_axis_of_objects_whose_direction_cannot_be_seen():
    """A head that sees each object's axis but not which end is its front: with the box loss it gets every axis
    and leaves the direction at even odds; the old L1 on (sin yaw, cos yaw) gets axes no better than chance."""
    yaws = torch.linspace(-np.pi, np.pi, 257, dtype=torch.float64)[:-1]
    sin2, cos2, forward = encode_heading(yaws)
    features = torch.stack([sin2, cos2], dim=1).float()  # the axis only: yaw and yaw + pi look alike
    target = torch.zeros(1, len(yaws), BOX_CODE_SIZE)
    target[0, :, 6], target[0, :, 7], target[0, :, DIRECTION] = sin2.float(), cos2.float(), forward.float()
    targets = {"box_index": torch.arange(len(yaws))[None], "box_mask": torch.ones(1, len(yaws), dtype=torch.bool),
               "box": target}
    weights = torch.tensor(LossWeights().box_code)

    def as_map(pred: torch.Tensor) -> torch.Tensor:  # (N, C) -> (1, C, 1, N), the head's layout
        return pred.T[None, :, None, :]

    pred = _fit(features, lambda p: box_loss(as_map(p), targets, weights))
    axis_error = np.abs(np.angle(np.exp(2j * (axis_angle(pred[:, 6], pred[:, 7]).numpy() - yaws.numpy())))) / 2
    assert np.degrees(axis_error).max() < 5.0
    assert abs(float(torch.sigmoid(pred[:, DIRECTION]).mean()) - 0.5) < 0.05

    old_target = torch.stack([yaws.sin(), yaws.cos()], dim=1).float()
    old = _fit(features, lambda p: (p[:, 6:8] - old_target).abs().mean())
    old_axis_error = np.abs(np.angle(np.exp(2j * (np.arctan2(old[:, 6], old[:, 7]).numpy() - yaws.numpy())))) / 2
    assert np.degrees(old_axis_error).mean() > 30.0  # uniform noise: 45 degrees on average


@pytest.mark.parametrize("around", [0.0, 90.0, 180.0, -90.0])
def test_traffic_along_and_across_the_road_is_far_from_the_edge_of_the_axis_range(around: float):
    """Objects heading within 30 degrees of the road's directions (along: 0, 180; across: +-90) share one direction
    label per direction, and a 3-degree axis error stays a 3-degree heading error (at the range's edge a small
    error would decode to a reversed heading)."""
    yaws = np.radians(around + np.arange(-30.0, 31.0))
    _, _, forward = encode_heading(yaws)
    assert forward.all() or not forward.any()
    sin2, cos2, _ = encode_heading(yaws + np.radians(3.0))  # the axis a little off, the direction as labelled
    error = np.angle(np.exp(1j * (decode_heading(sin2, cos2, forward) - yaws)))
    np.testing.assert_allclose(np.degrees(error), 3.0, atol=1e-9)
