"""`tinybev synth-render`: one sample of a nuScenes-format dataroot as a picture.

Six cameras (nuScenes layout: front row, back row) with the annotation boxes projected by the devkit,
beside a bird's-eye view of the map layers, the LiDAR sweep and the boxes around the ego. Everything is
read back through nuscenes-devkit, so the picture shows what any devkit user gets.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import BoxVisibility

from tinybev_ros.geometry import CAMERA_NAMES, LIDAR_NAME, quat_to_yaw
from tinybev_ros.map_masks import map_layer_masks
from tinybev_ros.nuscenes_dataset import (
    data_path,
    ego_pose,
    load_map_expansion,
    open_nuscenes,
    sample_data,
    sensor_to_ego,
)
from tinybev_ros.paths import check_output_file
from tinybev_ros.taxonomy import CATEGORY_TO_DETECTION, DETECTION_CLASSES
from tinybev_ros.visualization import write_png

log = logging.getLogger(__name__)

# BGR per detection class
CLASS_COLOURS = {
    "car": (255, 158, 0), "truck": (0, 99, 255), "bus": (80, 127, 255), "trailer": (0, 140, 255),
    "construction_vehicle": (0, 215, 255), "pedestrian": (230, 0, 0), "motorcycle": (255, 61, 99),
    "bicycle": (160, 60, 220), "traffic_cone": (0, 255, 255), "barrier": (112, 112, 112),
}
MAP_COLOURS = {"drivable_area": (90, 90, 90), "walkway": (80, 130, 80), "ped_crossing": (150, 120, 200),
               "lane_divider": (230, 230, 230)}
assert set(CLASS_COLOURS) == set(DETECTION_CLASSES)


def _colour(category: str) -> tuple[int, int, int]:
    return CLASS_COLOURS.get(CATEGORY_TO_DETECTION.get(category, ""), (200, 200, 200))


def camera_panel(nusc: NuScenes, sample: dict, channel: str, width: int) -> np.ndarray:
    path, boxes, k_mat = nusc.get_sample_data(sample["data"][channel], box_vis_level=BoxVisibility.ANY)
    img = cv2.imread(path)
    if img is None:
        raise FileNotFoundError(f"synth-render: cannot read image {path}")
    for box in boxes:
        if box.corners()[2].min() < 0.5:
            continue
        c = _colour(nusc.get("sample_annotation", box.token)["category_name"])
        box.render_cv2(img, view=k_mat, normalize=True, colors=(c[::-1], c[::-1], c[::-1]), linewidth=3)
    scale = width / img.shape[1]
    img = cv2.resize(img, (width, int(round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    cv2.putText(img, channel, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def bev_panel(nusc: NuScenes, sample: dict, size: int, extent_m: float = 100.0) -> np.ndarray:
    """Ego-centred top view, forward up: map layers, LiDAR points and annotation boxes."""
    res = extent_m / size
    lidar_sd = sample_data(nusc, sample, LIDAR_NAME)
    ego_to_global = ego_pose(nusc, lidar_sd)
    global_to_ego = ego_to_global.inverse()
    img = np.full((size, size, 3), 35, np.uint8)
    # map layers: rasterise the devkit's map geometry in the ego frame (plain nuScenes lacks the expansion)
    scene = nusc.get("scene", sample["scene_token"])
    location = nusc.get("log", scene["log_token"])["location"]
    yaw = quat_to_yaw(ego_to_global.quat_wxyz)
    title = "BEV 100 m"
    if (Path(nusc.dataroot) / "maps" / "expansion" / f"{location}.json").is_file():
        nmap = load_map_expansion(nusc.dataroot, location)
        x, y = ego_to_global.translation[:2]
        layers = list(MAP_COLOURS)
        masks = map_layer_masks(nmap, (x, y, extent_m, extent_m), float(np.degrees(yaw)), layers, (size, size))
        for name, mask in zip(layers, masks, strict=True):
            # the devkit's patch has x (ego forward) along columns and y (left) up the rows, flipped vertically
            ego_up = np.rot90(mask[::-1], k=1)
            img[ego_up > 0] = MAP_COLOURS[name]
    else:
        title += " (no map expansion)"

    def to_px(p: np.ndarray) -> np.ndarray:
        return np.stack([size / 2 - p[:, 1] / res, size / 2 - p[:, 0] / res], axis=1)

    pc = LidarPointCloud.from_file(str(data_path(nusc, lidar_sd)))
    pts = sensor_to_ego(nusc, lidar_sd).apply(pc.points[:3].T)
    pts = pts[pts[:, 2] > 0.3]  # above the ground: objects and buildings
    px = np.round(to_px(pts)).astype(int)
    ok = (px[:, 0] >= 0) & (px[:, 0] < size) & (px[:, 1] >= 0) & (px[:, 1] < size)
    img[px[ok, 1], px[ok, 0]] = (200, 200, 120)
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        box_yaw = quat_to_yaw(ann["rotation"]) - yaw
        centre = global_to_ego.apply(np.array(ann["translation"]))
        w, length = ann["size"][0], ann["size"][1]
        c, s = np.cos(box_yaw), np.sin(box_yaw)
        local = np.array([[length / 2, w / 2], [length / 2, -w / 2], [-length / 2, -w / 2], [-length / 2, w / 2]])
        corners = local @ np.array([[c, s], [-s, c]]) + centre[:2]
        poly = np.round(to_px(corners) * 16).astype(np.int32)
        colour = _colour(ann["category_name"])
        cv2.polylines(img, [poly], True, colour, 2, cv2.LINE_AA, 4)
        front = np.round(to_px(((corners[0] + corners[1]) / 2)[None]) * 16).astype(np.int32)
        centre_px = np.round(to_px(centre[None, :2]) * 16).astype(np.int32)
        cv2.line(img, tuple(centre_px[0]), tuple(front[0]), colour, 1, cv2.LINE_AA, 4)
    ego = np.array([[3.0, 0.9], [3.0, -0.9], [-1.1, -0.9], [-1.1, 0.9]])
    cv2.fillPoly(img, [np.round(to_px(ego)).astype(np.int32)], (255, 255, 255))
    cv2.putText(img, title, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def render_sample(nusc: NuScenes, sample_token: str, camera_width: int = 480) -> np.ndarray:
    sample = nusc.get("sample", sample_token)
    cams = [camera_panel(nusc, sample, ch, camera_width) for ch in CAMERA_NAMES]
    grid = np.vstack([np.hstack(cams[:3]), np.hstack(cams[3:])])
    bev = bev_panel(nusc, sample, grid.shape[0])
    return np.hstack([grid, bev])


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", required=True, help="nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-mini", help="table folder, e.g. v1.0-mini")
    parser.add_argument("--scene", default=None, help="scene name (default: the first scene)")
    parser.add_argument("--index", type=int, default=4, help="keyframe index within the scene")
    parser.add_argument("--sample", default=None, help="sample token (overrides --scene/--index)")
    parser.add_argument("--camera-width", type=int, default=480, help="width of each camera tile in pixels")
    parser.add_argument("--out", required=True, help="PNG file to write")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_output_file(args.out)
    if args.index < 0 or args.camera_width < 16:
        log.error("synth-render: --index must be 0 or more and --camera-width 16 or more (got %d and %d)",
                  args.index, args.camera_width)
        return 2
    if not (Path(args.dataroot) / args.version).is_dir():
        log.error("synth-render: no table folder %s in dataroot %s", args.version, args.dataroot)
        return 2
    nusc = open_nuscenes(args.dataroot, args.version)
    token = args.sample
    if token is None:
        scenes = [s for s in nusc.scene if args.scene in (None, s["name"])]
        if not scenes:
            log.error("synth-render: no scene named %r in %s", args.scene, args.dataroot)
            return 2
        token = scenes[0]["first_sample_token"]
        for step in range(args.index):
            token = nusc.get("sample", token)["next"]
            if not token:
                log.error("synth-render: scene %s has %d keyframes; --index %d is beyond its last",
                          scenes[0]["name"], step + 1, args.index)
                return 2
    elif token not in {sample["token"] for sample in nusc.sample}:
        log.error("synth-render: no sample %r in %s", token, args.dataroot)
        return 2
    picture = render_sample(nusc, token, args.camera_width)
    out = write_png(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB), args.out)
    log.info("synth-render: wrote %s (%dx%d)", out, picture.shape[1], picture.shape[0])
    return 0
