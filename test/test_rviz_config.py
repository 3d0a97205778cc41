"""The shipped rviz2 view (config/tinybev.rviz) shows base_link as the package's own BEV pictures do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

RVIZ_CONFIG = Path(__file__).resolve().parent.parent / "config" / "tinybev.rviz"


def screen_axes_in_world(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(screen up, screen right) as world xy directions in rviz2's TopDownOrtho view at its `Angle`.

    From ros2/rviz rviz_default_plugins/src/rviz_default_plugins/view_controllers/ortho/
    fixed_orientation_ortho_view_controller.cpp: orientCamera() turns the camera's parent node by
    Ogre::Quaternion(Radian(angle), UNIT_Z) and the camera sits at z = 500 looking down -z with Ogre's default up
    +y, so a screen direction (right, up) = (1, 0), (0, 1) is that rotation of world x, y; move() agrees:
    a drag by (dx, dy) on screen moves the view by (dx cos a - dy sin a, dx sin a + dy cos a) in the world.
    """
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rotation @ np.array([0.0, 1.0]), rotation @ np.array([1.0, 0.0])


def test_the_top_down_view_shows_forward_up_and_left_to_the_left() -> None:
    """As render_bev draws it: +x (forward) up the screen, +y (left) to the screen's left. Angle 1.5708 showed
    forward pointing down."""
    view = yaml.safe_load(RVIZ_CONFIG.read_text())["Visualization Manager"]["Views"]["Current"]
    assert view["Class"] == "rviz_default_plugins/TopDownOrtho" and view["Target Frame"] == "base_link"
    up, right = screen_axes_in_world(float(view["Angle"]))
    np.testing.assert_allclose(up, [1.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(right, [0.0, -1.0], atol=1e-4)
