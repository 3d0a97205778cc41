"""The ground as seen from above: asphalt, markings, crossings, sidewalks and land, as one BEV image.

Cameras see the flat ground through a homography of this image (fast: one warp per camera); the LiDAR
reads its intensity from the same image, so painted markings are bright in both sensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tinybev_ros.synth.world import STALL_D, STALL_W, Rect, World, carpark_stalls, road_segment_rects, sidewalk_rects

RESOLUTION_M = 0.1


@dataclass
class GroundTexture:
    image: np.ndarray  # (H, W, 3) uint8 BGR; row v covers y in [v*res, (v+1)*res), column u covers x
    coarse: np.ndarray  # the same, blurred and 4x smaller, for far-away ground (no aliasing)
    resolution: float = RESOLUTION_M

    def texture_to_world(self, coarse: bool = False) -> np.ndarray:
        """3x3 map from texture pixel (u, v, 1) to global ground point (x, y, 1)."""
        res = self.resolution * (4.0 if coarse else 1.0)
        return np.array([[res, 0.0, 0.0], [0.0, res, 0.0], [0.0, 0.0, 1.0]])

    def intensity(self, xy: np.ndarray) -> np.ndarray:
        """LiDAR reflectivity (0..1) of the ground at global points (N, 2): markings are retro-reflective."""
        u = np.clip((xy[:, 0] / self.resolution).astype(np.int64), 0, self.image.shape[1] - 1)
        v = np.clip((xy[:, 1] / self.resolution).astype(np.int64), 0, self.image.shape[0] - 1)
        px = self.image[v, u].astype(np.float32).mean(axis=1) / 255.0
        return np.where(px > 0.6, 0.9, 0.08 + 0.25 * px)


def _px(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) / RESOLUTION_M).astype(np.int32)


def _fill_rect(img: np.ndarray, rect: Rect, colour) -> None:
    cv2.fillPoly(img, [_px(rect.corners())], colour)


def _noise(shape: tuple[int, int], rng: np.random.Generator, cell: int, amp: float) -> np.ndarray:
    small = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2)).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) * amp


def _dashed(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float, colour, dash: float, gap: float) -> None:
    d = p1 - p0
    length = float(np.linalg.norm(d))
    if length < 1e-6:
        return
    d = d / length
    s = 0.0
    while s < length:
        e = min(s + dash, length)
        _line(img, p0 + d * s, p0 + d * e, width, colour)
        s += dash + gap


def _line(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float, colour) -> None:
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9) * width / 2
    cv2.fillPoly(img, [_px(np.array([p0 + n, p1 + n, p1 - n, p0 - n]))], colour)


def paint_ground(world: World, seed: int) -> GroundTexture:
    rng = np.random.default_rng(seed)
    cfg = world.config
    h = int(np.ceil(world.extent.y1 / RESOLUTION_M))
    w = int(np.ceil(world.extent.x1 / RESOLUTION_M))
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (70, 105, 95)
    # land inside blocks: grass, gravel or paving
    for block in world.blocks:
        colour = [(60, 110, 70), (95, 120, 130), (140, 145, 150), (70, 100, 85)][rng.integers(4)]
        _fill_rect(img, block, colour)
    # sidewalks with paving seams (every 1.5 m), and curbs
    for rect in sidewalk_rects(world):
        _fill_rect(img, rect, (165, 170, 172))
        x0, y0, x1, y1 = (int(round(v / RESOLUTION_M)) for v in (rect.x0, rect.y0, rect.x1, rect.y1))
        region = img[max(y0, 0):y1, max(x0, 0):x1]
        region[::15] = (140, 145, 148)
        region[:, ::15] = (140, 145, 148)
    curb = 0.25
    road_mask = np.zeros((h, w), np.uint8)
    for rect, _, _ in road_segment_rects(world):
        _fill_rect(img, Rect(rect.x0 - curb, rect.y0 - curb, rect.x1 + curb, rect.y1 + curb), (190, 192, 195))
        _fill_rect(road_mask, rect, 255)
    # asphalt: a base tone with large blotches and fine grain (noise made small, then enlarged once)
    asphalt = float(rng.uniform(70, 95))
    small = (h // 4 + 1, w // 4 + 1)
    tone = asphalt + _noise(small, rng, 10, 6.0) + 3.0 * rng.standard_normal(small).astype(np.float32)
    tone = cv2.resize(np.clip(tone, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    road = cv2.merge([cv2.add(tone, 2), tone, cv2.subtract(tone, 2)])
    cv2.copyTo(road, road_mask, img)
    white = (225, 228, 230)
    # car parks: asphalt with stall lines
    for rect, side, _ in world.carparks:
        _fill_rect(img, rect, (int(asphalt) + 6,) * 3)
        for centre, heading in carpark_stalls(rect, side):
            d = np.array([np.cos(heading), np.sin(heading)])
            n = np.array([-d[1], d[0]])
            for sgn in (-1, 1):
                p0 = centre + n * sgn * STALL_W / 2 - d * STALL_D / 2
                _line(img, p0, p0 + d * STALL_D, 0.12, white)
    yellow = (40, 190, 230) if not world.left_hand else white
    # markings along every road piece between intersections
    for road_obj in world.roads:
        cross = world.xs if road_obj.axis == 0 else world.ys
        along = np.array([1.0, 0.0]) if road_obj.axis == 0 else np.array([0.0, 1.0])
        normal = np.array([-along[1], along[0]])
        base = np.array([0.0, road_obj.coord]) if road_obj.axis == 0 else np.array([road_obj.coord, 0.0])
        for k in range(len(cross) - 1):
            a, b = world.roads[cross[k]], world.roads[cross[k + 1]]
            s0 = a.coord + a.half_width + cfg.crossing_m
            s1 = b.coord - b.half_width - cfg.crossing_m
            p0, p1 = base + along * s0, base + along * s1
            # centre: double line (road divider)
            for off in (-0.15, 0.15):
                _line(img, p0 + normal * off, p1 + normal * off, 0.12, yellow)
            for sigma in (1.0, -1.0):
                for li in range(1, road_obj.lanes_per_dir):
                    off = sigma * li * cfg.lane_width_m
                    _dashed(img, p0 + normal * off, p1 + normal * off, 0.15, white, 3.0, 6.0)
                edge = sigma * road_obj.lanes_per_dir * cfg.lane_width_m
                _line(img, p0 + normal * edge, p1 + normal * edge, 0.15, white)
                # stop line across the incoming half, at the lane end before the crossing
                incoming_end = p1 if sigma == (1.0 if world.left_hand else -1.0) else p0
                step_in = -along if incoming_end is p1 else along
                q0 = incoming_end + step_in * 0.3
                _line(img, q0 + normal * sigma * 0.3, q0 + normal * edge, 0.4, white)
    # zebra crossings
    for crossing in world.crossings:
        r = crossing.rect
        horizontal_road = world.roads[crossing.road].axis == 0  # stripes run along the traffic
        if horizontal_road:
            y = r.y0 + 0.3
            while y < r.y1 - 0.3:
                _fill_rect(img, Rect(r.x0 + 0.3, y, r.x1 - 0.3, y + 0.5), white)
                y += 1.0
        else:
            x = r.x0 + 0.3
            while x < r.x1 - 0.3:
                _fill_rect(img, Rect(x, r.y0 + 0.3, x + 0.5, r.y1 - 0.3), white)
                x += 1.0
    coarse = cv2.resize(cv2.GaussianBlur(img, (0, 0), 1.5), (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    return GroundTexture(img, coarse)
