"""Which way a path faces at each of its points: ROS poses along forecasts and plans, and the ego box of the
planning metric's collision check, by one rule."""

from __future__ import annotations

import numpy as np

# A path moves this far (metres) from the point that last set its heading before it sets a new one: a nearly
# stationary agent's predicted positions wobble by centimetres, and the direction of such a move is random.
MIN_HEADING_STEP_M = 0.1


def path_headings(points: np.ndarray, start_yaw: float) -> np.ndarray:
    """Heading at each of points[1:], along the chord from the last point that set a heading (`start_yaw` until
    the path is MIN_HEADING_STEP_M from its start). Measuring from that point, not the previous one, lets an
    agent slower than MIN_HEADING_STEP_M per step turn too, while centimetre wobble of a parked one does not."""
    points = np.asarray(points, dtype=float)
    headings = np.empty(len(points) - 1)
    heading, anchor = float(start_yaw), points[0]
    for k, point in enumerate(points[1:]):
        dx, dy = point - anchor
        if np.hypot(dx, dy) >= MIN_HEADING_STEP_M:
            heading, anchor = float(np.arctan2(dy, dx)), point
        headings[k] = heading
    return headings
