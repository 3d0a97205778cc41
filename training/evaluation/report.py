"""Metrics as files and tables: metrics.json (NaN -> null) and metrics.md, and the one-row summary of a run."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tinybev_ros.atomic_file import write_text
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, MAP_CLASSES
from training.metrics.heading import TOLERANCE_DEG
from training.metrics.matching import MATCH_DISTANCE_M
from training.metrics.velocity import MOVING_SPEED_MPS


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None (undefined metric)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def to_markdown(metrics: Mapping[str, Any]) -> str:
    """The metrics as Markdown tables, one section per task, definitions named."""
    lines = [f"# Evaluation: {metrics.get('version')} / {metrics.get('eval_set')} ({metrics.get('samples')} samples)"]
    if "detection" in metrics:
        d = metrics["detection"]
        lines += ["", "## Detection (nuscenes-devkit DetectionEval, detection_cvpr_2019)", ""]
        names = ["mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE", "mAAE"]
        lines += _table(names, [[_fmt(d[n]) for n in names]])
        lines += ["", *_table(["class", *DETECTION_CLASSES], [["AP", *(_fmt(d["per_class_AP"].get(c))
                                                                      for c in DETECTION_CLASSES)]])]
        absent = [c for c in DETECTION_CLASSES if c not in d.get("classes_with_ground_truth", DETECTION_CLASSES)]
        if "note" in d:
            lines += ["", f"{d['note'][0].upper()}{d['note'][1:]}: the devkit's rules score that mAP 0 and NDS 0."]
        elif absent:
            lines += ["", f"No ground truth in this split for: {', '.join(absent)} (the devkit scores them AP 0 and "
                          "error 1, which caps mAP and NDS)."]
    if metrics.get("heading"):
        tolerance = f"{TOLERANCE_DEG:g} deg"
        lines += ["", f"## Heading of detected boxes (score >= {SCORE_THRESHOLDS.publish:g}, matched within "
                      f"{MATCH_DISTANCE_M:g} m; training/metrics/heading.py)", ""]
        lines += _table(["class", "matched", f"axis within {tolerance}", f"direction within {tolerance}",
                         "reversed", "mean error (deg)"],
                        [[name, str(h["matched"]), _fmt(h["axis_within_tolerance"], 2),
                          _fmt(h["direction_within_tolerance"], 2), _fmt(h["reversed"], 2),
                          _fmt(h["mean_error_deg"], 0)] for name, h in metrics["heading"].items()])
        lines += ["", f"Headings at random give an axis within {tolerance} {TOLERANCE_DEG / 90:.0%} of the time and a "
                      f"direction within it {TOLERANCE_DEG / 180:.0%}; a barrier's direction is a convention (read its "
                      "axis)."]
    if metrics.get("velocity"):
        lines += ["", f"## Velocity of detected boxes (score >= {SCORE_THRESHOLDS.publish:g}, matched within "
                      f"{MATCH_DISTANCE_M:g} m; moving: true speed >= {MOVING_SPEED_MPS:g} m/s; "
                      "training/metrics/velocity.py)", ""]
        lines += _table(["class", "moving", "true speed (m/s)", "speed seen", "error (m/s)", "still",
                         "speed invented for still (m/s)"],
                        [[name, str(v["moving"]), _fmt(v.get("true_speed_mps"), 2),
                          _fmt(v.get("speed_seen"), 2), _fmt(v.get("moving_error_mps"), 2),
                          str(v["still"]), _fmt(v.get("still_speed_mps"), 2)]
                         for name, v in metrics["velocity"].items()])
        lines += ["", "Speed seen: the predicted velocity along the true one over the true speed (1 sees it all, 0 is "
                      "blind to motion: its error is then the true speed)."]
    if "tracking" in metrics:
        t = metrics["tracking"]
        lines += ["", "## Tracking (nuscenes-devkit TrackingEval, tracking_nips_2019)", ""]
        columns = [("AMOTA", "AMOTA"), ("AMOTP (m)", "AMOTP"), ("recall", "recall"), ("MOTAR", "motar"),
                   ("IDS", "IDS"), ("frag", "frag")]
        counts = ("IDS", "frag")
        lines += _table([label for label, _ in columns],
                        [[_fmt(int(round(t[key])) if key in counts and t[key] is not None and math.isfinite(t[key])
                               else t[key]) for _, key in columns]])
    if "motion" in metrics:
        lines += ["", "## Motion forecasting (UniAD protocol: matched agents, min over modes, miss at 2 m; EPA)", ""]
        lines += _table(["agents", "minADE (m)", "minFDE (m)", "MR", "EPA", "matched / GT"],
                        [[group, _fmt(m["minADE"]), _fmt(m["minFDE"]), _fmt(m["miss_rate"]), _fmt(m["EPA"]),
                          f"{m['matched']} / {m['ground_truth']}"] for group, m in metrics["motion"].items()])
    if "map" in metrics:
        lines += ["", "## Map segmentation (IoU over the split)", ""]
        names = [*MAP_CLASSES, "mIoU"]
        lines += _table(names, [[_fmt(metrics["map"].get(n)) for n in names]])
        if "map_note" in metrics:
            lines += ["", metrics["map_note"]]
    if "occupancy" in metrics:
        o = metrics["occupancy"]
        lines += ["", "## Occupancy (IoU; near = 30 m x 30 m, far = 100 m x 100 m; all = now and every future frame "
                  "pooled, UniAD's IoU-n / IoU-f)", ""]
        lines += _table(["", "all", "current", "future"],
                        [[region, _fmt(o[region]), _fmt(o[f"{region}_current"]), _fmt(o[f"{region}_future"])]
                         for region in ("near", "far")])
    if "planning" in metrics:
        lines += ["", "## Planning (L2 in m, collision in %; UniAD = at the time, ST-P3 = averaged up to the time)",
                  ""]
        header = ["definition", "L2 1s", "L2 2s", "L2 3s", "L2 avg", "Col 1s", "Col 2s", "Col 3s", "Col avg"]
        rows = []
        for name, label in (("uniad", "UniAD"), ("stp3", "ST-P3")):
            p = metrics["planning"][name]
            rows.append([label, *(_fmt(p[f"l2_{h}"]) for h in ("1s", "2s", "3s", "avg")),
                         *(_fmt(p[f"collision_{h}"], 2) for h in ("1s", "2s", "3s", "avg"))])
        lines += _table(header, rows)
    if "annotations_note" in metrics:
        lines += ["", metrics["annotations_note"]]
    if "speed" in metrics:
        s = metrics["speed"]
        lines += ["", "## Speed and size", ""]
        lines += _table(["parameters (M)", "GFLOPs", "latency median (ms)", "latency p90 (ms)", "device"],
                        [[_fmt(s["parameters_M"], 2), _fmt(s["gflops"], 1), _fmt(s["latency"]["median_ms"], 1),
                          _fmt(s["latency"]["p90_ms"], 1), str(s["latency"]["device"])]])
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON with NaN/inf as null (strict JSON: undefined metrics read back as None)."""
    write_text(path, json.dumps(_plain(data), indent=2, allow_nan=False) + "\n")


def write_report(metrics: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """metrics.json (NaN -> null) and metrics.md in `out_dir`, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "metrics.json", out_dir / "metrics.md"
    write_json(json_path, metrics)
    write_text(md_path, to_markdown(metrics))
    return json_path, md_path


def metric_at(metrics: dict, *keys: str) -> float:
    """A nested figure of `evaluate` output, NaN where the task or value is absent."""
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float(value) if value is not None else float("nan")


def summary_row(metrics: dict[str, Any]) -> dict[str, float]:
    """The table's figures from `training.evaluation.suite.evaluate` output (UniAD definitions for planning; vehicles
    for minADE; occupancy IoU of the near region over the current and future frames, UniAD's IoU-n)."""
    return {
        "mAP": metric_at(metrics, "detection", "mAP"),
        "NDS": metric_at(metrics, "detection", "NDS"),
        "AMOTA": metric_at(metrics, "tracking", "AMOTA"),
        "minADE": metric_at(metrics, "motion", "vehicle", "minADE"),
        "map_iou": metric_at(metrics, "map", "mIoU"),
        "occ_iou": metric_at(metrics, "occupancy", "near"),
        "plan_l2": metric_at(metrics, "planning", "uniad", "l2_avg"),
        "collision": metric_at(metrics, "planning", "uniad", "collision_avg"),
    }
