"""Dataclass configs: loaded from YAML, overridden with ``key=value`` strings, unknown keys are errors.

Each command has one config dataclass (possibly nested). ``load_config(cls, yaml_path, overrides)`` resolves
it; the run directory stores the resolved config so a run can be reproduced and ``--resume`` can refuse a run
made with different settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from mrdkit.errors import MrdkitError

C = TypeVar("C")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(cls: type, key: str, where: str) -> MrdkitError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(str(key), names, n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return MrdkitError(f"unknown config key {key!r} in {where}{hint} (known: {', '.join(names)})")


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _nullable(tp: Any) -> bool:
    """``Optional[...]`` (or untyped): None is a valid value."""
    return tp is Any or (typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to the annotated type ``tp``."""
    base = _strip_optional(tp)
    if value is None or (isinstance(value, str) and base in (int, float) and value.strip().lower() in ("none", "null")):
        if _nullable(tp):
            return None
        raise MrdkitError(f"config key {key!r} cannot be null: give a {getattr(base, '__name__', base)} value")
    if dataclasses.is_dataclass(base):
        if not isinstance(value, Mapping):
            raise MrdkitError(f"config key {key!r} must be a mapping, got {value!r}")
        return from_dict(base, value, where=key)
    origin = typing.get_origin(base)
    if base is bool:
        return _to_bool(value, key)
    try:
        if base in (int, float, str):
            if base is not str and not _plain_number(value, base):
                raise ValueError(value)
            return base(value)
        if origin in (dict, Mapping) and not isinstance(value, Mapping):
            raise MrdkitError(f"config key {key!r} must be a mapping of key: value, got {value!r:.60}")
        if origin in (list, tuple, Sequence):
            (item_tp,) = typing.get_args(base)[:1] or (Any,)
            items = value.split(",") if isinstance(value, str) else list(value)
            return [coerce(v, item_tp, key) for v in items if v != ""]
    except MrdkitError:
        raise
    except (TypeError, ValueError):
        raise MrdkitError(f"config key {key!r}: cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def _plain_number(value: Any, base: type) -> bool:
    """A number (not a bool, and for ``int`` a whole number) or a string; ``int(1.5)`` would silently give 1."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float) and base is int:
        return value.is_integer()
    return isinstance(value, (int, float, str))


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise MrdkitError(f"config key {key!r}: expected true/false, got {value!r}")


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "config") -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys raise :class:`MrdkitError` naming the key."""
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in types_:
            raise _unknown_key(cls, key, where)
        kwargs[key] = coerce(value, types_[key], f"{where}.{key}" if where != "config" else key)
    return cls(**kwargs)


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["beta=0.1", "mode=softmax"]`` -> ``{"beta": 0.1, "mode": "softmax"}`` (values: :func:`parse_scalar`); an
    item without ``=`` or without a key is a one-line error naming ``flag``."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise MrdkitError(f"{flag} {item!r} is not of the form key=value")
        out[key.strip()] = parse_scalar(raw.strip())
    return out


def apply_overrides(config: C, overrides: Sequence[str]) -> C:
    """Apply ``a.b=value`` overrides to a dataclass instance, returning a new instance."""
    for item in overrides:
        if "=" not in item:
            raise MrdkitError(f"override {item!r} is not of the form key=value")
        path, raw = item.split("=", 1)
        config = _set_path(config, path.strip().split("."), raw.strip(), path)
    return config


def _set_path(obj: Any, parts: list[str], raw: str, full: str) -> Any:
    head, rest = parts[0], parts[1:]
    types_ = _field_types(type(obj))
    if head not in types_:
        raise _unknown_key(type(obj), head, full)
    if rest:
        child = getattr(obj, head)
        if not dataclasses.is_dataclass(child):
            raise MrdkitError(f"config key {full!r}: {head!r} has no sub-keys")
        return dataclasses.replace(obj, **{head: _set_path(child, rest, raw, full)})
    value = parse_scalar(raw)
    if _strip_optional(types_[head]) is str and value is not None and not isinstance(value, str):
        value = raw  # a text field keeps the text as typed: "no" is not False, "1.10" is not 1.1
    return dataclasses.replace(obj, **{head: coerce(value, types_[head], full)})


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> type:
    """PyYAML's safe loader plus YAML 1.2's float rule for exponents without a dot.

    PyYAML implements YAML 1.1, whose float pattern needs a dot (``1.0e-3``), so ``1e-5`` -- how everybody writes a
    learning rate or sigma -- came back as the string ``'1e-5'`` (a traceback in an untyped ``--set`` option such as
    ``sigmas=[1e-5]``). Built once: the resolver table is copied per subclass.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a float (:func:`_yaml_loader`)."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass with one extra float pattern


def parse_scalar(raw: str) -> Any:
    """A ``key=value`` value read as a YAML scalar (``1e-3`` -> float, ``true`` -> bool), else the text as typed."""
    import yaml

    try:
        return _yaml_load(raw) if raw else ""
    except (yaml.YAMLError, ValueError):  # PyYAML raises ValueError for e.g. "0x_" (an int tag with no digits)
        return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing file or bad YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MrdkitError(f"config file {path} does not exist")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise MrdkitError(f"config file {path}{line}: invalid YAML") from None
    except (ValueError, OSError) as exc:  # not UTF-8, unreadable, or a value PyYAML cannot build (e.g. 0x_)
        raise MrdkitError(f"config file {path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise MrdkitError(f"config file {path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), **base: Any) -> C:
    """Resolve a config: defaults <- ``base`` keyword values <- YAML file <- ``key=value`` overrides."""
    data = dict(base)
    if path is not None:
        data.update(load_yaml(path))
    return apply_overrides(from_dict(cls, data), overrides)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    return dataclasses.asdict(config)
