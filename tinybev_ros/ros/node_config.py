"""Parameters of `tinybev_node`, with their defaults, descriptions and valid values in one place.

The node declares one ROS parameter per field (with the description and, for numbers, the range in its
descriptor), so `ros2 param describe` and `config/tinybev.yaml` (loaded by the launch file and by `tinybev run`)
both work on the same names. `validate` checks every value at start-up, so a bad one stops the node with one
line naming it, instead of a crash on the first image or a node that runs and does nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from tinybev_ros.geometry import CAMERA_NAMES
from tinybev_ros.ros.interface import CAMERA_INFO, COMPRESSED_IMAGE, RAW_IMAGE
from tinybev_ros.score_thresholds import SCORE_THRESHOLDS


class NodeConfigError(ValueError):
    """A parameter value the node cannot work with."""


def _p(default, description: str, low: float | None = None, high: float | None = None,
       choices: tuple[str, ...] = (), dynamic: bool = False):
    metadata = {"description": description, "low": low, "high": high, "choices": choices, "dynamic": dynamic}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class PerceptionNodeConfig:
    checkpoint: str = _p("", "student checkpoint (.safetensors); empty: the checkpoint shipped with the package")
    device: str = _p("auto", "auto (cuda if available, else cpu), cpu, or cuda[:N]")
    precision: str = _p("auto", "auto (fp16 on cuda, bf16 on a cpu with native bf16, else fp32), fp32, fp16 or bf16",
                        choices=("auto", "fp32", "fp16", "bf16"))
    score_threshold: float = _p(SCORE_THRESHOLDS.publish, "detections below this score are not published", 0.0, 1.0,
                                dynamic=True)
    inference_threads: int = _p(0, "CPU threads of the network; 0 = all cores but one (the callbacks, the camera "
                                   "drivers and DDS need a core: on 2 cores this doubled the frames published)", 0, 256)
    jpeg_reduced_decode: bool = _p(True, "decode JPEGs at 1/2, 1/4 or 1/8 scale where the model input is that "
                                         "much smaller (libjpeg DCT scaling: several times faster)")
    executor: str = _p("single", "rclpy executor of the callbacks (inference has its own thread): single, or multi "
                                 "(2 threads; its Python spin loop took most of a core from inference: 8 of 60 frame "
                                 "sets published at 6 Hz on 2 cores, against 60 of 60 with single)",
                       choices=("single", "multi"))
    image_reliability: str = _p("best_effort", "QoS reliability of the image and camera_info subscriptions: "
                                               "best_effort (live: matches any camera driver; a late image is "
                                               "dropped, never waited for) or reliable (replay for evaluation: no "
                                               "image lost on a busy machine; matches reliable publishers only, as "
                                               "`bag play` is)",
                                choices=("best_effort", "reliable"))
    image_transport: str = _p("compressed", "compressed (sensor_msgs/CompressedImage) or raw (sensor_msgs/Image)",
                              choices=("compressed", "raw"))
    compressed_topic: str = _p(COMPRESSED_IMAGE, "compressed image topic (image_transport naming, relative: "
                                                 "remap or namespace it); {camera} = channel")
    raw_topic: str = _p(RAW_IMAGE, "raw image topic used with image_transport=raw")
    camera_info_topic: str = _p(CAMERA_INFO, "CameraInfo topic per camera")
    cameras: list[str] = _p(list(CAMERA_NAMES), "the 6 camera channels, in the model's order")
    base_frame: str = _p("base_link", "frame of all outputs (REP 105)")
    objects_frame: str = _p("", "frame of objects (PredictedObjects): empty = base_frame; map_frame for Autoware's "
                                "planners, which read objects in map (poses and predicted paths moved by the ego "
                                "pose at the frame's stamp; twists stay in each object's frame)")
    map_frame: str = _p("map", "fixed frame of the ego pose (map -> [odom ->] base_link in /tf): tracking, ego "
                               "speed, goals without a frame_id")
    tf_timeout_ms: float = _p(100.0, "how long a frame waits for its transforms at its stamp (map_frame -> "
                                     "base_frame, and a camera chain with a /tf edge) when /tf lags the cameras "
                                     "(tf2's lookup timeout); 0 = no wait. Frames not connected to the tree are not "
                                     "waited for", 0.0, 10000.0)
    sync_tolerance_ms: float = _p(60.0, "max spread of the six camera stamps grouped into one frame", 1.0, 1000.0)
    sync_queue_size: int = _p(16, "frames buffered per camera before the oldest is dropped", 1, 100)
    sync_warn_after_s: float = _p(2.0, "no synchronized camera set for this long: /diagnostics goes WARN saying "
                                       "why (no image at all, or which cameras are out of sync); the input and "
                                       "output rates read 0 once their newest event is this old", 0.1, 3600.0,
                                  dynamic=True)
    frame_queue_size: int = _p(1, "synchronized frames waiting for inference: 1 = latest wins (live); more = "
                                  "every frame in order while the backlog fits (bag replay for evaluation)", 1, 1000)
    allow_missing_cameras: bool = _p(False, "when a camera is silent: false = wait, true = infer with it masked")
    missing_camera_timeout_ms: float = _p(300.0, "a camera is silent after this long without a frame (or 1.5 of "
                                          "its frame periods, if longer)", 10.0, 60000.0)
    command: str = _p("goal", "planning command: left, right, straight, or goal (from goal_topic, else straight)",
                      choices=("goal", "left", "right", "straight"), dynamic=True)
    goal_topic: str = _p("/goal_pose", "geometry_msgs/PoseStamped goal (rviz2 2D Goal Pose)")
    goal_lateral_threshold_m: float = _p(5.0, "goal further than this to the side (in base_link) turns left/right",
                                         0.0, 1000.0, dynamic=True)
    publish_images: bool = _p(False, "also publish the BEV rendering and camera overlays as sensor_msgs/Image",
                              dynamic=True)
    diagnostics_period_s: float = _p(1.0, "period of /diagnostics", 0.05, 3600.0)
    tracker_max_age: int = _p(3, "frames a track survives without a matching detection", 0, 1000)

    def camera_topic(self, parameter: str, camera: str) -> str:
        """The topic a `{camera}` parameter makes for one camera. Only `{camera}` is ours: `{node}` and `{ns}`
        are rcl's substitutions, left for create_subscription to expand (str.format would raise on them)."""
        return getattr(self, parameter).replace("{camera}", camera)


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter as ROS declares it."""

    name: str
    default: object
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False  # `ros2 param set` applies it to the running node; the others are read-only


def parameter_specs() -> list[ParameterSpec]:
    """Every parameter, in declaration order."""
    defaults = PerceptionNodeConfig()
    return [ParameterSpec(f.name, getattr(defaults, f.name), f.metadata["description"], f.metadata["low"],
                          f.metadata["high"], f.metadata["choices"], f.metadata["dynamic"])
            for f in fields(PerceptionNodeConfig)]


def parameters_table() -> str:
    """The README's parameter table (test_launch checks the README holds exactly this)."""
    rows = ["| name | type | default | valid values | dynamic | description |", "|---|---|---|---|---|---|"]
    for spec in parameter_specs():
        kind = {bool: "bool", int: "int", float: "double", str: "string", list: "string[]"}[type(spec.default)]
        default = ("[" + ", ".join(spec.default) + "]" if isinstance(spec.default, list) and len(spec.default) < 3
                   else "6 nuScenes cameras" if isinstance(spec.default, list) else repr(spec.default)
                   if isinstance(spec.default, str) else str(spec.default).lower() if isinstance(spec.default, bool)
                   else repr(spec.default))
        valid = (f"[{spec.low:g}, {spec.high:g}]" if spec.low is not None else " \\| ".join(spec.choices)
                 or ("auto \\| cpu \\| cuda[:N]" if spec.name == "device" else ""))
        rows.append(f"| `{spec.name}` | {kind} | `{default}` | {valid} | {'yes' if spec.dynamic else 'no'} | "
                    f"{spec.description.replace('|', '/')} |")
    return "\n".join(rows)


def parameter_fields() -> list[tuple[str, object, str]]:
    """(name, default, description) of every parameter, in declaration order."""
    return [(spec.name, spec.default, spec.description) for spec in parameter_specs()]


DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def validate(cfg: PerceptionNodeConfig) -> None:
    """Raise NodeConfigError naming the first parameter whose value the node cannot work with."""
    for spec in parameter_specs():
        value = getattr(cfg, spec.name)
        if spec.low is not None and not spec.low <= value <= spec.high:
            raise NodeConfigError(f"parameter {spec.name} is {value}; it must lie in [{spec.low:g}, {spec.high:g}] "
                                  f"({spec.description})")
        if spec.choices and value not in spec.choices:
            raise NodeConfigError(f"parameter {spec.name} is {value!r}; choose one of {', '.join(spec.choices)}")
    if not DEVICE.match(cfg.device):
        raise NodeConfigError(f"parameter device is {cfg.device!r}; use auto, cpu, cuda or cuda:N")
    for name in ("compressed_topic", "raw_topic", "camera_info_topic"):
        if "{camera}" not in getattr(cfg, name):
            raise NodeConfigError(f"parameter {name} is {getattr(cfg, name)!r}; it must contain {{camera}}, which "
                                  "becomes each camera's name (one topic per camera)")
    if not cfg.cameras or len(set(cfg.cameras)) != len(cfg.cameras):
        raise NodeConfigError(f"parameter cameras is {cfg.cameras}; it must list each camera once")
    if len(cfg.cameras) != len(CAMERA_NAMES):  # else every frame would fail in the model, after a "ready"
        raise NodeConfigError(f"parameter cameras lists {len(cfg.cameras)} camera(s); the model takes "
                              f"{len(CAMERA_NAMES)}, in the order {', '.join(CAMERA_NAMES)} (a rig with other "
                              "names lists its own in that order)")
    check_topic_names(cfg)
    if not cfg.base_frame:
        raise NodeConfigError("parameter base_frame is empty; outputs need a frame (base_link, REP 105)")


def check_topic_names(cfg: PerceptionNodeConfig) -> None:
    """Every input topic the parameters make is a valid ROS name (else create_subscription fails after the model
    has loaded, with a traceback)."""
    from tinybev_ros.ros.topic_name import topic_name_problem

    names = {name: [cfg.camera_topic(name, camera) for camera in cfg.cameras]
             for name in ("compressed_topic", "raw_topic", "camera_info_topic")}
    names["goal_topic"] = [cfg.goal_topic]
    for parameter, topics in names.items():
        for topic in topics:
            if (reason := topic_name_problem(topic)) is not None:
                raise NodeConfigError(f"parameter {parameter} makes the topic {topic!r}, not a valid ROS name: "
                                      f"{reason}")
