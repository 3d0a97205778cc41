"""Data pipeline, losses and the training loop on the synthetic dataset (tiny models, a few steps, CPU)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from nuscenes.nuscenes import NuScenes
from test_model_backbone import fake_imagenet_state

from tinybev_ros.checkpoint import load_checkpoint
from tinybev_ros.geometry import CAMERA_NAMES, BevGrid
from tinybev_ros.model.box_code import BOX_CODE_SIZE
from tinybev_ros.model.config import load_model_config
from tinybev_ros.model.preprocess import preprocess_cameras
from tinybev_ros.nuscenes_dataset import sample_images, sample_rig
from tinybev_ros.taxonomy import DETECTION_CLASSES
from training.checkpointing import MODEL_FILE, STATE_FILE, latest_checkpoint
from training.config import LossRamp, TrainConfig, load_train_config
from training.data import DataConfig, NuScenesBevDataset, collate
from training.ground_truth import ego_pose_of_sample
from training.losses import LossWeights, collision_penalty, focal_heatmap_loss, motion_losses
from training.targets import TargetConfig, decode_box_targets
from training.train import Trainer, lr_at

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "config" / "model_tiny.yaml"


@pytest.fixture(scope="module")
def nusc(synth_dataset) -> NuScenes:
    return NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)


def tiny_config(**changes) -> TrainConfig:
    """train_tiny.yaml for a few-step test: no worker processes and no loss ramp (unless a test asks), so every
    task trains from the first step."""
    base = load_train_config(REPO / "config" / "train_tiny.yaml")
    changes.setdefault("loss_ramp", LossRamp())
    data = dataclasses.replace(base.data, num_workers=0, **changes.pop("data", {}))
    optim = dataclasses.replace(base.optim, **changes.pop("optim", {}))
    return dataclasses.replace(base, data=data, optim=optim, **changes)


# ---------------------------------------------------------------------------------------------- data
@pytest.mark.parametrize("train_yaml", ["train_tiny.yaml", "train_base.yaml", "distill_ablation_train.yaml"])
def test_student_training_feeds_the_model_what_the_node_does(nusc, train_yaml):
    """Same images, K and extrinsics as the runtime Predictor gets from /tf_static and CameraInfo: a student
    trained on anything else learns from a signal the node never provides (see training/data.py)."""
    config = load_train_config(REPO / "config" / train_yaml)
    model = load_model_config(config.model_config_path("student"))
    dataset = NuScenesBevDataset(nusc, "train", model.grid, model.det_stride, model,
                                 dataclasses.replace(config.data, max_samples=1), config.targets, train=False,
                                 with_lidar=False)
    item = dataset[0]
    rig = sample_rig(nusc, item["meta"]["sample_token"])
    images = sample_images(nusc, item["meta"]["sample_token"])
    inputs, ks = preprocess_cameras([images[n] for n in CAMERA_NAMES],
                                    [rig.cameras[n].intrinsic for n in CAMERA_NAMES], model, CAMERA_NAMES)
    np.testing.assert_array_equal(item["images"], inputs)
    np.testing.assert_allclose(item["intrinsics"], np.asarray(ks), atol=1e-4)
    np.testing.assert_allclose(item["cam_to_ego"], [rig.cameras[n].sensor_to_ego.matrix for n in CAMERA_NAMES],
                               atol=1e-6)


def test_batch_follows_the_contract_and_augmentation_moves_k(nusc):
    model = load_model_config(TINY)
    kwargs = {"grid": model.grid, "det_stride": model.det_stride, "camera_config": model,
              "data_config": DataConfig(max_samples=2), "target_config": TargetConfig(), "with_lidar": True}
    plain = NuScenesBevDataset(nusc, "train", train=False, **kwargs)
    augmented = NuScenesBevDataset(nusc, "train", train=True, **kwargs)
    batch = collate([plain[0], plain[1]])
    h, w = model.image_height, model.image_width
    hd, wd = model.grid.shape[0] // model.det_stride, model.grid.shape[1] // model.det_stride
    assert batch["images"].shape == (2, 6, 3, h, w) and batch["images"].dtype == torch.float32
    assert batch["intrinsics"].shape == (2, 6, 3, 3) and batch["cam_to_ego"].shape == (2, 6, 4, 4)
    assert batch["lidar"].shape[0] == 2 and batch["lidar"].shape[2] == 6 and batch["lidar_mask"].any(1).all()
    assert not batch["lidar"][..., 5].any()  # one sweep: every point's time lag is 0
    assert batch["command"].dtype == torch.int64 and batch["command"].shape == (2,)
    t = batch["targets"]
    assert t["heatmap"].shape == (2, 10, hd, wd) and t["box"].shape[-1] == BOX_CODE_SIZE
    assert t["map"].shape == (2, 4, *model.grid.shape) and t["occupancy"].shape == (2, 5, *model.grid.shape)
    assert t["ego_future"].shape == (2, 6, 2) and t["motion"].shape[2:] == (12, 2)
    assert [m["sample_token"] for m in batch["meta"]] == plain.tokens[:2]
    # LiDAR points are in base_link: the ground (z ~ 0) dominates, not the sensor height (~1.8 m below it).
    points = batch["lidar"][0][batch["lidar_mask"][0]].numpy()
    assert abs(np.median(points[:, 2])) < 1.0
    # Augmentation changes K but is reproducible for a given (seed, epoch, index), and varies with the epoch.
    a = augmented[0]
    assert not np.allclose(a["intrinsics"], plain[0]["intrinsics"])
    np.testing.assert_array_equal(a["images"], augmented[0]["images"])
    augmented.set_epoch(1)
    assert not np.allclose(augmented[0]["intrinsics"], a["intrinsics"])
    # The augmented K still describes the augmented image: a landmark projects onto the same content.
    _assert_same_content_at_projections(plain[0], a, nusc)


def _project(item: dict, cam: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and depths of base_link points in camera `cam` of a dataset item (its own K and extrinsic, which a
    BEV augmentation makes a similarity transform: inverted as a matrix, not as a rotation)."""
    ego_to_cam = np.linalg.inv(item["cam_to_ego"][cam].astype(float))
    cam_pts = points @ ego_to_cam[:3, :3].T + ego_to_cam[:3, 3]
    uvw = cam_pts @ item["intrinsics"][cam].astype(float).T
    return uvw[:, :2] / uvw[:, 2:3], cam_pts[:, 2]


def _assert_same_content_at_projections(plain: dict, augmented: dict, nusc: NuScenes) -> None:
    """Project GT box centres with each item's own K; image patches around them must match across items."""
    sample = nusc.get("sample", plain["meta"]["sample_token"])
    ego, _ = ego_pose_of_sample(nusc, sample)
    points = ego.inverse().apply(np.asarray([nusc.get_box(token).center for token in sample["anns"]]))
    moved = points @ augmented["bev_transform"].astype(float).T  # the augmented item's BEV frame
    h, w = plain["images"].shape[-2:]
    matched, compared = 0, 0
    for cam in range(6):
        (uv0, depth), (uv1, _) = _project(plain, cam, points), _project(augmented, cam, moved)
        visible = (depth > 2) & np.all((uv0 > 8) & (uv0 < [w - 9, h - 9]) & (uv1 > 8) & (uv1 < [w - 9, h - 9]), 1)
        for i in np.flatnonzero(visible):
            (u0, v0), (u1, v1) = np.round(uv0[i]).astype(int), np.round(uv1[i]).astype(int)
            p0 = plain["images"][cam][:, v0 - 3: v0 + 4, u0 - 3: u0 + 4].mean((1, 2))
            p1 = augmented["images"][cam][:, v1 - 3: v1 + 4, u1 - 3: u1 + 4].mean((1, 2))
            compared += 1
            matched += float(np.abs(p0 - p1).max()) < 0.35
    assert compared >= 2 and matched / compared >= 0.8


# -------------------------------------------------------------------------------------------- losses
def test_losses_reward_the_right_answers():
    target = torch.zeros(1, 1, 9, 9)
    target[0, 0, 4, 4] = 1.0
    right = torch.full_like(target, -8.0)
    right[0, 0, 4, 4] = 8.0
    assert focal_heatmap_loss(right, target) < 1e-3 < focal_heatmap_loss(torch.zeros_like(target), target)
    # Winner-takes-all: only the closest mode is regressed, and it becomes the likeliest.
    modes, steps = 3, 12
    truth = torch.linspace(0, 5, steps)[:, None].repeat(1, 2)
    motion = torch.zeros(1, modes * steps * 2, 1, 1)
    motion[0, (1 * steps) * 2:(2 * steps) * 2, 0, 0] = truth.reshape(-1)  # mode 1 is exact
    targets = {"box_index": torch.zeros(1, 1, dtype=torch.long), "box_mask": torch.ones(1, 1, dtype=torch.bool),
               "motion": truth[None, None], "motion_mask": torch.ones(1, 1, steps, dtype=torch.bool)}
    logits = torch.zeros(1, modes, 1, 1, requires_grad=True)
    reg, cls = motion_losses(motion, logits, targets)
    assert reg.item() == pytest.approx(0.0, abs=1e-6)
    cls.backward()
    assert logits.grad[0, 1, 0, 0] < 0 < logits.grad[0, 0, 0, 0]
    # Collision: a plan through an occupied area is penalised and its gradient points out of it.
    grid = BevGrid(-10.0, 10.0, -10.0, 10.0, 0.5)
    occupancy = torch.zeros(1, 5, 40, 40)
    occupancy[0, 1:, 24:30, 18:24] = 1.0  # x in [2, 5), y in [-1, 2)
    occupancy_mask = torch.ones(1, 5, dtype=torch.bool)
    plan = torch.tensor([[[3.5, 1.2]] * 6], requires_grad=True)
    penalty = collision_penalty(plan, occupancy, occupancy_mask, grid)
    penalty.backward()
    assert penalty > 0.3 and plan.grad[0, :4, 1].sum() < 0  # descent moves it left, out of the box
    clear = collision_penalty(torch.tensor([[[-5.0, -5.0]] * 6]), occupancy, occupancy_mask, grid)
    assert clear == 0.0
    assert LossWeights().heatmap > 0


def test_loss_ramp_brings_the_late_tasks_in_linearly():
    ramp = LossRamp(steps=100, tasks=("plan", "occupancy"))
    weights = LossWeights(plan=2.0, occupancy=1.0, heatmap=1.5)
    early, middle, late = (ramp.weights(weights, step) for step in (0, 49, 100))
    assert early.plan == pytest.approx(0.02) and middle.occupancy == pytest.approx(0.5) and late == weights
    assert early.heatmap == middle.heatmap == 1.5  # detection at full weight from the start
    assert LossRamp().weights(weights, 0) == weights
    with pytest.raises(ValueError, match="not loss terms"):
        LossRamp(steps=10, tasks=("planning",))
    config = load_train_config(REPO / "config" / "train_tiny.yaml")
    assert config.loss_ramp.steps > 0 and config.loss.depth > 0  # the shipped recipe uses both


def test_lr_schedule_warms_up_then_decays():
    config = tiny_config(steps=100, optim={"warmup_steps": 10, "lr": 1e-3, "min_lr_ratio": 0.1})
    lrs = [lr_at(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] >= 1e-4 - 1e-12


# ---------------------------------------------------------------------------------------- training
OVERFIT_STEPS = {"teacher": 60, "student": 160}  # the camera-only student needs longer
MATCH_DISTANCE_M = 2.0  # nuScenes detection matches centres within 0.5/1/2/4 m; 2 m is the middle one
STUDENT_STEPS = 12
TASKS = ("heatmap", "box", "motion_reg", "motion_cls", "map", "occupancy", "plan")


def test_tiny_student_training_lowers_every_task_loss(synth_dataset, nusc, tmp_path):
    config = tiny_config(steps=STUDENT_STEPS, val_every=10**6, checkpoint_every=10**6, val_batches=1,
                         data={"max_samples": 1, "batch_size": 1, "augment": False},
                         optim={"lr": 2e-3, "warmup_steps": 2})
    trainer = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path, nusc=nusc)
    trainer.fit()
    history = trainer.history
    assert len(history) == STUDENT_STEPS
    first = {k: np.mean([h[k] for h in history[:2]]) for k in TASKS}
    last = {k: np.mean([h[k] for h in history[-2:]]) for k in TASKS}
    for task in TASKS:
        assert last[task] < first[task], f"{task}: {first[task]:.4f} -> {last[task]:.4f}"
    assert (tmp_path / "checkpoints" / f"step_{STUDENT_STEPS:08d}" / MODEL_FILE).is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_continues_with_the_identical_next_loss(synth_dataset, nusc, tmp_path):
    """3 uninterrupted steps vs 2 steps + checkpoint + a fresh process-like resume: step 3's loss is equal."""
    config = tiny_config(steps=6, val_every=1000, checkpoint_every=1000, val_batches=1,
                         data={"max_samples": 3, "batch_size": 1}, optim={"warmup_steps": 2})
    straight = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "a", nusc=nusc)
    straight.fit(stop_at=3)
    first = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "b", nusc=nusc)
    first.fit(stop_at=2)
    torch.manual_seed(1234)  # disturb global RNG state: resume must restore it
    np.random.seed(99)
    resumed = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "b", nusc=nusc)
    assert resumed.resume() and resumed.step == 2
    resumed.fit(stop_at=3)
    assert [h["step"] for h in resumed.history] == [3]
    assert resumed.history[0]["total"] == straight.history[2]["total"]
    for task in TASKS:
        assert resumed.history[0][task] == straight.history[2][task]
    assert straight.history[2]["total"] != straight.history[1]["total"]
    path = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert path.name == "step_00000003" and (path / STATE_FILE).is_file()
    model, model_config = load_checkpoint(path / MODEL_FILE)
    assert model_config == load_model_config(TINY)


def test_a_resume_applies_the_optimiser_settings_it_warns_of_and_refuses_another_run(synth_dataset, nusc, tmp_path,
                                                                                     caplog):
    """The optimiser's saved weight decay and betas used to win over the config's while the warning said the new
    ones were in force; a resume on another dataset, seed or batch size (another sample order) only warned, and
    the run went on as a mix of two."""
    import json
    import shutil

    from tinybev_ros.errors import ConfigError
    from training.train import changes_the_run

    config = tiny_config(steps=4, val_every=1000, checkpoint_every=1000, val_batches=1,
                         data={"max_samples": 2, "batch_size": 1})
    Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "run", nusc=nusc).fit(
        stop_at=1)
    changed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, weight_decay=0.05,
                                                                    betas=[0.8, 0.99]))
    resumed = Trainer(changed, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "run", nusc=nusc)
    with caplog.at_level(logging.WARNING, logger="training.train"):
        assert resumed.resume()
    assert "optim.weight_decay 0.01 -> 0.05" in caplog.text and "data settings" not in caplog.text
    decays = [group["weight_decay"] for group in resumed.optimizer.param_groups]
    betas = {tuple(group["betas"]) for group in resumed.optimizer.param_groups}
    assert decays == [0.05, 0.0] and betas == {(0.8, 0.99)}
    for other_run in (dataclasses.replace(config, seed=1),
                      dataclasses.replace(config, data=dataclasses.replace(config.data, batch_size=2))):
        with pytest.raises(ConfigError, match="other settings that decide its data or network \\((seed 0 -> 1|"
                                              "data.batch_size 1 -> 2)\\).*another --out"):
            Trainer(other_run, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "run",
                    nusc=nusc).resume()
    other = tmp_path / "other"  # the same files with one scene described otherwise: another dataset
    shutil.copytree(synth_dataset.dataroot, other, symlinks=True, ignore=shutil.ignore_patterns("tinybev_cache"))
    scenes = other / synth_dataset.version / "scene.json"
    table = json.loads(scenes.read_text())
    table[0]["description"] += " (edited)"
    scenes.write_text(json.dumps(table))
    elsewhere = Trainer(config, "student", other, synth_dataset.version, tmp_path / "run")
    with pytest.raises(ConfigError, match="decide its data or network \\(dataset "):
        elsewhere.resume()
    # decoding (a teacher's nests it under camera.) and the config's name change no network
    assert not changes_the_run("model_settings", "camera.decode.score_threshold")
    assert not changes_the_run("model_settings", "name") and changes_the_run("model_settings", "bev_channels")


def test_cli_train_writes_checkpoint_and_resumes(synth_dataset, tmp_path, caplog, capsys):
    from tinybev_ros.cli import main

    raw = yaml.safe_load((REPO / "config" / "train_tiny.yaml").read_text())
    raw.update(student_config=str(TINY), val_batches=1, checkpoint_every=1)
    raw["data"].update(batch_size=1, num_workers=1, max_samples=2)
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    args = ["train", "--config", str(config_path), "--model", "student", "--dataroot", str(synth_dataset.dataroot),
            "--version", synth_dataset.version, "--out", str(tmp_path / "run"), "--steps", "1"]
    assert main(args) == 0
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_00000001"
    args[-1] = "2"
    with caplog.at_level(logging.WARNING, logger="training.train"):
        assert main(args) == 0  # resumes at step 1 and runs one more step
    assert "with other settings than its run's: steps 1 -> 2" in caplog.text  # said, not refused
    checkpoints = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(checkpoints).name == "step_00000002"
    # a training state cut short (disk full, copy interrupted): resume falls back to step 1, naming the bad file
    damaged = checkpoints / "step_00000002" / STATE_FILE
    damaged.write_bytes(damaged.read_bytes()[:1000])
    args[-1] = "3"
    with caplog.at_level(logging.WARNING, logger="training.checkpointing"):
        assert main(args) == 0
    assert f"cannot resume from {checkpoints / 'step_00000002'}" in caplog.text and STATE_FILE in caplog.text
    assert latest_checkpoint(checkpoints).name == "step_00000003"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000001", "step_00000002", "step_00000003"]
    for state in checkpoints.glob(f"step_*/{STATE_FILE}"):
        state.write_bytes(b"")
    args[-1] = "4"
    with pytest.raises(SystemExit, match="no checkpoint in .* reads back"):
        main(args)
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nlearning_rate: 0.1\n")
    assert main([*args[:2], str(bad), *args[3:]]) == 2  # one line naming the key, no traceback
    assert "unknown config key(s) ['learning_rate']" in capsys.readouterr().err
    # a fresh run into this folder would mix with the one there (pruning, `latest`, logs): refused, nothing touched
    before = sorted(p.name for p in checkpoints.iterdir())
    assert main([*args, "--no-resume"]) == 2
    assert "--no-resume: " in capsys.readouterr().err and sorted(p.name for p in checkpoints.iterdir()) == before


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_backbone_weights_start_a_fresh_run_and_a_resume_keeps_its_checkpoint(synth_dataset, nusc, tmp_path, kind):
    weights = fake_imagenet_state()
    (tmp_path / "cfg").mkdir()
    torch.save(weights, tmp_path / "cfg" / "resnet18.pth")
    raw = yaml.safe_load((REPO / "config" / "train_tiny.yaml").read_text())
    raw.update(student_config=str(TINY), teacher_config=str(reduced_teacher_yaml(tmp_path, camera_branch=True)),
               steps=1, val_batches=1, backbone_weights="resnet18.pth")  # relative: next to the YAML
    raw["data"].update(batch_size=1, num_workers=0, max_samples=1)
    (tmp_path / "cfg" / "train.yaml").write_text(yaml.safe_dump(raw))
    config = load_train_config(tmp_path / "cfg" / "train.yaml")
    key = "layer3.1.conv2.weight"

    fresh = Trainer(config, kind, synth_dataset.dataroot, synth_dataset.version, tmp_path / "run", nusc=nusc)
    assert torch.equal(fresh.model.camera.backbone.state_dict()[key], weights[key])
    fresh.fit()
    trained = fresh.model.camera.backbone.state_dict()[key].clone()
    assert not torch.equal(trained, weights[key])
    resumed = Trainer(config, kind, synth_dataset.dataroot, synth_dataset.version, tmp_path / "run", nusc=nusc)
    assert resumed.resume()
    assert torch.equal(resumed.model.camera.backbone.state_dict()[key], trained)

    config.backbone_weights = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="backbone_weights .*missing.pth"):
        Trainer(config, kind, synth_dataset.dataroot, synth_dataset.version, tmp_path / "other", nusc=nusc)
    if kind == "teacher":  # a LiDAR-only teacher has no camera backbone to initialise: said, not ignored
        lidar_only = dataclasses.replace(config, backbone_weights=str(tmp_path / "cfg" / "resnet18.pth"),
                                         teacher_config=str(reduced_teacher_yaml(tmp_path)))
        with pytest.raises(ValueError, match="no camera branch"):
            Trainer(lidar_only, kind, synth_dataset.dataroot, synth_dataset.version, tmp_path / "x", nusc=nusc)


@pytest.mark.parametrize("command", ["train", "distill"])
def test_backbone_weights_flag_is_taken_from_the_shell_folder(command, tmp_path, monkeypatch):
    """--backbone-weights (= backbone_weights=...) names a file relative to the shell, not to the YAML."""
    import argparse

    from training import distill, train
    from training.distillation.config import load_distill_config

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text(f"base: {REPO / 'config' / 'train_tiny.yaml'}\n")
    (tmp_path / "configs" / "distill.yaml").write_text(f"base: {REPO / 'config' / 'distill_tiny.yaml'}\n"
                                                       "train_config: train.yaml\n")
    parser = argparse.ArgumentParser()
    (train if command == "train" else distill).configure(parser)
    yaml_path = tmp_path / "configs" / f"{command if command == 'distill' else 'train'}.yaml"
    args = parser.parse_args(["--config", str(yaml_path), "--dataroot", "d", "--out", "o",
                              "--backbone-weights", "weights/resnet18.pth", "--steps", "7", "optim.lr=0.005"])
    monkeypatch.chdir(tmp_path)
    overrides = train.overrides_of(args)
    config = load_train_config(yaml_path, overrides) if command == "train" else \
        load_distill_config(yaml_path, overrides).training()
    assert config.backbone_weights == str(tmp_path / "weights" / "resnet18.pth")
    assert (config.steps, config.optim.lr) == (7, 0.005)
    assert config.student_config == str(REPO / "config" / "model_tiny.yaml")  # the base's file, beside the base


def test_validation_log_keeps_the_last_line_of_each_step(tmp_path):
    from training.train import VALIDATION_LOG, read_validation_log

    (tmp_path / VALIDATION_LOG).write_text('{"step": 250, "NDS": 0.1}\n{"step": 500, "NDS": 0.2}\n'
                                           '{"step": 500, "NDS": 0.25}\n{"step": 250, "NDS": 0.15}\n{"step": 75')
    assert read_validation_log(tmp_path) == [{"step": 250, "NDS": 0.15}, {"step": 500, "NDS": 0.25}]
    assert read_validation_log(tmp_path / "missing") == []


REDUCED_CAMERA = {"image_height": 64, "image_width": 160, "depth_step": 4.0, "depth_max": 49.0,
                  "grid": {"x_min": -32.0, "x_max": 32.0, "y_min": -32.0, "y_max": 32.0, "resolution": 1.0}}


def reduced_teacher_yaml(tmp_path: Path, camera_branch: bool = False) -> Path:
    """teacher_tiny.yaml shrunk for a CPU overfit: 64x160 images, 64 m x 64 m grid at 1 m, fewer depth bins."""
    raw = yaml.safe_load((REPO / "config" / "teacher_tiny.yaml").read_text())
    raw["camera"].update(REDUCED_CAMERA)
    raw["camera_branch"] = camera_branch
    path = tmp_path / "teacher_reduced.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def reduced_student_yaml(tmp_path: Path) -> Path:
    """model_tiny.yaml with the reduced teacher's camera and grid."""
    raw = yaml.safe_load(TINY.read_text())
    raw.update(REDUCED_CAMERA)
    path = tmp_path / "student_reduced.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_model_overfits_a_few_samples(synth_dataset, nusc, tmp_path, kind):
    """Each model memorises two keyframes: heatmap loss falls > 90 %, decoded boxes hit the GT.

    For the camera-only student this is the check that boxes can be learnt through the lift-splat path at all
    (a student that detects nothing after a short run is then under-trained, not broken).
    """
    from tinybev_ros.model.decode import decode

    # Detection is what is checked: the other heads train too, with smaller weights.
    weights = dataclasses.replace(LossWeights(), box=1.0, motion_reg=0.1, motion_cls=0.05, map=0.2, occupancy=0.2,
                                  plan=0.1, collision=0.0)
    config = tiny_config(teacher_config=str(reduced_teacher_yaml(tmp_path)),
                         student_config=str(reduced_student_yaml(tmp_path)), steps=OVERFIT_STEPS[kind],
                         val_every=10**6, checkpoint_every=10**6, val_batches=1, loss=weights,
                         data={"max_samples": 2, "batch_size": 2, "augment": False},
                         optim={"lr": 4e-3, "warmup_steps": 4, "min_lr_ratio": 0.5})
    trainer = Trainer(config, kind, synth_dataset.dataroot, synth_dataset.version, tmp_path, nusc=nusc)
    trainer.fit()
    heat = [h["heatmap"] for h in trainer.history]
    assert np.mean(heat[-3:]) < 0.1 * np.mean(heat[:3]), f"heatmap loss {heat[:3]} -> {heat[-3:]}"
    trainer.model.eval()
    batch = collate([trainer.train_set[0], trainer.train_set[1]])
    with torch.no_grad():
        outputs = trainer.spec.forward(trainer.model, batch)
    camera = trainer.spec.camera_config
    predictions = decode(outputs, camera, [m["timestamp_us"] * 1000 for m in batch["meta"]], batch["command"].tolist())
    matched, total, misses = 0, 0, []
    for b, pred in enumerate(predictions):
        targets = {k: v[b].numpy() for k, v in batch["targets"].items()}
        gt = decode_box_targets(targets, camera.grid, camera.det_stride)
        for centre, label in zip(gt["centers"], gt["labels"], strict=True):
            total += 1
            same = pred.labels == label
            distance = np.linalg.norm(pred.centers[same, :2] - centre[:2], axis=1).min() if same.any() else np.inf
            if distance < MATCH_DISTANCE_M:
                matched += 1
            else:
                misses.append((DETECTION_CLASSES[label], np.round(centre[:2], 1).tolist(), round(float(distance), 2)))
        assert len(pred) <= 2 * len(gt["centers"]) + 2  # no flood of false positives
    assert total >= 4 and matched / total >= 0.8, f"{matched}/{total} GT boxes found; missed {misses}"
