"""Nothing is lost: killed recorders, `--force`, stale staging folders and `tinybev run`, with real processes.

Each test provokes the fault the way it happens on a robot (SIGKILL, a record target that is the input, an
existing directory that is not a bag) and reads what is on disk afterwards with the `rosbags` library.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bag_helpers import REPO, tinybev
from rosbags.rosbag2 import Reader

from tinybev_ros.ros.bag.atomic_writer import AtomicBagWriter, BagTargetError
from tinybev_ros.ros.bag.nuscenes_to_bag import ConvertOptions, convert_scene

RATE_HZ = 20.0


def _tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _messages(path: Path) -> list[str]:
    from tinybev_ros.ros.bag.typestore import typestore

    store = typestore()
    with Reader(path) as reader:
        return [store.deserialize_cdr(raw, c.msgtype).data for c, _, raw in reader.messages()]


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        # (a child_process launcher about to exec its command is not the command yet)
        if marker in cmdline and state != "Z" and "tinybev_ros.ros.child_process" not in cmdline:
            found.append(int(entry.name))
    return found


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


class Chatter:
    """An rclpy publisher of numbered std_msgs/String messages in this process."""

    def __enter__(self) -> Chatter:
        import rclpy
        from std_msgs.msg import String

        rclpy.init()
        self.rclpy, self.String = rclpy, String
        self.node = rclpy.create_node(f"chatter_{time.monotonic_ns()}")
        self.publisher = self.node.create_publisher(String, "/chatter", 100)
        self.sent = 0
        return self

    def publish_for(self, seconds: float, process: subprocess.Popen | None = None, padding: int = 0,
                    until_exit: bool = False) -> None:
        """Publish "message N" (plus `padding` spaces) for `seconds`; the process must live, or end (until_exit)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until_exit and process.poll() is not None):
            self.publisher.publish(self.String(data=f"message {self.sent}" + " " * padding))
            self.sent += 1
            self.rclpy.spin_once(self.node, timeout_sec=1 / RATE_HZ)
            assert until_exit or process is None or process.poll() is None, process.stdout.read()

    def wait_for_subscriber(self, process: subprocess.Popen, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.publisher.get_subscription_count() < 1:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the recorder never subscribed"
            self.rclpy.spin_once(self.node, timeout_sec=0.05)

    def __exit__(self, *exc) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_killed_recorder_loses_at_most_the_last_second(tmp_path, storage):
    target = tmp_path / "recording"
    with Chatter() as chatter:
        recorder = tinybev("bag", "record", target, "--topics", "/chatter", "--storage", storage)
        chatter.wait_for_subscriber(recorder)
        chatter.publish_for(3.0, recorder)
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(timeout=30)
        sent = chatter.sent
    assert not target.exists()
    (staging,) = tmp_path.glob(".recording.partial-*")
    assert f".partial-{recorder.pid}-" in staging.name

    # by hand: `tinybev bag recover`
    recovered = tinybev("bag", "recover", staging, "--out", tmp_path / "by_hand")
    assert recovered.wait(timeout=60) == 0, recovered.stdout.read()
    texts = _messages(tmp_path / "by_hand")
    assert len(texts) >= sent - 1.5 * RATE_HZ, (len(texts), sent)  # flushed every second, plus discovery slack
    assert texts == [f"message {i}" for i in range(len(texts))]  # the first ones, in order, none twice
    assert staging.exists()  # the manual tool never deletes its source

    # automatically: the next recording of the same target finds the dead recorder's folder
    again = tinybev("bag", "record", target, "--topics", "/chatter", "--storage", storage, "--duration", "1")
    assert again.wait(timeout=60) == 0
    log = again.stdout.read()
    automatic = tmp_path / f"recording.recovered-{recorder.pid}"
    assert f"recovered {len(texts)} messages of a killed recording into {automatic}" in log
    assert _messages(automatic) == texts
    assert not staging.exists() and (target / "metadata.yaml").is_file()


def _small_disk() -> None:
    """The file-size limit makes writes fail the way a full disk does (EFBIG / SQLITE_FULL)."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_full_disk_stops_the_recorder_with_one_line_and_keeps_what_it_flushed(tmp_path, storage):
    """It used to crash with a traceback and delete the whole recording (mcap), or publish a bag whose
    metadata.yaml counted messages its database never committed (sqlite3)."""
    target = tmp_path / "recording"
    with Chatter() as chatter:
        recorder = tinybev("bag", "record", target, "--topics", "/chatter", "--storage", storage,
                           preexec_fn=_small_disk)
        chatter.wait_for_subscriber(recorder)
        chatter.publish_for(60.0, recorder, padding=50_000, until_exit=True)  # 1 MB/s: full after about 2 s
        assert recorder.wait(timeout=30) == 2
    output = recorder.stdout.read()
    assert "Traceback" not in output and output.strip().splitlines()[-1].startswith(
        f"bag record: error: cannot write {target} ("), output
    assert not target.exists()
    (staging,) = tmp_path.glob(".recording.partial-*")
    assert f"is kept in {staging}: free space, then `tinybev bag recover {staging} --out {target}`" in output
    assert f"recovers it by itself, as {target}.recovered-{recorder.pid}" in output
    recovered = tinybev("bag", "recover", staging, "--out", target)
    assert recovered.wait(timeout=60) == 0, recovered.stdout.read()
    assert staging.exists()  # recovering into the recording's own target never deletes the source first
    texts = [text.rstrip() for text in _messages(target)]
    assert 10 <= len(texts) < chatter.sent and texts == [f"message {i}" for i in range(len(texts))]
    (tmp_path / "a_file").write_text("")
    unopenable = tinybev("bag", "record", tmp_path / "a_file" / "bag", "--topics", "/chatter", "--storage", storage)
    assert unopenable.wait(timeout=60) == 2
    said = unopenable.stdout.read().strip().splitlines()[-1]
    assert said.startswith(f"bag record: error: cannot write {tmp_path / 'a_file' / 'bag'} (") and "kept" not in said


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_recovery_streams_the_messages_in_time_order(tmp_path, storage):
    """Messages stream from the killed file into the new bag (a camera recording can be larger than memory);
    an mcap written out of time order is still recovered in order."""
    import shutil
    from collections.abc import Iterator

    from tinybev_ros.ros.bag.recover import recover, salvage
    from tinybev_ros.ros.bag.typestore import typestore

    store = typestore()
    string = store.types["std_msgs/msg/String"]
    stamps = [3, 1, 2, 5, 4] if storage == "mcap" else [1, 2, 3, 4, 5]
    with AtomicBagWriter(tmp_path / "written", storage) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for stamp in stamps:
            writer.write(connection, stamp, store.serialize_cdr(string(data=f"m{stamp}"), "std_msgs/msg/String"))
    killed = tmp_path / "killed"  # its storage file without metadata.yaml, as a killed recorder leaves it
    killed.mkdir()
    storage_file = next(p for p in (tmp_path / "written").iterdir() if p.suffix in (".db3", ".mcap"))
    shutil.copy(storage_file, killed / storage_file.name)
    found = salvage(killed)
    assert isinstance(found.messages, Iterator) and list(found.topics) == ["/chatter"]
    assert [stamp for stamp, _, _ in found.messages] == [1, 2, 3, 4, 5]
    assert recover(killed, tmp_path / "recovered") == 5
    assert _messages(tmp_path / "recovered") == ["m1", "m2", "m3", "m4", "m5"]


def test_force_replaces_only_what_the_tools_write(tmp_path, synth_dataset):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(BagTargetError, match="not a rosbag2 bag"), AtomicBagWriter(precious, force=True):
        pass
    assert (precious / "chapter1.tex").read_text() == "years of work"

    convert = tinybev("bag", "convert", "--dataroot", synth_dataset.dataroot, "--version", synth_dataset.version,
                      "--scene", "scene-0061", "--out", precious, "--no-map", "--force")
    assert convert.wait(timeout=120) == 2
    assert "not a rosbag2 bag" in convert.stdout.read()
    synth = tinybev("synth", "--out", precious, "--scenes", "1", "--duration", "1", "--force")
    assert synth.wait(timeout=120) != 0
    assert "was not written by tinybev synth" in synth.stdout.read()
    assert (precious / "chapter1.tex").read_text() == "years of work" and len(list(precious.iterdir())) == 1


def test_staging_left_by_a_killed_writer_is_cleaned_by_the_next_one(tmp_path, caplog):
    dead = tmp_path / f".out.partial-{_dead_pid()}-abc123"
    alive = tmp_path / f".out.partial-{os.getpid()}-def456"
    other = tmp_path / f".other.partial-{_dead_pid()}-ghi789"
    for folder in (dead, alive, other):
        (folder / "out").mkdir(parents=True)
        (folder / "out" / "out.db3").write_bytes(b"x" * 1000)
    with caplog.at_level(logging.WARNING, logger="tinybev.bag"), AtomicBagWriter(tmp_path / "out") as writer:
        assert writer is not None
    assert not dead.exists() and alive.exists() and other.exists()  # a live writer's and another target's stay
    assert f"removed {dead}, left by a killed writer" in caplog.text
    assert (tmp_path / "out" / "metadata.yaml").is_file()


@pytest.fixture(scope="module")
def scene_bag(synth_dataset, tmp_path_factory) -> Path:
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    path = tmp_path_factory.mktemp("safety") / "scene_for_run"
    convert_scene(nusc, nusc.scene[0]["name"], path, ConvertOptions(progress=False, sweeps=False))
    return path


def test_run_refuses_record_targets_that_would_destroy_data(scene_bag, tmp_path):
    before = _tree_digest(scene_bag)
    with AtomicBagWriter(tmp_path / "yesterday"):
        pass
    cases = {  # name: (arguments, the error)
        "the bag itself": (("--bag", scene_bag, "--record", scene_bag), "would overwrite the bag being played"),
        "inside the bag": (("--bag", scene_bag, "--record", scene_bag / "outputs"), "would overwrite the bag"),
        "around the bag": (("--bag", scene_bag, "--record", scene_bag.parent), "would overwrite the bag"),
        "an older recording": (("--bag", scene_bag, "--record", tmp_path / "yesterday"), "already exists"),
        "a missing bag": (("--bag", tmp_path / "nope", "--record", tmp_path / "out"), "is not a rosbag2 bag"),
        "no bag (a live run, which it once recorded nothing of)": (("--record", tmp_path / "live"), "needs --bag"),
    }
    for name, (args, error) in cases.items():
        started = time.monotonic()
        run = tinybev("run", *args)
        assert run.wait(timeout=120) == 2, name
        output = run.stdout.read()
        assert error in output and "Traceback" not in output, (name, output)
        assert time.monotonic() - started < 30, f"{name}: refused only after starting the node"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("keep")
    for flags, error in (((), "already exists"), (("--force",), "not a rosbag2 bag")):
        run = tinybev("run", "--bag", scene_bag, "--record", tmp_path / "notes", *flags)
        assert run.wait(timeout=120) == 2
        assert error in run.stdout.read()
    assert (tmp_path / "notes" / "keep.txt").read_text() == "keep"
    assert _tree_digest(scene_bag) == before


def test_a_recorder_that_fails_mid_run_fails_the_run_and_its_data_is_kept(scene_bag, tmp_path):
    """`tinybev run --record` (and the demo on it) used to report success over a recorder that had died."""
    import resource

    def small_disk() -> None:  # room for the node's log lines, not for a recording of its outputs
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    # The limit also keeps Fast DDS from making its shared-memory segment, so the images go over UDP, where a
    # burst of six can be lost: a replay in which the node published nothing never reached the recorder's failure
    # (seen once in a CI run). That is the test's precondition failing, not the behaviour under test: once more.
    for attempt in (1, 2):
        target = tmp_path / f"outputs{attempt}"
        run = tinybev("run", "--device", "cpu", "--bag", scene_bag, "--record", target, preexec_fn=small_disk)
        output = run.communicate(timeout=300)[0]
        if "run: the node published 0 frames" not in output:
            break
    assert run.returncode == 2 and "Traceback" not in output, output
    assert f"bag record: error: cannot write {target} (" in output
    assert output.strip().splitlines()[-1].startswith("run: error: bag record exited with 2 while "), output
    assert not target.exists() and len(list(tmp_path.glob(f".{target.name}.partial-*"))) == 1


def test_run_reports_a_failed_node_in_one_line_with_its_exit_status(scene_bag, tmp_path):
    cases = {  # name: (arguments, exit status, what the output says)
        "bad parameter, no bag": (("-p", "score_threshold:=2.0"), 2, "score_threshold"),
        "bad parameter with a bag": (("--bag", scene_bag, "-p", "score_threshold:=2.0"), 2,
                                     "run: error: tinybev_node exited with 2"),
        "zero rate": (("--bag", scene_bag, "--rate", "0"), 2, "--rate must be a positive number, got 0.0"),
        "'#' in the recording's path": (("--bag", scene_bag, "--record", tmp_path / "out#1"), 2,
                                        "a sqlite3 bag's path cannot contain '#'"),
    }
    for name, (args, status, message) in cases.items():
        run = tinybev("run", "--device", "cpu", *args)
        assert run.wait(timeout=180) == status, (name, run.stdout.read())
        output = run.stdout.read()
        assert message in output and "Traceback" not in output, (name, output)
    images_missing = tmp_path / "no_images"
    with AtomicBagWriter(images_missing):
        pass
    run = tinybev("run", "--bag", images_missing)
    assert run.wait(timeout=60) == 2
    assert "has no images of camera(s) CAM_FRONT" in run.stdout.read()
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9\n")
    run = tinybev("run", "--bag", unreadable)
    assert run.wait(timeout=60) == 2
    output = run.stdout.read()
    assert "cannot be read as a rosbag2 bag" in output and "Traceback" not in output, output


def test_run_replays_a_bag_of_raw_images(synth_dataset, tmp_path):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    bag = tmp_path / "raw"
    convert_scene(nusc, nusc.scene[0]["name"], bag, ConvertOptions(progress=False, sweeps=False, raw_images=True))
    run = tinybev("run", "--bag", bag, "--device", "cpu", "-p", "image_reliability:=reliable")
    assert run.wait(timeout=400) == 0, run.stdout.read()[-3000:]
    output = run.stdout.read()
    assert "6 cameras (raw)" in output, output  # the run told the node what the bag holds
    assert int(output.split("run: the node published ")[1].split()[0]) > 0, output


@pytest.mark.parametrize("how, when", [(signal.SIGKILL, "playing"), (signal.SIGINT, "playing"),
                                       (signal.SIGTERM, "playing"), (signal.SIGINT, "starting")],
                         ids=["SIGKILL-playing", "SIGINT-playing", "SIGTERM-playing", "SIGINT-while-the-node-starts"])
def test_a_stopped_run_leaves_no_process_behind(scene_bag, tmp_path, how, when):
    marker = f"score_threshold:=0.3{time.monotonic_ns() % 10**6:06d}"  # on the node's command line only
    # started as from a terminal, where Ctrl-C is SIGINT's default action (pytest itself may run in the background,
    # where a shell ignores SIGINT for its children)
    run = subprocess.Popen([sys.executable, "-m", "tinybev_ros.cli", "run", "--bag", str(scene_bag), "--rate", "0.2",
                            "--device", "cpu", "-p", marker, "--record", str(tmp_path / "out")],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if when == "playing":  # the node, the recorder and the player are all up (the player's command names the bag)
            _wait_until(lambda: _processes_with(marker) and _processes_with(f"bag play {scene_bag}"), 180,
                        "tinybev run started the node and the player")
            time.sleep(1.0)  # past the player's interpreter start-up (a signal inside it is Python's, not ours)
        else:  # while `tinybev run` waits on the ROS graph for the node to subscribe
            _wait_until(lambda: _processes_with(marker), 180, "tinybev run started the node")
            time.sleep(1.0)
            assert not _processes_with(f"bag play {scene_bag}"), "the node started before the signal; no test"
        run.send_signal(how)
        _, stderr = run.communicate(timeout=60)
        if how != signal.SIGKILL:  # SIGTERM (a batch system's stop) unwinds like Ctrl-C
            assert run.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
        _wait_until(lambda: not _processes_with(marker) and not _processes_with(str(scene_bag))
                    and not _processes_with(f"bag record {tmp_path / 'out'}"), 30, "every child of tinybev run exited")
    finally:
        for pid in _processes_with(marker) + _processes_with(str(scene_bag)):
            os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()


def test_a_child_stops_on_sigint_even_when_its_parent_ignores_it():
    """`tinybev run ... &` from a script: the shell ignores SIGINT in it, but its children must still stop cleanly on
    the SIGINT it sends them (not wait out the timeout and be killed, a recorder with them)."""
    script = ("import signal, sys, time\n"
              "from tinybev_ros.ros.child_process import spawn\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "child = spawn(['sleep', '60'])\n"
              "comm = f'/proc/{child.pid}/comm'\n"
              "while open(comm).read().strip() != 'sleep':  # the launcher has exec'd its command\n"
              "    time.sleep(0.05)\n"
              "child.send_signal(signal.SIGINT)\n"
              "print(child.wait(timeout=20))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == str(-signal.SIGINT), done.stdout + done.stderr


def test_a_full_disk_during_convert_is_one_line_and_leaves_nothing(synth_dataset, tmp_path):
    out = tmp_path / "scene"
    result = subprocess.run([sys.executable, "-m", "tinybev_ros.cli", "bag", "convert", "--dataroot",
                             str(synth_dataset.dataroot), "--version", synth_dataset.version, "--scene", "scene-0061",
                             "--out", str(out), "--no-map", "--no-progress"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, preexec_fn=_small_disk)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "nuscenes_to_bag: error: cannot write the bag" in result.stderr.strip().splitlines()[-1]
    assert not out.exists() and not list(tmp_path.glob(".scene.partial-*"))


def _train(config: Path, dataset, out: Path, steps: int, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinybev_ros.cli", "train", "--config", str(config), "--dataroot",
                             str(dataset.dataroot), "--version", dataset.version, "--out", str(out), "--steps",
                             str(steps)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            **popen)


def test_a_stopped_or_full_disk_training_run_is_one_line_and_keeps_its_checkpoints(synth_dataset, tmp_path):
    """SIGTERM (how batch systems stop a job) unwinds like Ctrl-C; a full disk at a checkpoint is one line; a temp
    folder left by a killed checkpoint write is removed by the next write; the checkpoints before stay intact."""
    from training.checkpointing import resume_point

    config = tmp_path / "train.yaml"  # the CPU ablation's small student on 2 samples, a checkpoint every step
    config.write_text(f"base: {REPO / 'config' / 'distill_ablation_train.yaml'}\ncheckpoint_every: 1\n"
                      "keep_checkpoints: 5\ndata: {max_samples: 2, num_workers: 0}\n")
    out = tmp_path / "run"
    checkpoints = out / "checkpoints"
    stopped = _train(config, synth_dataset, out, steps=1000)
    deadline = time.monotonic() + 240
    while not (checkpoints / "step_00000002").is_dir():
        assert stopped.poll() is None and time.monotonic() < deadline, stopped.stderr.read()[-3000:]
        time.sleep(0.2)
    stopped.send_signal(signal.SIGTERM)
    err = stopped.communicate(timeout=60)[1]
    assert stopped.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "tinybev train: interrupted"
    assert not list(checkpoints.glob(".step_*"))
    point = resume_point(checkpoints)
    assert point is not None and point[1]["step"] >= 2
    done = point[1]["step"]

    killed = checkpoints / f".step_{done + 1:08d}.x1y2z3"  # what SIGKILL or a power cut mid-write leaves
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"\0" * 1000)
    full = _train(config, synth_dataset, out, steps=done + 1, preexec_fn=_small_disk)  # the model file > 2 MiB
    err = full.communicate(timeout=240)[1]
    assert full.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert f"tinybev train: error: cannot write checkpoint {checkpoints / f'step_{done + 1:08d}'}" in \
        err.strip().splitlines()[-1]
    assert not list(checkpoints.glob(".step_*"))  # neither the killed write's folder nor this one's
    assert resume_point(checkpoints)[1]["step"] == done


def test_a_full_disk_under_any_command_is_one_line_and_leaves_nothing(tmp_path):
    """release, export-onnx, teacher-cache and eval write through safetensors or plain files: a full disk there was
    a SafetensorError or OSError traceback."""
    from tinybev_ros.paths import default_checkpoint

    out = tmp_path / "ship" / "student.safetensors"
    result = subprocess.run([sys.executable, "-m", "tinybev_ros.cli", "release", "--out", str(out),
                             str(default_checkpoint())], cwd=REPO, capture_output=True, text=True, timeout=300,
                            preexec_fn=_small_disk)  # the shipped student is 23 MB
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tinybev release: error: cannot write an output (") and "File too large" in last
    assert not out.exists() and not [p for p in out.parent.rglob("*") if p.is_file()]


def test_what_counts_as_a_full_disk_and_what_does_not():
    """sqlite3 says "database or disk is full" (the demo's bag conversion), not an OSError; a bug raised `from None`
    inside a handler of a full disk is a bug, and keeps its traceback."""
    import errno
    import sqlite3

    from tinybev_ros.cli import is_storage_error

    assert is_storage_error(sqlite3.OperationalError("database or disk is full"))
    assert is_storage_error(OSError(errno.EROFS, "Read-only file system"))
    assert not is_storage_error(sqlite3.OperationalError("no such table: messages"))
    assert not is_storage_error(OSError(errno.ENOENT, "No such file or directory"))
    for suppressed in (True, False):
        try:
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as full:
                if suppressed:
                    raise ValueError("a bug in the handler") from None
                raise ValueError("cannot write") from full
        except ValueError as exc:
            assert is_storage_error(exc) is not suppressed


def test_a_precision_the_machine_cannot_run_is_refused_before_any_data_work(synth_dataset, tmp_path):
    """fp16 on a CPU (or bf16 on a CPU without it) was a ValueError traceback, after the sample cache was built."""
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-m", "tinybev_ros.cli", "train", "--config",
                             str(REPO / "config" / "distill_ablation_train.yaml"), "--dataroot",
                             str(synth_dataset.dataroot), "--version", synth_dataset.version, "--out",
                             str(tmp_path / "run"), "--device", "cpu", "precision=fp16", f"data.cache_dir={cache}"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "precision fp16 needs a CUDA device" in result.stderr.strip().splitlines()[-1]
    assert not cache.exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_recovery_refuses_compressed_storage_instead_of_copying_it_as_cdr(tmp_path):
    """rosbag2's message compression leaves zstd frames where CDR belongs: copied as they are, the recovered bag
    would hold undecodable messages under a valid type. A file-compressed .db3.zstd is named, not overlooked."""
    import shutil

    from tinybev_ros.ros.bag.recover import ZSTD_MAGIC, RecoveryError, recover
    from tinybev_ros.ros.bag.typestore import typestore

    store = typestore()
    with AtomicBagWriter(tmp_path / "written") as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for stamp in (1, 2):
            writer.write(connection, stamp, ZSTD_MAGIC + b"\x00" * 12)  # a zstd frame's start
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copy(next((tmp_path / "written").glob("*.db3")), killed / "killed.db3")
    with pytest.raises(RecoveryError, match="zstd-compressed .* `ros2 bag reindex`"):
        recover(killed, tmp_path / "recovered")
    assert not (tmp_path / "recovered").exists()
    (killed / "killed.db3").rename(killed / "killed.db3.zstd")
    with pytest.raises(RecoveryError, match=r"no .db3 or .mcap storage file to recover \(killed.db3.zstd: file-"):
        recover(killed, tmp_path / "recovered")
    with pytest.raises(RecoveryError, match=r"killed.db3.zstd: not a .db3 or .mcap storage file: file-compressed"):
        recover(killed / "killed.db3.zstd", tmp_path / "recovered")
