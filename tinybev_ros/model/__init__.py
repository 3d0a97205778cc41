"""The TinyBEV student network: ResNet-18 backbone, Lift-Splat-Shoot view transform, BEV encoder, task heads."""

from tinybev_ros.model.config import DecodeConfig, ModelConfig, load_model_config
from tinybev_ros.model.student import TinyBEV, build_student
from tinybev_ros.model.view_transform import SplatIndex

__all__ = ["DecodeConfig", "ModelConfig", "SplatIndex", "TinyBEV", "build_student", "load_model_config"]
