"""Camera images: textured ground by homography, sky, and shaded convex parts drawn far to near.

The ground is the plane z = 0, so one perspective warp of the BEV ground texture per camera paints it
(fine texture near, a blurred coarse one far away to avoid aliasing). Solids are drawn face by face
with back-face culling, clipping at the near plane and painter's order (objects far to near; within an
object its solid parts far to near, then surface details such as windows and lights); an object-id buffer
at quarter resolution, drawn in the same order, gives each annotation's visible fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tinybev_ros.geometry import CameraCalibration
from tinybev_ros.synth.shapes import TEMPLATES
from tinybev_ros.synth.solids import PartBatch
from tinybev_ros.synth.texture import GroundTexture

NEAR_M = 0.15
FAR_M = 220.0
FINE_GROUND_M = 40.0  # closer ground uses the full-resolution texture
ID_SCALE = 4  # the id buffer is 1/ID_SCALE of the image size
SHIFT = 4  # sub-pixel bits for OpenCV polygon filling


@dataclass
class Lighting:
    """Per-scene illumination: sun direction, ambient/diffuse split, sky, haze and white balance."""

    sun: np.ndarray  # unit vector towards the sun (global frame)
    ambient: float
    diffuse: float
    sky_top: np.ndarray  # BGR
    sky_horizon: np.ndarray
    haze: np.ndarray
    haze_m: float
    tint: np.ndarray  # per-channel gain (BGR)
    kind: str = "sunny"

    @staticmethod
    def random(rng: np.random.Generator) -> Lighting:
        kind = str(rng.choice(list(LIGHTING_PRESETS), p=[0.4, 0.3, 0.15, 0.15]))
        ambient, diffuse, (el0, el1), sky_top, sky_horizon, haze, (hz0, hz1), tint = LIGHTING_PRESETS[kind]
        azimuth = rng.uniform(-np.pi, np.pi)
        elevation = rng.uniform(el0, el1)
        sun = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
        exposure = rng.uniform(0.9, 1.1)
        return Lighting(sun, ambient, diffuse, np.array(sky_top, float), np.array(sky_horizon, float),
                        np.array(haze, float), rng.uniform(hz0, hz1), np.array(tint) * exposure, kind)


# kind -> ambient, diffuse, sun elevation range (rad), sky top, sky at the horizon, haze colour (BGR),
# haze distance range (m), white balance
LIGHTING_PRESETS = {
    "sunny": (0.55, 0.6, (0.6, 1.2), (200, 140, 90), (235, 215, 190), (220, 210, 200), (500, 900), (1.0, 1.0, 1.02)),
    "overcast": (0.8, 0.25, (0.8, 1.3), (185, 180, 175), (215, 212, 210), (200, 200, 200), (250, 450),
                 (1.0, 0.98, 0.95)),
    "evening": (0.45, 0.55, (0.12, 0.35), (150, 100, 80), (140, 170, 230), (150, 160, 190), (300, 600),
                (0.85, 0.92, 1.1)),
    "hazy": (0.7, 0.35, (0.5, 1.0), (190, 185, 170), (205, 210, 210), (195, 200, 205), (120, 220), (0.98, 1.0, 1.0)),
}


class CameraModel:
    """Per-camera constants: pixel rays, ground distance, sky image and haze weights (ego is level)."""

    def __init__(self, cam: CameraCalibration, lighting: Lighting) -> None:
        self.cam = cam
        h = cam.height
        dist, elevation = _pixel_geometry(cam)
        self.ground = dist < FAR_M
        rows = np.where(self.ground.any(axis=1))[0]
        self.ground_rows = (int(rows.min()), h) if len(rows) else (h, h)
        fine_rows = np.where((dist < FINE_GROUND_M).any(axis=1))[0]
        self.fine_row = int(fine_rows.min()) if len(fine_rows) else h
        a = np.clip(elevation / 0.6, 0.0, 1.0)[..., None]
        sky = lighting.sky_horizon.astype(np.float32) * (1 - a) + lighting.sky_top.astype(np.float32) * a
        haze_w = 1.0 - np.exp(-np.minimum(dist, 1e6) / np.float32(lighting.haze_m))
        haze_w = np.where(self.ground, haze_w, 1.0).astype(np.float32)
        self.haze_weight = haze_w
        self.keep_weight = (1.0 - haze_w).astype(np.float32)
        self.haze_image = np.where(self.ground[..., None], lighting.haze.astype(np.float32), sky).astype(np.uint8)
        self.lighting = lighting
        shade = lighting.ambient + lighting.diffuse * max(lighting.sun[2], 0.0)
        gain = np.clip(shade * lighting.tint, 0, 3)
        self.ground_lut = np.stack([np.clip(np.arange(256) * g, 0, 255) for g in gain], axis=-1)
        self.ground_lut = self.ground_lut.astype(np.uint8).reshape(256, 1, 3)


_GEOMETRY_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _pixel_geometry(cam: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Ground distance (inf above the horizon) and ray elevation of every pixel; cached per calibration."""
    key = (cam.name, cam.width, cam.height, cam.intrinsic.tobytes(), cam.sensor_to_ego.matrix.tobytes())
    if key not in _GEOMETRY_CACHE:
        u, v = np.meshgrid(np.arange(cam.width, dtype=np.float32) + 0.5, np.arange(cam.height, dtype=np.float32) + 0.5)
        k_inv = np.linalg.inv(cam.intrinsic).astype(np.float32)
        rot = cam.sensor_to_ego.rotation.astype(np.float32)
        m = rot @ k_inv  # pixel (u, v, 1) -> ego-frame ray
        rays = [m[i, 0] * u + m[i, 1] * v + m[i, 2] for i in range(3)]
        dz = rays[2]
        horiz = np.sqrt(rays[0] ** 2 + rays[1] ** 2)
        height = np.float32(cam.sensor_to_ego.translation[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(dz < -1e-6, height / -dz * horiz, np.float32(np.inf)).astype(np.float32)
        _GEOMETRY_CACHE[key] = (dist, np.arctan2(dz, horiz).astype(np.float32))
    return _GEOMETRY_CACHE[key]


def world_to_camera(cam: CameraCalibration, ego_xy: np.ndarray, ego_yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation mapping global points into the camera frame."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    r_ge = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    t_ge = np.array([ego_xy[0], ego_xy[1], 0.0])
    r_gc = r_ge @ cam.sensor_to_ego.rotation
    t_gc = r_ge @ cam.sensor_to_ego.translation + t_ge
    return r_gc.T, -r_gc.T @ t_gc


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against z >= NEAR_M for a convex polygon (K, 3) in camera coordinates."""
    inside = poly[:, 2] >= NEAR_M
    if inside.all():
        return poly
    if not inside.any():
        return poly[:0]
    out = []
    k = len(poly)
    for i in range(k):
        a, b = poly[i], poly[(i + 1) % k]
        ia, ib = a[2] >= NEAR_M, b[2] >= NEAR_M
        if ia:
            out.append(a)
        if ia != ib:
            f = (NEAR_M - a[2]) / (b[2] - a[2])
            out.append(a + f * (b - a))
    return np.array(out)


@dataclass
class RenderResult:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    ids: np.ndarray  # (H / ID_SCALE, W / ID_SCALE) int32: agent index + 1, 0 = none
    silhouettes: dict[int, int]  # agent -> pixels (id-buffer scale) it would cover alone


BOTTOM_FACE = {"box": 0, "cyl": 0}  # never seen on objects standing on the ground; inner faces on stacked parts


def _face_tables() -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Per template: vertex index arrays of its faces and the first three indices of each (for normals)."""
    out = {}
    for kind, (_, faces) in TEMPLATES.items():
        out[kind] = ([np.array(f) for f in faces], np.array([f[:3] for f in faces]))
    return out


FACES = _face_tables()


def render(model: CameraModel, texture: GroundTexture, batch: PartBatch, ego_xy: np.ndarray,
           ego_yaw: float, frame: int = 0, id_range_m: float = 80.0) -> RenderResult:
    """One camera image; scenery farther than `id_range_m` is left out of the id buffer (nothing to hide).

    `frame` picks the sensor-noise pattern, so consecutive frames do not share the same grain.
    """
    cam = model.cam
    w, h = cam.width, cam.height
    rot, trans = world_to_camera(cam, ego_xy, ego_yaw)
    img = _ground(model, texture, rot, trans)
    _cast_shadows(img, model, batch, rot, trans)
    ids = np.zeros((h // ID_SCALE, w // ID_SCALE), np.int32)
    light = model.lighting
    k_mat = cam.intrinsic
    kx, ky = k_mat[0, 0], k_mat[1, 1]
    half_w = max(k_mat[0, 2], w - k_mat[0, 2]) / kx
    half_h = max(k_mat[1, 2], h - k_mat[1, 2]) / ky
    # per kind: visible parts, their camera-frame vertices, pixels, facing faces and shaded colours
    prepared = []
    draw_dist, draw_kind, draw_part, draw_face, draw_anchor, draw_overlay = [], [], [], [], [], []
    for kind_index, (kind, g) in enumerate(batch.groups.items()):
        if not len(g):
            prepared.append(None)
            continue
        cc = g.centers @ rot.T + trans
        radius = np.linalg.norm(g.half, axis=1)
        dist = np.linalg.norm(cc, axis=1)
        z = cc[:, 2]
        margin = radius + 0.3
        ok = (z > -margin) & (dist < np.minimum(FAR_M + radius, g.detail_m))
        ok &= np.abs(cc[:, 0]) < half_w * np.maximum(z, 0) + margin * np.sqrt(1 + half_w**2)
        ok &= np.abs(cc[:, 1]) < half_h * np.maximum(z, 0) + margin * np.sqrt(1 + half_h**2)
        min_px = np.where(g.owner >= 0, 0.7, 2.0)  # scenery smaller than 2 pixels is not worth drawing
        ok &= radius * kx > min_px * np.maximum(dist - radius, NEAR_M)
        sel = np.where(ok)[0]
        if not len(sel):
            prepared.append(None)
            continue
        vc = g.verts[sel] @ rot.T + trans  # (m, V, 3)
        face_idx, tri_idx = FACES[kind]
        tri = vc[:, tri_idx]  # (m, F, 3, 3)
        e1, e2 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
        n_c = np.cross(e1, e2)
        facing = np.einsum("mfk,mfk->mf", n_c, tri[:, :, 0]) < 0
        n_g = n_c @ rot  # camera -> global for row vectors
        n_g /= np.maximum(np.linalg.norm(n_g, axis=-1, keepdims=True), 1e-12)
        lam = np.maximum(n_g @ light.sun, 0.0)
        gain = light.ambient * (0.875 + 0.125 * n_g[..., 2]) + light.diffuse * lam  # (m, F)
        haze_f = (1.0 - np.exp(-dist[sel] / light.haze_m))[:, None, None]
        colours = np.clip(g.colors[sel][:, None, :] * gain[..., None] * light.tint, 0, 255)
        colours = colours * (1 - haze_f) + light.haze * haze_f
        zv = vc[..., 2]
        front = zv >= NEAR_M
        proj = vc @ k_mat.T
        pix = proj[..., :2] / np.where(front, zv, 1.0)[..., None]
        pts = np.round(pix * (1 << SHIFT)).astype(np.int32)
        owner = g.owner[sel]
        front_face = np.stack([front[:, idx].all(axis=1) for idx in face_idx], axis=1).tolist()
        prepared.append((vc, front_face, pts, colours.tolist(), owner.tolist(), face_idx))
        if kind in BOTTOM_FACE:
            facing[:, BOTTOM_FACE[kind]] &= owner < 0
        mi, fi = np.nonzero(facing)
        anchor_dist = np.linalg.norm(g.anchor[sel] @ rot.T + trans, axis=1)
        draw_anchor.append(anchor_dist[mi])
        draw_overlay.append(g.overlay[sel][mi])
        draw_dist.append(dist[sel][mi])
        draw_kind.append(np.full(len(mi), kind_index))
        draw_part.append(mi)
        draw_face.append(fi)
    polys_by_owner: dict[int, list[np.ndarray]] = {}
    if draw_dist:
        dist_all = np.concatenate(draw_dist)
        # far objects first; within an object its solids far to near, then what lies on their surfaces
        order = np.lexsort((-dist_all, np.concatenate(draw_overlay), -np.concatenate(draw_anchor)))
        kinds_all = np.concatenate(draw_kind)[order]
        parts_all = np.concatenate(draw_part)[order]
        faces_all = np.concatenate(draw_face)[order]
        dist_sorted = dist_all[order]
        k_list = k_mat.T
        for kind_index, m, f, d in zip(kinds_all.tolist(), parts_all.tolist(), faces_all.tolist(),
                                       dist_sorted.tolist(), strict=True):
            vc, front_face, pts, colours, owner, face_idx = prepared[kind_index]
            fidx = face_idx[f]
            if front_face[m][f]:
                poly = pts[m, fidx]
            else:
                clipped = _clip_near(vc[m, fidx])
                if len(clipped) < 3:
                    continue
                pp = clipped @ k_list
                poly = np.round(pp[:, :2] / pp[:, 2:3] * (1 << SHIFT)).astype(np.int32)
            cv2.fillConvexPoly(img, poly, colours[m][f], cv2.LINE_AA, SHIFT)
            o = owner[m]
            if o >= 0 or d < id_range_m:
                small = poly >> 2  # ID_SCALE == 4
                cv2.fillConvexPoly(ids, small, o + 1, cv2.LINE_8, SHIFT)
                if o >= 0:
                    polys_by_owner.setdefault(o, []).append(small)
    silhouettes = {}
    for o, polys in polys_by_owner.items():
        mask = np.zeros_like(ids, dtype=np.uint8)
        for poly in polys:
            cv2.fillConvexPoly(mask, poly, 1, cv2.LINE_8, SHIFT)
        silhouettes[o] = int(np.count_nonzero(mask))
    return RenderResult(_sensor(img, frame), ids, silhouettes)


NOISE_SIGMA = 2.5  # grey levels of sensor grain
NOISE_MARGIN = 64
_NOISE: dict[tuple[int, int], np.ndarray] = {}


def _sensor(img: np.ndarray, frame: int) -> np.ndarray:
    """A lens is never perfectly sharp and a sensor never noise-free: slight blur, then grain."""
    h, w = img.shape[:2]
    if (h, w) not in _NOISE:
        rng = np.random.default_rng(h * 10007 + w)
        grain = rng.normal(128.0, NOISE_SIGMA, size=(h + NOISE_MARGIN, w + NOISE_MARGIN, 3))
        _NOISE[(h, w)] = np.clip(grain, 0, 255).astype(np.uint8)
    oy = (frame * 7919) % NOISE_MARGIN
    ox = (frame * 104729) % NOISE_MARGIN
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return cv2.addWeighted(img, 1.0, _NOISE[(h, w)][oy:oy + h, ox:ox + w], 1.0, -128.0)


SHADOW_RANGE_M = 70.0
MIN_SUN_ELEVATION = 0.3  # radians; keeps evening shadows from reaching across whole blocks
SHADOW_HEIGHT_CAP_M = 12.0  # tall buildings shade like 12 m ones, so streets are not uniformly dark


def _cast_shadows(img: np.ndarray, model: CameraModel, batch: PartBatch, rot: np.ndarray, trans: np.ndarray) -> None:
    """Darken the ground where parts block the sun: each box's shadow is the hull of its corners pushed
    along the sun direction onto z = 0 (shadowed ground keeps only the ambient light)."""
    light = model.lighting
    if light.diffuse < 0.3 or not len(batch):
        return
    centers, half, yaw, _, _ = batch.boxes()
    cam_pos = -rot.T @ trans
    near = np.where(np.linalg.norm(centers[:, :2] - cam_pos[:2], axis=1) - np.linalg.norm(half, axis=1)
                    < SHADOW_RANGE_M)[0]
    if not len(near):
        return
    sun = light.sun.copy()
    horiz = np.linalg.norm(sun[:2])
    if np.arctan2(sun[2], horiz) < MIN_SUN_ELEVATION:
        sun = np.array([sun[0] / horiz * np.cos(MIN_SUN_ELEVATION), sun[1] / horiz * np.cos(MIN_SUN_ELEVATION),
                        np.sin(MIN_SUN_ELEVATION)])
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = signs[None] * half[near][:, None, :]
    c, s = np.cos(yaw[near])[:, None], np.sin(yaw[near])[:, None]
    corners = np.stack([local[..., 0] * c - local[..., 1] * s, local[..., 0] * s + local[..., 1] * c,
                        local[..., 2]], axis=-1) + centers[near][:, None, :]
    ground = corners[..., :2] - sun[:2] * (np.clip(corners[..., 2:3], 0.0, SHADOW_HEIGHT_CAP_M) / sun[2])
    ground3 = np.concatenate([ground, np.zeros(ground.shape[:2] + (1,))], axis=-1) @ rot.T + trans  # camera frame
    z = ground3[..., 2]
    k_mat = model.cam.intrinsic
    h, w = img.shape[:2]
    front = (z >= NEAR_M).all(axis=1)
    proj = ground3 @ k_mat.T
    pix = proj[..., :2] / np.where(z >= NEAR_M, z, 1.0)[..., None]
    in_view = (pix[..., 0].max(axis=1) >= 0) & (pix[..., 0].min(axis=1) < w) & (pix[..., 1].max(axis=1) >= 0)
    mask = np.zeros((h, w), np.uint8)
    pts_all = np.round(pix * (1 << SHIFT)).astype(np.int32)
    drawn = False
    for i in np.where(front & in_view)[0]:
        # all corners in front of the camera: the image of the ground hull is the hull of the images
        cv2.fillConvexPoly(mask, cv2.convexHull(pts_all[i]), 255, cv2.LINE_8, SHIFT)
        drawn = True
    for i in np.where(~front & (z >= NEAR_M).any(axis=1))[0]:
        hull = cv2.convexHull(ground[i].astype(np.float32))[:, 0, :].astype(float)
        poly = _clip_near(np.concatenate([hull, np.zeros((len(hull), 1))], axis=1) @ rot.T + trans)
        if len(poly) < 3:
            continue
        pp = poly @ k_mat.T
        cv2.fillConvexPoly(mask, np.round(pp[:, :2] / pp[:, 2:3] * (1 << SHIFT)).astype(np.int32), 255,
                           cv2.LINE_8, SHIFT)
        drawn = True
    if not drawn:
        return
    lit = light.ambient + light.diffuse * max(light.sun[2], 0.0)
    cv2.copyTo(cv2.convertScaleAbs(img, alpha=light.ambient / lit), mask, img)


def _ground(model: CameraModel, texture: GroundTexture, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    cam = model.cam
    w = cam.width
    # homography ground (x, y, 1) -> image
    plane = np.stack([rot[:, 0], rot[:, 1], trans], axis=1)
    h_ground = cam.intrinsic @ plane
    img = model.haze_image.copy()
    r0, r1 = model.ground_rows
    if r0 >= r1:
        return img
    fine_row = max(model.fine_row, r0)
    for tex, coarse, a, b in ((texture.coarse, True, r0, fine_row), (texture.image, False, fine_row, r1)):
        if b <= a:
            continue
        shift = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -a], [0.0, 0.0, 1.0]])
        hom = shift @ h_ground @ texture.texture_to_world(coarse)
        band = cv2.warpPerspective(tex, hom, (w, b - a), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        img[a:b] = cv2.LUT(band, model.ground_lut)
    # haze and sky: blend towards the precomputed haze/sky image
    return cv2.blendLinear(img, model.haze_image, model.keep_weight, model.haze_weight)
