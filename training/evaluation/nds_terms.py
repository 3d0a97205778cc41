"""`tinybev nds-terms`: what each part of the nuScenes detection score earns, and where two models differ.

NDS = (w mAP + sum over the five true-positive errors of max(0, 1 - error)) / (w + 5), w = 5 (the devkit's
`mean_ap_weight`). An error at or above 1 (orientation in radians, velocity in m/s) earns nothing, so two models
can differ a lot on it and not at all in NDS; this table shows which terms carry a gap.

It reads every detection result under the folders it is given: the devkit's `det/metrics_summary.json`, which
`tinybev ablate` keeps per run and evaluation world, and `metrics.json` of `tinybev eval` / `eval-worlds`. One row
per folder, the mean over the results found in it; with two folders or more, each row's difference from the first
(put the teacher first to see where a student's gap to it lies).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from nuscenes.eval.common.config import config_factory

from tinybev_ros.errors import ConfigError
from training.metrics.detection import DETECTION_CONFIG, TP_ERRORS


def read_detection(path: Path) -> dict[str, float]:
    """mAP, NDS and the five TP errors (our names) of one result file, in either format; its NDS must be what its
    terms add up to (a file edited or cut by hand is refused, not averaged into a row)."""
    try:
        data = json.loads(path.read_text())
        if "tp_errors" in data:  # the devkit's metrics_summary.json
            raw = {"mAP": data["mean_ap"], "NDS": data["nd_score"]}
            raw.update({ours: data["tp_errors"][devkit] for devkit, ours in TP_ERRORS.items()})
        else:  # tinybev eval's metrics.json
            raw = {key: data["detection"][key] for key in ("mAP", "NDS", *TP_ERRORS.values())}
        figures = {key: float("nan") if value is None else float(value) for key, value in raw.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a detection result of the devkit or of tinybev eval ({exc!r})") from exc
    if not np.isfinite(figures["mAP"]) or not abs(sum(nds_terms(figures).values()) - figures["NDS"]) < 1e-6:
        raise ConfigError(f"{path}: its NDS ({figures['NDS']}) is not what its mAP ({figures['mAP']}) and TP errors "
                          "give")
    return figures


@functools.cache
def _mean_ap_weight() -> float:
    return float(config_factory(DETECTION_CONFIG).mean_ap_weight)


def nds_terms(figures: dict[str, float]) -> dict[str, float]:
    """Each part's share of NDS (they add up to NDS): "mAP" = w mAP / (w + 5), "mATE" = max(0, 1 - mATE) / (w + 5),
    ... (a NaN error earns nothing, as in the devkit's nd_score)."""
    weight = _mean_ap_weight()
    total = weight + len(TP_ERRORS)
    terms = {"mAP": weight * figures["mAP"] / total}
    for name in TP_ERRORS.values():
        error = figures[name]
        terms[name] = 0.0 if np.isnan(error) else max(0.0, 1.0 - error) / total
    return terms


def result_files(folder: Path) -> list[Path]:
    """The detection results under `folder` (tinybev eval's metrics.json, the devkit's det/metrics_summary.json)."""
    if folder.is_file():
        return [folder]
    found = sorted(folder.rglob("det/metrics_summary.json")) + sorted(
        p for p in folder.rglob("metrics.json") if _has_detection(p))
    if not found:
        raise ConfigError(f"no detection result under {folder} (det/metrics_summary.json of tinybev ablate, "
                          "metrics.json of tinybev eval)")
    return found


def _has_detection(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "detection" in data


def folder_row(files: Iterable[Path]) -> dict[str, float]:
    """Mean over the results of the figures, the terms ("term " + name) and their count ("results"). NDS and the
    terms are plain means, so they still add up; an error that is NaN in some results (no true positive of any
    class there) is the mean of the others."""
    rows = []
    for path in files:
        figures = read_detection(path)
        rows.append({**figures, **{f"term {k}": v for k, v in nds_terms(figures).items()}})
    row = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows])
        row[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return {**row, "results": float(len(rows))}


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown: per folder the NDS terms and the raw errors; then each folder's term differences from the first."""
    names = ["mAP", *TP_ERRORS.values()]
    head = ("| model | results | NDS | " + " | ".join(f"{n} term" for n in names) + " | "
            + " | ".join(names) + " |")
    lines = [head, "|" + "---|" * (3 + 2 * len(names))]
    for label, row in rows.items():
        cells = [label, str(int(row["results"])), f"{row['NDS']:.3f}", *(f"{row['term ' + n]:.3f}" for n in names),
                 f"{row['mAP']:.3f}", *(f"{row[n]:.2f}" for n in names[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > 1:
        (first_label, first), *others = rows.items()
        lines += ["", f"Difference from {first_label} (NDS and its terms; they add up):", "",
                  "| model | NDS | " + " | ".join(f"{n} term" for n in names) + " |",
                  "|" + "---|" * (2 + len(names))]
        for label, row in others:
            cells = [label, f"{row['NDS'] - first['NDS']:+.3f}",
                     *(f"{row['term ' + n] - first['term ' + n]:+.3f}" for n in names)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", type=Path,
                        help="result folders (or files), one row each: e.g. the ablation's teacher/ and "
                             "runs/none_seed0/ folders, or tinybev eval --out folders")
    parser.add_argument("--label", action="append", default=[],
                        help="a row's name, once per folder in order (default: the folder's path)")


def run(args: argparse.Namespace) -> int:
    if args.label and len(args.label) != len(args.folders):
        raise ConfigError(f"--label given {len(args.label)} times for {len(args.folders)} folders")
    labels = args.label or [str(folder) for folder in args.folders]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two rows would share a name: {labels} (give each folder once, and distinct --label)")
    rows = {label: folder_row(result_files(folder)) for label, folder in zip(labels, args.folders, strict=True)}
    print(table(rows), end="")
    return 0
