"""Map layers rasterised around a patch, as the nuScenes devkit's `NuScenesMap.get_map_mask` draws them.

The devkit (1.2, with the Shapely 2 it requires) fails on real maps: a lane divider that leaves and re-enters
the patch is clipped into a MultiLineString, which its `mask_for_lines` iterates directly (a TypeError under
Shapely 2), and a clip that also touches the border leaves a GeometryCollection it cannot draw either. Synthetic
maps, whose dividers are straight segments, never make one. This takes the devkit's own geometry
(`get_map_geom`: the layer's shapes clipped to the patch and turned by its angle) and draws every part of every
shape with the devkit's transform, rounding and line width, so single-part shapes give its masks bit for bit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Polygon, box

if TYPE_CHECKING:
    from nuscenes.map_expansion.map_api import NuScenesMap


@functools.lru_cache(maxsize=4)  # nuScenes has four maps (the devkit's own mask cache holds three)
def _prior_pixels(png: str, resolution: float) -> np.ndarray:
    from nuscenes.utils.map_mask import MapMask

    return MapMask(png, resolution).mask()


def on_semantic_prior(map_mask: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether global points (x, y) lie on the drivable area of a map record's `mask` (the devkit's MapMask), as
    its `is_on_mask` answers: the same pixel transform, in the same floating-point order, and rounding."""
    pixels = _prior_pixels(str(map_mask.img_file), float(map_mask.resolution))
    scale = 1.0 / map_mask.resolution
    px = np.round(np.asarray(x, dtype=float) * scale).astype(np.int64)
    py = np.round(np.asarray(y, dtype=float) * -scale + pixels.shape[0]).astype(np.int64)
    inside = (px >= 0) & (px < pixels.shape[1]) & (py >= 0) & (py < pixels.shape[0])
    on = np.zeros(px.shape, dtype=bool)
    on[inside] = pixels[py[inside], px[inside]] == map_mask.foreground
    return on


def map_layer_masks(nusc_map: NuScenesMap, patch_box: tuple[float, float, float, float], patch_angle_deg: float,
                    layers: list[str], canvas_size: tuple[int, int]) -> np.ndarray:
    """(len(layers), h, w) uint8 masks, the devkit's `get_map_mask(patch_box, patch_angle_deg, layers,
    canvas_size)`: patch_box = (x_center, y_center, height, width) in metres, canvas (h, w), row = local y."""
    _, _, patch_h, patch_w = patch_box
    canvas_h, canvas_w = canvas_size
    patch = box(-patch_w / 2.0, -patch_h / 2.0, patch_w / 2.0, patch_h / 2.0)
    out = np.zeros((len(layers), canvas_h, canvas_w), np.uint8)
    for layer, shapes in nusc_map.get_map_geom(patch_box, patch_angle_deg, layers):
        draw = _fill if layer in nusc_map.non_geometric_polygon_layers else _stroke
        for shape in shapes:
            clipped = shape.intersection(patch)
            if clipped.is_empty:
                continue
            moved = affinity.translate(clipped, patch_w / 2.0, patch_h / 2.0)
            scaled = affinity.scale(moved, xfact=canvas_w / patch_w, yfact=canvas_h / patch_h, origin=(0, 0))
            draw(list(_parts(scaled)), out[layers.index(layer)])
    return out


def _parts(shape) -> Iterator:
    """The single-part shapes in a shape, through multi-part shapes and collections at any depth."""
    for part in shapely.get_parts(shape):
        if part.geom_type.startswith("Multi") or part.geom_type == "GeometryCollection":
            yield from _parts(part)
        else:
            yield part


def _fill(parts: list, mask: np.ndarray) -> None:
    """A polygon layer's shape: its exteriors filled, then its holes cleared (lines and points of a clip that
    touches the border are not area)."""
    polygons = [part for part in parts if isinstance(part, Polygon)]
    if polygons:
        cv2.fillPoly(mask, [np.array(p.exterior.coords).round().astype(np.int32) for p in polygons], 1)
        holes = [np.array(ring.coords).round().astype(np.int32) for p in polygons for ring in p.interiors]
        if holes:
            cv2.fillPoly(mask, holes, 0)


def _stroke(parts: list, mask: np.ndarray) -> None:
    """A line layer's shape: each line 2 px wide, its vertices truncated to pixels."""
    for line in (part for part in parts if isinstance(part, LineString)):
        cv2.polylines(mask, [np.asarray(line.coords, np.int32).reshape(-1, 2)], False, 1, 2)
