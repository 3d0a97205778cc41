"""Where a detection's score (the sigmoid of its heatmap peak) cuts it, by role: the one place these numbers live.

- `decode` 0.2: the checkpoint's decoder keeps peaks from here (a model config's `decode.score_threshold`
  default): weak peaks are mostly noise, and fewer boxes keep tracking and messages cheap.
- `track` 0.2: the tracker starts and updates tracks from here (tinybev_ros/tracking.py): as low as decoding, so
  a track coasts through frames where its object's score dips below the publishing threshold.
- `publish` 0.3: what the node publishes and draws (its dynamic `score_threshold` parameter), what the figures
  show, and the detections whose forecasts the motion metrics score (a planner only ever sees these).
- `evaluate` 0.01: the nuScenes protocol ranks every submitted box and integrates precision over recall, so the
  evaluation decodes down to here; a deploy threshold would cut the curve where a weak detector still has
  precision and score it mAP 0 (`training.evaluation.inference.for_evaluation`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoreThresholds:
    """The four roles (module doc); one frozen instance, SCORE_THRESHOLDS, is what every reader imports."""

    decode: float = 0.2  # the model decoder
    track: float = 0.2  # the tracker
    publish: float = 0.3  # the node, figures, motion metrics
    evaluate: float = 0.01  # the nuScenes protocol's ranking


SCORE_THRESHOLDS = ScoreThresholds()
