"""What `bag play` and `bag record` share: message classes by name, and QoS between rclpy and bag metadata.

QoS follows rosbag2's rules, so our tools and `ros2 bag` interoperate: a topic is replayed transient-local
only if it was offered transient-local (tf2's /tf_static, a latched /map), best-effort only if it was offered
best-effort, and a recorder adapts to what the publishers offer (a transient-local subscription would not match
a volatile publisher).
"""

from __future__ import annotations

import importlib

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

from tinybev_ros.ros.bag.typestore import MissingInterfaceError

LATCHED_TOPICS = ("/tf_static", "/map")  # transient-local by convention when a bag says nothing
STREAM_DEPTH = 100


def message_class(msgtype: str) -> type:
    """rclpy message class of "pkg/msg/Name" (needed for type support even when publishing raw bytes)."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as exc:
        raise MissingInterfaceError(f"message type {msgtype} is not installed for rclpy ({exc})") from exc


def playback_qos(topic: str, offered: list[Qos], message_count: int) -> QoSProfile:
    """The QoS to republish a bag topic with (rosbag2's adaptation of the recorded offered profiles)."""
    if offered:
        latched = all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offered)
        best_effort = any(q.reliability == QosReliability.BEST_EFFORT for q in offered)
    else:
        latched, best_effort = topic in LATCHED_TOPICS, False
    # /tf_static keeps every message for late joiners (all static transforms, not just the last batch); another
    # latched topic (a node's grids, recorded with its newest kept) keeps what its writer kept, not the whole bag.
    if not latched:
        depth = STREAM_DEPTH
    elif topic == "/tf_static" or not offered:
        depth = max(1, min(message_count, 1000))
    else:
        depth = max(1, min(max(q.depth for q in offered), 1000))
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def recording_qos(publisher_profiles: list[QoSProfile]) -> QoSProfile:
    """A subscription QoS that matches every current publisher and keeps what they keep for late joiners."""
    latched = bool(publisher_profiles) and all(
        p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publisher_profiles)
    best_effort = any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in publisher_profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=STREAM_DEPTH,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


def offered_qos(profile: QoSProfile) -> Qos:
    """rclpy QoS -> the bag-metadata record of it (what rosbag2 stores as offered_qos_profiles)."""
    zero = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_ALL if profile.history == HistoryPolicy.KEEP_ALL else QosHistory.KEEP_LAST,
        depth=int(profile.depth),
        reliability=(QosReliability.BEST_EFFORT if profile.reliability == ReliabilityPolicy.BEST_EFFORT
                     else QosReliability.RELIABLE),
        durability=(QosDurability.TRANSIENT_LOCAL if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                    else QosDurability.VOLATILE),
        deadline=zero, lifespan=zero, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )
