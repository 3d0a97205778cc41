"""Typed YAML configs: `base:` inheritance, key=value overrides, type checks and the errors users see."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tinybev_ros.cli import main
from tinybev_ros.config import load_yaml, path_field
from tinybev_ros.errors import ConfigError
from training.config import load_train_config

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Inner:
    rate: float = 1.0
    names: tuple[str, ...] = ("a",)


@dataclass
class Outer:
    steps: int = 10
    flag: bool = False
    model: str = path_field("model.yaml")
    inner: Inner = field(default_factory=Inner)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chains_merge_mappings_replace_lists_and_resolve_paths_beside_their_file(tmp_path) -> None:
    write(tmp_path / "shared" / "grand.yaml", "steps: 5\nmodel: m.yaml\ninner: {rate: 2.0, names: [x, y]}\n")
    write(tmp_path / "shared" / "parent.yaml", "base: grand.yaml\nflag: true\ninner: {names: [z]}\n")
    child = write(tmp_path / "mine" / "child.yaml", "base: ../shared/parent.yaml\nsteps: 7\n")
    config = load_yaml(Outer, child)
    assert config.steps == 7 and config.flag is True
    assert config.inner == Inner(rate=2.0, names=("z",))  # merged key by key; the list replaced, not appended
    assert config.model == str((tmp_path / "shared" / "m.yaml").resolve())  # relative to the file naming it


def test_overrides_are_typed_yaml_values_and_paths_are_taken_from_the_shell(tmp_path, monkeypatch) -> None:
    path = write(tmp_path / "c.yaml", "steps: 3\n")
    monkeypatch.chdir(tmp_path)
    config = load_yaml(Outer, path, ["inner.rate=0.5", "inner.names=[p, q]", "flag=true", "model=sub/x.yaml"])
    assert config.inner == Inner(rate=0.5, names=("p", "q")) and config.flag is True
    assert config.model == str(tmp_path / "sub" / "x.yaml")
    assert load_yaml(Outer, path, ["inner.rate=3"]).inner.rate == 3.0  # an int where a float is wanted is fine
    # YAML 1.1 reads 1e-3 as text; where a float is wanted it is the number
    assert load_yaml(Outer, write(tmp_path / "e.yaml", "inner: {rate: 1e-3}\n")).inner.rate == 0.001


@pytest.mark.parametrize(("text", "overrides", "message"), [
    ("steps: ten\n", (), r"c\.yaml\.steps: expected int, got 'ten'"),
    ("flag: 1\n", (), r"flag: expected bool"),
    ("stepz: 1\n", (), r"unknown config key\(s\) \['stepz'\] in .*c\.yaml"),
    ("inner: 3\n", (), r"inner: expected a mapping"),
    ("inner: {names: [1]}\n", (), r"inner\.names\[0\]: expected str"),
    ("steps: 1\n", ("steps=1.5",), r"expected int, got 1\.5 \(command-line overrides: steps=1\.5\)"),
    ("steps: 1\n", ("steps",), r"override 'steps': expected key=value"),
    ("steps: 1\n", ("inner..rate=1",), r"expected key=value"),
    ("base: nowhere.yaml\n", (), r"nowhere\.yaml \(base of .*c\.yaml\) not found"),
    ("base: c.yaml\n", (), r"'base' chain loops back"),
    ("- a list\n", (), r"expected a mapping at the top level"),
    ("steps: 10\n  inner: {rate: 1", (), r"c\.yaml line 2, column 8: not valid YAML"),
    ("inner: {rate: fast}\n", (), r"inner\.rate: expected float, got 'fast'"),
    ("steps: 1\ninner: {rate: 2}\nsteps: 3\n", (), r"c\.yaml line 3, column 1: .*key 'steps' is given twice"),
    ("inner: {rate: 1, rate: 2}\n", (), r"line 1, column 18: .*key 'rate' is given twice"),
    ("1: x\nstepz: 2\n", (), r"unknown config key\(s\) \[1, 'stepz'\]"),
    ("? [a, b]\n: 1\n", (), r"c\.yaml line 1, column 3: not valid YAML \(found unhashable key\)"),
])
def test_bad_configs_are_one_clear_error_naming_file_and_key(tmp_path, text, overrides, message) -> None:
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(Outer, path, overrides)


def test_yaml_merge_keys_still_override_and_files_that_are_not_yaml_text_are_one_error(tmp_path) -> None:
    """Only a key written twice is refused: `<<: *anchor` followed by the same key is YAML's way to override."""
    assert load_yaml(Outer, write(tmp_path / "n.yaml", "inner:\n  <<: {rate: 1}\n  rate: 2\n")).inner.rate == 2
    (tmp_path / "weights.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError, match="weights.yaml cannot be read as a text file"):
        load_yaml(Outer, tmp_path / "weights.yaml")
    with pytest.raises(ConfigError, match=f"config {tmp_path} is a folder; give the YAML file"):
        load_yaml(Outer, tmp_path)


def test_the_shipped_derived_configs_are_small_deltas_over_their_bases() -> None:
    teacher = load_train_config(REPO / "config" / "train_tiny_teacher.yaml")
    student = load_train_config(REPO / "config" / "train_tiny.yaml")
    assert teacher.data.batch_size == student.data.batch_size and teacher.optim.lr == student.optim.lr
    assert (teacher.steps, teacher.loss.depth, teacher.data.ego_motion_compensation) == (4000, 0.0, True)
    for name in ("train_tiny_teacher.yaml", "train_base_teacher.yaml", "distill_ablation.yaml", "distill_base.yaml",
                 "distill_ablation_train.yaml", "distill_ablation_student.yaml", "ablation_tiny_long.yaml"):
        lines = [ln for ln in (REPO / "config" / name).read_text().splitlines() if ln and not ln.startswith("#")]
        assert lines[0].startswith("base: ") and len(lines) <= 25, name


def test_the_motion_probe_is_the_tiny_teacher_on_a_smaller_grid_for_fewer_steps() -> None:
    """Its velocity figures stand for the teacher recipe only if nothing else differs."""
    import dataclasses

    from training.teachers import load_teacher_config

    probe = load_train_config(REPO / "config" / "train_teacher_motion_probe.yaml")
    recipe = load_train_config(REPO / "config" / "train_tiny_teacher.yaml")
    assert probe.steps == 1000 and dataclasses.replace(probe, steps=recipe.steps, teacher_config="",
                                                       source="") == dataclasses.replace(recipe, teacher_config="",
                                                                                         source="")
    teacher = load_teacher_config(probe.model_config_path("teacher"))
    tiny = load_teacher_config(REPO / "config" / "teacher_tiny.yaml")
    assert (teacher.camera.grid.x_max, teacher.camera.grid.resolution) == (25.0, 1.0)
    assert dataclasses.replace(teacher, camera=dataclasses.replace(teacher.camera, grid=tiny.camera.grid)) == tiny


@pytest.mark.parametrize(("override", "message"), [
    ("val_every=0", "val_every must be >= 1, got 0"),
    ("checkpoint_every=-5", "checkpoint_every must be >= 1"),
    ("steps=0", "steps must be >= 1"),
    ("data.batch_size=0", "data.batch_size must be >= 1"),
    ("val_batches=-1", "val_batches must be >= 0"),
    ("optim.grad_clip_norm=0", "optim.grad_clip_norm must be a positive number, got 0"),
    ("optim.lr=-1e-3", "optim.lr must be a positive number"),
    ("optim.lr=0", "optim.lr must be a positive number"),
    ("optim.min_lr_ratio=2", "min_lr_ratio must lie in"),
    ("optim.weight_decay=.nan", "weight_decay and warmup_steps must be >= 0"),
    ("optim.weight_decay=.inf", "weight_decay and warmup_steps must be >= 0"),
    ("optim.betas=[1.5,2]", r"optim.betas must lie in \[0, 1\)"),
    ("targets.max_objects=0", "targets: max_objects must be >= 1"),
    ("targets.min_overlap=7", r"targets.min_overlap is an IoU in \(0, 1\), got 7"),
    ("targets.min_overlap=.nan", r"targets.min_overlap is an IoU"),
    ("loss.heatmap=-1", "loss.heatmap must be a number >= 0, got -1"),
    ("loss.focal_alpha=-3", "loss.focal_alpha must be a number >= 0"),
    ("loss.box_code=[1,1]", r"loss.box_code must be 11 numbers >= 0, got \[1.0, 1.0\]"),
    ("loss={heatmap: 0, box: 0, motion_reg: 0, motion_cls: 0, map: 0, occupancy: 0, plan: 0, collision: 0,"
     " depth: 0}",
     "every loss weight is 0"),
])
def test_a_training_interval_that_cannot_work_is_refused_when_the_config_loads(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_config(REPO / "config" / "train_tiny.yaml", [override])


@pytest.mark.parametrize(("override", "message"), [
    ("distill.supervised=-1", "distill.supervised must be a number >= 0, got -1"),
    ("distill.feature=-0.5", "distill.feature must be a number >= 0"),
    ("distill.regions.gamma=7", r"distill.regions.gamma must lie in \(0, 1\), got 7"),
    ("distill.regions.feature_weights=[1,1,-1,0]", "feature_weights must be 4 numbers >= 0"),
    ("distill.adaptive.momentum=5", r"momentum must lie in \[0, 1\), got 5"),
    ("distill.adaptive.min_multiplier=0", "0 < min_multiplier <= 1 <= max_multiplier"),
])
def test_a_distillation_that_cannot_work_is_refused_when_the_config_loads(override, message) -> None:
    from training.distillation.config import load_distill_config

    with pytest.raises(ConfigError, match=message):
        load_distill_config(REPO / "config" / "distill_tiny.yaml", [override])


@pytest.mark.parametrize(("grid", "message"), [
    ("{resolution: 0}", "grid resolution must be a positive number of metres, got 0"),
    ("{x_min: 10, x_max: -10}", r"grid x_max must exceed x_min, got \[10.0, -10.0\]"),
    ("{resolution: 0.3}", "not a whole number of 0.3 m cells"),
])
def test_a_bev_grid_that_cannot_work_is_one_line(tmp_path, capsys, grid, message) -> None:
    (tmp_path / "model.yaml").write_text(f"base: {REPO / 'config' / 'model_tiny.yaml'}\ngrid: {grid}\n")
    assert main(["params", "--config", str(tmp_path / "model.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


@pytest.mark.parametrize(("text", "message"), [
    ("depth_step: 0", r"depth bins need 0 < depth_min < depth_max and depth_step > 0, got 1.0, 59.0, 0.0"),
    ("depth_max: .nan", "depth bins need"),
    ("z_min: 5\nz_max: -5", "z_min 5.0 must be below z_max -5.0"),
    ("image_height: 0", "sizes must be 1 or more: image_height 0"),
    ("bev_blocks: [1, 0, 2, 2]", r"sizes must be 1 or more: bev_blocks\[1\] 0"),
    ("decode: {peak_kernel: 2}", "decode.peak_kernel must be odd and 1 or more"),
    ("decode: {max_detections: 0}", "decode.max_detections must be 1 or more, got 0"),
    ("decode: {score_threshold: .nan}", r"decode.score_threshold must be in \[0, 1\], got nan"),
])
def test_a_model_that_cannot_work_is_one_line(tmp_path, capsys, text, message) -> None:
    """Sizes, depth bins and decoding that would crash later (a division by 0) or run on an empty BEV, silently."""
    (tmp_path / "model.yaml").write_text(f"base: {REPO / 'config' / 'model_tiny.yaml'}\n{text}\n")
    assert main(["params", "--config", str(tmp_path / "model.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_a_bad_override_on_the_command_line_is_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--config", str(REPO / "config" / "train_tiny.yaml"), "--dataroot", str(tmp_path),
                 "--out", str(tmp_path / "run"), "optim.lr=fast"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.lr: expected float, got 'fast'" in err[0]


def test_paths_of_the_wrong_kind_get_one_line_and_write_nothing(tmp_path, capsys, caplog) -> None:
    """A rig that is not one, a folder where a file is written, a file where a folder is: one line, exit 2."""
    from tinybev_ros.paths import default_checkpoint

    (tmp_path / "rig.json").write_text('{"sensors": {}}')
    (tmp_path / "a_file").write_text("keep")
    cases = {
        ("export-onnx", "--checkpoint", str(default_checkpoint()), "--out", str(tmp_path / "s.onnx"), "--rig",
         str(tmp_path / "missing.json")): "rig " + str(tmp_path / "missing.json") + " cannot be read as a rig JSON",
        ("export-onnx", "--checkpoint", str(default_checkpoint()), "--out", str(tmp_path / "s.onnx"), "--rig",
         str(tmp_path / "rig.json")): "(no key 'CAM_FRONT_LEFT')",
        ("release", str(default_checkpoint()), "--out", str(tmp_path)): f"--out {tmp_path} is a folder; give the file",
        ("export-onnx", "--checkpoint", str(default_checkpoint()), "--out", str(tmp_path)): f"--out {tmp_path} is a "
        "folder; give the file to write",
        ("export-onnx", "--checkpoint", str(default_checkpoint()), "--out", str(tmp_path / "a_file" / "s.onnx")):
        f"the folder of --out {tmp_path / 'a_file'} is a file; choose a folder",
        ("synth-render", "--dataroot", str(tmp_path), "--out", str(tmp_path)): "is a folder; give the file to write",
        ("synth", "--out", str(tmp_path / "a_file" / "data"), "--scenes", "1"): "a_file is a file, so no folder",
    }
    # the long commands check --out before their work, so a bad one does not end hours later in a traceback
    a_file, nowhere, config = str(tmp_path / "a_file"), str(tmp_path / "no_dataset"), REPO / "config"
    long_commands = [
        ("train", "--config", str(config / "train_tiny.yaml"), "--dataroot", nowhere),
        ("distill", "--config", str(config / "distill_tiny.yaml"), "--dataroot", nowhere, "--teacher", nowhere),
        ("eval", "--checkpoint", str(default_checkpoint()), "--dataroot", nowhere),
        ("teacher-cache", "--teacher", str(default_checkpoint()), "--dataroot", nowhere),
        ("ablate", "--config", str(config / "ablation_worlds.yaml"), "--dataroot", nowhere),
        ("eval-worlds", "--checkpoint", str(default_checkpoint()), "--seeds", "1", "--work", str(tmp_path / "w")),
        ("synth", "--scenes", "1"),
    ]
    cases.update({(*args, "--out", a_file): f"--out {a_file} is a file; choose a folder" for args in long_commands})
    cases[("eval-worlds", "--checkpoint", str(default_checkpoint()), "--seeds", "1", "--work", a_file, "--out",
           str(tmp_path / "out"))] = f"--work {a_file} is a file; choose a folder"
    for args, message in cases.items():
        caplog.clear()
        assert main(list(args)) == 2, args
        err = capsys.readouterr().err.strip().splitlines() or caplog.text.strip().splitlines()  # synth logs it
        assert len(err) == 1 and message in err[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "rig.json"]
    assert (tmp_path / "a_file").read_text() == "keep"


@pytest.mark.parametrize(("extra", "missing"), [
    (["student_config=model_tyni.yaml"], "model_tyni.yaml"),
    (["--backbone-weights", "missing.pth"], "missing.pth"),
])
def test_a_file_a_config_names_that_is_missing_is_one_line(tmp_path, capsys, monkeypatch, extra, missing) -> None:
    monkeypatch.chdir(tmp_path)  # a command-line path is taken from the working directory
    code = main(["train", "--config", str(REPO / "config" / "train_tiny.yaml"), "--dataroot", str(tmp_path),
                 "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{tmp_path / missing} not found" in err[0], err
    assert not (tmp_path / "run").exists()
