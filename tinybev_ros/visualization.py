"""Pictures of a frame: a bird's-eye-view panel, six camera views with projected boxes, a sample figure, GIFs.

Everything renders with OpenCV into RGB uint8 numpy arrays (no display, no matplotlib state), so the same
`render_bev` serves the offline evaluation figures and the ROS visualiser node. Ground truth, when given, is
passed as a second `Predictions` (`reference`) so this runtime module needs no training types.

BEV orientation: forward (+x) points up, left (+y) points left, the ego sits at the grid centre.
Colour code: predicted boxes filled in their class colour with the track id and a velocity arrow (1 s ahead);
ground-truth boxes as black (BEV) / white (camera) outlines; forecast modes as class-coloured paths whose
opacity follows the mode probability (the best mode labelled with it); the ego plan in green, the
ground-truth plan dashed black; occupancy now in red, future occupancy in purple; predicted map layers as
pastel fills, ground-truth map layers as darker outlines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from tinybev_ros.atomic_file import atomic_path
from tinybev_ros.geometry import CAMERA_NAMES, CameraCalibration, Rig
from tinybev_ros.predictions import Predictions
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS
from tinybev_ros.taxonomy import DETECTION_CLASSES, MAP_CLASSES

# Colour-blind-safe class colours (RGB), DETECTION_CLASSES order.
CLASS_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178), (86, 180, 233), (0, 158, 115), (204, 121, 167), (230, 159, 0),
    (213, 94, 0), (170, 68, 153), (136, 34, 85), (255, 140, 0), (110, 110, 110),
)
MAP_COLORS: dict[str, tuple[int, int, int]] = {
    "drivable_area": (206, 211, 220), "lane_divider": (90, 120, 200), "ped_crossing": (245, 190, 120),
    "walkway": (185, 225, 185),
}
BACKGROUND = (250, 250, 250)
EGO_PLAN_COLOR = (0, 170, 60)
OCCUPANCY_NOW_COLOR = (220, 40, 40)
OCCUPANCY_FUTURE_COLOR = (140, 60, 200)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_EGO_LENGTH, _EGO_WIDTH = 4.084, 1.85


def _corners_xy(centers_xy: np.ndarray, sizes_wlh: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """(N, 4, 2) ground-plane corners, front-left first, counter-clockwise."""
    half_l, half_w = sizes_wlh[:, 1:2] / 2.0, sizes_wlh[:, 0:1] / 2.0
    local = np.stack([np.concatenate([half_l, half_w], 1), np.concatenate([-half_l, half_w], 1),
                      np.concatenate([-half_l, -half_w], 1), np.concatenate([half_l, -half_w], 1)], axis=1)
    cos, sin = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
    rotated = np.stack([local[..., 0] * cos - local[..., 1] * sin, local[..., 0] * sin + local[..., 1] * cos], -1)
    return rotated + centers_xy[:, None, :2]


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * (1 << _SHIFT)).astype(np.int32)


def _text(image: np.ndarray, text: str, origin: tuple[float, float], color, scale: float = 0.4,
          outline: bool = True) -> None:
    org = (int(origin[0]), int(origin[1]))
    if outline:
        cv2.putText(image, text, org, _FONT, scale, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _dashed(image: np.ndarray, points: np.ndarray, color, thickness: int = 1, dash_px: float = 6.0) -> None:
    """A dashed polyline through pixel `points` (N, 2)."""
    for a, b in zip(points[:-1], points[1:], strict=True):
        length = float(np.hypot(*(b - a)))
        pieces = max(int(length // dash_px), 1)
        for k in range(0, pieces, 2):
            p = a + (b - a) * (k / pieces)
            q = a + (b - a) * (min(k + 1, pieces) / pieces)
            cv2.line(image, tuple(_fixed(p)), tuple(_fixed(q)), color, thickness, cv2.LINE_AA, _SHIFT)


class _BevCanvas:
    """Maps base_link metres to panel pixels for a grid (forward up, left to the left)."""

    def __init__(self, predictions: Predictions, width_px: int):
        grid = predictions.grid
        self.grid = grid
        self.ppm = width_px / (grid.y_max - grid.y_min)
        self.size = (int(round((grid.x_max - grid.x_min) * self.ppm)), int(width_px))  # (rows, cols)

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=float)
        return np.stack([(self.grid.y_max - xy[..., 1]) * self.ppm, (self.grid.x_max - xy[..., 0]) * self.ppm], -1)

    def raster(self, layer: np.ndarray) -> np.ndarray:
        """A grid-shaped (H, W) layer resampled into panel orientation and size."""
        flipped = np.ascontiguousarray(np.asarray(layer, dtype=np.float32)[::-1, ::-1])
        return cv2.resize(flipped, (self.size[1], self.size[0]), interpolation=cv2.INTER_NEAREST)


def _blend(image: np.ndarray, alpha: np.ndarray, color) -> None:
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    image[:] = (image * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha).astype(np.uint8)


def render_bev(predictions: Predictions, reference: Predictions | None = None, width_px: int = 600,
               score_threshold: float = SCORE_THRESHOLDS.publish, title: str | None = None,
               legend: bool = True) -> np.ndarray:
    """RGB uint8 BEV panel of one frame (map, occupancy, boxes, track ids, velocities, forecasts, plans)."""
    canvas = _BevCanvas(predictions, width_px)
    image = np.empty((*canvas.size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    _draw_rasters(image, canvas, predictions)
    _draw_grid_lines(image, canvas)
    if reference is not None:
        _draw_map_contours(image, canvas, reference)
        _draw_boxes_outline(image, canvas, reference, (0, 0, 0))
        _draw_path(image, canvas, reference.ego_plan, (0, 0, 0), dashed=True)
    keep = predictions.scores >= score_threshold
    shown = predictions.select(keep)
    _draw_forecasts(image, canvas, shown)
    _draw_boxes_filled(image, canvas, shown)
    _draw_ego(image, canvas)
    _draw_path(image, canvas, predictions.ego_plan, EGO_PLAN_COLOR, dashed=False)
    if legend:
        _draw_legend(image, reference is not None, sorted({int(label) for label in shown.labels}))
    _draw_scale_bar(image, canvas)
    if title:
        _text(image, title, (8, canvas.size[0] - 10), (20, 20, 20), 0.45)
    return image


def _draw_rasters(image: np.ndarray, canvas: _BevCanvas, predictions: Predictions) -> None:
    for index, name in enumerate(MAP_CLASSES[: len(predictions.map_probs)]):
        color = MAP_COLORS.get(name, (200, 200, 200))
        strength = 1.0 if name != "lane_divider" else 0.9
        _blend(image, canvas.raster(predictions.map_probs[index]) * strength, color)
    occupancy = np.asarray(predictions.occupancy)
    if occupancy.shape[0] > 1:
        _blend(image, canvas.raster(occupancy[1:].max(axis=0)) * 0.35, OCCUPANCY_FUTURE_COLOR)
    if occupancy.shape[0] > 0:
        _blend(image, canvas.raster(occupancy[0]) * 0.55, OCCUPANCY_NOW_COLOR)


def _draw_map_contours(image: np.ndarray, canvas: _BevCanvas, reference: Predictions) -> None:
    """Outlines of the reference (ground-truth) map layers in a darker shade of each layer's colour."""
    for index, name in enumerate(MAP_CLASSES[: len(reference.map_probs)]):
        mask = (canvas.raster(reference.map_probs[index]) >= 0.5).astype(np.uint8)
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        color = tuple(int(c * 0.6) for c in MAP_COLORS.get(name, (200, 200, 200)))
        cv2.drawContours(image, contours, -1, color, 1, cv2.LINE_AA)


def _draw_grid_lines(image: np.ndarray, canvas: _BevCanvas, every_m: float = 10.0) -> None:
    grid = canvas.grid
    for x in np.arange(np.ceil(grid.x_min / every_m) * every_m, grid.x_max + 1e-6, every_m):
        row = canvas.px(np.array([x, 0.0]))[1]
        cv2.line(image, (0, int(row)), (canvas.size[1] - 1, int(row)), (228, 228, 228), 1)
    for y in np.arange(np.ceil(grid.y_min / every_m) * every_m, grid.y_max + 1e-6, every_m):
        col = canvas.px(np.array([0.0, y]))[0]
        cv2.line(image, (int(col), 0), (int(col), canvas.size[0] - 1), (228, 228, 228), 1)


def _draw_boxes_outline(image: np.ndarray, canvas: _BevCanvas, boxes: Predictions, color) -> None:
    if len(boxes) == 0:
        return
    corners = canvas.px(_corners_xy(boxes.centers, boxes.sizes_wlh, boxes.yaws))
    cv2.polylines(image, list(_fixed(corners)), True, color, 1, cv2.LINE_AA, _SHIFT)


def _draw_boxes_filled(image: np.ndarray, canvas: _BevCanvas, boxes: Predictions) -> None:
    if len(boxes) == 0:
        return
    corners = canvas.px(_corners_xy(boxes.centers, boxes.sizes_wlh, boxes.yaws))
    centers = canvas.px(boxes.centers[:, :2])
    colors = [CLASS_COLORS[int(label) % len(CLASS_COLORS)] for label in boxes.labels]
    overlay = image.copy()
    for i in range(len(boxes)):
        cv2.fillPoly(overlay, [_fixed(corners[i])], colors[i], cv2.LINE_AA, _SHIFT)
    image[:] = cv2.addWeighted(overlay, 0.45, image, 0.55, 0)
    for i in range(len(boxes)):
        cv2.polylines(image, [_fixed(corners[i])], True, colors[i], 2, cv2.LINE_AA, _SHIFT)
        front = (corners[i, 0] + corners[i, 3]) / 2.0
        cv2.line(image, tuple(_fixed(centers[i])), tuple(_fixed(front)), colors[i], 2, cv2.LINE_AA, _SHIFT)
        velocity = boxes.velocities[i]
        if np.hypot(*velocity) > 0.3:
            tip = canvas.px(boxes.centers[i, :2] + velocity)
            cv2.arrowedLine(image, tuple(_fixed(centers[i])), tuple(_fixed(tip)), (30, 30, 30), 1, cv2.LINE_AA,
                            _SHIFT, 0.25)
        if boxes.track_ids[i] >= 0:
            anchor = corners[i].min(axis=0)
            _text(image, f"#{int(boxes.track_ids[i])}", (anchor[0] + 2, anchor[1] - 3), colors[i], 0.38)


# Forecast modes are drawn in three opacity bands of their probability (one blend per band keeps it fast).
_FORECAST_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.3), (0.2, 0.65), (0.5, 1.0))  # (min prob, opacity)


def _draw_forecasts(image: np.ndarray, canvas: _BevCanvas, boxes: Predictions) -> None:
    if len(boxes) == 0 or boxes.forecasts.size == 0:
        return
    starts = boxes.centers[:, None, :2]
    paths = canvas.px(np.concatenate([np.broadcast_to(starts[:, None], (*boxes.forecasts.shape[:2], 1, 2)),
                                      boxes.forecasts], axis=2))  # (N, K, T+1, 2)
    probs = boxes.forecast_probs
    best = probs.argmax(axis=1)
    for band, (low, opacity) in enumerate(_FORECAST_BANDS):
        high = _FORECAST_BANDS[band + 1][0] if band + 1 < len(_FORECAST_BANDS) else np.inf
        overlay = image.copy()
        drawn = False
        for i, k in zip(*np.nonzero((probs >= low) & (probs < high)), strict=True):
            color = CLASS_COLORS[int(boxes.labels[i]) % len(CLASS_COLORS)]
            cv2.polylines(overlay, [_fixed(paths[i, k])], False, color, 2 if k == best[i] else 1, cv2.LINE_AA, _SHIFT)
            drawn = True
        if drawn:
            image[:] = cv2.addWeighted(overlay, opacity, image, 1.0 - opacity, 0)
    for i in range(len(boxes)):
        color = CLASS_COLORS[int(boxes.labels[i]) % len(CLASS_COLORS)]
        end = paths[i, best[i], -1]
        cv2.circle(image, tuple(_fixed(end)), 2 << _SHIFT, color, -1, cv2.LINE_AA, _SHIFT)
        if probs.shape[1] > 1:
            _text(image, f"{probs[i, best[i]]:.2f}", (end[0] + 3, end[1]), color, 0.33)


def _draw_ego(image: np.ndarray, canvas: _BevCanvas) -> None:
    ego = canvas.px(_corners_xy(np.zeros((1, 2)), np.array([[_EGO_WIDTH, _EGO_LENGTH, 1.5]]), np.zeros(1)))
    cv2.fillPoly(image, list(_fixed(ego)), (60, 60, 60), cv2.LINE_AA, _SHIFT)
    nose = canvas.px(np.array([_EGO_LENGTH / 2.0, 0.0]))
    cv2.circle(image, tuple(_fixed(nose)), 2 << _SHIFT, (255, 255, 255), -1, cv2.LINE_AA, _SHIFT)


def _draw_path(image: np.ndarray, canvas: _BevCanvas, path_xy: np.ndarray, color, dashed: bool) -> None:
    if path_xy is None or len(path_xy) == 0:
        return
    points = canvas.px(np.concatenate([np.zeros((1, 2)), np.asarray(path_xy, dtype=float)], 0))
    if dashed:
        _dashed(image, points, color, 1)
    else:
        cv2.polylines(image, [_fixed(points)], False, color, 3, cv2.LINE_AA, _SHIFT)
    for point in points[1:]:
        cv2.circle(image, tuple(_fixed(point)), 3 << _SHIFT if not dashed else 2 << _SHIFT, color, -1 if not dashed
                   else 1, cv2.LINE_AA, _SHIFT)


def render_legend(height_px: int, labels: Sequence[int], with_reference: bool, width_px: int = 215) -> np.ndarray:
    """The BEV legend as its own RGB panel (used beside the BEV in sample figures, where it hides nothing)."""
    panel = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
    _draw_legend(panel, with_reference, sorted({int(label) for label in labels}), box=False)
    return panel


def _draw_legend(image: np.ndarray, with_reference: bool, labels: list[int], box: bool = True) -> None:
    entries = [(DETECTION_CLASSES[label].replace("_", " "), CLASS_COLORS[label % len(CLASS_COLORS)], "line")
               for label in labels if 0 <= label < len(DETECTION_CLASSES)]
    entries += [("ego plan", EGO_PLAN_COLOR, "line"), ("occupancy now", OCCUPANCY_NOW_COLOR, "patch"),
               ("occupancy future", OCCUPANCY_FUTURE_COLOR, "patch")]
    if with_reference:
        entries += [("ground truth: box, plan, map edge", (0, 0, 0), "dash")]
    entries += [(name.replace("_", " "), MAP_COLORS[name], "patch") for name in MAP_CLASSES if name in MAP_COLORS]
    height = 14 * len(entries) + 8
    x0, y0 = 6, 6
    if box:
        overlay = image.copy()
        cv2.rectangle(overlay, (x0, y0), (x0 + 205, y0 + height), (255, 255, 255), -1)
        image[:] = cv2.addWeighted(overlay, 0.8, image, 0.2, 0)
    for k, (name, color, kind) in enumerate(entries):
        y = y0 + 12 + 14 * k
        if kind == "patch":
            cv2.rectangle(image, (x0 + 6, y - 8), (x0 + 22, y + 1), color, -1)
        elif kind == "dash":
            _dashed(image, np.array([[x0 + 6.0, y - 3.0], [x0 + 22.0, y - 3.0]]), color, 1, 3.0)
        else:
            cv2.line(image, (x0 + 6, y - 3), (x0 + 22, y - 3), color, 3, cv2.LINE_AA)
        _text(image, name, (x0 + 28, y), (30, 30, 30), 0.36, outline=False)


def _draw_scale_bar(image: np.ndarray, canvas: _BevCanvas, metres: float = 10.0) -> None:
    length = metres * canvas.ppm
    rows, cols = canvas.size
    x1, y = cols - 10, rows - 12
    x0 = int(x1 - length)
    cv2.line(image, (x0, y), (x1, y), (30, 30, 30), 2)
    for x in (x0, x1):
        cv2.line(image, (x, y - 4), (x, y + 4), (30, 30, 30), 2)
    _text(image, f"{metres:g} m", (x0, y - 7), (30, 30, 30), 0.38)


# ------------------------------------------------------------------ cameras

_BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def box_corners_3d(centers: np.ndarray, sizes_wlh: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    """(N, 8, 3) corners: the four bottom corners (front-left first, counter-clockwise), then the top four."""
    ground = _corners_xy(centers[:, :2], sizes_wlh, yaws)
    bottom = centers[:, 2:3, None] - sizes_wlh[:, 2:3, None] / 2.0
    top = bottom + sizes_wlh[:, 2:3, None]
    low = np.concatenate([ground, np.broadcast_to(bottom, (len(centers), 4, 1))], -1)
    high = np.concatenate([ground, np.broadcast_to(top, (len(centers), 4, 1))], -1)
    return np.concatenate([low, high], axis=1)


def _project_segment(a: np.ndarray, b: np.ndarray, intrinsic: np.ndarray, near: float = 0.1):
    """Pixel end points of the 3D camera-frame segment a-b clipped to depth >= near, or None if all behind."""
    if a[2] < near and b[2] < near:
        return None
    if a[2] < near or b[2] < near:
        t = (near - a[2]) / (b[2] - a[2])
        clipped = a + t * (b - a)
        a, b = (clipped, b) if a[2] < near else (a, clipped)
    pa, pb = intrinsic @ a, intrinsic @ b
    return pa[:2] / pa[2], pb[:2] / pb[2]


def draw_camera(image: np.ndarray | None, camera: CameraCalibration, predictions: Predictions,
                reference: Predictions | None = None, score_threshold: float = SCORE_THRESHOLDS.publish,
                size: tuple[int, int] = (400, 225)) -> np.ndarray:
    """RGB uint8 camera view (`size` = width, height) with projected predicted and ground-truth 3D boxes."""
    width, height = size
    if image is None:
        panel = np.full((height, width, 3), 70, dtype=np.uint8)
        _text(panel, "no image", (width / 2 - 35, height / 2), (220, 220, 220), 0.5, outline=False)
    else:
        panel = cv2.resize(np.asarray(image, dtype=np.uint8), (width, height), interpolation=cv2.INTER_AREA)
    scale = np.diag([width / camera.width, height / camera.height, 1.0])
    intrinsic = scale @ camera.intrinsic
    to_camera = camera.sensor_to_ego.inverse()
    layers = []
    if reference is not None:
        layers.append((reference, None))
    layers.append((predictions.select(predictions.scores >= score_threshold), "class"))
    for boxes, color_mode in layers:
        if len(boxes) == 0:
            continue
        corners = to_camera.apply(box_corners_3d(boxes.centers, boxes.sizes_wlh, boxes.yaws).reshape(-1, 3))
        corners = corners.reshape(-1, 8, 3)
        for i in range(len(boxes)):
            color = (255, 255, 255) if color_mode is None else CLASS_COLORS[int(boxes.labels[i]) % len(CLASS_COLORS)]
            thickness = 1 if color_mode is None else 2
            for j, k in _BOX_EDGES:
                segment = _project_segment(corners[i, j], corners[i, k], intrinsic)
                if segment is None:
                    continue
                ok, p, q = cv2.clipLine((0, 0, width, height), tuple(int(v) for v in np.clip(segment[0], -1e5, 1e5)),
                                        tuple(int(v) for v in np.clip(segment[1], -1e5, 1e5)))
                if ok:
                    cv2.line(panel, p, q, color, thickness, cv2.LINE_AA)
    cv2.rectangle(panel, (0, 0), (8 * len(camera.name) + 8, 20), (30, 30, 30), -1)
    _text(panel, camera.name, (5, 14), (255, 255, 255), 0.4, outline=False)
    return panel


def render_sample(predictions: Predictions, rig: Rig, images: Mapping[str, np.ndarray | None] | None = None,
                  reference: Predictions | None = None, title: str = "", camera_size: tuple[int, int] = (480, 270),
                  score_threshold: float = SCORE_THRESHOLDS.publish) -> np.ndarray:
    """One figure: the six cameras (front row, back row) with projected boxes, then the BEV panel and its legend."""
    images = images or {}
    panels = [draw_camera(images.get(name), rig.cameras[name], predictions, reference, score_threshold, camera_size)
              for name in CAMERA_NAMES]
    cameras = np.concatenate([np.concatenate(panels[:3], axis=1), np.concatenate(panels[3:], axis=1)], axis=0)
    bev = render_bev(predictions, reference, width_px=cameras.shape[0], score_threshold=score_threshold, legend=False)
    bev = cv2.resize(bev, (bev.shape[1] * cameras.shape[0] // bev.shape[0], cameras.shape[0]))
    shown = predictions.labels[predictions.scores >= score_threshold]
    legend = render_legend(cameras.shape[0], shown.tolist(), reference is not None)
    body = np.concatenate([cameras, np.full((cameras.shape[0], 4, 3), 255, np.uint8), bev, legend], axis=1)
    header = np.full((26, body.shape[1], 3), 255, dtype=np.uint8)
    _text(header, title, (8, 18), (20, 20, 20), 0.5, outline=False)
    return np.concatenate([header, body], axis=0)


# ------------------------------------------------------------------ files

def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 image as PNG, atomically (zlib level 6: 5x faster than 9 for 3 % more bytes)."""
    bgr = cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError(f"could not encode a PNG for {path} from an image of shape {bgr.shape}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.tobytes())
    return Path(path)


def write_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 2.0, max_width: int | None = 960) -> Path:
    """Write RGB uint8 frames as a looping GIF (Pillow), atomically; frames wider than `max_width` are shrunk."""
    from PIL import Image

    if not frames:
        raise ValueError(f"no frames to write to {path}")
    pictures = []
    for frame in frames:
        frame = np.asarray(frame, dtype=np.uint8)
        if max_width and frame.shape[1] > max_width:
            frame = cv2.resize(frame, (max_width, frame.shape[0] * max_width // frame.shape[1]),
                               interpolation=cv2.INTER_AREA)
        pictures.append(Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE, colors=255))

    with atomic_path(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=int(round(1000.0 / fps)), loop=0, optimize=False)
    return Path(path)
