"""Offline half of TinyBEV-ROS: data, targets, teachers, distillation, training and evaluation."""
