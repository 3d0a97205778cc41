"""The ablation's own arithmetic: BatchNorm recalibration, the summary row, the table and the target verdict."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training.ablation import load_ablation_config, render_table
from training.batchnorm import recalibrate_batchnorm
from training.evaluate import summary_row


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
    assert verdict["nds_gap_recovered"] == pytest.approx(0.20 / 0.29)
    assert verdict["nds_target_met"] and verdict["plan_target_met"] and verdict["half_gap_met"]
    results["students"]["S3_seed1"].update(NDS=0.20)  # now the seeds disagree more than S3 gains
    _, verdict = render_table(results, ("none", "S3"))
    assert not verdict["nds_target_met"] and not verdict["half_gap_met"]
    del results["students"]["S3_seed1"]  # one seed: no spread to beat, so the target cannot be judged
    table, verdict = render_table(results, ("none", "S3"))
    assert "| student + S3 (1 seeds) | 0.200 | 0.400 |" in table
    assert verdict["nds_target_met"] is None and verdict["plan_target_met"] is None
    assert math.isnan(verdict["nds_seed_spread"])


def test_summary_row_reads_the_evaluation_suite_keys() -> None:
    metrics = {"detection": {"mAP": 0.3, "NDS": 0.4}, "tracking": {"AMOTA": 0.2},
               "motion": {"vehicle": {"minADE": 1.5}}, "map": {"mIoU": 0.6}, "occupancy": {"near_current": 0.5},
               "planning": {"uniad": {"l2_avg": 1.1, "collision_avg": 0.3}}}
    assert summary_row(metrics) == {"mAP": 0.3, "NDS": 0.4, "AMOTA": 0.2, "minADE": 1.5, "map_iou": 0.6,
                                    "occ_iou": 0.5, "plan_l2": 1.1, "collision": 0.3}
    assert math.isnan(summary_row({})["NDS"])


def test_ablation_configs_load() -> None:
    from pathlib import Path

    config_dir = Path(__file__).resolve().parent.parent / "config"
    for name in ("ablation_tiny.yaml", "ablation_tiny_long.yaml", "ablation_base.yaml"):
        config = load_ablation_config(config_dir / name)
        assert config.stages == ("none", "S1", "S2", "S3") and len(config.seeds) >= 2, name
        assert config.path(config.distill_config).is_file(), name
    tiny = load_ablation_config(config_dir / "ablation_tiny.yaml")
    with pytest.raises(ValueError, match="stages"):
        type(tiny)(stages=("S9",))
