"""Synthetic driving world written in the exact nuScenes v1.0 format (test bed and embedded default data).

`generate(out_dir, SynthConfig(...))` writes a dataroot that nuscenes-devkit loads like real nuScenes:
13 tables, camera JPEGs, LiDAR `.pcd.bin`, map expansion JSON and semantic prior.
"""

from tinybev_ros.synth.config import SynthConfig
from tinybev_ros.synth.generator import generate

__all__ = ["SynthConfig", "generate"]
