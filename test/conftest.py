"""Shared pytest set-up: ROS isolation for direct `pytest` runs, and shared fixtures."""

from __future__ import annotations

import os
import tempfile

# tools/test sets these; a bare `pytest` gets the same isolation.
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="tinybev-roslog-"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
