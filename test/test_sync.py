"""Six-camera synchronizer: grouping by stamp, latest wins, late/dropped accounting, loops, missing cameras."""

from __future__ import annotations

import pytest

from tinybev_ros.geometry import CAMERA_NAMES
from tinybev_ros.sync import CameraSynchronizer, SyncConfig

# nuScenes-like stagger of the six cameras around a frame time (ns)
STAGGER = dict(zip(CAMERA_NAMES, [-43_000_000, -35_000_000, -27_000_000, -1_000_000, -10_000_000, -20_000_000],
                   strict=True))


def feed_frame(sync, t_ns, cameras=CAMERA_NAMES, order=None):
    out = []
    for cam in order or cameras:
        result = sync.add(cam, t_ns + STAGGER[cam], f"{cam}@{t_ns}")
        if result is not None:
            out.append(result)
    return out


def test_groups_staggered_cameras_into_one_set():
    sync = CameraSynchronizer(CAMERA_NAMES)
    sets = feed_frame(sync, 1_000_000_000)
    assert len(sets) == 1
    frameset = sets[0]
    assert frameset.stamp_ns == 1_000_000_000 + STAGGER["CAM_FRONT"]
    assert frameset.frames == {c: f"{c}@1000000000" for c in CAMERA_NAMES}
    assert frameset.missing == [] and sync.stats.emitted == 1 and sync.stats.dropped == 0


def test_arrival_order_does_not_matter():
    sync = CameraSynchronizer(CAMERA_NAMES)
    sets = feed_frame(sync, 5_000_000_000, order=list(reversed(CAMERA_NAMES)))
    assert len(sets) == 1 and sets[0].missing == []


def test_latest_wins_and_superseded_frames_are_counted():
    sync = CameraSynchronizer(CAMERA_NAMES)
    t1, t2 = 1_000_000_000, 1_083_000_000
    # frame t1 misses CAM_BACK; then the full frame t2 arrives: t2 is emitted, t1's partial set dropped
    feed_frame(sync, t1, cameras=[c for c in CAMERA_NAMES if c != "CAM_BACK"])
    sets = feed_frame(sync, t2)
    assert [s.stamp_ns for s in sets] == [t2 + STAGGER["CAM_FRONT"]]
    assert all(v.endswith(f"@{t2}") for v in sets[0].frames.values())
    assert sync.stats.dropped == 5
    # a straggler of t1 arriving now is late
    assert sync.add("CAM_BACK", t1 + STAGGER["CAM_BACK"], "late") is None
    assert sync.stats.late == 1


def test_frames_outside_tolerance_do_not_group():
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(tolerance_ns=20_000_000))
    assert feed_frame(sync, 2_000_000_000) == []  # stagger spans 42 ms > 20 ms


def test_a_camera_out_of_sync_is_named_with_its_offset():
    sync = CameraSynchronizer(CAMERA_NAMES)
    for k in range(4):  # CAM_BACK runs 150 ms late: no set ever forms
        late = {c: 150_000_000 if c == "CAM_BACK" else 0 for c in CAMERA_NAMES}
        for camera in CAMERA_NAMES:
            assert sync.add(camera, 1_000_000_000 + k * 500_000_000 + STAGGER[camera] + late[camera], k) is None
    offsets = sync.out_of_sync()
    assert list(offsets) == ["CAM_BACK"]
    assert offsets["CAM_BACK"] == 150_000_000 + STAGGER["CAM_BACK"] - STAGGER["CAM_FRONT"]
    assert CameraSynchronizer(CAMERA_NAMES).out_of_sync() == {}


def test_a_camera_whose_frames_come_late_is_not_left_out_for_ever():
    """Allowed missing: CAM_BACK starts late (sets go out without it, its frames arrive late); once it delivers
    in time again, sets include it. A late frame still counts as a sign of life."""
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=True, missing_timeout_ns=300_000_000))
    others = [c for c in CAMERA_NAMES if c != "CAM_BACK"]
    for k in range(6):  # silent for two frames, then each of its frames arrives after its set went out
        t = 1_000_000_000 + k * 250_000_000
        feed_frame(sync, t, cameras=others)
        if k >= 2:
            sync.add("CAM_BACK", t + STAGGER["CAM_BACK"], "late")
    assert sync.stats.late >= 1 and "CAM_BACK" not in sync.silent_cameras()
    sets = feed_frame(sync, 2_500_000_000)  # now in time: the set waits for it
    assert sets and sets[-1].missing == []


@pytest.mark.parametrize("silent", CAMERA_NAMES)
def test_any_silent_camera_is_masked_the_reference_camera_too(silent):
    """CAM_FRONT anchors every set; when it died, allow_missing used to emit nothing at all."""
    live = [c for c in CAMERA_NAMES if c != silent]
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=True, missing_timeout_ns=300_000_000))
    emitted = []
    for k in range(6):
        emitted += feed_frame(sync, 1_000_000_000 + k * 100_000_000, cameras=live)
    assert len(emitted) >= 3 and all(s.missing == [silent] for s in emitted)
    anchor = sync.reference()
    assert anchor == ("CAM_FRONT" if silent != "CAM_FRONT" else live[0])
    assert all(s.stamp_ns == s.stamps[anchor] for s in emitted)
    sets = [*feed_frame(sync, 1_600_000_000), *feed_frame(sync, 1_700_000_000)]  # the camera is back
    assert sets[-1].missing == [] and sync.reference() == "CAM_FRONT"  # complete, anchored on CAM_FRONT again


def test_after_a_pause_the_first_camera_back_does_not_anchor_a_set_alone():
    """Past a pause longer than the silence timeout every other camera looks silent when the first one is back:
    the sets must still be anchored and stamped by CAM_FRONT (a burst test of the node caught this)."""
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=True, missing_timeout_ns=300_000_000))
    for k in range(4):
        feed_frame(sync, 1_000_000_000 + k * 100_000_000)
    after_pause = 3_000_000_000
    sets = feed_frame(sync, after_pause)
    assert sets and all(s.stamp_ns == after_pause + STAGGER["CAM_FRONT"] for s in sets)
    assert sync.reference() == "CAM_FRONT"


def test_burst_is_bounded_by_the_queue():
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(queue_size=3))
    for k in range(50):  # only CAM_FRONT floods in; nothing can complete
        sync.add("CAM_FRONT", 1_000_000_000 + k * 8_000_000, k)
    assert max(len(q) for q in sync._queues.values()) == 3
    assert sync.stats.dropped == 47


def test_time_jump_backwards_resets():
    sync = CameraSynchronizer(CAMERA_NAMES)
    for k in range(3):
        feed_frame(sync, 10_000_000_000 + k * 500_000_000)
    sets = feed_frame(sync, 10_000_000_000)  # bag looped
    assert len(sets) == 1 and sync.stats.resets == 1 and sync.stats.emitted == 4


def test_a_camera_processed_seconds_behind_the_others_is_no_time_jump():
    """The node's callbacks may run one camera's backlog after the others' newer frames (a busy executor):
    only a camera's own stream going backwards is a loop."""
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(queue_size=16))
    others = [c for c in CAMERA_NAMES if c != "CAM_BACK"]
    frames = [10_000_000_000 + k * 500_000_000 for k in range(6)]  # 2.5 s of stream
    for t in frames:
        assert not feed_frame(sync, t, cameras=others)
    sets = [s for t in frames for s in feed_frame(sync, t, cameras=["CAM_BACK"])]
    assert sync.stats.resets == 0
    assert [s.stamp_ns for s in sets] == [t + STAGGER["CAM_FRONT"] for t in frames]
    feed_frame(sync, frames[0], cameras=["CAM_BACK"])  # now CAM_BACK itself goes back 2.5 s: a loop
    assert sync.stats.resets == 1


def test_missing_camera_waits_or_emits_masked():
    silent = "CAM_BACK_LEFT"
    live = [c for c in CAMERA_NAMES if c != silent]
    waiting = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=False))
    masked = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=True, missing_timeout_ns=300_000_000))
    waited, emitted = [], []
    for k in range(6):
        t = 1_000_000_000 + k * 100_000_000
        waited += feed_frame(waiting, t, cameras=live)
        emitted += feed_frame(masked, t, cameras=live)
    assert waited == []
    assert emitted and all(s.missing == [silent] and s.frames[silent] is None for s in emitted)
    assert masked.stats.incomplete == len(emitted)
    assert len(emitted) >= 3  # once the camera is known silent, every later frame goes out at once
    assert masked.silent_cameras() == [silent] and waiting.silent_cameras() == [silent]


def test_a_2hz_keyframe_replay_is_complete_with_missing_cameras_allowed_until_one_stops():
    """Keyframes 500 ms apart, longer than the 300 ms timeout: each new set's first camera used to find all the
    others silent, and sets went out with most cameras masked. A camera is silent after 1.5 of its own periods."""
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=True, missing_timeout_ns=300_000_000))
    sets = []
    for k in range(8):
        sets += feed_frame(sync, 1_000_000_000 + k * 500_000_000)
    assert len(sets) == 8 and all(not s.missing for s in sets)
    stopped = "CAM_BACK"
    later = []
    for k in range(8, 14):
        later += feed_frame(sync, 1_000_000_000 + k * 500_000_000, cameras=[c for c in CAMERA_NAMES if c != stopped])
    assert later and later[-1].missing == [stopped] and sync.silent_cameras() == [stopped]


def test_one_gap_in_a_stream_does_not_keep_a_camera_that_then_stops_alive_for_as_long():
    """A 2 s outage, one frame, then the camera dies: it is silent after 1.5 of its usual period, not of the gap."""
    sync = CameraSynchronizer(CAMERA_NAMES, SyncConfig(allow_missing=True, missing_timeout_ns=300_000_000))
    period = 83_000_000  # 12 Hz
    t = 1_000_000_000
    for k in range(6):
        feed_frame(sync, t + k * period)
    gap = t + 5 * period + 2_000_000_000
    feed_frame(sync, gap)  # every camera back after the outage
    stopped = "CAM_FRONT_RIGHT"
    live = [c for c in CAMERA_NAMES if c != stopped]
    emitted = []
    for k in range(1, 8):  # 7 frames, 0.58 s: well past 300 ms, far short of 1.5 x the 2 s gap
        emitted += feed_frame(sync, gap + k * period, cameras=live)
    assert sync.silent_cameras() == [stopped] and emitted and emitted[-1].missing == [stopped]
