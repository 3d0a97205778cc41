"""`tinybev bag play` / `bag record` as real processes against a plain rclpy subscriber in this process."""

from __future__ import annotations

import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from bag_helpers import Listener, canonical, read_bag, tinybev
from rosbags.rosbag2 import Reader

from tinybev_ros.ros.bag.atomic_writer import AtomicBagWriter
from tinybev_ros.ros.bag.nuscenes_messages import MessageFactory
from tinybev_ros.ros.bag.nuscenes_to_bag import LATCHED_QOS, STREAM_QOS, ConvertOptions, convert_scene
from tinybev_ros.ros.bag.typestore import typestore

T0 = 1_532_402_927_000_000_000
PERIOD_NS = 250_000_000  # 4 Hz per stream: inter-message timing is checked against this
STEPS = 9  # 2 s of data


@pytest.fixture(scope="module")
def scene_bag(synth_dataset, tmp_path_factory):
    """The first synthetic scene converted with the defaults (what users replay)."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=synth_dataset.version, dataroot=str(synth_dataset.dataroot), verbose=False)
    path = tmp_path_factory.mktemp("bags") / "scene"
    convert_scene(nusc, nusc.scene[0]["name"], path, ConvertOptions(progress=False))
    return path


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    """A 2 s bag with a latched /tf_static, JPEG images, odometry and vision_msgs detections, like our real use."""
    store = typestore()
    msg = MessageFactory(store)
    T = store.types
    path = tmp_path_factory.mktemp("bags") / "small"
    image = np.zeros((48, 64, 3), np.uint8)
    with AtomicBagWriter(path) as writer:
        conns = {
            "/tf_static": writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=store,
                                                offered_qos_profiles=[LATCHED_QOS]),
            "/CAM_FRONT/image_rect/compressed": writer.add_connection(
                "/CAM_FRONT/image_rect/compressed", "sensor_msgs/msg/CompressedImage", typestore=store,
                offered_qos_profiles=[STREAM_QOS]),
            "/odom": writer.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=store),
            "/tinybev/detections": writer.add_connection("/tinybev/detections", "vision_msgs/msg/Detection3DArray",
                                                         typestore=store),
        }
        from tinybev_ros.geometry import Transform

        tf = msg.tf_message([msg.transform_stamped(T0, "base_link", "CAM_FRONT",
                                                   Transform(translation=np.array([1.7, 0.0, 1.5])))])
        writer.write(conns["/tf_static"], T0, msg.serialize(tf))
        for i in range(STEPS):
            stamp = T0 + i * PERIOD_NS
            image[:, :, 1] = 20 * i
            ok, jpeg = cv2.imencode(".jpg", image)
            assert ok
            writer.write(conns["/CAM_FRONT/image_rect/compressed"], stamp + 10_000_000,
                         msg.serialize(msg.compressed_image(stamp + 10_000_000, "CAM_FRONT", jpeg.tobytes())))
            odom = msg.odometry(stamp + 60_000_000, Transform(translation=np.array([float(i), 0.0, 0.0])),
                                [4.0, 0.0, 0.0], [0.0, 0.0, 0.1])
            writer.write(conns["/odom"], stamp + 60_000_000, msg.serialize(odom))
            dets = T["vision_msgs/msg/Detection3DArray"](header=msg.header(stamp + 120_000_000, "base_link"),
                                                          detections=[])
            writer.write(conns["/tinybev/detections"], stamp + 120_000_000, msg.serialize(dets))
    return path


def _check_received(bag_messages, received, store) -> None:
    """Every message once, each topic in bag order, bytes equal up to CDR padding."""
    assert len(received) == len(bag_messages)
    for topic in {m[0] for m in bag_messages}:
        expected = [canonical(store, raw, msgtype) for t, msgtype, _, raw in bag_messages if t == topic]
        msgtype = next(m[1] for m in bag_messages if m[0] == topic)
        got = [canonical(store, raw, msgtype) for t, raw, _ in received if t == topic]
        assert got == expected, topic


def _intervals(bag_messages, received, topic):
    bag_t = np.array([t for tp, _, t, _ in bag_messages if tp == topic]) / 1e9
    recv_t = np.array([t for tp, _, t in received if tp == topic])
    return np.diff(bag_t), np.diff(recv_t)


def _play_to_listener(bag, messages, rate: str, *extra: str, clocks: list | None = None,
                      record_to: Path | None = None) -> Listener:
    """Play `bag` in a player process into a Listener here (and a recorder process when `record_to`)."""
    with Listener({m[0]: m[1] for m in messages}) as listener:
        if clocks is not None:
            from rclpy.qos import QoSProfile
            from rosgraph_msgs.msg import Clock

            listener.node.create_subscription(Clock, "/clock", clocks.append, QoSProfile(depth=1000))
        recorder = tinybev("bag", "record", record_to, "--topics", *listener.topics) if record_to else None
        subscribers = "2" if recorder else "1"
        player = tinybev("bag", "play", bag, "--rate", rate, "--wait-for-subscribers", subscribers, "--start-paused",
                         *extra)
        listener.wait_for_publishers(player)
        player.send_signal(signal.SIGUSR1)
        listener.spin_until(len(messages), player, timeout_s=120)
        assert player.wait(timeout=30) == 0, player.stdout.read()
    if recorder:
        recorder.send_signal(signal.SIGINT)
        assert recorder.wait(timeout=30) == 0, recorder.stdout.read()
    return listener


def _check_timing(bag_messages, received, rate: float, topics: tuple[str, ...]) -> None:
    """Per-topic intervals within 10% of the bag's (rate-scaled), and the whole span likewise.

    The check is on the receiving side, so it also sees transport jitter that is not the player's: the first
    message on a freshly matched reliable connection can wait for the writer's first heartbeat round (~0.2 s
    for a 0.6 MB point cloud on a busy CI machine; 0.25 s for the first JPEG of a CI run), and a single 0.6 MB
    delivery can be ~70 ms late. Hence: the first message of each topic is left out (of the intervals and of the
    whole span), at least 90 % of the other intervals must be within 10 %, every one within 30 %, and the whole
    span within 10 %.
    """
    for topic in topics:
        bag_dt, recv_dt = _intervals(bag_messages, received, topic)
        bag_dt, recv_dt = bag_dt[1:], recv_dt[1:]
        assert len(recv_dt) >= 3, topic
        error = np.abs(recv_dt - bag_dt / rate) / (bag_dt / rate)
        assert np.mean(error <= 0.1) >= 0.9 and np.all(error <= 0.3), (topic, recv_dt)
    bag_t = np.array(_after_each_topics_first([(m[0], m[2] / 1e9) for m in bag_messages]))
    recv_t = np.array(_after_each_topics_first([(m[0], m[2]) for m in received]))
    assert np.ptp(recv_t) == pytest.approx(np.ptp(bag_t) / rate, rel=0.1)


def _after_each_topics_first(stamped: list[tuple[str, float]]) -> list[float]:
    """The times of every message but the first of its topic."""
    seen: set[str] = set()
    later = []
    for topic, t in stamped:
        if topic in seen:
            later.append(t)
        seen.add(topic)
    return later


def _read_recorded(path: Path) -> tuple[list, dict, dict]:
    with Reader(path) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        digests = {c.topic: c.digest for c in reader.connections}
        messages = [(c.topic, raw, t / 1e9) for c, t, raw in reader.messages()]
    return messages, qos, digests


def test_play_reaches_a_subscriber_with_bag_timing_and_record_writes_the_same(small_bag, tmp_path):
    store = typestore()
    bag_messages = read_bag(small_bag)
    listener = _play_to_listener(small_bag, bag_messages, "1", record_to=tmp_path / "recorded")
    _check_received(bag_messages, listener.received, store)
    _check_timing(bag_messages, listener.received, 1.0,
                  ("/CAM_FRONT/image_rect/compressed", "/odom", "/tinybev/detections"))

    # The recorder saw the same stream: same messages per topic, same order, QoS of a latched topic kept.
    recorded, qos, digests = _read_recorded(tmp_path / "recorded")
    _check_received(bag_messages, recorded, store)
    assert qos["/tf_static"][0].durability.name == "TRANSIENT_LOCAL"
    assert qos["/odom"][0].durability.name == "VOLATILE"
    assert digests["/tinybev/detections"] == store.hash_rihs01("vision_msgs/msg/Detection3DArray")


def test_a_converted_scene_plays_in_order_with_its_timing_and_records_back(scene_bag, tmp_path):
    store = typestore()
    bag_messages = read_bag(scene_bag)
    listener = _play_to_listener(scene_bag, bag_messages, "1", record_to=tmp_path / "recorded")
    _check_received(bag_messages, listener.received, store)
    _check_timing(bag_messages, listener.received, 1.0, ("/LIDAR_TOP", "/CAM_FRONT/image_rect/compressed", "/odom"))
    recorded, qos, _ = _read_recorded(tmp_path / "recorded")
    _check_received(bag_messages, recorded, store)
    assert qos["/map"][0].durability.name == "TRANSIENT_LOCAL"


def test_play_at_rate_4_is_four_times_faster_and_publishes_clock(scene_bag):
    played = [m for m in read_bag(scene_bag) if m[0] != "/clock"]  # --clock replaces the bag's own /clock
    clocks = []
    listener = _play_to_listener(scene_bag, played, "4", "--clock", "50", clocks=clocks)
    _check_received(played, listener.received, typestore())
    _check_timing(played, listener.received, 4.0, ())  # the whole span: 4x shorter
    stamps = [c.clock.sec * 10**9 + c.clock.nanosec for c in clocks]
    assert len(stamps) >= 10 and stamps == sorted(stamps)
    assert stamps[0] >= played[0][2] and stamps[-1] <= played[-1][2]


def test_play_and_record_refuse_bad_input_with_clear_errors(small_bag, tmp_path):
    missing = tinybev("bag", "play", tmp_path / "nope")
    assert missing.wait(timeout=60) == 2
    assert "no bag at" in missing.stdout.read()
    unknown = tinybev("bag", "play", small_bag, "--topics", "/not_there")
    assert unknown.wait(timeout=60) == 2
    assert "/not_there" in unknown.stdout.read()
    exists = tinybev("bag", "record", small_bag, "--topics", "/odom")
    assert exists.wait(timeout=60) == 2
    assert "already exists" in exists.stdout.read()
    invalid = tinybev("bag", "record", tmp_path / "out", "--topics", "/odom", "/camera-front/image", "--duration", "2")
    assert invalid.wait(timeout=60) == 2
    assert "topic '/camera-front/image' is not a valid ROS name" in invalid.stdout.read()
    assert not (tmp_path / "out").exists()  # refused before the bag was made: a retry needs no --force
    with AtomicBagWriter(tmp_path / "empty"):
        pass
    looping = tinybev("bag", "play", tmp_path / "empty", "--loop")  # nothing to repeat: it ends, it does not spin
    assert looping.wait(timeout=60) == 0, looping.stdout.read()


def test_paths_and_numbers_the_bag_tools_cannot_use_are_refused_before_anything_is_written(small_bag, tmp_path):
    """rosbags opens sqlite3 storage as an unquoted URI: at 'w#1' it wrote a stray '.w' file and a bag without
    its database. Numbers that mean nothing (a rate of nan, a negative /clock, a zero duration, which meant
    'forever') and a folder without metadata.yaml get one line each."""
    import shutil

    from tinybev_ros.ros.bag.play import open_reader, play
    from tinybev_ros.ros.bag.record import record
    from tinybev_ros.ros.bag.recover import recover

    with pytest.raises(ValueError, match=r"cannot contain '#'.*--storage mcap"), AtomicBagWriter(tmp_path / "w#1"):
        pass
    with pytest.raises(ValueError, match=r"cannot contain '#'"):
        record(tmp_path / "r#1", ["/odom"], duration_s=1.0)
    with AtomicBagWriter(tmp_path / "w#2", storage="mcap"):  # mcap is written with ordinary file I/O
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w#2"]
    for bad in ({"duration_s": 0.0}, {"duration_s": float("nan")}, {"max_messages": 0}):
        with pytest.raises(ValueError, match="--duration must be a positive|--max-messages must be at least 1"):
            record(tmp_path / "r", ["/odom"], **bad)
    assert not (tmp_path / "r").exists()
    for bad in ({"rate": float("nan")}, {"rate": 0.0}, {"clock_hz": -1.0}):
        with pytest.raises(ValueError, match="--rate must be a positive|--clock must be a positive"):
            play(small_bag, **bad)
    (tmp_path / "not_a_bag").mkdir()
    with pytest.raises(FileNotFoundError, match="not a rosbag2 bag: no metadata.yaml in it"):
        open_reader(tmp_path / "not_a_bag")
    killed = tmp_path / "run#3"  # what a killed recorder leaves: a database without metadata.yaml
    killed.mkdir()
    shutil.copy(next(Path(small_bag).glob("*.db3")), killed / "run.db3")
    assert recover(killed, tmp_path / "recovered") == sum(1 for _ in read_bag(small_bag))


def test_loop_replays_the_bag_until_interrupted(small_bag):
    bag_messages = read_bag(small_bag)
    topics = {m[0]: m[1] for m in bag_messages}
    odom_stamps = [t for topic, _, t, _ in bag_messages if topic == "/odom"]
    with Listener(topics) as listener:
        player = tinybev("bag", "play", small_bag, "--rate", "8", "--loop", "--wait-for-subscribers", "1",
                         "--start-paused")
        listener.wait_for_publishers(player)
        player.send_signal(signal.SIGUSR1)
        listener.spin_until(2 * len(bag_messages) + 5, player, timeout_s=60)
        player.send_signal(signal.SIGINT)
        assert player.wait(timeout=30) == 0
    assert "stopped after" in player.stdout.read()
    store = typestore()
    received = [store.deserialize_cdr(raw, "nav_msgs/msg/Odometry").header.stamp for t, raw, _ in listener.received
                if t == "/odom"]
    stamps = [s.sec * 10**9 + s.nanosec for s in received]
    assert len(stamps) > 2 * len(odom_stamps)
    assert stamps[: 2 * len(odom_stamps)] == odom_stamps * 2  # the same bag again, from its start


def test_the_storage_file_stands_for_its_bag_and_is_read_on_its_own(small_bag, tmp_path):
    """Beside its metadata.yaml, or copied on its own (`ros2 bag play file.db3` reads that too)."""
    import shutil

    from tinybev_ros.ros.bag.play import open_reader

    (db3,) = small_bag.glob("*.db3")
    alone = Path(shutil.copy(db3, tmp_path / "copied.db3"))
    for path in (db3, alone):
        reader = open_reader(path)
        reader.open()
        try:
            assert {c.topic for c in reader.connections} == {m[0] for m in read_bag(small_bag)}
            assert sum(c.msgcount for c in reader.connections) == len(read_bag(small_bag))
        finally:
            reader.close()


def test_a_damaged_mcap_is_one_line_or_a_warning_never_a_traceback(tmp_path):
    """A damaged record header used to end `bag play` in an OverflowError traceback; a record lost to damage
    was skipped without a word."""
    import shutil

    store = typestore()
    string = store.types["std_msgs/msg/String"]
    with AtomicBagWriter(tmp_path / "good", "mcap") as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        for i in range(100):
            writer.write(connection, 10**9 + i * 10**6,
                         store.serialize_cdr(string(data=f"message {i}"), "std_msgs/msg/String"))
    data = (tmp_path / "good" / "good.mcap").read_bytes()
    fields = data.index(b"message 50\0") - 8 - 22  # message 50's Message record: its fields before the CDR data
    assert data[fields - 9] == 0x05  # the record's opcode, then its 8-byte length
    outcomes = {"length": (fields - 8, b"\xff" * 8, 2, "is damaged: reading failed after 0 of the 100 messages"),
                "opcode": (fields - 9, b"\x7f", 0, "published 99 of the 100 messages metadata.yaml lists")}
    for name, (at, patch, status, said) in outcomes.items():
        shutil.copytree(tmp_path / "good", tmp_path / name)
        damaged = bytearray(data)
        damaged[at:at + len(patch)] = patch
        (tmp_path / name / "good.mcap").write_bytes(bytes(damaged))
        player = tinybev("bag", "play", tmp_path / name, "--rate", "1000")
        assert player.wait(timeout=60) == status, name
        output = player.stdout.read()
        assert said in output and "Traceback" not in output, (name, output)


def test_a_topic_whose_type_is_not_installed_is_left_out_unless_asked_for(tmp_path):
    """A real bag often holds a vendor type; `ros2 bag play` plays the rest, and so does ours."""
    from rosbags.typesys import get_types_from_msg

    store = typestore()
    store.register(get_types_from_msg("float64 level", "vendor_msgs/msg/Gauge"))
    path = tmp_path / "vendor"
    with AtomicBagWriter(path) as writer:
        gauge = writer.add_connection("/gauge", "vendor_msgs/msg/Gauge", typestore=store)
        clock = writer.add_connection("/clock", "rosgraph_msgs/msg/Clock", typestore=store)
        for i in range(3):
            stamp = T0 + i * PERIOD_NS
            writer.write(gauge, stamp, store.serialize_cdr(store.types["vendor_msgs/msg/Gauge"](level=1.0 * i),
                                                           "vendor_msgs/msg/Gauge"))
            tick = store.types["rosgraph_msgs/msg/Clock"](clock=MessageFactory(store).time(stamp))
            writer.write(clock, stamp, store.serialize_cdr(tick, "rosgraph_msgs/msg/Clock"))
    played = tinybev("bag", "play", path, "--rate", "10")
    assert played.wait(timeout=60) == 0
    output = played.stdout.read()
    assert "topic /gauge not played: message type vendor_msgs/msg/Gauge is not installed" in output, output
    assert "playing " in output and "1 topics" in output and "published 3 messages" in output, output
    asked = tinybev("bag", "play", path, "--topics", "/gauge")
    assert asked.wait(timeout=60) == 2
    assert "vendor_msgs/msg/Gauge is not installed" in asked.stdout.read()
