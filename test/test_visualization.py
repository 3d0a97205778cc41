"""Pictures: the BEV panel and camera views draw what they are given where it belongs; files are real images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tinybev_ros.geometry import BevGrid, Rig
from tinybev_ros.predictions import Predictions
from tinybev_ros.taxonomy import DETECTION_CLASSES
from tinybev_ros.visualization import (
    BACKGROUND,
    CLASS_COLORS,
    EGO_PLAN_COLOR,
    MAP_COLORS,
    draw_camera,
    render_bev,
    write_gif,
    write_png,
)

CAR = DETECTION_CLASSES.index("car")


def _scene(with_content: bool) -> Predictions:
    grid = BevGrid()
    n = 1 if with_content else 0
    map_probs = np.zeros((4, 200, 200), np.float32)
    if with_content:
        map_probs[0, :, 90:110] = 1.0  # a 10 m wide road along x
    plan = np.stack([np.arange(1, 7) * 3.0, np.zeros(6)], 1) if with_content else np.zeros((0, 2))
    return Predictions(
        stamp_ns=0, centers=np.array([[20.0, -10.0, 0.8]])[:n], sizes_wlh=np.array([[2.0, 4.5, 1.6]])[:n],
        yaws=np.zeros(n), velocities=np.array([[5.0, 0.0]])[:n], scores=np.ones(n), labels=np.full(n, CAR),
        track_ids=np.array([7])[:n], forecasts=np.zeros((n, 2, 12, 2)) + np.array([20.0, -10.0]),
        forecast_probs=np.array([[0.8, 0.2]])[:n], map_probs=map_probs, occupancy=np.zeros((5, 200, 200)),
        ego_plan=plan, command=2, grid=grid)


def _pixel(image: np.ndarray, x: float, y: float, width: int = 600) -> np.ndarray:
    """Panel pixel of base_link point (x, y) for the default +-50 m grid."""
    ppm = width / 100.0
    return image[int((50.0 - x) * ppm), int((50.0 - y) * ppm)].astype(int)


def test_bev_panel_puts_things_where_they_are() -> None:
    empty = render_bev(_scene(False), legend=False)
    full = render_bev(_scene(True), legend=False)
    assert full.shape == (600, 600, 3) and full.dtype == np.uint8
    assert np.array_equal(_pixel(empty, 41.0, 31.0), BACKGROUND)
    assert np.array_equal(_pixel(full, 41.0, 2.0), MAP_COLORS["drivable_area"])  # road, away from everything
    assert np.array_equal(_pixel(full, 41.0, 31.0), BACKGROUND)  # off the road
    car = _pixel(full, 20.0, -9.3)  # inside the car, off its heading line: class colour blended in
    assert np.abs(car - np.array(CLASS_COLORS[CAR])).sum() < np.abs(car - np.array(BACKGROUND)).sum()
    plan = _pixel(full, 18.0, 0.0)  # last plan waypoint
    assert np.abs(plan - np.array(EGO_PLAN_COLOR)).sum() < 60
    assert (np.abs(full.astype(int) - empty.astype(int)).sum(-1) > 0).mean() > 0.05


def test_camera_view_shows_a_box_only_in_the_camera_that_sees_it() -> None:
    rig = Rig.load()
    scene = _scene(True)
    scene.centers = np.array([[12.0, 0.0, 0.8]])  # straight ahead
    black = np.zeros((900, 1600, 3), np.uint8)
    front = draw_camera(black, rig.cameras["CAM_FRONT"], scene)
    back = draw_camera(black, rig.cameras["CAM_BACK"], scene)
    car = np.all(front == np.array(CLASS_COLORS[CAR], np.uint8), axis=-1)
    assert car.sum() > 100
    rows, cols = np.nonzero(car)
    assert 150 < cols.mean() < 250 and rows.mean() > 100  # centred horizontally, below the horizon (225 px tall)
    assert not np.all(back == np.array(CLASS_COLORS[CAR], np.uint8), axis=-1).any()
    missing = draw_camera(None, rig.cameras["CAM_BACK"], scene)
    assert missing.shape == (225, 400, 3)


def test_png_and_gif_files_are_real_images(tmp_path) -> None:
    frames = [render_bev(_scene(True), title=f"frame {k}") for k in range(3)]
    png = write_png(frames[0], tmp_path / "bev.png")
    gif = write_gif(frames, tmp_path / "scene.gif", fps=2)
    with Image.open(png) as image:
        assert image.size == (600, 600)
    with Image.open(gif) as image:
        assert image.n_frames == 3 and image.info["duration"] == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bev.png", "scene.gif"]  # no temp files left behind


def test_synthetic_scene_figure_and_gif_are_non_trivial(synth_dataset, tmp_path) -> None:
    """Real camera JPEGs, projected boxes, BEV panel: the figure of a synthetic scene shows content."""
    from nuscenes.nuscenes import NuScenes

    from training.evaluation.figures import render_scene
    from training.evaluation.suite import load_ground_truths
    from training.metrics.oracle import TrackIds, ground_truth_as_predictions
    from training.splits import devkit_split, split_sample_tokens

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    tokens = split_sample_tokens(nusc, devkit_split(synth_dataset.version, "val"))[:3]
    gts = load_ground_truths(nusc, tokens, progress=False)
    ids = TrackIds()
    predictions = {t: ground_truth_as_predictions(gts[t], ids) for t in tokens}
    pngs, gif = render_scene(nusc, tokens, predictions, gts, tmp_path, progress=False)
    assert len(pngs) == 3
    with Image.open(pngs[0]) as png:
        figure = np.asarray(png.convert("RGB"))
    assert figure.shape[1] > 1500 and figure.shape[0] > 500
    assert figure.std() > 30 and len(np.unique(figure.reshape(-1, 3), axis=0)) > 2000  # photos, not flat fills
    cameras = figure[26:, : 3 * 480]  # below the title, the six camera panels
    drawn = np.zeros(cameras.shape[:2], bool)
    for color in CLASS_COLORS:
        drawn |= np.all(cameras == np.array(color, np.uint8), axis=-1)
    assert drawn.sum() > 200  # projected predicted boxes drawn in class colours on the photos
    with Image.open(gif) as animation:
        assert animation.n_frames == 3
        frames = []
        for k in range(3):
            animation.seek(k)
            frames.append(np.asarray(animation.convert("RGB"), dtype=int))
    assert np.abs(frames[0] - frames[2]).mean() > 2  # the scene moves
