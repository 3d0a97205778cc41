"""The launch file and the node's params file: valid, consistent with the node, and buildable by launch_ros."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from tinybev_ros.geometry import CAMERA_NAMES
from tinybev_ros.ros.interface import image_topic
from tinybev_ros.ros.launch_plan import LaunchPlanError, plan_launch
from tinybev_ros.ros.node_config import parameter_fields, parameter_specs, parameters_table

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch" / "tinybev.launch.py"


def test_params_file_matches_the_node_parameters():
    raw = yaml.safe_load((REPO / "config" / "tinybev.yaml").read_text())
    params = raw["/**/tinybev_node"]["ros__parameters"]
    defaults = {name: default for name, default, _ in parameter_fields()}
    assert params == defaults  # same names, same defaults: the YAML cannot drift from the code
    lines = (REPO / "config" / "tinybev.yaml").read_text().splitlines()
    for spec in parameter_specs():  # and each is explained by the description `ros2 param describe` gives
        (at,) = [i for i, line in enumerate(lines) if line.strip().startswith(f"{spec.name}:")]
        assert lines[at - 1].strip() == f"# {spec.description}", spec.name


def test_readme_parameter_table_is_the_one_the_code_declares():
    assert parameters_table() in (REPO / "README.md").read_text()


def test_launch_file_is_valid_python_naming_real_executables_and_files():
    tree = ast.parse(LAUNCH.read_text())
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    setup = (REPO / "setup.py").read_text()
    assert "tinybev_node" in strings and "tinybev_node = tinybev_ros.ros.node_main:main" in setup
    assert callable(importlib.import_module("tinybev_ros.ros.node_main").main)
    assert {"tinybev.yaml", "tinybev.rviz"} <= strings
    assert (REPO / "config" / "tinybev.yaml").exists() and (REPO / "config" / "tinybev.rviz").exists()
    for argument in ("checkpoint", "use_sim_time", "rviz", "bag", "params_file"):
        assert argument in strings


def _plan(arguments: dict, environ: dict | None = None, rviz2: bool = True, ros2_bag: bool = True,
          namespace: str = ""):
    return plan_launch(arguments, environ or {}, "/share/fastdds.xml",
                       which=lambda name: f"/usr/bin/{name}" if rviz2 else None, ros2_bag_available=lambda: ros2_bag,
                       namespace=namespace)


def test_only_the_arguments_given_override_the_params_file():
    assert _plan({"checkpoint": "", "device": "", "publish_images": "", "use_sim_time": ""}).overrides == {}
    plan = _plan({"device": "cpu", "publish_images": "true", "use_sim_time": "False"})
    assert plan.overrides == {"device": "cpu", "publish_images": True, "use_sim_time": False}
    with pytest.raises(LaunchPlanError, match="publish_images:='maybe' is not a boolean"):
        _plan({"publish_images": "maybe"})


def test_a_users_dds_profile_is_kept():
    assert _plan({}).environment == {"FASTDDS_DEFAULT_PROFILES_FILE": "/share/fastdds.xml"}
    assert _plan({}, {"FASTDDS_DEFAULT_PROFILES_FILE": "/home/me/dds.xml"}).environment == {}


def camera_bag(path: Path, cameras: tuple[str, ...] = CAMERA_NAMES, raw: bool = False, clock: bool = False,
               topic: str | None = None) -> Path:
    """A real rosbag2 bag with one image of each of `cameras` (what the launch reads of a bag: its topics) on the
    default topics or on `topic` ({camera} replaced), and a /clock message when asked (as `bag convert` writes)."""
    from rosbags.rosbag2 import Writer

    from tinybev_ros.ros.bag.typestore import typestore

    store = typestore()
    kind = "sensor_msgs/msg/Image" if raw else "sensor_msgs/msg/CompressedImage"
    message = store.types[kind]
    header = store.types["std_msgs/msg/Header"](stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                                 frame_id="cam")
    data = np.zeros(12 if raw else 4, dtype=np.uint8)
    payload = (message(header=header, height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=data) if raw
               else message(header=header, format="jpeg", data=data))
    with Writer(path, version=8) as writer:
        for camera in cameras:
            name = image_topic(camera, raw) if topic is None else topic.format(camera=camera)
            connection = writer.add_connection(name, kind, typestore=store)
            writer.write(connection, 1_000_000_000, store.serialize_cdr(payload, kind))
        if clock:
            kind = "rosgraph_msgs/msg/Clock"
            connection = writer.add_connection("/clock", kind, typestore=store)
            writer.write(connection, 1_000_000_000, store.serialize_cdr(store.types[kind](clock=header.stamp), kind))
    return path


def test_missing_tools_and_paths_fail_before_anything_starts_and_odd_paths_pass_intact(tmp_path):
    quoted = camera_bag(tmp_path / "it's a \"bag\"")
    with pytest.raises(LaunchPlanError, match="rviz2 is not installed.*nothing was started"):
        _plan({"rviz": "true"}, rviz2=False)
    with pytest.raises(LaunchPlanError, match="needs `ros2 bag`.*nothing was started"):
        _plan({"bag": str(quoted)}, ros2_bag=False)
    with pytest.raises(LaunchPlanError, match="bag:=.*no_bag does not exist; nothing was started"):
        _plan({"bag": str(tmp_path / "no_bag")})
    with pytest.raises(LaunchPlanError, match="params_file:=.*mine.yml is not a file; nothing was started"):
        _plan({"params_file": str(tmp_path / "mine.yml")})
    assert _plan({"params_file": str(REPO / "config" / "tinybev.yaml")}).overrides == {}
    played = _plan({"bag": str(quoted)})  # paused until the node's readers have matched the player's writers
    assert played.bag_command == ["ros2", "bag", "play", str(quoted), "--start-paused", "--clock"]
    assert played.resume_command == ["ros2", "service", "call", "/rosbag2_player/resume",
                                     "rosbag2_interfaces/srv/Resume"]
    # the node is told what the bag holds (a params file saying otherwise would leave the player paused for ever)
    # and follows its clock unless told not to; a bag it could never be resumed for is refused
    assert played.overrides == {"image_transport": "compressed", "use_sim_time": True}
    raw = camera_bag(tmp_path / "raw", raw=True)
    assert _plan({"bag": str(raw)}).overrides == {"image_transport": "raw", "use_sim_time": True}
    assert _plan({"bag": str(raw), "use_sim_time": "false"}).overrides == {"image_transport": "raw",
                                                                           "use_sim_time": False}
    with pytest.raises(LaunchPlanError, match="has no images of camera\\(s\\) CAM_BACK .*nothing was started"):
        _plan({"bag": str(camera_bag(tmp_path / "five", tuple(c for c in CAMERA_NAMES if c != "CAM_BACK")))})
    (tmp_path / "folder").mkdir()
    with pytest.raises(LaunchPlanError, match="folder is not a rosbag2 bag.*nothing was started"):
        _plan({"bag": str(tmp_path / "folder")})
    assert _plan({"bag": ""}).bag_command is None and not _plan({"rviz": "false"}).rviz


def test_a_bag_with_its_own_clock_is_played_without_a_second_one(tmp_path):
    """Humble's `ros2 bag play --clock` published the bag's /clock as well as its own (ros2/rosbag2#1645)."""
    bag = camera_bag(tmp_path / "converted", clock=True)
    assert _plan({"bag": str(bag)}).bag_command == ["ros2", "bag", "play", str(bag), "--start-paused"]


def params_file(path: Path, sections: dict[str, dict]) -> Path:
    path.write_text(yaml.safe_dump({key: {"ros__parameters": values} for key, values in sections.items()}))
    return path


def test_the_node_inputs_are_remapped_from_the_params_files_cameras_and_topics(tmp_path):
    """The remaps were made from the default camera names, so a rig named otherwise was never connected."""
    rig = [f"cam{k}" for k in range(6)]
    mine = params_file(tmp_path / "mine.yaml", {
        "/**": {"cameras": rig, "device": "cpu"},
        "/tinybev/tinybev_node": {"compressed_topic": "{camera}/jpeg", "camera_info_topic": "/calib/{camera}"},
        "/other/tinybev_node": {"cameras": ["elsewhere"] * 6},  # another node's: not ours
        "tinybev_node": {"raw_topic": "root_only/{camera}"},  # rcl reads it as /tinybev_node: not ours either
    })
    remaps = dict(_plan({"params_file": str(mine)}).remaps)
    assert remaps["cam0/jpeg"] == "/cam0/jpeg" and remaps["cam5/image_rect"] == "/cam5/image_rect"
    assert not [name for name in remaps if "CAM_" in name or "calib" in name or "root_only" in name]  # absolute: left
    assert len(remaps) == 12
    defaults = dict(_plan({"params_file": str(REPO / "config" / "tinybev.yaml")}).remaps)
    assert defaults == dict(_plan({}).remaps) and len(defaults) == 18
    assert defaults["CAM_FRONT/image_rect/compressed"] == "/CAM_FRONT/image_rect/compressed"
    broken = tmp_path / "broken.yaml"  # the node names what is wrong with it; the plan keeps the defaults
    broken.write_text("/**: {ros__parameters: {cameras: [1, 2]}}\n")
    assert dict(_plan({"params_file": str(broken)}).remaps) == defaults


def test_a_params_file_that_never_names_the_node_is_refused_before_anything_starts(tmp_path):
    """`tinybev_node:` is rcl's /tinybev_node, not /tinybev/tinybev_node: the node started on its defaults."""
    from tinybev_ros.ros.run import RunInputError, check_params_names_node

    bare = params_file(tmp_path / "bare.yaml", {"tinybev_node": {"device": "cpu"}, "/other": {"device": "cpu"}})
    with pytest.raises(LaunchPlanError, match="sets parameters for /other, tinybev_node, none of which is the node, "
                                              "/tinybev/tinybev_node .*/\\*\\*/tinybev_node.*nothing was started"):
        _plan({"params_file": str(bare)})
    with pytest.raises(RunInputError, match="none of which is the node, /tinybev/tinybev_node"):
        check_params_names_node(bare)
    for key in ("/**/tinybev_node", "/**", "/tinybev/tinybev_node", "/*/tinybev_node"):
        mine = params_file(tmp_path / "mine.yaml", {key: {"device": "cpu"}})
        assert _plan({"params_file": str(mine)}).overrides == {}, key
        check_params_names_node(mine)
    # a file with no sections at all is the node's to refuse (it names the problem); pushed into a namespace, the
    # node's own section is the namespaced one
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert _plan({"params_file": str(empty)}).overrides == {}
    mine = params_file(tmp_path / "robot.yaml", {"/robot1/tinybev/tinybev_node": {"device": "cpu"}})
    assert _plan({"params_file": str(mine)}, namespace="/robot1").overrides == {}
    with pytest.raises(LaunchPlanError, match="/tinybev/tinybev_node"):
        _plan({"params_file": str(mine)})


def test_pushed_into_a_namespace_the_node_reads_the_cameras_there(tmp_path):
    """Included under PushRosNamespace('robot1'), the inputs still came from the root: another robot's cameras."""
    remaps = dict(_plan({}, namespace="robot1").remaps)
    assert remaps["CAM_FRONT/image_rect/compressed"] == "/robot1/CAM_FRONT/image_rect/compressed"
    assert dict(_plan({}, namespace="/").remaps) == dict(_plan({}).remaps)
    rig = params_file(tmp_path / "rig.yaml", {"/**/tinybev_node": {"cameras": [f"c{k}" for k in range(6)],
                                                                     "compressed_topic": "{camera}/jpeg"}})
    assert dict(_plan({"params_file": str(rig)}, namespace="robot1").remaps)["c3/jpeg"] == "/robot1/c3/jpeg"
    # a bag is checked where the node will read: the root bag does not feed the namespaced node (it would wait for
    # ever), one on the params file's own topics does
    with pytest.raises(LaunchPlanError, match="has no images of camera\\(s\\) CAM_FRONT.*/robot1/CAM_FRONT"):
        _plan({"bag": str(camera_bag(tmp_path / "root"))}, namespace="robot1")
    custom = camera_bag(tmp_path / "custom", tuple(f"c{k}" for k in range(6)), topic="/robot1/{camera}/jpeg")
    assert _plan({"bag": str(custom), "params_file": str(rig)}, namespace="robot1").bag_command is not None
    with pytest.raises(LaunchPlanError, match="has no images of camera"):
        _plan({"bag": str(custom), "params_file": str(rig)})


def test_rviz_follows_the_nodes_clock_where_anything_says_what_it_is(tmp_path):
    """rviz2 was forced onto wall time whenever use_sim_time:= was not given, a parent's SetParameter overruled."""
    assert _plan({"rviz": "true"}).rviz_sim_time is None  # the launch's own (SetParameter), if any
    assert _plan({"rviz": "true", "use_sim_time": "true"}).rviz_sim_time is True
    sim = params_file(tmp_path / "sim.yaml", {"/**": {"use_sim_time": True}})
    assert _plan({"rviz": "true", "params_file": str(sim)}).rviz_sim_time is True
    assert _plan({"rviz": "true", "params_file": str(sim), "use_sim_time": "false"}).rviz_sim_time is False
    assert _plan({"rviz": "true", "bag": str(camera_bag(tmp_path / "bag"))}).rviz_sim_time is True


def test_tinybev_run_overrides_only_what_it_is_told(tmp_path):
    """It passed device:=auto and use_sim_time:=false, overriding a params file that said cpu or true."""
    from tinybev_ros.ros.run import node_command

    mine = params_file(tmp_path / "mine.yaml", {"/**/tinybev_node": {"cameras": [f"c{k}" for k in range(6)]}})
    live = node_command(mine, "", None, False, [])
    assert not [arg for arg in live if arg.startswith(("device:=", "use_sim_time:=", "checkpoint:="))]
    assert "c0/image_rect/compressed:=/c0/image_rect/compressed" in live
    replay = node_command(mine, "my.safetensors", "cpu", True, ["score_threshold:=0.5"])
    assert replay[-8:] == ["-p", "use_sim_time:=true", "-p", "device:=cpu", "-p", "checkpoint:=my.safetensors",
                           "-p", "score_threshold:=0.5"]


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch/launch_ros are not installable from PyPI; this check runs with a system ROS 2")
def test_launch_description_builds_with_launch_ros():
    spec = importlib.util.spec_from_file_location("tinybev_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = [type(entity).__name__ for entity in description.entities]
    assert names.count("DeclareLaunchArgument") == 7 and names.count("OpaqueFunction") == 1
