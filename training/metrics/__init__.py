"""Metrics, one module per task; detection and tracking wrap nuscenes-devkit's own evaluators."""
