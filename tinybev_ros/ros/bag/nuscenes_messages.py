"""Builders of rosbags message objects (ROS 2 CDR types) for the nuScenes converter.

rosbags types, not rclpy ones: the converter then runs without a ROS middleware. Field names and constants
are those of the upstream message definitions (sensor_msgs, geometry_msgs, nav_msgs, visualization_msgs).
"""

from __future__ import annotations

import numpy as np
from rosbags.typesys.store import Typestore

from tinybev_ros.geometry import Transform, wxyz_to_xyzw

NS_PER_S = 1_000_000_000


class MessageFactory:
    """Small constructors over one type store, so call sites read like the messages they build."""

    def __init__(self, store: Typestore) -> None:
        self.store = store
        self.T = store.types

    def serialize(self, msg: object) -> memoryview:
        return self.store.serialize_cdr(msg, msg.__msgtype__)

    # builtin / std / geometry ------------------------------------------------------------------------------
    def time(self, stamp_ns: int) -> object:
        return self.T["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)

    def header(self, stamp_ns: int, frame_id: str) -> object:
        return self.T["std_msgs/msg/Header"](stamp=self.time(stamp_ns), frame_id=frame_id)

    def vector3(self, xyz) -> object:
        x, y, z = (float(v) for v in xyz)
        return self.T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z)

    def point(self, xyz) -> object:
        x, y, z = (float(v) for v in xyz)
        return self.T["geometry_msgs/msg/Point"](x=x, y=y, z=z)

    def quaternion(self, q_wxyz) -> object:
        x, y, z, w = (float(v) for v in wxyz_to_xyzw(q_wxyz))
        return self.T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)

    def pose(self, transform: Transform) -> object:
        return self.T["geometry_msgs/msg/Pose"](position=self.point(transform.translation),
                                                orientation=self.quaternion(transform.quat_wxyz))

    def transform_stamped(self, stamp_ns: int, parent: str, child: str, transform: Transform) -> object:
        """`transform` maps child-frame points into the parent frame (tf2's parent -> child edge)."""
        return self.T["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, parent),
            child_frame_id=child,
            transform=self.T["geometry_msgs/msg/Transform"](translation=self.vector3(transform.translation),
                                                            rotation=self.quaternion(transform.quat_wxyz)),
        )

    def tf_message(self, transforms: list) -> object:
        return self.T["tf2_msgs/msg/TFMessage"](transforms=transforms)

    def clock(self, stamp_ns: int) -> object:
        return self.T["rosgraph_msgs/msg/Clock"](clock=self.time(stamp_ns))

    # sensors -----------------------------------------------------------------------------------------------
    def compressed_image(self, stamp_ns: int, frame_id: str, jpeg: bytes) -> object:
        return self.T["sensor_msgs/msg/CompressedImage"](header=self.header(stamp_ns, frame_id), format="jpeg",
                                                         data=np.frombuffer(jpeg, dtype=np.uint8))

    def image_rgb8(self, stamp_ns: int, frame_id: str, rgb: np.ndarray) -> object:
        height, width = rgb.shape[:2]
        return self.T["sensor_msgs/msg/Image"](header=self.header(stamp_ns, frame_id), height=height, width=width,
                                               encoding="rgb8", is_bigendian=0, step=width * 3,
                                               data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1))

    def camera_info(self, stamp_ns: int, frame_id: str, intrinsic, width: int, height: int) -> object:
        """Rectified pinhole camera: plumb_bob with zero distortion, R = I, P = [K | 0]."""
        k = np.asarray(intrinsic, dtype=np.float64).reshape(3, 3)
        p = np.zeros((3, 4))
        p[:, :3] = k
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
        return self.T["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=int(height), width=int(width),
            distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1).copy(), r=np.eye(3).reshape(-1),
            p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi,
        )

    def point_cloud(self, stamp_ns: int, frame_id: str, points: np.ndarray) -> object:
        """(N, 5) x, y, z, intensity, ring -> PointCloud2 with float32 x/y/z/intensity and uint16 ring.

        uint16 `ring` is the convention of the Velodyne/Ouster ROS drivers that downstream tools expect.
        """
        field = self.T["sensor_msgs/msg/PointField"]
        cloud = np.empty(len(points), dtype=POINT_DTYPE)
        for name in ("x", "y", "z", "intensity"):
            cloud[name] = points[:, POINT_COLUMNS[name]]
        cloud["ring"] = points[:, POINT_COLUMNS["ring"]]
        fields = [field(name=name, offset=POINT_DTYPE.fields[name][1],
                        datatype=field.UINT16 if name == "ring" else field.FLOAT32, count=1)
                  for name in POINT_DTYPE.names]
        return self.T["sensor_msgs/msg/PointCloud2"](
            header=self.header(stamp_ns, frame_id), height=1, width=len(cloud), fields=fields,
            is_bigendian=False, point_step=POINT_DTYPE.itemsize, row_step=POINT_DTYPE.itemsize * len(cloud),
            data=cloud.view(np.uint8).reshape(-1), is_dense=True,
        )

    # navigation / visualisation ----------------------------------------------------------------------------
    def odometry(self, stamp_ns: int, ego_to_map: Transform, linear_body, angular_body) -> object:
        """Pose in `map`, twist in `base_link` (nav_msgs convention: twist in child_frame_id)."""
        covariance = np.zeros(36)
        twist = self.T["geometry_msgs/msg/Twist"](linear=self.vector3(linear_body),
                                                  angular=self.vector3(angular_body))
        return self.T["nav_msgs/msg/Odometry"](
            header=self.header(stamp_ns, "map"), child_frame_id="base_link",
            pose=self.T["geometry_msgs/msg/PoseWithCovariance"](pose=self.pose(ego_to_map), covariance=covariance),
            twist=self.T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=covariance.copy()),
        )

    def occupancy_grid(self, stamp_ns: int, frame_id: str, origin_xy, resolution: float,
                       values: np.ndarray) -> object:
        """`values` (rows along y, columns along x, row 0 at origin) int8 in 0..100 or -1."""
        height, width = values.shape
        origin = Transform(translation=np.array([origin_xy[0], origin_xy[1], 0.0]))
        info = self.T["nav_msgs/msg/MapMetaData"](map_load_time=self.time(stamp_ns), resolution=float(resolution),
                                                  width=width, height=height, origin=self.pose(origin))
        return self.T["nav_msgs/msg/OccupancyGrid"](header=self.header(stamp_ns, frame_id), info=info,
                                                    data=np.ascontiguousarray(values, dtype=np.int8).reshape(-1))

    def marker(self, stamp_ns: int, frame_id: str, ns: str, marker_id: int, marker_type: int, action: int,
               pose: Transform, scale, rgba) -> object:
        T = self.T
        r, g, b, a = (float(v) for v in rgba)
        empty_image = T["sensor_msgs/msg/CompressedImage"](header=self.header(0, ""), format="",
                                                           data=np.zeros(0, np.uint8))
        return T["visualization_msgs/msg/Marker"](
            header=self.header(stamp_ns, frame_id), ns=ns, id=int(marker_id), type=marker_type, action=action,
            pose=self.pose(pose), scale=self.vector3(scale), color=T["std_msgs/msg/ColorRGBA"](r=r, g=g, b=b, a=a),
            lifetime=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False, points=[],
            colors=[], texture_resource="", texture=empty_image, uv_coordinates=[], text="", mesh_resource="",
            mesh_file=T["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False,
        )

    def marker_array(self, markers: list) -> object:
        return self.T["visualization_msgs/msg/MarkerArray"](markers=markers)


# nuScenes .pcd.bin layout: five little-endian float32 per point.
POINT_COLUMNS: dict[str, int] = {"x": 0, "y": 1, "z": 2, "intensity": 3, "ring": 4}
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])
