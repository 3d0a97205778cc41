"""The training step's numerics: compute type, float32 pooling, weight-decay groups, BatchNorm statistics as saved."""

from __future__ import annotations

import pytest
import torch
from nuscenes.nuscenes import NuScenes
from test_training import TINY, tiny_config  # noqa: I001  (test helper module)

from tinybev_ros.checkpoint import read_checkpoint
from tinybev_ros.model import build_student
from tinybev_ros.model.config import load_model_config
from tinybev_ros.precision import autocast_dtype, cpu_has_bf16
from training.batchnorm import recalibrate_batchnorm
from training.checkpointing import MODEL_FILE, latest_checkpoint
from training.data import move_batch
from training.train import Trainer, parameter_groups


def test_compute_type_per_device_and_request():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("auto", cuda) is torch.float16
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_has_bf16() else None)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("half", cpu)
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_config(precision="fp8")


def test_bfloat16_on_a_gpu_without_it_is_refused(monkeypatch):
    """torch emulates bfloat16 on a V100 or T4 (slower than float32) rather than refusing it."""
    from tinybev_ros.device import DeviceError

    asked = []

    def emulated_only(including_emulation: bool = True) -> bool:  # a V100: bfloat16 only as torch emulates it
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulated_only)
    with pytest.raises(DeviceError, match="cuda has no native bfloat16 .*use fp16 or auto"):
        autocast_dtype("bf16", torch.device("cuda"))
    assert asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype("bf16", torch.device("cuda")) is torch.bfloat16


def test_lift_splat_pools_in_float32_under_bfloat16_autocast():
    model = build_student(load_model_config(TINY))
    lift = model.camera.lift_splat
    d, h, w = lift.frustum_shape
    depth = torch.rand(1, 6, d, h, w).softmax(2)
    context = torch.randn(1, 6, 32, h, w)
    from test_model_geometry import calibration

    ks, poses = calibration(load_model_config(TINY))
    splat = lift.splat_index(torch.tensor(ks)[None].float(), torch.tensor(poses)[None].float())
    exact = lift(depth, context, splat)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = lift(depth.bfloat16(), context.bfloat16(), splat)
    assert mixed.dtype == torch.float32 and exact.is_contiguous(memory_format=torch.channels_last)
    # Only the inputs' rounding to bf16 differs (relative 2^-8), not the sums over hundreds of points.
    assert torch.allclose(mixed, exact, rtol=2e-2, atol=2e-3 * float(exact.abs().max()))


def test_no_weight_decay_on_biases_and_norm_parameters():
    model = build_student(load_model_config(TINY))
    decay, free = parameter_groups(model.parameters(), 0.01)
    assert decay["weight_decay"] == 0.01 and free["weight_decay"] == 0.0
    assert len(decay["params"]) + len(free["params"]) == len(list(model.parameters()))
    free_ids = {id(p) for p in free["params"]}
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    expected = set()  # biases, every norm parameter, and learned scalars (the planner's refinement step)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, norms) or name == "bias" or p.ndim == 0:
                expected.add(id(p))
    assert free_ids == expected and len(expected) > 50


def test_a_checkpoint_holds_the_batchnorm_statistics_of_its_weights(synth_dataset, tmp_path):
    """The saved running statistics are those of the saved weights (what eval, release and the node use)."""
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    config = tiny_config(steps=2, val_every=10**6, checkpoint_every=2, bn_recalibration_batches=2,
                         data={"max_samples": 4, "batch_size": 2})
    trainer = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path, nusc=nusc)
    trainer.fit()
    saved, _ = read_checkpoint(latest_checkpoint(tmp_path / "checkpoints") / MODEL_FILE)
    key = "encoder.levels.0.0.bn.running_mean" if "encoder.levels.0.0.bn.running_mean" in saved else next(
        k for k in saved if k.endswith("running_mean") and k.startswith("encoder"))

    def forward(model, batch):
        with trainer.autocast():
            trainer.spec.forward(model, batch)

    batches = [move_batch(b, trainer.device) for b in trainer.loader(trainer.bn_set)]
    recalibrate_batchnorm(trainer.model, batches, forward)
    assert torch.allclose(trainer.model.state_dict()[key], saved[key], atol=1e-5)
    # The running EMA of those two steps is something else: what eval mode would have used without it.
    ema = Trainer(tiny_config(steps=2, val_every=10**6, checkpoint_every=2, bn_recalibration_batches=0,
                              data={"max_samples": 4, "batch_size": 2}),
                  "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "ema", nusc=nusc)
    ema.fit()
    stale, _ = read_checkpoint(latest_checkpoint(tmp_path / "ema" / "checkpoints") / MODEL_FILE)
    assert not torch.allclose(stale[key], saved[key], atol=1e-3)


def test_a_diverging_run_stops_with_one_clear_error_and_no_nan_checkpoint(synth_dataset, tmp_path):
    from safetensors.torch import load_file

    from training.train import TrainingDiverged, fit_to_end

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    config = tiny_config(steps=8, val_every=10**6, checkpoint_every=1, bn_recalibration_batches=0,
                         data={"max_samples": 2, "batch_size": 2, "augment": False},
                         optim={"lr": 1e9, "warmup_steps": 1, "grad_clip_norm": 1e12})
    trainer = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path, nusc=nusc)
    with pytest.raises(TrainingDiverged, match="the update was not applied"):
        trainer.fit()
    assert trainer.step < 8
    for path in (tmp_path / "checkpoints").glob("step_*/model.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(path)).values()), path
    again = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path / "cli", nusc=nusc)
    with pytest.raises(SystemExit, match="^tinybev: training stopped at step"):
        fit_to_end(again, resume=False)


def test_float16_steps_skipped_without_end_stop_the_run(synth_dataset, tmp_path):
    """With float16's GradScaler a non-finite gradient only skipped the step and halved the scale: a gradient that
    was always NaN ran the whole schedule and wrote checkpoints that had learnt nothing."""
    from training.train import MAX_SKIPPED_STEPS, TrainingDiverged

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    config = tiny_config(steps=MAX_SKIPPED_STEPS + 10, val_every=10**6, checkpoint_every=10**6,
                         bn_recalibration_batches=0, data={"max_samples": 2, "batch_size": 2, "augment": False})
    trainer = Trainer(config, "student", synth_dataset.dataroot, synth_dataset.version, tmp_path, nusc=nusc)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)  # what a CUDA float16 run has
    first = next(trainer.model.parameters())
    first.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    with pytest.raises(TrainingDiverged, match=f"not finite on {MAX_SKIPPED_STEPS} steps in a row .*scale is down"):
        trainer.fit()
    assert trainer.step == MAX_SKIPPED_STEPS - 1  # the failing step is not counted


def test_a_checkpoint_with_nan_weights_is_refused_by_every_consumer(tmp_path):
    """release, export-onnx and loading (the node, eval, resume) all refuse it with one line naming the tensors."""
    import subprocess
    import sys

    from tinybev_ros.checkpoint import load_checkpoint, save_checkpoint
    from tinybev_ros.errors import CheckpointError

    config = load_model_config(TINY)
    model = build_student(config)
    with torch.no_grad():
        model.heads.planner.mlp[4].bias[0] = float("nan")
    path = save_checkpoint(tmp_path / "diverged.safetensors", model, config)
    with pytest.raises(CheckpointError, match="non-finite values .* heads.planner.mlp.4.bias"):
        load_checkpoint(path)
    for command in (["release", str(path), "--out", str(tmp_path / "shipped.safetensors")],
                    ["export-onnx", "--checkpoint", str(path), "--out", str(tmp_path / "model.onnx")]):
        result = subprocess.run([sys.executable, "-m", "tinybev_ros.cli", *command], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"tinybev {command[0]}: error: checkpoint {path} holds non-finite values (NaN/inf) in 1 tensors, "
            "e.g. heads.planner.mlp.4.bias; retrain from an earlier checkpoint"]
    assert not list(tmp_path.glob("shipped*")) and not list(tmp_path.glob("model.onnx*"))
