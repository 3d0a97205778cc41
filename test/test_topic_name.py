"""One validator for the recorder's topics (absolute) and the node's (relative allowed), with rclpy's reason."""

import pytest

from tinybev_ros.ros.topic_name import topic_name_problem


@pytest.mark.parametrize("topic", ["/CAM_FRONT/image/compressed", "goal_pose", "~/goal", "{node}/x"])
def test_names_a_node_can_expand_are_accepted(topic):
    assert topic_name_problem(topic) is None


@pytest.mark.parametrize(("topic", "absolute", "reason"), [
    ("goal pose", False, "must not contain characters other than alphanumerics"),
    ("cam/1st", False, "must not start with a number"),
    ("/cam/", False, "must not end with a forward slash"),
    ("goal_pose", True, "must be absolute"),
    ("/camera-front/image", True, "must not contain characters other than alphanumerics, '_', or '/'"),
])
def test_a_bad_name_gets_the_first_line_of_rclpy_s_reason(topic, absolute, reason):
    problem = topic_name_problem(topic, absolute=absolute)
    assert problem is not None and reason in problem
    assert "\n" not in problem and not problem.endswith(":")
