"""The ROS 2 adapter layer: the only place in the runtime package that imports rclpy or message types."""
