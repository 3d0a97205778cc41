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
    BOX_CODE_SIZE,
    DIRECTION,
    SIN_COS,
    axis_angle,
    decode_heading,
    decode_yaws,
    encode_heading,
)
from training.model_adapter import build_model_spec

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
EDGES = [0.0, np.pi / 2, -np.pi / 2, np.pi, -np.pi, np.pi / 4, -3 * np.pi / 4, 1e-9, np.pi / 2 - 1e-9]


@pytest.mark.parametrize("as_tensor", [False, True])
def test_every_heading_decodes_back_also_at_the_edges_of_the_axis_range(as_tensor: bool):
    yaws = np.concatenate([np.linspace(-np.pi, np.pi, 721), EDGES])
    given = torch.from_numpy(yaws) if as_tensor else yaws
    sin2, cos2, forward = encode_heading(given)
    back = np.asarray(decode_heading(sin2, cos2, forward))
    np.testing.assert_allclose(np.cos(back - yaws), 1.0, atol=1e-12)
    assert ((np.asarray(axis_angle(sin2, cos2)) > -np.pi / 2 - 1e-12)
            & (np.asarray(axis_angle(sin2, cos2)) <= np.pi / 2 + 1e-12)).all()


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
