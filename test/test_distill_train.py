"""`tinybev distill` end to end on the synthetic dataset: real teacher checkpoint, real cache, CLI, resume.

Small models (the CPU-ablation configs: 64x192 images, 2 m grid), two samples per split, one or two steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from nuscenes.nuscenes import NuScenes
from safetensors.torch import load_file

from tinybev_ros.checkpoint import load_checkpoint, save_checkpoint
from tinybev_ros.cli import main
from tinybev_ros.errors import ConfigError
from tinybev_ros.model import build_student
from tinybev_ros.paths import default_checkpoint
from training.checkpointing import MODEL_FILE, STATE_FILE, latest_checkpoint, load_train_state
from training.config import LossRamp, load_train_config
from training.distill import DistillTrainer, open_teacher
from training.distillation.config import DistillConfig, load_distill_config
from training.model_adapter import build_model_spec
from training.teachers import CachedTeacher, LiveTeacher, build_teacher, load_teacher_config

CONFIG = Path(__file__).resolve().parent.parent / "config"


def small_run_configs(tmp: Path) -> Path:
    """distill_ablation.yaml on 2 samples per split, no worker processes (two files inheriting the shipped ones);
    returns the distill YAML path."""
    (tmp / "train.yaml").write_text(f"base: {CONFIG / 'distill_ablation_train.yaml'}\ncheckpoint_every: 1\n"
                                    "data: {max_samples: 2, num_workers: 0}\n")
    (tmp / "distill.yaml").write_text(f"base: {CONFIG / 'distill_ablation.yaml'}\ntrain_config: train.yaml\n")
    return tmp / "distill.yaml"


def test_distill_cli_cached_teacher_checkpoint_and_resume(synth_dataset, tmp_path, capsys, caplog, monkeypatch):
    torch.manual_seed(0)
    distill_yaml = small_run_configs(tmp_path)
    run_config = load_distill_config(distill_yaml)
    train = load_train_config(run_config.train_config_path())
    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)

    # A real (untrained) LiDAR+camera teacher: checkpoint on disk, then cached over both splits.
    teacher_config = load_teacher_config(train.model_config_path("teacher"))
    teacher_file = save_checkpoint(tmp_path / "teacher.safetensors", build_teacher(teacher_config), teacher_config,
                                   kind="teacher")
    live = open_teacher(teacher_file, torch.device("cpu"))
    assert isinstance(live, LiveTeacher) and live.needs_lidar
    spec = build_model_spec("student", train.model_config_path("student"))
    cache = tmp_path / "cache"
    args = ["teacher-cache", "--teacher", str(teacher_file), "--dataroot", str(synth_dataset.dataroot), "--version",
            synth_dataset.version, "--out", str(cache), "--batch-size", "8",
            "--sample-cache", str(tmp_path / "samples")]
    # A --teacher that is not one is refused before --out is claimed: the right teacher is not refused after it.
    wrong = [*args[:2], str(default_checkpoint()), *args[3:]]
    assert main(wrong) == 2 and "holds a student, not a teacher" in capsys.readouterr().err
    assert not (cache / "teacher.json").exists()
    assert main(args) == 0
    assert len(list(cache.glob("*.safetensors"))) == 32  # every keyframe of both splits
    assert len(list((tmp_path / "samples").rglob("*.safetensors"))) == 32  # its inputs, cached where it was told
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert main(args) == 0 and {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamp  # resumed: no rewrite
    assert isinstance(open_teacher(cache, torch.device("cpu")), CachedTeacher)
    torch.manual_seed(1)  # a retrained teacher: its cache is another one, never continued into this one
    other = save_checkpoint(tmp_path / "other.safetensors", build_teacher(teacher_config), teacher_config,
                            kind="teacher")
    assert main([*args[:2], str(other), *args[3:]]) == 2
    assert "was made by another teacher" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamp
    unmarked = tmp_path / "unmarked"  # files whose teacher cannot be checked are not taken as this one's
    unmarked.mkdir()
    shutil.copy2(next(cache.glob("*.safetensors")), unmarked)
    assert main([*args[:8], str(unmarked), *args[9:]]) == 2
    assert "has files but no teacher.json" in capsys.readouterr().err
    assert len(list(unmarked.iterdir())) == 1
    with pytest.raises(FileNotFoundError, match="neither"):
        open_teacher(tmp_path / "missing", torch.device("cpu"))

    # One S3 step through the command line.
    out = tmp_path / "run"
    code = main(["distill", "--config", str(distill_yaml), "--teacher", str(cache), "--stage", "S3",
                 "--dataroot", str(synth_dataset.dataroot), "--version", synth_dataset.version, "--out", str(out),
                 "--steps", "1"])
    assert code == 0
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "step_00000001"
    state = load_train_state(checkpoint / STATE_FILE)
    assert state["distill_stage"] == "S3"
    adapters = [k for k in state["distill"] if k.startswith("adapters.")]
    assert adapters and int(state["distill"]["adaptive.updates"]) == 1
    # The student file holds the student only (no adapter, no teacher): it loads into a plain TinyBEV.
    student_keys = set(build_student(spec.config).state_dict())
    assert set(load_file(str(checkpoint / MODEL_FILE))) == student_keys
    model, _ = load_checkpoint(checkpoint / MODEL_FILE)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in spec.model.parameters())

    # The probe: every weighted term's gradient against the supervised one, on the trained checkpoint.
    probe = tmp_path / "probe.json"
    assert main(["distill-probe", "--config", str(distill_yaml), "--teacher", str(cache), "--student",
                 str(checkpoint / MODEL_FILE), "--dataroot", str(synth_dataset.dataroot), "--version",
                 synth_dataset.version, "--batches", "2", "--out", str(probe)]) == 0
    figures = json.loads(probe.read_text())
    assert figures["batches"] == 2 and figures["sum_error"] < 0.05  # the summands' gradients add up to the total's
    rows = figures["terms"]
    assert {"supervised", "feature", "attention", "heatmap", "map"} <= set(rows)
    assert rows["supervised"]["all"]["cosine"] == pytest.approx(1.0) and rows["supervised"]["all"]["ratio"] == 1.0
    for name, row in rows.items():
        assert {"camera", "encoder", "heads", "all"} <= set(row), name
        # a term moves the student exactly when it is non-zero (untrained teacher: no detections, no heatmap term)
        assert (row["all"]["norm"] > 0) == (row["value"] != 0), name
        assert row["all"]["norm"] == 0 or -1.0 <= row["all"]["cosine"] <= 1.0, name
    assert rows["feature"]["value"] > 0 and rows["map"]["value"] > 0
    # Feature imitation reaches the heads only through the pre-head map, never the heads' own layers.
    assert rows["feature"]["heads"]["norm"] < 1e-6 * rows["feature"]["camera"]["norm"] + 1e-12
    # A candidate recipe is probed from the command line's overrides, which the figures record.
    assert main(["distill-probe", "--config", str(distill_yaml), "--teacher", str(cache), "--dataroot",
                 str(synth_dataset.dataroot), "--version", synth_dataset.version, "--batches", "1", "--out",
                 str(probe), "distill.feature=0", "distill.regions.feature_weights=[1,1,0.5,0.1]"]) == 0
    figures = json.loads(probe.read_text())
    assert figures["overrides"] == ["distill.feature=0", "distill.regions.feature_weights=[1,1,0.5,0.1]"]
    assert "feature" not in figures["terms"] and "attention" in figures["terms"]
    # Where training would compute in float16 (CUDA), the probe's unscaled per-term gradients would underflow: it
    # computes in float32 there (on this CPU: made to believe float16 was the training's type).
    import training.distillation.probe as probe_module

    monkeypatch.setattr(probe_module, "autocast_dtype", lambda precision, device: torch.float16)
    assert main(["distill-probe", "--config", str(distill_yaml), "--teacher", str(cache), "--dataroot",
                 str(synth_dataset.dataroot), "--version", synth_dataset.version, "--batches", "1", "--out",
                 str(probe)]) == 0
    assert json.loads(probe.read_text())["compute_dtype"] == "float32"

    # A --teacher that cannot be one is one line, before the datasets are opened (no run folder is made).
    cut_short = tmp_path / "cut_short"  # a caching run interrupted before the last sample
    shutil.copytree(cache, cut_short)
    from training.splits import split_sample_tokens
    from training.teachers.cached import cache_path

    cache_path(cut_short, split_sample_tokens(nusc, train.train_split)[0]).unlink()
    damaged, mixed = tmp_path / "damaged", tmp_path / "mixed"  # a copy cut short; a file of another teacher
    for copy in (damaged, mixed):
        shutil.copytree(cache, copy)
    odd = cache_path(damaged, split_sample_tokens(nusc, train.val_split)[0])  # runs read the first 2 samples
    odd.write_bytes(odd.read_bytes()[:200])
    from training.teachers.cached import read_teacher_sample, write_teacher_sample

    token = split_sample_tokens(nusc, train.val_split)[0]
    features, outputs = read_teacher_sample(cache_path(mixed, token))
    write_teacher_sample(mixed, token, [f[:2] for f in features], outputs, source="another teacher")
    for teacher, message in ((tmp_path / "missing", "is neither a teacher checkpoint file nor a teacher-cache"),
                             (checkpoint / MODEL_FILE, "holds a student, not a teacher"),
                             (out, "is a folder without teacher-cache files"),
                             (cut_short, f"has no file for 1 of the 2 samples of split '{train.train_split}'"),
                             (damaged, f"teacher cache file {odd} is damaged"),
                             (mixed, f"and {token}.safetensors differ in keys or shapes")):
        assert main(["distill", "--config", str(distill_yaml), "--teacher", str(teacher), "--stage", "S3",
                     "--dataroot", str(synth_dataset.dataroot), "--version", synth_dataset.version,
                     "--out", str(tmp_path / "wrong_teacher"), "--steps", "1"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "wrong_teacher" / "checkpoints").exists()
        # known before any dataset work, or (a cache's files) before the first step
        assert teacher in (cut_short, damaged, mixed) or not (tmp_path / "wrong_teacher").exists()

    # Resume continues with the distillation state, and a step later every KD term is finite.
    config = dataclasses.replace(train, steps=2)
    trainer = DistillTrainer(config, run_config.distill, cache, synth_dataset.dataroot, synth_dataset.version, out,
                             nusc=nusc)
    assert trainer.resume() and trainer.step == 1
    assert trainer.kd.box_code_weights.tolist() == pytest.approx(list(config.loss.box_code))  # shared with the GT's
    restored = trainer.kd.state_dict()
    for key in adapters:
        assert torch.equal(restored[key].cpu(), state["distill"][key])
    # Imitating a ramped task follows that task's ramp (step 1 of 4: half weight); the other terms do not.
    # (and a clip norm that every step's gradient exceeds: the clipping is checked below)
    trainer.config = dataclasses.replace(config, loss_ramp=LossRamp(steps=4, tasks=("plan", "motion_reg")),
                                         optim=dataclasses.replace(config.optim, grad_clip_norm=1e-6))
    ramped = trainer.kd_weights()
    assert ramped["plan"] == pytest.approx(trainer.kd.weights["plan"] / 2)
    assert ramped["motion_traj"] == pytest.approx(trainer.kd.weights["motion_traj"] / 2)
    assert {name: ramped[name] for name in ("feature", "map", "occupancy", "motion_mode")} == {
        name: trainer.kd.weights[name] for name in ("feature", "map", "occupancy", "motion_mode")}
    trainer.fit()
    record = trainer.history[-1]
    assert record["kd_total"] == pytest.approx(sum(w * record[f"kd_{name}"] for name, w in ramped.items()
                                                   if f"kd_{name}" in record), rel=1e-5)
    kd_terms = {k: v for k, v in record.items() if k.startswith("kd_")}
    assert {"kd_feature", "kd_attention", "kd_map", "kd_occupancy", "kd_plan", "kd_total"} <= set(kd_terms)
    assert all(torch.isfinite(torch.tensor(v)) for v in kd_terms.values())
    assert record["total"] == pytest.approx(record["supervised"] + record["kd_total"], rel=1e-5)
    assert int(trainer.kd.adaptive.updates) == 2  # one update per training step, none in validation
    # The gradient clipping covers the adapters too: every trained parameter's gradient together is at the norm.
    grads = [p.grad for group in trainer.optimizer.param_groups for p in group["params"] if p.grad is not None]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.kd.parameters())
    clipped = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    assert record["grad_norm"] > 1e-3 and clipped == pytest.approx(1e-6, rel=1e-3)

    # A run folder of one stage is not silently continued as another.
    s1 = DistillTrainer(config, DistillConfig(stage="S1"), cache, synth_dataset.dataroot, synth_dataset.version, out,
                        nusc=nusc)
    with pytest.raises(ValueError, match="stage 'S3'"):
        s1.resume()
    fewer_levels = DistillTrainer(config, dataclasses.replace(run_config.distill, feature_levels=(0,)), cache,
                                  synth_dataset.dataroot, synth_dataset.version, out, nusc=nusc)
    with pytest.raises(ConfigError, match="does not fit this run .*; use another --out, or remove its checkpoints"):
        fewer_levels.resume()  # other adapters: one line, not the optimizer's traceback
    supervised = ["train", "--config", str(tmp_path / "train.yaml"), "--dataroot", str(synth_dataset.dataroot),
                  "--version", synth_dataset.version, "--out", str(out)]
    assert main(supervised) == 2
    assert "is a run of distillation stage 'S3', not 'none'" in capsys.readouterr().err
    # What the run is made with is compared on resume: another recipe or teacher is said (the teacher, live or
    # cached, by its checkpoint's sha256: the cache's own teacher, run live, is the same one).
    for teacher, recipe, said in ((teacher_file, run_config.distill, []),
                                  (other, dataclasses.replace(run_config.distill, feature=7.0),
                                   ["other distill settings than its run's: feature 1.0 -> 7.0",
                                    "other teacher than its run's"])):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="training.train"):
            assert DistillTrainer(config, recipe, teacher, synth_dataset.dataroot, synth_dataset.version, out,
                                  nusc=nusc).resume()
        warned = [r.getMessage() for r in caplog.records  # (the training settings were changed above, on purpose)
                  if "other distill settings" in r.getMessage() or "other teacher" in r.getMessage()]
        assert all(any(text in line for line in warned) for text in said) and (said or not warned), warned


def test_unmarked_cache_files_are_refused_unless_the_caller_vouches_for_them(tmp_path):
    from tinybev_ros.errors import CheckpointError
    from tinybev_ros.geometry import BevGrid
    from training.distill import check_teacher_fits
    from training.teachers import CachedTeacher
    from training.teachers.caching import TEACHER_MARKER, claim_cache

    teacher = tmp_path / "teacher.safetensors"
    teacher.write_bytes(b"weights")
    root = tmp_path / "cache"
    root.mkdir()
    (root / "a.safetensors").write_bytes(b"x")  # written before caches carried a marker
    with pytest.raises(CheckpointError, match=f"has files but no {TEACHER_MARKER}"):
        claim_cache(root, teacher, "tables-a", BevGrid())
    assert not (root / TEACHER_MARKER).exists()
    claim_cache(root, teacher, "tables-a", BevGrid(), adopt_unmarked=True)  # `tinybev ablate`'s stamp vouches
    marker = json.loads((root / TEACHER_MARKER).read_text())
    assert marker["teacher_sha256"] == hashlib.sha256(b"weights").hexdigest() and marker["dataset"] == "tables-a"
    # Synthetic sample tokens repeat across worlds of one seed: a cache of another world's data was continued as
    # "done" and distilled from. Refused now, by the caching and by the student's check.
    with pytest.raises(CheckpointError, match="was made of another dataset"):
        claim_cache(root, teacher, "tables-b", BevGrid())
    with pytest.raises(CheckpointError, match="was made of another dataset"):
        check_teacher_fits(CachedTeacher(root), BevGrid(), "tables-b")
    check_teacher_fits(CachedTeacher(root), BevGrid(), "tables-a")
    half = BevGrid(-25.0, 25.0, -25.0, 25.0, 0.5)  # 100 x 100 cells, as the tiny student's 1 m grid over 100 m
    with pytest.raises(ConfigError, match="the teacher's BEV grid covers x -50..50 m, .* the student's x -25..25 m"):
        check_teacher_fits(CachedTeacher(root), half, "tables-a")


def test_a_teacher_value_that_is_not_finite_is_refused_when_cached_and_when_read(tmp_path):
    """float16 holds up to 65504: a larger teacher value became inf in the cache, and the distillation then
    diverged with the advice to lower the learning rate."""
    from tinybev_ros.checkpoint import write_tensors
    from tinybev_ros.errors import CheckpointError
    from training.teachers.cached import CACHE_FORMAT, cache_path, read_teacher_sample, write_teacher_sample

    features = [torch.zeros(2, 3, 3)]
    heatmap = torch.zeros(1, 3, 3)
    write_teacher_sample(tmp_path, "fine", features, {"heatmap": heatmap}, "teacher")
    assert read_teacher_sample(cache_path(tmp_path, "fine"))[1]["heatmap"].eq(0).all()
    with pytest.raises(CheckpointError, match="teacher sample big: outputs.heatmap not finite in torch.float16.*"
                                              "nothing was written"):
        write_teacher_sample(tmp_path, "big", features, {"heatmap": heatmap + 1e5}, "teacher")
    assert not cache_path(tmp_path, "big").exists()
    broken = cache_path(tmp_path, "nan")  # e.g. an external model's outputs written by another tool
    write_tensors(broken, {"features.0": torch.full((2, 3, 3), float("nan"), dtype=torch.float16)},
                  {"format": CACHE_FORMAT, "sample_token": "nan", "num_features": "1", "source": "other"})
    with pytest.raises(CheckpointError, match=f"teacher cache file {broken}: features.0 not finite"):
        read_teacher_sample(broken)
