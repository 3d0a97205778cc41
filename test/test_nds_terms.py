"""`tinybev nds-terms` on result files the nuScenes devkit itself computes (DetectionMetrics.serialize)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.data_classes import DetectionMetrics

from tinybev_ros.cli import main
from training.evaluation.nds_terms import nds_terms, read_detection
from training.metrics.detection import DETECTION_CONFIG, TP_ERRORS


def devkit_summary(seed: int) -> dict:
    """A metrics_summary.json as the devkit's evaluator writes it, with random per-class APs and errors (some
    errors above 1, which earn nothing, and a class with a NaN error, which the devkit leaves out)."""
    rng = np.random.default_rng(seed)
    cfg = config_factory(DETECTION_CONFIG)
    metrics = DetectionMetrics(cfg)
    for name in cfg.class_names:
        for threshold in cfg.dist_ths:
            metrics.add_label_ap(name, threshold, float(rng.uniform(0.0, 0.8)))
        for devkit_name in TP_ERRORS:
            error = float("nan") if name == "traffic_cone" and devkit_name != "trans_err" else rng.uniform(0.1, 1.6)
            metrics.add_label_tp(name, devkit_name, float(error))
    return json.loads(json.dumps(metrics.serialize()))


def test_the_terms_add_up_to_the_devkit_s_nds(tmp_path) -> None:
    for seed in range(5):
        summary = devkit_summary(seed)
        path = tmp_path / f"metrics_summary_{seed}.json"
        path.write_text(json.dumps(summary))
        figures = read_detection(path)
        assert figures["NDS"] == summary["nd_score"]
        terms = nds_terms(figures)
        assert sum(terms.values()) == pytest.approx(summary["nd_score"], abs=1e-12)
        for devkit_name, name in TP_ERRORS.items():  # an error of 1 or more earns nothing
            assert (terms[name] == 0.0) == (summary["tp_errors"][devkit_name] >= 1.0)


def test_rows_average_the_results_of_a_folder_and_differences_add_up(tmp_path, capsys) -> None:
    """One ablation-like folder (devkit summaries of two worlds), one `tinybev eval`-like folder (metrics.json)."""
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    summaries = [devkit_summary(1), devkit_summary(2)]
    for world, summary in zip(("world_901", "world_902"), summaries, strict=True):
        (teacher / "devkit" / world / "det").mkdir(parents=True)
        (teacher / "devkit" / world / "det" / "metrics_summary.json").write_text(json.dumps(summary))
    eval_summary = devkit_summary(3)
    detection = {"mAP": eval_summary["mean_ap"], "NDS": eval_summary["nd_score"],
                 **{name: eval_summary["tp_errors"][devkit] for devkit, name in TP_ERRORS.items()}}
    student.mkdir()
    (student / "metrics.json").write_text(json.dumps({"detection": detection, "map": {"mIoU": 0.5}}))
    (student / "other" / "metrics.json").parent.mkdir()
    (student / "other" / "metrics.json").write_text(json.dumps({"map": {"mIoU": 0.5}}))  # no detection: not a row's

    assert read_detection(student / "metrics.json")["NDS"] == pytest.approx(eval_summary["nd_score"])
    assert main(["nds-terms", str(teacher), str(student), "--label", "teacher", "--label", "student"]) == 0
    out = capsys.readouterr().out
    main_table = out.split("Difference from")[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in main_table.splitlines()
            if line.startswith("| ")}
    teacher_nds = np.mean([s["nd_score"] for s in summaries])
    assert rows["teacher"][1] == "2" and float(rows["teacher"][2]) == pytest.approx(teacher_nds, abs=5e-4)
    assert rows["student"][1] == "1" and float(rows["student"][2]) == pytest.approx(eval_summary["nd_score"],
                                                                                    abs=5e-4)
    difference = [line for line in out.splitlines() if line.startswith("| student |")][-1].split(" | ")
    assert float(difference[1]) == pytest.approx(eval_summary["nd_score"] - teacher_nds, abs=5e-4)
    assert sum(float(cell.strip(" |")) for cell in difference[2:]) == pytest.approx(float(difference[1]), abs=4e-3)


def test_results_that_do_not_add_up_or_are_not_numbers_are_refused_in_one_line(tmp_path, capsys) -> None:
    """main() returns 2 with one line, where an unexpected exception would escape it (and fail this test)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.json").write_text('{"mean_ap": ')
    summary = devkit_summary(4)
    (tmp_path / "word.json").write_text(json.dumps({**summary, "mean_ap": "x"}))
    (tmp_path / "list.json").write_text(json.dumps({"detection": {"mAP": [0.1], "NDS": 0.2,
                                                                  **dict.fromkeys(TP_ERRORS.values(), 0.5)}}))
    (tmp_path / "edited.json").write_text(json.dumps({**summary, "nd_score": summary["nd_score"] + 0.01}))
    (tmp_path / "no_nds.json").write_text(json.dumps({**summary, "nd_score": None}))
    cases = {"empty": "no detection result under", "broken.json": "is not a detection result",
             "word.json": "is not a detection result", "list.json": "is not a detection result",
             "edited.json": "is not what its mAP", "no_nds.json": "is not what its mAP"}
    for name, message in cases.items():
        assert main(["nds-terms", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(tmp_path / name) in err[0], (name, err)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(summary))
    assert main(["nds-terms", str(good), str(good)]) == 2
    assert "two rows would share a name" in capsys.readouterr().err
    assert main(["nds-terms", str(good), "--label", "a", "--label", "b"]) == 2
    assert "--label given 2 times for 1 folders" in capsys.readouterr().err


def test_an_error_no_class_has_earns_nothing_as_in_the_devkit(tmp_path) -> None:
    """A TP error that is NaN for every class (e.g. attributes where no class has one) is NaN in the summary; the
    devkit scores it 0, and so do the terms."""
    cfg = config_factory(DETECTION_CONFIG)
    metrics = DetectionMetrics(cfg)
    for name in cfg.class_names:
        for threshold in cfg.dist_ths:
            metrics.add_label_ap(name, threshold, 0.5)
        for devkit_name, _ in TP_ERRORS.items():
            metrics.add_label_tp(name, devkit_name, float("nan") if devkit_name == "attr_err" else 0.25)
    path = tmp_path / "metrics_summary.json"
    path.write_text(json.dumps(metrics.serialize()))  # NaN as the devkit's json.dump writes it
    figures = read_detection(path)
    terms = nds_terms(figures)
    assert np.isnan(figures["mAAE"]) and terms["mAAE"] == 0.0
    assert sum(terms.values()) == pytest.approx(metrics.nd_score) and terms["mATE"] == pytest.approx(0.075)
