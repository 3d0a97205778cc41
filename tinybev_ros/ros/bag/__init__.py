"""rosbag2 tools that work without rosbag2: convert nuScenes to bags, play, record, recover, and read node outputs.

nuscenes_to_bag.py (+ nuscenes_messages.py)  nuScenes scene -> bag (`tinybev bag convert`, `nuscenes_to_bag`)
play.py / record.py / recover.py             `tinybev bag play|record|recover` (cli.py dispatches them)
rclpy_bridge.py                              message classes by name and QoS between rclpy and bag metadata
atomic_writer.py                             a bag written whole or not at all, stale partial bags handled
typestore.py                                 the one rosbags type store (Kilted types + our interfaces)
node_outputs.py                              a bag of the node's recorded outputs -> Predictions per frame
"""
