"""Student shapes and sizes: the output contract with targets/losses, and the base model's parameter budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tinybev_ros.geometry import CAMERA_NAMES, Rig
from tinybev_ros.model import ModelConfig, build_student, load_model_config
from tinybev_ros.model.box_code import BOX_CODE_SIZE
from tinybev_ros.predictions import FORECAST_STEPS, PLAN_STEPS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def rig_calibration(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 6, 3, 3) K for the model input (fit width, bottom crop) and (1, 6, 4, 4) camera->ego of the rig."""
    rig = Rig.load()
    ks, poses = [], []
    for name in CAMERA_NAMES:
        cam = rig.cameras[name]
        scale = config.image_width / cam.width
        k = cam.intrinsic.copy()
        k[:2] *= scale
        k[1, 2] -= round(cam.height * scale) - config.image_height
        ks.append(k)
        poses.append(cam.sensor_to_ego.matrix)
    as_tensor = lambda a: torch.tensor(np.array(a), dtype=torch.float32)[None]  # noqa: E731
    return as_tensor(ks), as_tensor(poses)


@pytest.fixture(scope="module")
def tiny() -> ModelConfig:
    return load_model_config(CONFIG_DIR / "model_tiny.yaml")


def test_base_student_has_26_to_30_million_parameters_and_yaml_equals_defaults():
    config = load_model_config(CONFIG_DIR / "model_base.yaml")
    # The defaults, with the planner's ego-status input on (off by default only for checkpoints made without it).
    assert config == dataclasses.replace(ModelConfig(), ego_status=True)
    counts = build_student(config).parameter_counts()
    assert 26e6 <= counts["total"] <= 30e6, counts
    assert counts["image backbone (ResNet-18)"] == 11_176_512  # torchvision resnet18 without fc
    parts = sum(v for k, v in counts.items() if k != "total")
    assert parts == counts["total"]


def test_base_forward_batch_one_has_contract_shapes():
    """The base path differs from tiny (det_stride 2: dense heads get upsampled fused features)."""
    config = ModelConfig()
    torch.manual_seed(0)
    model = build_student(config).eval()
    intrinsics, cam_to_ego = rig_calibration(config)
    with torch.no_grad():
        out = model(torch.randn(1, 6, 3, 256, 704), intrinsics, cam_to_ego, torch.tensor([2]))
    assert tuple(out["heatmap"].shape) == (1, 10, 100, 100) and tuple(out["motion"].shape) == (1, 144, 100, 100)
    assert tuple(out["map"].shape) == (1, 4, 200, 200) and tuple(out["occupancy"].shape) == (1, 5, 200, 200)
    assert [tuple(f.shape[1:]) for f in out["bev_features"]] == [
        (96, 200, 200), (192, 100, 100), (320, 50, 50), (480, 25, 25), (192, 100, 100)]
    assert tuple(out["depth"].shape) == (1, 6, 59, 16, 44) and torch.isfinite(out["plan"]).all()


def test_tiny_forward_on_cpu_has_contract_shapes_and_plans_follow_the_command(tiny):
    torch.manual_seed(0)
    model = build_student(tiny).eval()
    intrinsics, cam_to_ego = rig_calibration(tiny)
    batch = 3
    image_a, image_b = torch.randn(2, 1, 6, 3, tiny.image_height, tiny.image_width)
    images = torch.cat([image_a, image_b, image_a])  # samples 0 and 2 see the same images
    with torch.no_grad():
        out = model(images, intrinsics.expand(batch, -1, -1, -1), cam_to_ego.expand(batch, -1, -1, -1),
                    torch.tensor([0, 2, 1]), ego_status=torch.tensor([[5.0, 0.0, 1.0]]).expand(batch, -1))
    h, w = tiny.grid.shape
    hd, wd = h // tiny.det_stride, w // tiny.det_stride
    k = tiny.motion_modes
    expected = {
        "heatmap": (batch, 10, hd, wd),
        "box": (batch, BOX_CODE_SIZE, hd, wd),
        "motion": (batch, k * FORECAST_STEPS * 2, hd, wd),
        "motion_logits": (batch, k, hd, wd),
        "map": (batch, 4, h, w),
        "occupancy": (batch, 5, h, w),
        "plan": (batch, PLAN_STEPS, 2),
    }
    for name, shape in expected.items():
        assert tuple(out[name].shape) == shape, name
        assert torch.isfinite(out[name]).all(), name
    features = out["bev_features"]
    assert len(features) >= 4
    assert [f.shape[-1] for f in features[:-1]] == [w // 2**i for i in range(len(tiny.bev_channels))]
    assert tuple(features[-1].shape[-2:]) == (hd, wd)
    depth = out["depth"]
    assert torch.allclose(depth.sum(dim=2), torch.ones(()), atol=1e-5)
    # Different images -> different outputs; same images, other command -> same perception, other plan.
    assert not torch.allclose(out["heatmap"][0], out["heatmap"][1])
    assert torch.allclose(out["heatmap"][0], out["heatmap"][2], atol=1e-5)
    assert not torch.allclose(out["plan"][0], out["plan"][2])


def test_bad_config_is_rejected_with_its_name():
    with pytest.raises(ValueError, match="det_stride"):
        ModelConfig(name="broken", det_stride=3)
    with pytest.raises(ValueError, match="multiple of 32"):
        ModelConfig(name="broken", image_height=250)


def test_collision_refinement_pushes_waypoints_out_of_predicted_occupancy(tiny):
    from tinybev_ros.model.planner import Planner

    planner = Planner(tiny, tiny.fpn_channels)
    grid = tiny.grid
    h, w = grid.shape
    xs, ys = grid.cell_centers()
    # An occupied disc of radius 3 m centred at (10, 1.5) in every future frame; free elsewhere.
    blob = ((xs[:, None] - 10.0) ** 2 + (ys[None, :] - 1.5) ** 2) < 9.0
    logits = torch.where(torch.from_numpy(blob), 8.0, -8.0).float().expand(2, 5, h, w)
    plan = torch.tensor([[5.0, 0.0], [10.0, 0.0], [15.0, 0.0], [20.0, 0.0], [25.0, 0.0], [30.0, 0.0]])
    plan = torch.stack([plan, plan + torch.tensor([0.0, 20.0])])  # sample 1 drives far from the blob
    plan.requires_grad_(True)
    refined = planner.refine(plan, logits)
    # The waypoint inside the disc edge moves away from its centre (to -y), the far ones stay put.
    assert refined[0, 1, 1] < plan[0, 1, 1] - 0.1
    assert torch.allclose(refined[1], plan[1]) and torch.allclose(refined[0, 4:], plan[0, 4:])
    refined.sum().backward()  # differentiable end to end
    assert plan.grad is not None and torch.isfinite(plan.grad).all()


def test_every_parameter_gets_a_gradient(tiny):
    """No disconnected module: DDP (find_unused_parameters=False) and every head's loss depend on it."""
    torch.manual_seed(2)
    model = build_student(tiny).train()
    intrinsics, cam_to_ego = rig_calibration(tiny)
    out = model(torch.randn(1, 6, 3, tiny.image_height, tiny.image_width), intrinsics, cam_to_ego, torch.tensor([1]),
                ego_status=torch.tensor([[3.0, 0.5, 1.0]]))
    loss = sum(out[k].float().square().mean() for k in ("heatmap", "box", "motion", "motion_logits", "map",
                                                         "occupancy", "plan"))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
