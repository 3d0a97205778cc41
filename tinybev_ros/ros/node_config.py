"""Parameters of `tinybev_node`, with their defaults and descriptions in one place.

The node declares one ROS parameter per field (with the description), so `ros2 param describe` and
`config/tinybev.yaml` (loaded by the launch file and by `tinybev run`) both work on the same names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tinybev_ros.geometry import CAMERA_NAMES


def _p(default, description: str):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"description": description})
    return field(default=default, metadata={"description": description})


@dataclass
class PerceptionNodeConfig:
    checkpoint: str = _p("", "student checkpoint (.safetensors); empty: the checkpoint shipped with the package")
    device: str = _p("auto", "auto (cuda if available, else cpu), cpu, or cuda[:N]")
    precision: str = _p("auto", "auto (fp16 on cuda, fp32 on cpu), fp32, or fp16")
    score_threshold: float = _p(0.3, "detections below this score are not published")
    image_transport: str = _p("compressed", "compressed (sensor_msgs/CompressedImage) or raw (sensor_msgs/Image)")
    compressed_topic: str = _p("/{camera}/image_rect_compressed", "compressed image topic; {camera} = channel")
    raw_topic: str = _p("/{camera}/image_rect", "raw image topic used with image_transport=raw")
    camera_info_topic: str = _p("/{camera}/camera_info", "CameraInfo topic per camera")
    cameras: list[str] = _p(list(CAMERA_NAMES), "camera channels, in the model's order")
    base_frame: str = _p("base_link", "frame of all outputs (REP 105)")
    sync_tolerance_ms: float = _p(60.0, "max spread of the six camera stamps grouped into one frame")
    sync_queue_size: int = _p(4, "frames buffered per camera before the oldest is dropped")
    frame_queue_size: int = _p(1, "synchronized frames waiting for inference: 1 = latest wins (live); more = "
                                  "every frame in order while the backlog fits (bag replay for evaluation)")
    allow_missing_cameras: bool = _p(False, "when a camera is silent: false = wait, true = infer with it masked")
    missing_camera_timeout_ms: float = _p(300.0, "a camera is silent after this long without a frame")
    command: str = _p("goal", "planning command: left, right, straight, or goal (from goal_topic, else straight)")
    goal_topic: str = _p("/goal_pose", "geometry_msgs/PoseStamped goal (rviz2 2D Goal Pose)")
    goal_lateral_threshold_m: float = _p(5.0, "goal further than this to the side (in base_link) turns left/right")
    publish_images: bool = _p(False, "also publish the BEV rendering and camera overlays as sensor_msgs/Image")
    diagnostics_period_s: float = _p(1.0, "period of /diagnostics")
    tracker_max_age: int = _p(3, "frames a track survives without a matching detection")


def parameter_fields() -> list[tuple[str, object, str]]:
    """(name, default, description) of every parameter, in declaration order."""
    defaults = PerceptionNodeConfig()
    return [(f.name, getattr(defaults, f.name), f.metadata["description"]) for f in fields(PerceptionNodeConfig)]
