"""Teachers: the LiDAR+camera FusionTeacher (tiny config, CPU), the Teacher interface and the on-disk cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tinybev_ros.checkpoint import save_checkpoint
from tinybev_ros.model import build_student, load_model_config
from training.teachers import (
    CACHE_FORMAT,
    OUTPUT_KEYS,
    CachedTeacher,
    LiveTeacher,
    Teacher,
    TeacherOutput,
    build_teacher,
    cache_teacher,
    load_teacher_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture(scope="module")
def configs():
    return load_model_config(CONFIG_DIR / "model_tiny.yaml"), load_teacher_config(CONFIG_DIR / "teacher_tiny.yaml")


@pytest.fixture(scope="module")
def batch(configs):
    from test_model_geometry import calibration

    student, _ = configs
    ks, poses = calibration(student)
    gen = torch.Generator().manual_seed(0)
    b, points = 2, 600
    lidar = torch.zeros(b, points, 6)
    lidar[..., 0] = torch.rand(b, points, generator=gen) * 120 - 60  # some beyond the +-50 m grid
    lidar[..., 1] = torch.rand(b, points, generator=gen) * 120 - 60
    lidar[..., 2] = torch.rand(b, points, generator=gen) * 4 - 2
    lidar[..., 3] = torch.rand(b, points, generator=gen) * 255
    lidar[..., 4] = torch.randint(0, 32, (b, points), generator=gen).float()
    lidar[:, points // 2:, 5] = 0.5  # half the points from the earlier sweep (teacher_tiny reads two)
    mask = torch.ones(b, points, dtype=torch.bool)
    mask[1, 400:] = False  # the second sweep is shorter: zero padded
    lidar[1, 400:] = 0.0
    return {
        "images": torch.randn(b, 6, 3, student.image_height, student.image_width, generator=gen),
        "intrinsics": torch.tensor(ks, dtype=torch.float32)[None].expand(b, -1, -1, -1),
        "cam_to_ego": torch.tensor(poses, dtype=torch.float32)[None].expand(b, -1, -1, -1),
        "lidar": lidar,
        "lidar_mask": mask,
        "command": torch.tensor([2, 0]),
        "ego_status": torch.tensor([[6.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
        "meta": [{"sample_token": "a" * 32}, {"sample_token": "b" * 32}],
    }


@pytest.fixture(scope="module")
def teacher(configs):
    torch.manual_seed(0)
    return LiveTeacher(build_teacher(configs[1]))


@pytest.fixture(scope="module")
def live(teacher, batch):
    return teacher(batch)


def test_teacher_outputs_have_the_students_names_shapes_and_feature_layout(configs, batch, teacher, live):
    student_config, teacher_config = configs
    assert isinstance(teacher, Teacher) and teacher.needs_lidar
    result = live
    assert isinstance(result, TeacherOutput)
    torch.manual_seed(0)
    with torch.no_grad():
        student = build_student(student_config).eval()(batch["images"], batch["intrinsics"], batch["cam_to_ego"],
                                                         batch["command"], ego_status=batch["ego_status"])
    assert set(result.outputs) == set(OUTPUT_KEYS)
    for key in OUTPUT_KEYS:
        assert result.outputs[key].shape == student[key].shape, key
        assert not result.outputs[key].requires_grad
    assert len(result.features) == len(student["bev_features"])
    for t, s in zip(result.features, student["bev_features"], strict=True):
        assert t.shape[-2:] == s.shape[-2:] and t.shape[1] >= s.shape[1]
    counts = build_teacher(teacher_config).parameter_counts()
    assert counts["LiDAR pillars"] > 0 and counts["total"] > sum(p.numel() for p in build_student(student_config)
                                                                 .encoder.parameters())


def test_lidar_matters_and_padding_does_not(batch, teacher, live):
    base = live.outputs["heatmap"]
    changed_batch = dict(batch, lidar=batch["lidar"].clone())
    changed_batch["lidar"][1, 400:, :3] = torch.tensor([5.0, 5.0, 0.0])  # sample 1: masked points moved into grid
    changed_batch["lidar"][0, :100, :2] = torch.tensor([3.0, -7.0])  # sample 0: real points piled into one pillar
    changed = teacher(changed_batch).outputs["heatmap"]
    assert not torch.allclose(changed[0], base[0]) and torch.equal(changed[1], base[1])


def test_camera_branch_rejects_images_of_another_size_and_the_lidar_only_teacher_reads_none(configs, batch,
                                                                                              teacher, live):
    small = dict(batch, images=batch["images"][..., :64, :])
    camera_teacher = LiveTeacher(build_teacher(dataclasses.replace(configs[1], camera_branch=True)))
    assert "depth" in camera_teacher.model(batch) and camera_teacher.model.camera is not None
    with pytest.raises(ValueError, match="expects 128x352 images"):
        camera_teacher(small)
    assert teacher.model.camera is None  # teacher_tiny.yaml: LiDAR only
    assert torch.equal(teacher(small).outputs["heatmap"], live.outputs["heatmap"])


def test_the_earlier_sweeps_time_lag_is_an_input_of_a_two_sweep_teacher_only(configs, batch, teacher, live):
    assert configs[1].lidar.sweeps == 2
    shifted = dict(batch, lidar=batch["lidar"].clone())
    shifted["lidar"][..., 5] *= 2.0
    assert not torch.allclose(teacher(shifted).outputs["heatmap"], live.outputs["heatmap"])
    torch.manual_seed(0)
    one = LiveTeacher(build_teacher(dataclasses.replace(configs[1], lidar=dataclasses.replace(configs[1].lidar,
                                                                                              sweeps=1))))
    assert torch.equal(one(shifted).outputs["heatmap"], one(batch).outputs["heatmap"])


def test_a_two_sweep_teacher_pools_each_sweep_into_a_map_of_its_own(configs, batch):
    """The earlier sweep's points must not reach the keyframe's pillar map (or a moving object's two footprints
    merge under the max-pool), and must reach their own."""
    from training.teachers.pillars import PillarEncoder

    torch.manual_seed(0)
    encoder = PillarEncoder(configs[1].lidar, configs[1].camera.grid).eval()
    maps = []
    encoder.bev.register_forward_pre_hook(lambda module, args: maps.append(args[0]))
    lidar, mask = batch["lidar"].clone(), batch["lidar_mask"]
    earlier = lidar[..., 5] > 0
    assert earlier.any() and (~earlier & mask).any()
    encoder(lidar, mask)
    lidar[..., :2] = torch.where(earlier[..., None], lidar[..., :2] + 2.0, lidar[..., :2])  # the earlier sweep moves
    encoder(lidar, mask)
    channels = configs[1].lidar.point_channels + 1
    assert maps[0].shape[1] == 2 * channels
    assert torch.equal(maps[0][:, :channels], maps[1][:, :channels])  # the keyframe's map: untouched
    assert not torch.allclose(maps[0][:, channels:], maps[1][:, channels:])  # the earlier sweep's: moved


def test_teacher_checkpoint_and_cache_reproduce_the_live_teacher(tmp_path, configs, batch, teacher, live):
    path = save_checkpoint(tmp_path / "teacher.safetensors", teacher.model, configs[1], kind="teacher")
    reloaded = LiveTeacher.from_checkpoint(path)
    again = reloaded(batch)
    for key in OUTPUT_KEYS:
        assert torch.equal(again.outputs[key], live.outputs[key]), key

    root = tmp_path / "cache"
    assert cache_teacher(teacher, [batch], root, source="FusionTeacher teacher_tiny") == 2
    assert cache_teacher(teacher, [batch], root, source="FusionTeacher teacher_tiny") == 0  # resumable
    files = sorted(p.name for p in root.iterdir())
    assert files == ["a" * 32 + ".safetensors", "b" * 32 + ".safetensors"]
    with safe_open(str(root / files[0]), framework="pt") as handle:
        meta = handle.metadata()
        assert meta["format"] == CACHE_FORMAT and meta["num_features"] == str(len(live.features))
        assert handle.get_tensor("features.0").shape == live.features[0].shape[1:]

    cached = CachedTeacher(root)
    assert isinstance(cached, Teacher) and not cached.needs_lidar
    # Reversed batch order: each sample's tensors must come from its own file.
    reversed_batch = dict(batch, meta=batch["meta"][::-1])
    result = cached(reversed_batch)
    for key in OUTPUT_KEYS:
        want = live.outputs[key].flip(0)
        np.testing.assert_allclose(result.outputs[key].numpy(), want.numpy(), rtol=2e-3,
                                   atol=2e-3 * float(want.abs().max()))
    for got, want in zip(result.features, live.features, strict=True):
        np.testing.assert_allclose(got.numpy(), want.flip(0).numpy(), rtol=2e-3, atol=2e-3 * float(want.abs().max()))

    with pytest.raises(FileNotFoundError, match="no file for sample " + "c" * 32):
        cached(dict(batch, meta=[{"sample_token": "c" * 32}]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CachedTeacher(tmp_path / "nowhere")


@pytest.mark.parametrize("points", [0, 1])
def test_a_sweep_of_at_most_one_point_trains_every_pillar_parameter_and_one_point_counts_in_eval(configs, points):
    from training.teachers.pillars import PillarConfig, PillarEncoder

    torch.manual_seed(0)
    encoder = PillarEncoder(PillarConfig(sweeps=2), configs[0].grid)
    cloud = torch.tensor([[[3.2, -7.6, 0.5, 100.0, 5.0, 0.0]]]).expand(1, max(points, 1), 6).contiguous()
    mask = torch.ones(1, max(points, 1), dtype=torch.bool) & (points > 0)
    encoder.train()(cloud, mask).sum().backward()  # DDP stalls a rank whose step leaves a parameter without grad
    assert all(p.grad is not None for p in encoder.parameters())
    assert all(torch.all(p.grad == 0) for p in encoder.point_net.parameters())
    with torch.no_grad():
        bev = encoder.eval()(cloud, mask)
        empty = encoder(cloud, torch.zeros_like(mask))
    assert torch.equal(bev, empty) == (points == 0)  # eval lifts a lone point (running statistics)
