"""Teachers for distillation: the `Teacher` interface, the LiDAR+camera `FusionTeacher` and the on-disk cache."""

from training.teachers.base import OUTPUT_KEYS, Teacher, TeacherOutput
from training.teachers.cached import CACHE_FORMAT, CachedTeacher, cache_teacher, write_teacher_sample
from training.teachers.fusion_teacher import (
    FusionTeacher,
    FusionTeacherConfig,
    LiveTeacher,
    build_teacher,
    load_teacher_checkpoint,
    load_teacher_config,
)
from training.teachers.pillars import PillarConfig

__all__ = [
    "CACHE_FORMAT", "OUTPUT_KEYS", "CachedTeacher", "FusionTeacher", "FusionTeacherConfig", "LiveTeacher",
    "PillarConfig", "Teacher", "TeacherOutput", "build_teacher", "cache_teacher", "load_teacher_checkpoint",
    "load_teacher_config", "write_teacher_sample",
]
