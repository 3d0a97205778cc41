"""The ablation's own arithmetic: BatchNorm recalibration, the summary row, the table and the target verdict."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from training.ablation import load_ablation_config, render_table, weights_sha256
from training.batchnorm import recalibrate_batchnorm
from training.evaluation.report import summary_row


def test_recalibrate_batchnorm_replaces_stale_statistics_by_the_batch_average() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2))
    nn.init.ones_(model[0].weight)
    model[1].running_mean.fill_(100.0)  # stale, as after a short run
    model.eval()
    batches = [torch.full((2, 1, 3, 3), 1.0), torch.full((2, 1, 3, 3), 3.0)]
    recalibrate_batchnorm(model, batches, lambda net, batch: net(batch))
    assert torch.allclose(model[1].running_mean, torch.full((2,), 2.0))
    assert not model.training and model[1].momentum == 0.1  # mode and momentum as they were
    assert model[1].num_batches_tracked.item() == 2


def row(nds: float, l2: float) -> dict:
    return {"mAP": nds / 2, "NDS": nds, "AMOTA": 0.1, "minADE": float("nan"), "map_iou": 0.3, "occ_iou": 0.2,
            "plan_l2": l2, "collision": 0.5, "params_M": 11.9, "latency_ms": 50.0}


def test_table_and_verdict_follow_the_issue_target() -> None:
    results = {"teacher": row(0.50, 1.0), "students": {
        "none_seed0": {"stage": "none", "seed": 0, **row(0.20, 2.0)},
        "none_seed1": {"stage": "none", "seed": 1, **row(0.22, 2.2)},
        "S3_seed0": {"stage": "S3", "seed": 0, **row(0.40, 1.5)},
        "S3_seed1": {"stage": "S3", "seed": 1, **row(0.42, 1.4)},
    }}
    table, verdict = render_table(results, ("none", "S3"))
    assert "| student + S3 (2 seeds) | 0.205 ± 0.007 | 0.410 ± 0.014 |" in table
    assert "n/a" in table  # minADE without matched agents
    assert verdict["nds_gain"] == pytest.approx(0.20)
    assert verdict["nds_gap"] == pytest.approx(0.29)
    assert verdict["nds_gap_recovered"] == pytest.approx(0.20 / 0.29)
    assert verdict["target_met"] and verdict["plan_target_met"] and verdict["nds_gain_beyond_spread"]
    # The gain is above the spread but under the 0.03 target: not met; a lower target is.
    small = {k: dict(v) for k, v in results["students"].items()}
    small["S3_seed0"].update(NDS=0.225)
    small["S3_seed1"].update(NDS=0.235)
    _, verdict = render_table({**results, "students": small}, ("none", "S3"))
    assert verdict["nds_gain_beyond_spread"] and not verdict["nds_gain_target_met"] and not verdict["target_met"]
    _, verdict = render_table({**results, "students": small}, ("none", "S3"), target_nds_gain=0.01,
                              target_gap_recovered=0.05)
    assert verdict["target_met"]
    # Enough gain, but less than 30 % of a large gap: not met.
    _, verdict = render_table({**results, "teacher": row(0.95, 1.0)}, ("none", "S3"))
    assert verdict["nds_gain_target_met"] and not verdict["gap_target_met"] and not verdict["target_met"]
    results["students"]["S3_seed1"].update(NDS=0.20)  # now the seeds disagree more than S3 gains
    _, verdict = render_table(results, ("none", "S3"))
    assert not verdict["nds_gain_beyond_spread"] and not verdict["target_met"]
    del results["students"]["S3_seed1"]  # one seed: no spread to beat, so the target cannot be judged
    table, verdict = render_table(results, ("none", "S3"))
    assert "| student + S3 (1 seed) | 0.200 | 0.400 |" in table
    assert verdict["target_met"] is None and verdict["plan_target_met"] is None
    assert math.isnan(verdict["nds_seed_spread"])
    del results["students"]["S3_seed0"]  # no S3 yet (a partial ablation): a table, no verdict
    table, verdict = render_table(results, ("none", "S3"))
    assert "student + S3" not in table and verdict == {}


def test_rows_of_older_metric_definitions_are_named_under_the_table() -> None:
    """A record spans sittings; figures measured before the metric definitions changed are not today's."""
    from training.ablation import report_text
    from training.evaluation.suite import METRICS_REVISION

    config = load_ablation_config(Path(__file__).resolve().parent.parent / "config" / "ablation_worlds_axis.yaml")
    today = {"metrics_revision": METRICS_REVISION}
    results = {"eval_sets": ["world 901"], "teacher": {**row(0.5, 1.0), **today}, "students": {
        "none_seed0": {"stage": "none", "seed": 0, **row(0.2, 2.0)},
        "S3_seed0": {"stage": "S3", "seed": 0, **row(0.3, 1.5), **today}}}
    text, _ = report_text(results, config)
    assert f"(minADE, occ IoU and collision of none_seed0: the metric definitions before revision {METRICS_REVISION}" \
        in text
    results["students"]["none_seed0"].update(today)
    assert "definitions before" not in report_text(results, config)[0]


def test_summary_row_reads_the_evaluation_suite_keys() -> None:
    metrics = {"detection": {"mAP": 0.3, "NDS": 0.4}, "tracking": {"AMOTA": 0.2},
               "motion": {"vehicle": {"minADE": 1.5}}, "map": {"mIoU": 0.6}, "occupancy": {"near": 0.5},
               "planning": {"uniad": {"l2_avg": 1.1, "collision_avg": 0.3}}}
    assert summary_row(metrics) == {"mAP": 0.3, "NDS": 0.4, "AMOTA": 0.2, "minADE": 1.5, "map_iou": 0.6,
                                    "occ_iou": 0.5, "plan_l2": 1.1, "collision": 0.3}
    assert math.isnan(summary_row({})["NDS"])


def test_ablation_configs_load() -> None:

    from tinybev_ros.errors import ConfigError

    config_dir = Path(__file__).resolve().parent.parent / "config"
    for name in ("ablation_tiny.yaml", "ablation_tiny_long.yaml", "ablation_base.yaml", "ablation_worlds.yaml"):
        config = load_ablation_config(config_dir / name)
        assert set(config.stages) == {"none", "S1", "S2", "S3"} and len(config.seeds) >= 2, name
        assert Path(config.distill_config).is_file(), name
    worlds = load_ablation_config(config_dir / "ablation_worlds.yaml")
    assert worlds.eval_worlds and worlds.validation_world not in worlds.eval_worlds
    assert Path(worlds.teacher_train_config).name == "train_tiny_teacher.yaml"
    with pytest.raises(ConfigError, match="stages"):
        load_ablation_config(config_dir / "ablation_tiny.yaml", ("stages=[S9]",))
    with pytest.raises(ConfigError, match="world_scenes 11: a fresh world holds 1 to 10 scenes"):
        load_ablation_config(config_dir / "ablation_worlds.yaml", ("world_scenes=11",))  # known before any training
    # The verdict's stages of every seed come first (a partial ablation knows the seed spread of none and S3), the
    # supervised ones, which need no teacher, before any distilled one.
    assert worlds.run_order() == [(0, "none"), (1, "none"), (0, "S3"), (1, "S3"),
                                  (0, "S1"), (0, "S2"), (1, "S1"), (1, "S2")]
    # The long verdict pairs: the same setting but the students' budget (and validation spacing), none and S3 only.
    long = load_ablation_config(config_dir / "ablation_worlds_long.yaml")
    assert long.student_steps == 2 * worlds.student_steps and long.run_order() == worlds.run_order()[:4]
    same = ("distill_config", "teacher_train_config", "teacher_steps", "seeds", "eval_worlds", "validation_world")
    assert all(getattr(long, key) == getattr(worlds, key) for key in same)
    # The axis record: the long pairs again, every setting the same (the code changed under them).
    axis = load_ablation_config(config_dir / "ablation_worlds_axis.yaml")
    assert dataclasses.replace(axis, source=long.source) == long
    # The depth-loss record: the axis record with the students' LiDAR depth supervision off, nothing else.
    nodepth = load_ablation_config(config_dir / "ablation_worlds_nodepth.yaml")
    assert nodepth.student_overrides == (*axis.student_overrides, "loss.depth=0.0")
    assert dataclasses.replace(nodepth, source=axis.source, student_overrides=axis.student_overrides) == axis


def test_ablate_end_to_end_on_fresh_worlds_writes_table_curves_figures_and_resumes(synth_dataset, tmp_path,
                                                                                   capsys, monkeypatch) -> None:
    """`tinybev ablate` at toy size: the supervised student, then teacher, cache and S3, with validation NDS on a
    fresh world, evaluation on another fresh world, table/verdict/plots; a second call trains nothing again, nor
    does a call in another work folder that has only the record kept beside the table."""
    import json

    import cv2

    from tinybev_ros.cli import main

    config = Path(__file__).resolve().parent.parent / "config" / "ablation_tiny.yaml"
    (tmp_path / "ablation.yaml").write_text(
        f"base: {config}\nteacher_steps: 2\nstudent_steps: 2\nseeds: [0]\nstages: [none, S3]\n"
        "eval_worlds: [5]\nworld_scenes: 2\nworld_duration_s: 2.0\nvalidation_world: 6\nvalidation_scenes: 2\n"
        "latency_repeats: 1\n")
    out = tmp_path / "out"
    args = ["ablate", "--config", str(tmp_path / "ablation.yaml"), "--dataroot", str(synth_dataset.dataroot),
            "--version", synth_dataset.version, "--out", str(out), "--table", str(tmp_path / "table.md"),
            "student_overrides=[val_every=1, data.max_samples=4, data.num_workers=0]"]
    assert main(args) == 0
    # The supervised run comes first, and the teacher is trained only then, for S3.
    supervised_model, teacher_model = (folder / "checkpoints" / "step_00000002" / "model.safetensors"
                                       for folder in (out / "runs" / "none_seed0", out / "teacher"))
    assert teacher_model.stat().st_mtime_ns > supervised_model.stat().st_mtime_ns

    # A sitting cut short after the supervised runs (here: asked for them only) trains no teacher; its record has
    # none, and the table's teacher row reads n/a.
    short = [*args[:8], str(tmp_path / "short"), "--table", str(tmp_path / "short.md"), *args[11:], "stages=[none]"]
    assert main(short) == 0
    assert not (tmp_path / "short" / "teacher").exists() and not (tmp_path / "short" / "teacher_cache").exists()
    supervised_only = json.loads((tmp_path / "short.json").read_text())
    assert set(supervised_only["students"]) == {"none_seed0"} and "teacher" not in supervised_only
    assert "| teacher | n/a | n/a |" in (tmp_path / "short.md").read_text()

    results = json.loads((out / "ablation.json").read_text())
    assert results["eval_sets"] == ["world 5"]
    assert set(results["students"]) == {"none_seed0", "S3_seed0"}
    for row in (results["teacher"], *results["students"].values()):
        assert set(row["sets"]) == {"world 5"} and row["params_M"] > 0 and row["latency_ms"] > 0
        assert row["NDS"] == row["sets"]["world 5"]["NDS"]  # one set: the mean is that set
    for name in ("none_seed0", "S3_seed0"):
        curve = results["validation"][name]
        assert [r["step"] for r in curve] == [1, 2] and all(0.0 <= r["NDS"] <= 1.0 for r in curve)
    table = (tmp_path / "table.md").read_text()
    assert table == (out / "table.md").read_text()
    assert json.loads((tmp_path / "table.json").read_text()) == results
    assert "| student + S3 (1 seed) |" in table and "evaluated on: world 5" in table
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["target_met"] is None and "nds_gap_recovered" in verdict  # one seed: no spread to beat
    for picture in ("validation_nds.png", "distillation_sample.png"):
        image = cv2.imread(str(out / "figures" / picture))
        assert image is not None and image.shape[0] > 300, picture

    checkpoints = sorted((out / "runs").rglob("model.safetensors")) + sorted((out / "teacher").rglob("*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    assert main(args[:9] + args[11:]) == 0  # the work folder alone: everything is done, nothing is trained again
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    assert json.loads((out / "ablation.json").read_text())["students"] == results["students"]

    # Another sitting, another disk: the record beside --table is all it has, so it trains and evaluates nothing.
    later = tmp_path / "later"
    assert main([*args[:8], str(later), *args[9:]]) == 0
    assert not (later / "runs").exists() and not (later / "teacher").exists()
    here = json.loads((later / "ablation.json").read_text())
    assert here.pop("teacher_source") == str(later / "teacher_cache")  # this disk's, where the record's was another's
    assert here == {key: value for key, value in results.items() if key != "teacher_source"}
    assert (tmp_path / "table.md").read_text() == table

    # A changed distillation recipe: the supervised run is kept, the distilled one is trained again, from the
    # teacher's weights kept beside the record (not trained again: another disk holds no teacher).
    recipe = [*args[:8], str(tmp_path / "recipe"), *args[9:-1], args[-1][:-1] + ", distill.attention=0.25]"]
    before = (tmp_path / "table.json").read_text()
    assert main(recipe) == 0
    assert not (tmp_path / "recipe" / "runs" / "none_seed0").exists()
    assert (tmp_path / "recipe" / "runs" / "S3_seed0").is_dir()
    rerun = json.loads((tmp_path / "table.json").read_text())
    # the record as it was, whose S3 row left it, is kept beside it
    (superseded,) = tmp_path.glob("table.superseded-*.json")
    assert superseded.read_text() == before and superseded.with_suffix(".md").read_text() == table
    assert rerun["teacher_sha256"] == results["teacher_sha256"]
    kept = tmp_path / "table.teacher.safetensors"
    assert weights_sha256(kept) == results["teacher_sha256"]
    installed = tmp_path / "recipe" / "teacher" / "checkpoints" / "step_00000002"
    assert [p.name for p in installed.iterdir()] == ["model.safetensors"]  # no training state: not trained
    assert rerun["students"]["none_seed0"] == results["students"]["none_seed0"]
    assert rerun["students"]["S3_seed0"]["settings_sha256"] != results["students"]["S3_seed0"]["settings_sha256"]

    # Another revision of the distillation code is another recipe too (its runs are trained again); the
    # supervised student does not depend on it.
    import torch

    from training.ablation import Ablation
    from training.distillation import config as distillation_config

    ablation = Ablation(load_ablation_config(tmp_path / "ablation.yaml"), synth_dataset.dataroot,
                        synth_dataset.version, tmp_path / "unused")
    before = {stage: ablation.settings_sha256(stage) for stage in ("none", "S3")}
    monkeypatch.setattr(distillation_config, "REVISION", distillation_config.REVISION + 1)
    assert ablation.settings_sha256("none") == before["none"] and ablation.settings_sha256("S3") != before["S3"]
    monkeypatch.undo()
    # So is another compute type (precision auto: bfloat16 on a CPU that has it, float32 on one that has not).
    monkeypatch.setattr("training.ablation.autocast_dtype", lambda precision, device: torch.float16)
    assert all(ablation.settings_sha256(stage) != before[stage] for stage in ("none", "S3"))
    monkeypatch.undo()

    # The old work folder holds the old recipe's S3 run: refused, not passed off as the new recipe's.
    assert main([*recipe[:8], str(out), *recipe[11:]]) == 2  # no record: the folder is all it has
    assert "made with other settings than today's" in capsys.readouterr().err

    # Other weights kept beside the record than its teacher's are refused in one line, before any training.
    shutil.copyfile(out / "runs" / "S3_seed0" / "checkpoints" / "step_00000002" / "model.safetensors", kept)
    assert main([*args[:8], str(tmp_path / "wrong"), *args[9:]]) == 2
    assert "holds other weights than the record's teacher" in capsys.readouterr().err
    assert not (tmp_path / "wrong" / "runs").exists()
    kept.write_text("version https://git-lfs.github.com/spec/v1\n")  # a clone without the LFS object, say
    assert main([*args[:8], str(tmp_path / "pointer"), *args[9:]]) == 2
    assert "is not a readable safetensors checkpoint" in capsys.readouterr().err

    # A teacher that does not come out as recorded cannot teach new students for the same table: one line, and
    # the record is left as it was.
    (tmp_path / "table.json").write_text(json.dumps({**rerun, "teacher_sha256": "0" * 64}))
    record = (tmp_path / "table.json").read_bytes()
    assert main(args) == 2  # today's recipe: S3 must be trained again, from a teacher that differs from the record
    assert "trained again to other weights" in capsys.readouterr().err
    assert (tmp_path / "table.json").read_bytes() == record


def test_a_broken_record_is_refused_in_one_line(tmp_path) -> None:
    import json

    from tinybev_ros.errors import ConfigError
    from training.ablation import TEACHER_KEYS, read_record

    path = tmp_path / "table.json"
    assert read_record(path) is None  # no record yet: a first sitting
    teacher = {key: "x" for key in TEACHER_KEYS}
    supervised = {"none_seed0": {"stage": "none", "seed": 0}}
    for valid in ({"students": {}}, {"students": supervised}, {"students": {**supervised, "S3_seed0": {"stage": "S3"}},
                                                                **teacher}):
        path.write_text(json.dumps(valid))
        assert read_record(path) == valid
    broken = {
        "{": "is not valid JSON",
        "[]": "has no 'students' table",
        json.dumps({"students": {"S3_seed0": {"stage": "S3"}}}): "has distilled students",
        json.dumps({"students": supervised, "teacher_sha256": "x"}): "part of the teacher's",
        json.dumps({"students": {"none_seed0": [0.2]}, **teacher}): r"student rows \['none_seed0'\] are not mappings",
        json.dumps({"students": {"S9_seed0": {"stage": "S9"}}, **teacher}): r"\['S9_seed0'\] are not mappings with",
        json.dumps({"students": supervised, "validation": [0.1]}): "'validation' is not a mapping",
    }
    for text, message in broken.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_record(path)


def test_a_table_path_that_is_not_an_ablation_table_is_refused_before_any_work(tmp_path, capsys) -> None:

    from tinybev_ros.cli import main

    config = Path(__file__).resolve().parent.parent / "config" / "ablation_tiny.yaml"
    readme = tmp_path / "README.md"
    readme.write_text("# a project\n")
    (tmp_path / "folder.md").mkdir()
    cases = {readme: "has no ablation record beside it", tmp_path / "table.json": "give a Markdown file's path",
             tmp_path / "folder.md": "give a Markdown file's path"}
    for table, message in cases.items():
        args = ["ablate", "--config", str(config), "--dataroot", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                "--table", str(table)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert readme.read_text() == "# a project\n" and not (tmp_path / "out").exists()


DOCUMENTED_RECORDS = {  # docs/<record>.json -> the ablation config that made it
    "ablation_worlds_table": "ablation_worlds.yaml",
    "ablation_worlds_revision1_table": "ablation_worlds.yaml",
    "ablation_worlds_long_table": "ablation_worlds_long.yaml",
    "ablation_worlds_axis_table": "ablation_worlds_axis.yaml",
    "ablation_worlds_nodepth_table": "ablation_worlds_nodepth.yaml",
}


RECORDS_IN_DOCS = sorted(path.stem for path in (Path(__file__).resolve().parent.parent / "docs").glob(
    "ablation*_table.json"))  # the long pairs' record appears once one of its runs has finished


def test_every_documented_ablation_record_is_checked() -> None:
    assert set(RECORDS_IN_DOCS) <= set(DOCUMENTED_RECORDS)
    assert {"ablation_worlds_table", "ablation_worlds_revision1_table"} <= set(RECORDS_IN_DOCS)


@pytest.mark.parametrize("record", RECORDS_IN_DOCS)
def test_documented_ablation_is_the_table_its_figures_give(record: str) -> None:
    """docs/ablation_worlds_table.md (and the README's copy) must be what report_text makes of the figures saved
    beside it (the record a later sitting resumes from): the verdict is computed from the runs, never typed. The
    same holds for the frozen record of distillation revision 1 and for the long pairs' record
    (docs/ablation_worlds.md)."""
    from training.ablation import read_record, report_text

    repo = Path(__file__).resolve().parent.parent
    results = read_record(repo / "docs" / f"{record}.json")  # a complete teacher, or none (supervised runs only)
    config = load_ablation_config(repo / "config" / DOCUMENTED_RECORDS[record])
    text, _ = report_text(results, config)
    assert (repo / "docs" / f"{record}.md").read_text() == text
    assert results["students"] or "teacher" in results  # a sitting ends after the teacher, or after a student
    kept_teacher = repo / "docs" / f"{record}.teacher.safetensors"  # the axis record's on (fifteenth sitting)
    if "teacher" in results and kept_teacher.is_file():
        assert weights_sha256(kept_teacher) == results["teacher_sha256"]
    if record == "ablation_worlds_table":
        assert text in (repo / "README.md").read_text(), "README's copy of the ablation table is not the table"
