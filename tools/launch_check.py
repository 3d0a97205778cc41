"""Check `tinybev.launch.py` under the real `ros2 launch` on a machine without a system ROS 2.

    .venv/bin/python tools/launch_check.py [--sources DIR] [--ws DIR] [--branch rolling]

launch, launch_ros and ros2cli are not on the package index (PyPI's `launch` is another project), so this
builds them from their public sources (Apache-2.0; cloned into --sources unless already there) into a workspace
of its own with the venv's colcon, with a copy of this working tree as `tinybev_ros`, then runs
`ros2 launch tinybev_ros tinybev.launch.py` as a user would and checks:
  package    `ros2 pkg executables` lists the node, `ros2 run` starts it (a bad parameter: exit 2, one line);
  arguments  `--show-args` lists every argument;
  refusals   a missing params file or bag, a params file that never names the node, a non-boolean flag,
             rviz:=true without rviz2: the launch exits non-zero with a line naming the problem, starting nothing;
  failure    a node that exits with an error (a missing checkpoint) ends the launch with a non-zero status;
  namespace  included under PushRosNamespace, the launch finds the node (and its cameras) in that namespace;
  replay     bag:=BAG use_sim_time:=true: the node publishes one detection frame per keyframe of the bag;
  shutdown   Ctrl-C (SIGINT to the launch's process group) ends the launch and every process it started.
rosbag2 is C++ and cannot be built here: `ros2 bag` is `tinybev bag` through a wrapper first on PATH (and an
ament index entry for ros2bag, which the launch file looks for), and the call of the player's resume service is
the signal that resumes `tinybev bag play`. CI does not run this (no ROS sources there);
with a system ROS 2, `colcon build` and `ros2 launch` are checked as the README says, without this tool.
Prints one line per check; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
# upstream repository -> the packages of it `ros2 launch` needs (composition_interfaces: `import launch_ros`)
SOURCES = {"launch": ["launch", "launch_xml", "launch_yaml"], "launch_ros": ["launch_ros", "ros2launch"],
           "ros2cli": ["ros2cli", "ros2pkg", "ros2run", "ros2service"], "rcl_interfaces": ["composition_interfaces"]}
PYDEPS = ["osrf-pycommon==2.0.2", "lark==1.3.1", "argcomplete==3.5.3", "psutil==6.1.1", "importlib-resources==6.5.2"]
LAUNCH = ["ros2", "launch", "tinybev_ros", "tinybev.launch.py"]
STARTED = re.compile(r"\[(\S+)\]: process started with pid \[(\d+)\]")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


def copy_working_tree(target: Path) -> None:
    """The files git would commit now (tracked and untracked, not ignored): what a clone of this tree holds."""
    shutil.rmtree(target, ignore_errors=True)
    listed = run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def build_workspace(ws: Path, sources: Path, branch: str) -> dict[str, str]:
    """Build launch, launch_ros, ros2cli and the project into `ws`; returns the environment to run them in."""
    src = ws / "src"
    src.mkdir(parents=True, exist_ok=True)
    for repo, packages in SOURCES.items():
        checkout = sources / repo
        if not checkout.is_dir():
            run(["git", "clone", "-q", "--depth", "1", "--branch", branch, f"https://github.com/ros2/{repo}.git",
                 str(checkout)])
        for package in packages:
            link = src / package
            if not link.exists():
                link.symlink_to((checkout / package).resolve(), target_is_directory=True)
    copy_working_tree(src / "tinybev_ros")
    pydeps = ws / "pydeps"
    if not pydeps.is_dir():
        run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(pydeps), *PYDEPS])
    env = {**os.environ, "AMENT_PREFIX_PATH": str(VENV), "CMAKE_PREFIX_PATH": str(VENV)}
    run([str(VENV / "bin" / "colcon"), "build", "--base-paths", "src", "--executor", "sequential",
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=ws, env=env, stdout=subprocess.DEVNULL)
    shim = ros2bag_shim(ws)
    sourced = run(["bash", "-c", f". {ws / 'install' / 'setup.sh'} && env -0"], env=env, capture_output=True).stdout
    env = dict(item.split("=", 1) for item in sourced.decode().split("\0") if "=" in item)
    env["PATH"] = f"{shim / 'bin'}{os.pathsep}{env['PATH']}"
    env["AMENT_PREFIX_PATH"] = f"{shim}{os.pathsep}{env['AMENT_PREFIX_PATH']}"
    env["PYTHONPATH"] = f"{pydeps}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def ros2bag_shim(ws: Path) -> Path:
    """A prefix whose `ros2 bag` is `tinybev bag` and whose ament index lists ros2bag (rosbag2 is not built here);
    the launch file's `ros2 service call /rosbag2_player/resume` becomes the player's SIGUSR1 (its resume)."""
    shim = ws / "ros2bag_shim"
    real_ros2 = ws / "install" / "ros2cli" / "bin" / "ros2"
    if not real_ros2.is_file():
        raise SystemExit(f"launch_check: the build left no {real_ros2}")
    (shim / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True, exist_ok=True)
    (shim / "share" / "ament_index" / "resource_index" / "packages" / "ros2bag").touch()
    (shim / "share" / "ros2bag").mkdir(exist_ok=True)
    (shim / "bin").mkdir(exist_ok=True)
    wrapper = shim / "bin" / "ros2"
    pid = shim / "player.pid"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = bag ]; then shift; echo $$ > "{pid}"; '
                       f'exec "{VENV / "bin" / "tinybev"}" bag "$@"; fi\n'
                       f'if [ "$1 $2 $3" = "service call /rosbag2_player/resume" ]; then '
                       f'exec kill -USR1 "$(cat "{pid}")"; fi\nexec "{real_ros2}" "$@"\n')
    wrapper.chmod(0o755)
    return shim


def make_bag(ws: Path, env: dict[str, str]) -> Path:
    """A synthetic 4 s scene (8 keyframes) converted to a bag, made once per workspace."""
    bag = ws / "bag"
    if not (bag / "metadata.yaml").is_file():
        data = ws / "data"
        tinybev = str(VENV / "bin" / "tinybev")
        run([tinybev, "synth", "--out", str(data), "--scenes", "1", "--duration", "4", "--seed", "7",
             "--version", "v1.0-mini", "--force"], env=env, stdout=subprocess.DEVNULL)
        scene = re.search(r'"name": "([^"]+)"', (data / "v1.0-mini" / "scene.json").read_text()).group(1)
        run([tinybev, "bag", "convert", "--dataroot", str(data), "--version", "v1.0-mini", "--scene", scene,
             "--out", str(bag), "--force", "--no-progress"], env=env, stdout=subprocess.DEVNULL)
    return bag


def started_pids(output: str) -> dict[str, int]:
    return {name: int(pid) for name, pid in STARTED.findall(output)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def check_arguments(env: dict[str, str]) -> tuple[bool, str]:
    out = subprocess.run([*LAUNCH, "--show-args"], env=env, capture_output=True, text=True, timeout=120)
    names = ["params_file", "checkpoint", "device", "use_sim_time", "publish_images", "rviz", "bag"]
    missing = [name for name in names if f"'{name}'" not in out.stdout]
    return out.returncode == 0 and not missing, f"--show-args exit {out.returncode}, missing: {missing or 'none'}"


def check_package(env: dict[str, str]) -> list[tuple[bool, str]]:
    """`ros2 pkg` finds the built package and `ros2 run` starts its node (here with a bad parameter: one line)."""
    executables = subprocess.run(["ros2", "pkg", "executables", "tinybev_ros"], env=env, capture_output=True,
                                 text=True, timeout=120)
    bad = subprocess.run(["ros2", "run", "tinybev_ros", "tinybev_node", "--ros-args", "-p", "device:=warp"], env=env,
                         capture_output=True, text=True, timeout=120)
    said = (bad.stdout + bad.stderr).strip()
    return [("tinybev_ros tinybev_node" in executables.stdout,
             f"ros2 pkg executables tinybev_ros: {executables.stdout.split() or executables.stderr.strip()}"),
            (bad.returncode == 2 and "device" in said and "Traceback" not in said,
             f"ros2 run tinybev_ros tinybev_node -p device:=warp: exit {bad.returncode}, {said[-160:]!r}")]


def check_refusals(env: dict[str, str], tmp: Path) -> list[tuple[bool, str]]:
    bare = tmp / "bare.yaml"  # rcl reads `tinybev_node:` as /tinybev_node: the node would run on its defaults
    bare.write_text("tinybev_node:\n  ros__parameters: {device: cpu}\n")
    cases = {"params_file:=" + str(tmp / "none.yaml"): "is not a file", "bag:=" + str(tmp / "no_bag"): "does not exist",
             "use_sim_time:=maybe": "is not a boolean", f"params_file:={bare}": "none of which is the node"}
    if shutil.which("rviz2", path=env["PATH"]) is None:
        cases["rviz:=true"] = "rviz2 is not installed"
    results = []
    for argument, expected in cases.items():
        out = subprocess.run([*LAUNCH, argument, "device:=cpu"], env=env, capture_output=True, text=True,
                             timeout=120)
        text = out.stdout + out.stderr
        started = started_pids(text)
        ok = out.returncode != 0 and expected in text and not started
        results.append((ok, f"{argument}: exit {out.returncode}, says {expected!r}: {expected in text}, "
                            f"processes started: {sorted(started) or 'none'}"))
    return results


NAMESPACED = """from launch import LaunchDescription
from launch.actions import GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.actions import PushRosNamespace
from launch_ros.substitutions import FindPackageShare
from launch.substitutions import PathJoinSubstitution


def generate_launch_description():
    included = PathJoinSubstitution([FindPackageShare("tinybev_ros"), "launch", "tinybev.launch.py"])
    return LaunchDescription([GroupAction([PushRosNamespace("robot1"), IncludeLaunchDescription(
        PythonLaunchDescriptionSource(included), launch_arguments={"params_file": "%s"}.items())])])
"""


def check_namespace(env: dict[str, str], tmp: Path) -> tuple[bool, str]:
    """Included under PushRosNamespace('robot1'), the launch looks for the node's section as
    /robot1/tinybev/tinybev_node (and reads the cameras under /robot1): a root-only section is refused naming it."""
    params = tmp / "root_only.yaml"
    params.write_text("/tinybev/tinybev_node:\n  ros__parameters: {device: cpu}\n")
    wrapper = tmp / "robot1.launch.py"
    wrapper.write_text(NAMESPACED % params)
    out = subprocess.run(["ros2", "launch", str(wrapper)], env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    said = "none of which is the node, /robot1/tinybev/tinybev_node" in text
    return (out.returncode != 0 and said and not started_pids(text),
            f"PushRosNamespace(robot1) + a /tinybev/tinybev_node section: exit {out.returncode}, names "
            f"/robot1/tinybev/tinybev_node: {said}")


def check_node_failure(env: dict[str, str], tmp: Path) -> tuple[bool, str]:
    """A node that exits with an error ends the launch with a non-zero status (it was 0: scripts saw success)."""
    out = subprocess.run([*LAUNCH, f"checkpoint:={tmp / 'none.safetensors'}", "device:=cpu"], env=env,
                         capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    said = "tinybev_node exited with status 2" in text
    return out.returncode != 0 and said, f"checkpoint:=<missing>: launch exit {out.returncode}, says so: {said}"


def check_replay(env: dict[str, str], bag: Path, log_path: Path, timeout_s: float) -> list[tuple[bool, str]]:
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")})
    from tinybev_ros.ros.dds import use_large_message_profile
    from tinybev_ros.ros.node_config import PerceptionNodeConfig
    from tinybev_ros.ros.run import GraphWatcher, bag_camera_topics, bag_message_counts

    keyframes = min(bag_camera_topics(bag, PerceptionNodeConfig(), bag_message_counts(bag))[2])
    # every frame in order (the shipped 1 = latest wins, live): a replay that is scored, as the README says
    shipped = (REPO / "config" / "tinybev.yaml").read_text()
    if "frame_queue_size: 1\n" not in shipped:
        raise SystemExit("launch_check: config/tinybev.yaml no longer says frame_queue_size: 1; update the replay")
    params = log_path.with_name("replay_params.yaml")
    params.write_text(shipped.replace("frame_queue_size: 1\n", "frame_queue_size: 32\n"))
    use_large_message_profile()
    watcher = GraphWatcher()
    with open(log_path, "w") as log:
        launch = subprocess.Popen([*LAUNCH, f"params_file:={params}", f"bag:={bag}", "use_sim_time:=true",
                                   "device:=cpu"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        def player_done() -> bool:  # the first `ros2` process launch starts is the player, then the resume call
            players = [name for name in started_pids(log_path.read_text()) if name.startswith("ros2-")]
            return bool(players) and f"[{players[0]}]: process has finished" in log_path.read_text()

        watcher.spin_until(player_done, timeout_s, "waiting for the bag to play through", [launch])
        watcher.last_output = max(watcher.last_output, time.monotonic())
        watcher.spin_until(lambda: time.monotonic() - watcher.last_output > 5.0, 300,
                           "draining the node's last frames", [launch])
        published = watcher.outputs
        report = {k: v for k, v in watcher.node_diagnostics.items()
                  if k.startswith("fault_") or k in ("images_received", "dropped_busy")}
        pids = started_pids(log_path.read_text())
        os.killpg(launch.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        stopped_at = time.monotonic()
        launch.wait(timeout=60)
        seconds = time.monotonic() - stopped_at
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
        watcher.close()
    survivors = [name for name, pid in pids.items() if alive(pid)]
    return [(published == keyframes, f"{published} of {keyframes} keyframes published as detections "
                                     f"(node's last report: {report})"),
            (launch.returncode == 0 and not survivors and "tinybev_node" in "".join(pids),
             f"Ctrl-C: launch exit {launch.returncode} after {seconds:.1f} s, still running: {survivors or 'none'}")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=REPO / "runs" / "ros2_sources",
                        help="holds (or receives, by git clone) launch, launch_ros, ros2cli, rcl_interfaces")
    parser.add_argument("--ws", type=Path, default=REPO / "runs" / "launch_ws", help="colcon workspace to build in")
    parser.add_argument("--branch", default="rolling", help="branch of the sources to clone")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed for the replay")
    args = parser.parse_args()
    ws = args.ws.resolve()
    print(f"launch_check: building launch, launch_ros, ros2cli and this tree in {ws}", flush=True)
    env = build_workspace(ws, args.sources.resolve(), args.branch)
    with tempfile.TemporaryDirectory(prefix="tinybev-launch-check-") as tmp:
        env.update(ROS_DOMAIN_ID=str(random.randint(100, 200)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_LOG_DIR=tmp)
        bag = make_bag(ws, env)
        checks = {"package": check_package(env), "arguments": [check_arguments(env)],
                  "refusals": check_refusals(env, Path(tmp)), "failure": [check_node_failure(env, Path(tmp))],
                  "namespace": [check_namespace(env, Path(tmp))],
                  "replay": check_replay(env, bag, ws / "replay.log", args.timeout)}
    failed = 0
    for name, results in checks.items():
        for ok, text in results:
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {name}: {text}")
    print(f"launch_check: {'all checks passed' if not failed else f'{failed} check(s) failed'} "
          f"(replay log: {ws / 'replay.log'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
