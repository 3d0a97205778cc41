"""Typed configuration: dataclasses with their defaults in code, overridden from YAML and the command line.

- Unknown keys are errors (a typo must not silently fall back to a default), and every value is checked against
  its field's type (`steps: ten` is an error naming the key), nested dataclasses load recursively, lists become
  the declared tuples.
- `base: other.yaml` in a YAML file inherits that file (relative to the file that names it): mappings merge key by
  key, anything else (numbers, lists) is replaced. Chains of any length; a cycle is an error.
- `key=value` overrides (`optim.lr=0.002`, `seeds=[0,1,2]`; the value is read as YAML) apply after the files, as
  with Hydra / OmegaConf. (Why not OmegaConf itself: its structured configs would replace every dataclass loader,
  file-reference resolution and error message here, for two features that take ~80 lines.)
- Fields that name another file carry `metadata={"path": True}` (see `path_field`); a relative name is resolved
  against the folder of the YAML that wrote it, or the working directory for a command-line override, so an
  inherited `student_config: model_tiny.yaml` still means the file beside the base.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tinybev_ros.errors import ConfigError, ConfigFileMissing

T = TypeVar("T")
BASE_KEY = "base"


def path_field(default: str = "") -> Any:
    """A dataclass field holding a file name (resolved against the YAML that sets it)."""
    return dataclasses.field(default=default, metadata={"path": True})


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursing into dataclass-typed fields and checking value types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown} in {where or cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where or cls.__name__}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as error:  # a dataclass's own check (__post_init__)
        raise ConfigError(f"{where or cls.__name__}: {error}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _convert(option, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is none of {hint}")
    if origin is tuple or origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            item = args[0] if args else Any
            items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _is_float(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; everyone means the number
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint is type(None) and value is not None:
        raise ConfigError(f"{where}: expected null, got {value!r}")
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain mapping (tuples as lists) suitable for YAML or a checkpoint's metadata."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(obj))


# ----------------------------------------------------------------------------------------- files, bases, overrides
def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: mappings merge recursively, every other value is replaced."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve_paths(cls: type, raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`raw` with the relative file names of `cls`'s path fields made absolute against `folder`."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        return raw
    hints = typing.get_type_hints(cls)
    out = dict(raw)
    for f in dataclasses.fields(cls):
        value = out.get(f.name)
        if f.metadata.get("path") and isinstance(value, str) and value and not Path(value).is_absolute():
            out[f.name] = str((folder / value).resolve())
        elif isinstance(value, dict):
            out[f.name] = _resolve_paths(hints[f.name], value, folder)
    return out


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, but a key given twice in one mapping is an error: PyYAML keeps the last silently,
    so a second `optim:` block further down would replace the first whole."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` is meant to be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):  # a list as a key: SafeLoader's own error says so
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(cls: type, path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML file with its `base:` chain merged under it (path fields made absolute)."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"config {path}: 'base' chain loops back ({' -> '.join(str(p) for p in (*_chain, path))})")
    where = f" (base of {_chain[-1]})" if _chain else ""
    if path.is_dir():
        raise ConfigError(f"config {path}{where} is a folder; give the YAML file")
    if not path.is_file():
        raise ConfigError(f"config {path}{where} not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
    except (UnicodeDecodeError, OSError) as error:
        raise ConfigError(f"config {path}{where} cannot be read as a text file ({error})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        raise ConfigError(f"config {path}{where}: not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(raw).__name__}")
    base = raw.pop(BASE_KEY, None)
    raw = _resolve_paths(cls, raw, path.parent)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: 'base' must be a file name, got {base!r}")
    return merge(read_yaml(cls, path.parent / base, (*_chain, path)), raw)


def parse_overrides(cls: type, overrides: Sequence[str]) -> dict[str, Any]:
    """`["optim.lr=0.002", "seeds=[0,1]"]` -> a nested mapping (values read as YAML; paths against the cwd)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.002")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: the value is not YAML ({error})") from None
        node: dict[str, Any] = {}
        tree = node
        *parents, leaf = key.split(".")
        for part in parents:
            node[part] = {}
            node = node[part]
        node[leaf] = value
        out = merge(out, tree)
    return _resolve_paths(cls, out, Path.cwd())


def load_yaml(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Load `cls` from a YAML file (with its `base:` chain), then apply the `key=value` `overrides`."""
    raw = merge(read_yaml(cls, path), parse_overrides(cls, overrides))
    try:
        return from_dict(cls, raw, where=str(path))
    except ConfigError as error:
        if not overrides:
            raise
        raise ConfigError(f"{error} (command-line overrides: {' '.join(overrides)})") from None


def resolve_relative(name: str | Path, source: str, what: str) -> Path:
    """A file named in a YAML config: relative paths are taken from that YAML's folder; it must exist."""
    path = Path(name)
    relative_to = ""
    if not path.is_absolute() and source:
        path = Path(source).parent / path
        relative_to = f" (relative to {source})"
    if not path.is_file():  # an absolute path may come from a command-line override: name no YAML for it
        raise ConfigFileMissing(f"{what} {path}{relative_to} not found")
    return path
