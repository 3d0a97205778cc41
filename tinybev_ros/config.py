"""Typed configuration: dataclasses with their defaults in code, overridden from YAML.

Unknown keys are errors (a typo must not silently fall back to a default); nested dataclasses load
recursively; tuples and lists are converted to the declared type.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursing into dataclass-typed fields."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {where or cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where or cls.__name__}.{name}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain mapping (tuples as lists) suitable for YAML or a checkpoint's metadata."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(obj))


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load `cls` from a YAML file (optionally from one top-level section of it)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if section is not None:
        raw = raw.get(section, {})
    return from_dict(cls, raw, where=f"{path}" + (f":{section}" if section else ""))


def resolve_relative(name: str | Path, source: str, what: str) -> Path:
    """A file named in a YAML config: relative paths are taken from that YAML's folder; it must exist."""
    path = Path(name)
    if not path.is_absolute() and source:
        path = Path(source).parent / path
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} (from {source or 'defaults'}) not found")
    return path
