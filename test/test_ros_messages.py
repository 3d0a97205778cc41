"""ROS message conversions: lossless round trips and clear errors for bad input (real message types)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection3DArray

from tinybev_ros.geometry import BevGrid, Transform, quat_to_matrix, wxyz_to_xyzw
from tinybev_ros.path_headings import MIN_HEADING_STEP_M, path_headings
from tinybev_ros.predictions import Predictions
from tinybev_ros.ros import messages as M
from tinybev_ros.ros.predicted_objects import predicted_objects_msg


def make_predictions(n=3, k=2, stamp_ns=1_532_402_927_612_460_000):
    rng = np.random.default_rng(0)
    grid = BevGrid(x_min=-10, x_max=10, y_min=-6, y_max=6, resolution=0.5)
    h, w = grid.shape
    return Predictions(
        stamp_ns=stamp_ns,
        centers=rng.uniform(-9, 9, (n, 3)), sizes_wlh=rng.uniform(0.5, 5, (n, 3)),
        yaws=rng.uniform(-3, 3, n), velocities=rng.normal(size=(n, 2)), scores=rng.uniform(0, 1, n),
        labels=np.array([0, 5, 9])[:n], track_ids=np.array([4, -1, 17])[:n],
        forecasts=rng.normal(size=(n, k, 12, 2)), forecast_probs=np.full((n, k), 1.0 / k),
        map_probs=rng.uniform(0, 1, (4, h, w)), occupancy=rng.uniform(0, 1, (5, h, w)),
        ego_plan=np.cumsum(np.full((6, 2), [2.0, 0.3]), axis=0), command=2, grid=grid,
    )


def test_detections_round_trip_through_cdr():
    pred = make_predictions()
    msg = deserialize_message(serialize_message(M.detections_msg(pred, "base_link")), Detection3DArray)
    assert msg.header.frame_id == "base_link" and M.to_ns(msg.header.stamp) == pred.stamp_ns
    back = M.detections_from_msg(msg)
    np.testing.assert_allclose(back["centers"], pred.centers)
    np.testing.assert_allclose(back["sizes_wlh"], pred.sizes_wlh)
    np.testing.assert_allclose(np.cos(back["yaws"] - pred.yaws), 1.0, atol=1e-9)
    np.testing.assert_allclose(back["scores"], pred.scores)
    assert back["labels"].tolist() == pred.labels.tolist() and back["track_ids"].tolist() == [4, -1, 17]
    assert msg.detections[1].id == "" and msg.detections[2].results[0].hypothesis.class_id == "barrier"
    # vision_msgs size is in the box frame: x = length
    assert msg.detections[0].bbox.size.x == pytest.approx(pred.sizes_wlh[0, 1])


def test_occupancy_grid_layout_and_round_trip():
    grid = BevGrid(x_min=-10, x_max=10, y_min=-6, y_max=6, resolution=0.5)
    probs = np.zeros(grid.shape)
    rows, cols, _ = grid.cell_of([[7.2, -3.1]])
    probs[rows[0], cols[0]] = 0.9
    probs[0, 0] = np.nan
    msg = M.grid_msg(probs, grid, 5, "base_link")
    info = msg.info
    hot = int(np.argmax(np.asarray(msg.data)))
    # standard OccupancyGrid semantics: data[i + j * width] is the cell at origin + (i, j) * resolution
    i, j = hot % info.width, hot // info.width
    assert info.origin.position.x + (i + 0.5) * info.resolution == pytest.approx(7.25)
    assert info.origin.position.y + (j + 0.5) * info.resolution == pytest.approx(-3.25)
    assert msg.data[hot] == 90 and msg.data[0] == -1
    back, back_grid = M.grid_from_msg(msg)
    assert back_grid == grid
    np.testing.assert_allclose(np.nan_to_num(back, nan=-1), np.nan_to_num(np.round(probs * 100) / 100, nan=-1))


def test_path_faces_along_the_plan_and_every_pose_carries_the_path_header():
    """The waypoints are base_link coordinates at the frame's stamp; tf2 transforms a PoseStamped at its own
    stamp, so a pose stamped at its future time would be moved by the ego motion a second time."""
    plan = np.array([[2.0, 0.0], [4.0, 2.0], [4.0, 4.0]])
    msg = M.path_msg(plan, 1_000_000_000, "base_link")
    assert all(p.header == msg.header for p in msg.poses)
    assert M.to_ns(msg.header.stamp) == 1_000_000_000 and msg.header.frame_id == "base_link"
    q = msg.poses[1].pose.orientation
    assert np.degrees(np.arctan2(2 * (q.w * q.z), 1 - 2 * q.z * q.z)) == pytest.approx(45.0)


def test_a_parked_agent_s_paths_keep_its_heading_through_centimetre_noise():
    """A forecast or plan that stays put wobbles by centimetres; the direction of such a step is random, so it
    holds the heading before it: the object's yaw for a forecast, base_link forward for the ego plan."""
    from tinybev_ros.ros.predicted_objects import predicted_objects_from_msg

    def yaw(q) -> float:
        return float(np.arctan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z)))

    noise = np.random.default_rng(1).normal(0.0, 0.01, (2, 12, 2))
    pred = make_predictions(n=1, k=2)
    pred.yaws = np.array([0.7])
    pred.forecasts = pred.centers[:, None, None, :2] + noise[None]
    pred.forecasts[0, 1] = pred.centers[0, :2] + np.outer(np.arange(1, 13), [0.0, 1.0])  # leaving to the left
    paths = predicted_objects_msg(pred, "base_link").objects[0].kinematics.predicted_paths
    np.testing.assert_allclose([yaw(pose.orientation) for pose in paths[0].path], 0.7, atol=1e-9)
    np.testing.assert_allclose([yaw(pose.orientation) for pose in paths[1].path[1:]], np.pi / 2, atol=1e-9)
    back = predicted_objects_from_msg(predicted_objects_msg(pred, "base_link"))
    np.testing.assert_allclose(back["forecasts"], pred.forecasts, atol=1e-9)
    plan = M.path_msg(noise[0, :6], 0, "base_link")
    np.testing.assert_allclose([yaw(pose.pose.orientation) for pose in plan.poses], 0.0, atol=1e-9)


def test_a_slow_agent_s_path_turns_with_it():
    """An agent moving 0.04 m per step never makes one step of MIN_HEADING_STEP_M, but its path leaves the point
    that set its heading: the poses turn with it once it has gone that far, not keep the start heading."""
    step = 0.4 * MIN_HEADING_STEP_M
    leftwards = np.outer(np.arange(0, 7), [0.0, step])
    headings = path_headings(leftwards, start_yaw=0.0)
    assert headings[0] == headings[1] == 0.0  # 0.04 and 0.08 m from the start: still the start heading
    np.testing.assert_allclose(headings[2:], np.pi / 2, atol=1e-9)  # from 0.12 m on: along the path


def test_markers_cover_every_box_and_mode():
    pred = make_predictions()
    boxes = M.box_markers(pred, "base_link")
    assert boxes.markers[0].action == boxes.markers[0].DELETEALL and len(boxes.markers) == 1 + 3 * len(pred)
    assert boxes.markers[2].text.startswith("car #4")
    forecasts = M.forecast_markers(pred, "base_link")
    assert len(forecasts.markers) == 1 + len(pred) * (2 + 1)
    assert len(forecasts.markers[1].points) == 13


def test_markers_stay_until_the_next_frame_replaces_them():
    """Each array starts with DELETEALL, so a marker needs no lifetime; a 0.5 s one (the keyframe period) made
    boxes flicker or vanish in rviz2 at 2 Hz or slower replay."""
    from builtin_interfaces.msg import Duration

    pred = make_predictions()
    for array in (M.box_markers(pred, "base_link"), M.forecast_markers(pred, "base_link")):
        drawn = [m for m in array.markers if m.action != m.DELETEALL]
        assert drawn and all(m.lifetime == Duration() for m in drawn)


def test_compressed_jpeg_decodes_to_rgb_and_corrupt_is_reported():
    image = np.zeros((90, 160, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    decoded = M.decode_compressed(CompressedImage(format="jpeg", data=jpeg.tobytes()))
    assert decoded.shape == (90, 160, 3) and abs(int(decoded[..., 0].mean()) - 200) < 4
    with pytest.raises(M.InputError, match="does not decode"):
        M.decode_compressed(CompressedImage(format="jpeg", data=jpeg.tobytes()[:40]))
    # other formats OpenCV would decode whole whatever size they declare: refused unread, as an encoding
    for ext in (".bmp", ".webp", ".tiff", ".ppm"):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (90, 160, 3)
        with pytest.raises(M.InputError, match="neither JPEG nor PNG .* unsupported encoding"):
            M.decode_compressed(CompressedImage(format="jpeg", data=data))
    with pytest.raises(M.InputError, match="starts with nothing"):
        M.decode_compressed(CompressedImage(format="jpeg", data=b""))


def test_image_size_is_read_from_the_header_and_checked_before_decoding():
    image = np.full((90, 160, 3), 128, np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    png = cv2.imencode(".png", image)[1].tobytes()
    for data in (jpeg, progressive, png):
        assert M.compressed_size(data) == (160, 90)
    assert M.compressed_size(b"not an image") is None
    # a small file whose header declares 20000x20000 (the decoder would allocate 1.2 GB before failing)
    at = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] in M.JPEG_SOF)
    huge = jpeg[:at + 5] + (20000).to_bytes(2, "big") + (20000).to_bytes(2, "big") + jpeg[at + 9:]
    assert M.compressed_size(huge) == (20000, 20000)
    with pytest.raises(M.ImageSizeError, match="declares 20000x20000 pixels .* not decoded"):
        M.decode_compressed(CompressedImage(format="jpeg", data=huge))
    with pytest.raises(M.ImageSizeError, match="image is 160x90 but its CameraInfo says 1600x900"):
        M.decode_compressed(CompressedImage(format="jpeg", data=jpeg), expected_size=(1600, 900))
    assert M.decode_compressed(CompressedImage(format="jpeg", data=jpeg), expected_size=(160, 90)).shape == (90, 160, 3)


@pytest.mark.parametrize("reduction", [2, 4, 8])
def test_an_odd_sized_png_decodes_reduced_to_the_sizes_a_jpeg_would(reduction):
    """libjpeg rounds reduced sizes up, OpenCV's reduced PNG read rounds down: a 1241x375 PNG camera was
    refused on every frame as 'image is 1240x374'."""
    image = np.random.default_rng(0).integers(0, 255, (375, 1241, 3), dtype=np.uint8)
    for ext, fmt in ((".png", "png"), (".jpg", "jpeg")):
        data = cv2.imencode(ext, image)[1].tobytes()
        decoded = M.decode_compressed(CompressedImage(format=fmt, data=data), (1241, 375), reduction)
        assert decoded.shape == (-(-375 // reduction), -(-1241 // reduction), 3), (fmt, decoded.shape)


def test_reduced_decode_keeps_the_pixel_geometry():
    """A JPEG decoded at 1/4 (what the node does for a 352-pixel model) shows a point where the scaled K says."""
    from tinybev_ros.model.config import load_model_config
    from tinybev_ros.model.preprocess import decode_reduction, scale_intrinsics

    config = load_model_config(Path(__file__).resolve().parent.parent / "config" / "model_tiny.yaml")
    assert decode_reduction(1600, config) == 4 and decode_reduction(config.image_width, config) == 1
    k = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
    point = np.array([2.0, 0.5, 20.0])  # in the camera frame
    u, v, _ = k @ point / point[2]
    image = np.zeros((900, 1600, 3), np.uint8)
    cv2.circle(image, (int(round(u)), int(round(v))), 12, (255, 255, 255), -1)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    small = M.decode_compressed(CompressedImage(format="jpeg", data=jpeg), (1600, 900), reduction=4)
    assert small.shape == (225, 400, 3)
    ys, xs = np.nonzero(small[..., 0] > 128)
    u4, v4, _ = scale_intrinsics(k, 0.25, 0.25) @ point / point[2]
    assert abs(xs.mean() - u4) < 0.6 and abs(ys.mean() - v4) < 0.6
    with pytest.raises(M.ImageSizeError, match="image is 1600x900 but its CameraInfo says 800x450"):
        M.decode_compressed(CompressedImage(format="jpeg", data=jpeg), (800, 450), reduction=4)


def test_raw_images_by_encoding_and_bad_ones_rejected():
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255
    msg = Image(height=4, width=6, encoding="bgr8", step=18, data=bgr.tobytes())
    assert M.decode_raw(msg)[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(M.InputError, match="unsupported image encoding '16UC1'"):
        M.decode_raw(Image(height=4, width=6, encoding="16UC1", step=12, data=bytes(48)))
    with pytest.raises(M.InputError, match="bytes"):
        M.decode_raw(Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(20)))


def test_camera_info_and_transform_validation():
    info = CameraInfo()
    info.k = [1266.4, 0.0, 816.3, 0.0, 1266.4, 491.5, 0.0, 0.0, 1.0]
    with pytest.raises(M.InputError, match="image size of 0x0"):  # valid K, but no size: not a calibration
        M.camera_from_camera_info(info)
    info.width, info.height = 1600, 900
    k, size = M.camera_from_camera_info(info)
    assert k[0, 2] == pytest.approx(816.3) and size == (1600, 900)
    info.p = [1000.0, 0.0, 800.0, 0.0, 0.0, 1000.0, 450.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rectified: P describes it
    np.testing.assert_allclose(M.camera_from_camera_info(info)[0], [[1000, 0, 800], [0, 1000, 450], [0, 0, 1]])
    # image_proc's crop_decimate: the full calibration, a region and a binning describe the image it sends
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 200, 100, 1200, 700
    info.binning_x = info.binning_y = 2
    k, size = M.camera_from_camera_info(info)
    np.testing.assert_allclose(k, [[500, 0, 299.75], [0, 500, 174.75], [0, 0, 1]])  # pixel centres kept
    assert size == (600, 350)
    point = np.array([1.0, -0.5, 10.0])  # the same pixel in the full image and in the cropped, binned one
    full = info.p[0] * point[0] / point[2] + info.p[2], info.p[5] * point[1] / point[2] + info.p[6]
    cropped = k @ point / point[2]
    np.testing.assert_allclose(cropped[:2], [(full[0] - 200 + 0.5) / 2 - 0.5, (full[1] - 100 + 0.5) / 2 - 0.5])
    info.roi.width = 1500
    with pytest.raises(M.InputError, match="region of interest 1500x700 at \\(200, 100\\) outside"):
        M.camera_from_camera_info(info)
    info.roi.width = info.roi.height = 0
    info.binning_x = info.binning_y = 0
    info.p = [0.0] * 12
    info.k[0] = float("nan")
    with pytest.raises(M.InputError, match="invalid K"):
        M.camera_from_camera_info(info)
    q_wxyz = np.array([0.4998, -0.5030, 0.4998, -0.4974])
    msg = TransformStamped()
    msg.transform.translation.x = 1.7
    x, y, z, w = wxyz_to_xyzw(q_wxyz / np.linalg.norm(q_wxyz))
    msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z, msg.transform.rotation.w = x, y, z, w
    t = M.transform_from_msg(msg)
    assert isinstance(t, Transform)
    np.testing.assert_allclose(t.rotation, quat_to_matrix(q_wxyz), atol=1e-9)
    msg.transform.rotation.w = float("nan")
    with pytest.raises(M.InputError, match="not finite"):
        M.transform_from_msg(msg)


def test_predicted_objects_carry_the_whole_object_state():
    """PredictedObjects content equals the Predictions it came from (the twist in the object's frame, as
    Autoware defines it; paths start at the object and step STEP_SECONDS)."""
    from autoware_perception_msgs.msg import Shape

    from tinybev_ros.predictions import STEP_SECONDS
    from tinybev_ros.ros.predicted_objects import AUTOWARE_LABEL, predicted_objects_from_msg
    from tinybev_ros.taxonomy import DETECTION_CLASSES

    pred = make_predictions()
    pred.forecast_probs = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    msg = predicted_objects_msg(pred, "base_link")
    assert msg.header.frame_id == "base_link" and M.to_ns(msg.header.stamp) == pred.stamp_ns
    back = predicted_objects_from_msg(msg)
    for key in ("centers", "sizes_wlh", "yaws", "velocities", "forecasts"):
        np.testing.assert_allclose(back[key], getattr(pred, key), atol=1e-9, err_msg=key)
    np.testing.assert_allclose(back["scores"], pred.scores, atol=1e-6)
    np.testing.assert_allclose(back["forecast_probs"], pred.forecast_probs, atol=1e-6)
    assert back["track_ids"].tolist() == pred.track_ids.tolist()
    first = msg.objects[0]
    assert first.shape.type == Shape.BOUNDING_BOX and first.shape.dimensions.x == pytest.approx(pred.sizes_wlh[0, 1])
    assert [o.classification[0].label for o in msg.objects] == [
        AUTOWARE_LABEL[DETECTION_CLASSES[int(label)]] for label in pred.labels]
    speed = np.hypot(*pred.velocities[0])
    twist = first.kinematics.initial_twist_with_covariance.twist.linear
    assert np.hypot(twist.x, twist.y) == pytest.approx(speed)
    path = first.kinematics.predicted_paths[0]
    assert path.time_step.sec + path.time_step.nanosec / 1e9 == pytest.approx(STEP_SECONDS)
    assert path.path[0].position.x == pytest.approx(pred.centers[0, 0])
    assert len(path.path) == 1 + pred.forecasts.shape[2]
    # a tracked object keeps its UUID across frames; untracked ones differ within a frame
    again = predicted_objects_msg(pred, "base_link").objects[0]
    assert bytes(msg.objects[0].object_id.uuid) == bytes(again.object_id.uuid)
    assert len({bytes(o.object_id.uuid) for o in msg.objects}) == len(msg.objects)


def test_predicted_objects_in_map_are_moved_by_the_ego_pose():
    """Autoware's planners read PredictedObjects in map: with the ego at (100, 50) facing +y, a box 10 m ahead is
    at (100, 60) facing +y, its forecasts likewise, and its twist (in its own frame) is unchanged."""
    from tinybev_ros.geometry import Transform
    from tinybev_ros.ros.predicted_objects import predicted_objects_from_msg

    pred = make_predictions()
    ego = Transform(np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.array([100.0, 50.0, 0.0]))
    in_base, in_map = predicted_objects_msg(pred, "base_link"), predicted_objects_msg(pred, "map", ego)
    assert in_map.header.frame_id == "map"
    back = predicted_objects_from_msg(in_map)
    np.testing.assert_allclose(back["centers"], ego.apply(pred.centers), atol=1e-9)
    np.testing.assert_allclose(back["yaws"], (pred.yaws + np.pi / 2 + np.pi) % (2 * np.pi) - np.pi, atol=1e-9)
    flat = pred.forecasts.reshape(-1, 2)
    moved = ego.apply(np.column_stack([flat, np.zeros(len(flat))]))[:, :2].reshape(pred.forecasts.shape)
    np.testing.assert_allclose(back["forecasts"], moved, atol=1e-9)
    for a, b in zip(in_base.objects, in_map.objects, strict=True):
        ta, tb = (o.kinematics.initial_twist_with_covariance.twist.linear for o in (a, b))
        assert (ta.x, ta.y) == pytest.approx((tb.x, tb.y))


def test_an_untracked_object_s_uuid_never_repeats_in_a_later_frame():
    """Consumers key an object's history by its UUID: an untracked box (track id -1) is a different object in the
    next frame (one from its index in the frame made box 0 of every frame one object), a tracked one the same."""
    first, second = make_predictions(), make_predictions(stamp_ns=1_532_402_928_112_460_000)
    first.track_ids = second.track_ids = np.array([-1, -1, 17])
    ids = [[bytes(o.object_id.uuid) for o in predicted_objects_msg(pred, "base_link").objects]
           for pred in (first, second)]
    assert len(set(ids[0][:2] + ids[1][:2])) == 4
    assert ids[0][2] == ids[1][2] and ids[0][2] not in ids[0][:2] + ids[1][:2]


def test_recorded_outputs_read_back_as_the_published_predictions(tmp_path):
    from rosbags.rosbag2 import Writer

    from tinybev_ros.ros.bag.node_outputs import predictions_from_bag
    from tinybev_ros.ros.bag.typestore import typestore
    from tinybev_ros.taxonomy import MAP_CLASSES

    pred = make_predictions()
    pred.forecast_probs = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    messages = {
        "/tinybev/detections": M.detections_msg(pred, "base_link"),
        "/tinybev/objects": predicted_objects_msg(pred, "base_link"),
        "/tinybev/ego_trajectory": M.path_msg(pred.ego_plan, pred.stamp_ns, "base_link"),
        "/tinybev/occupancy": M.grid_msg(pred.occupancy[0], pred.grid, pred.stamp_ns, "base_link"),
        "/tinybev/occupancy/future_1": M.grid_msg(pred.occupancy[1], pred.grid, pred.stamp_ns, "base_link"),
    }
    messages.update({f"/tinybev/map/{layer}": M.grid_msg(pred.map_probs[i], pred.grid, pred.stamp_ns, "base_link")
                     for i, layer in enumerate(MAP_CLASSES)})
    store = typestore()
    with Writer(tmp_path / "out", version=9) as writer:
        for topic, msg in messages.items():
            msgtype = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
            conn = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conn, pred.stamp_ns, serialize_message(msg))
    (stamp, back), = predictions_from_bag(tmp_path / "out").items()
    assert stamp == pred.stamp_ns and back.grid == pred.grid
    np.testing.assert_allclose(back.centers, pred.centers)
    np.testing.assert_allclose(back.velocities, pred.velocities, atol=1e-9)
    np.testing.assert_allclose(back.forecasts, pred.forecasts, atol=1e-9)
    np.testing.assert_allclose(back.forecast_probs, pred.forecast_probs, atol=1e-6)
    np.testing.assert_allclose(back.ego_plan, pred.ego_plan)
    np.testing.assert_allclose(back.map_probs, np.round(pred.map_probs * 100) / 100)
    np.testing.assert_allclose(back.occupancy, np.round(pred.occupancy[:2] * 100) / 100)
    assert back.track_ids.tolist() == [4, -1, 17]
