"""Publisher process for test_ros_interprocess: one Detection3DArray, OccupancyGrid and TFMessage.

Waits for a subscriber on every topic (discovery), publishes each message once (reliable, transient
local), then stays alive until the test terminates it so late-joining readers still get the data.
Usage: publish_env_samples.py <topic_prefix> <timeout_s>
"""

import sys
import time

import rclpy
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose


def messages():
    det = Detection3DArray()
    det.header.frame_id = "base_link"
    det.header.stamp.sec, det.header.stamp.nanosec = 1532402927, 612460000
    box = Detection3D()
    box.id = "track-7"
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id, hyp.hypothesis.score = "pedestrian", 0.875
    box.results.append(hyp)
    box.bbox.center.position.x, box.bbox.size.x = 12.5, 4.25
    det.detections.append(box)

    grid = OccupancyGrid()
    grid.header.frame_id = "base_link"
    grid.info.resolution, grid.info.width, grid.info.height = 0.5, 3, 2
    grid.data = [0, 50, 100, -1, 0, 7]

    tf = TFMessage()
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = "map", "base_link"
    t.transform.translation.x, t.transform.rotation.w = 411.3, 1.0
    tf.transforms.append(t)
    return {"detections": det, "grid": grid, "tf": tf}


def main() -> None:
    prefix, timeout = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("env_sample_publisher")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {name: (node.create_publisher(type(msg), f"{prefix}/{name}", qos), msg) for name, msg in messages().items()}
    deadline = time.monotonic() + timeout
    pending = dict(pubs)
    while pending and time.monotonic() < deadline:
        for name, (pub, msg) in list(pending.items()):
            if pub.get_subscription_count() > 0:
                pub.publish(msg)
                del pending[name]
        rclpy.spin_once(node, timeout_sec=0.01)
    print("published" if not pending else f"no subscriber for {sorted(pending)}", flush=True)
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)


if __name__ == "__main__":
    main()
