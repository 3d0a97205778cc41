"""Frame conventions: quaternion orders, transforms, projection, BEV cells."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.utils.geometry_utils import view_points
from pyquaternion import Quaternion

from tinybev_ros.config import from_dict
from tinybev_ros.geometry import (
    CAMERA_NAMES,
    BevGrid,
    Rig,
    Transform,
    matrix_to_quat,
    quat_to_matrix,
    quat_to_yaw,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
    yaw_to_quat,
)


def random_quats(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_quaternion_matrix_matches_pyquaternion_and_round_trips():
    for q in random_quats(50):
        np.testing.assert_allclose(quat_to_matrix(q), Quaternion(q).rotation_matrix, atol=1e-12)
        back = matrix_to_quat(quat_to_matrix(q))
        assert np.allclose(back, q, atol=1e-9) or np.allclose(back, -q, atol=1e-9)


def test_ros_and_nuscenes_orders():
    wxyz = np.array([0.9, 0.1, 0.2, 0.3])
    assert wxyz_to_xyzw(wxyz).tolist() == [0.1, 0.2, 0.3, 0.9]
    assert xyzw_to_wxyz(wxyz_to_xyzw(wxyz)).tolist() == wxyz.tolist()


@pytest.mark.parametrize("yaw", [-3.0, -1.2, 0.0, 0.4, 2.9])
def test_yaw_round_trip(yaw):
    assert quat_to_yaw(yaw_to_quat(yaw)) == pytest.approx(yaw)


def test_transform_inverse_and_composition():
    a = Transform(quat_to_matrix(random_quats(1, 1)[0]), np.array([1.0, -2.0, 0.5]))
    b = Transform(quat_to_matrix(random_quats(1, 2)[0]), np.array([0.3, 4.0, -1.0]))
    pts = np.random.default_rng(3).normal(size=(10, 3))
    np.testing.assert_allclose((a @ a.inverse()).matrix, np.eye(4), atol=1e-12)
    np.testing.assert_allclose((a @ b).apply(pts), a.apply(b.apply(pts)), atol=1e-12)
    np.testing.assert_allclose((a @ b).matrix, a.matrix @ b.matrix, atol=1e-12)


def test_shipped_rig_projects_like_the_devkit():
    rig = Rig.load()
    assert tuple(rig.cameras) == CAMERA_NAMES
    front = rig.cameras["CAM_FRONT"]
    # A point 20 m ahead on the ground is in front of CAM_FRONT and behind CAM_BACK.
    point = np.array([[20.0, 0.5, 0.0]])
    pix, depth = front.project(point)
    cam = front.sensor_to_ego.inverse().apply(point)
    expected = view_points(cam.T, front.intrinsic, normalize=True)[:2].T
    np.testing.assert_allclose(pix, expected, atol=1e-9)
    assert depth[0] > 0 and 0 < pix[0, 0] < 1600 and 450 < pix[0, 1] < 900
    assert rig.cameras["CAM_BACK"].project(point)[1][0] < 0
    # optical frame: z forward of CAM_FRONT is +x of base_link
    np.testing.assert_allclose(front.sensor_to_ego.rotation[:, 2], [1, 0, 0], atol=0.02)


def test_bev_grid_cells():
    grid = BevGrid()
    assert grid.shape == (200, 200)
    rows, cols, inside = grid.cell_of([[0.1, 0.1], [-50.0, -50.0], [49.99, 49.99], [50.0, 0.0], [10.2, -3.7]])
    assert inside.tolist() == [True, True, True, False, True]
    assert (rows[0], cols[0]) == (100, 100) and (rows[1], cols[1]) == (0, 0) and (rows[2], cols[2]) == (199, 199)
    assert (rows[4], cols[4]) == (120, 92)
    xs, ys = grid.cell_centers()
    assert xs[120] == pytest.approx(10.25) and ys[92] == pytest.approx(-3.75)


def test_config_rejects_unknown_keys_and_converts_types():
    cfg = from_dict(BevGrid, {"x_min": -25, "resolution": 0.25})
    assert cfg.x_min == -25.0 and isinstance(cfg.x_min, float) and cfg.shape == (300, 400)
    with pytest.raises(ValueError, match="resoluton"):
        from_dict(BevGrid, {"resoluton": 1.0})
