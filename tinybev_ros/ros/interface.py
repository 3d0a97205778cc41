"""The ROS interface of tinybev_node in one place: where the cameras are, how the node reaches them, what it
publishes.

Inputs follow image_transport's naming: `/<camera>/image_rect` (sensor_msgs/Image),
`/<camera>/image_rect/compressed` (sensor_msgs/CompressedImage), `/<camera>/camera_info`, one camera per
nuScenes channel name. The node subscribes to them by relative names (`<camera>/image_rect/compressed`, its
`compressed_topic` parameter), so pushing it into a namespace moves its inputs with it; `input_remaps` connects
the node in its namespace (/tinybev by default) to the cameras at the root (or, for a launch pushed into a
namespace, under that namespace), and the launch file and `tinybev run` both apply it, with the cameras and topic
patterns of their params file. Outputs are relative too (`detections`
-> /tinybev/detections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinybev_ros.taxonomy import MAP_CLASSES

if TYPE_CHECKING:
    from tinybev_ros.ros.node_config import PerceptionNodeConfig

NAMESPACE = "/tinybev"
# the node's relative input names (its default parameters); {camera} = the nuScenes channel name
RAW_IMAGE = "{camera}/image_rect"
COMPRESSED_IMAGE = "{camera}/image_rect/compressed"
CAMERA_INFO = "{camera}/camera_info"
OUTPUT_TOPICS = ("detections", "objects", "ego_trajectory", "occupancy", "markers", "predicted_paths",
                 *(f"map/{layer}" for layer in MAP_CLASSES))


def image_topic(camera: str, raw: bool = False) -> str:
    """Where a camera (or a converted bag) publishes its images."""
    return "/" + (RAW_IMAGE if raw else COMPRESSED_IMAGE).format(camera=camera)


def camera_info_topic(camera: str) -> str:
    return "/" + CAMERA_INFO.format(camera=camera)


def _root_prefix(root: str) -> str:
    return "/" + root.strip("/") + "/" if root.strip("/") else "/"


def input_topic(config: PerceptionNodeConfig, parameter: str, camera: str, root: str = "/") -> str | None:
    """The absolute topic a camera input parameter (`raw_topic`, `compressed_topic`, `camera_info_topic`) has the
    node read once `input_remaps` applies: a relative name under `root`, an absolute one as it is; None for a
    private (`~`) name or one holding rcl's substitutions, which only the running node resolves."""
    name = config.camera_topic(parameter, camera)
    if name.startswith("~") or "{" in name:
        return None
    return name if name.startswith("/") else _root_prefix(root) + name


def input_remaps(config: PerceptionNodeConfig, root: str = "/") -> list[tuple[str, str]]:
    """(relative name in the node, absolute topic) for every camera input the node's parameters make (its cameras
    and topic patterns; params_file.node_inputs reads them from a params file): the cameras under `root` (the
    namespace the launch was pushed into; the node sits in `tinybev` below it). Names that are absolute, private
    (`~`) or hold rcl's substitutions are the user's own and left alone."""
    pairs = [(config.camera_topic(parameter, camera), input_topic(config, parameter, camera, root))
             for camera in config.cameras for parameter in ("raw_topic", "compressed_topic", "camera_info_topic")]
    return [(name, topic) for name, topic in pairs if topic is not None and not name.startswith("/")]


def remap_arguments(config: PerceptionNodeConfig, root: str = "/") -> list[str]:
    """`input_remaps` as command-line rules: ["-r", "from:=to", ...] (after --ros-args)."""
    return [arg for source, target in input_remaps(config, root) for arg in ("-r", f"{source}:={target}")]


def output_topic(name: str, namespace: str = NAMESPACE) -> str:
    return f"{namespace.rstrip('/')}/{name}"
