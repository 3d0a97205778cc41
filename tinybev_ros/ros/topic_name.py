"""Why a topic name is not one ROS accepts, in one line, checked before anything is created.

rclpy's validators raise NameValidationException with a multi-line message (the name, a caret under the bad
character); the first line's reason is what a user needs, so both the recorder and the node report only that.
"""

from __future__ import annotations


def topic_name_problem(topic: str, absolute: bool = False) -> str | None:
    """The reason `topic` is not a valid ROS topic name, or None. `absolute`: it must be a full name
    (`/a/b`); otherwise relative and `~` names, which a node expands in its namespace, are accepted too."""
    from rclpy.exceptions import NameValidationException
    from rclpy.validate_full_topic_name import validate_full_topic_name
    from rclpy.validate_topic_name import validate_topic_name

    try:
        (validate_full_topic_name if absolute else validate_topic_name)(topic)
    except NameValidationException as exc:
        first_line = str(exc).splitlines()[0]
        return first_line.split(": ", 1)[-1].rstrip(":")
    return None
