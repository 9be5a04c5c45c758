"""One configuration mechanism for every job and training stage.

A configuration is a tree of dataclasses with typed fields and defaults (the embedded default).
A YAML file and then ``key=value`` overrides from the command line are applied on top::

    cfg = load(BuildPretrainConfig, ["--config", "configs/pretrain.yaml", "clip.threshold=0.25"])

Values are parsed as YAML scalars and checked against the field's type; an unknown key or a value
of the wrong type is a ``ConfigError`` that names the valid keys. Lists accept ``a,b,c`` or
``[a, b]``. Choices are ``Literal`` fields (also as mapping keys): a value outside them is an
error at parse time that lists the valid ones. This module depends on nothing else in the
project, so training uses it too.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says what would work."""


def load(cls: type, argv: Sequence[str] = (), defaults: Any = None) -> Any:
    """Build `cls` from its defaults (or `defaults`), then `--config FILE`s, then `key=value`s."""
    files, overrides = split_argv(argv)
    cfg = defaults if defaults is not None else cls()
    for path in files:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        cfg = merge(cfg, data, origin=str(path))
    for key, raw in overrides:
        cfg = set_key(cfg, key, yaml.safe_load(raw) if raw != "" else "", raw=raw)
    return cfg


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    files, overrides = [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--config", "-c"):
            if not args:
                raise ConfigError(f"{arg} needs a file path")
            files.append(args.pop(0))
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            overrides.append((key.strip(), value))
        else:
            raise ConfigError(f"cannot read argument {arg!r}: expected key=value or --config FILE")
    return files, overrides


def merge(cfg: Any, data: Mapping, origin: str = "", prefix: str = "") -> Any:
    """Apply a nested mapping onto a dataclass instance, checking every key and type."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        field = _field(cfg, str(key), dotted, origin, prefix)
        current = getattr(cfg, field.name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            cfg = dataclasses.replace(cfg, **{field.name: merge(current, value, origin, dotted + ".")})
        else:
            cfg = dataclasses.replace(cfg, **{field.name: coerce(value, _hints(cfg)[field.name], dotted)})
    return cfg


def set_key(cfg: Any, key: str, value: Any, raw: str | None = None, prefix: str = "") -> Any:
    """Return a copy of `cfg` with dotted `key` set to `value` (checked and converted)."""
    head, _, rest = key.partition(".")
    dotted = prefix + head
    field = _field(cfg, head, dotted, "", prefix)
    current = getattr(cfg, field.name)
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{dotted!r} is a plain value, it has no key {rest!r}")
        return dataclasses.replace(cfg, **{field.name: set_key(current, rest, value, raw, dotted + ".")})
    if dataclasses.is_dataclass(current):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted!r} is a group; set one of its keys: {', '.join(_keys(current, dotted + '.'))}")
        return dataclasses.replace(cfg, **{field.name: merge(current, value, prefix=dotted + ".")})
    hint = _hints(cfg)[field.name]
    # A string field keeps the text as typed (so output=007 stays "007", not 7).
    if raw is not None and _base(hint) is str and not isinstance(value, (list, dict)):
        value = raw
    return dataclasses.replace(cfg, **{field.name: coerce(value, hint, dotted)})


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def keys(cfg: Any) -> list[str]:
    """Every settable dotted key of a configuration."""
    return _keys(cfg, "")


# --- types ---------------------------------------------------------------------------------------


def coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be null")
    if origin in (list, tuple, Sequence):
        item = args[0] if args else Any
        if isinstance(value, str):  # a,b,c: text items stay as typed, others are read as YAML scalars
            parts = [v.strip() for v in value.split(",") if v.strip()]
            value = parts if _base(item) is str else [yaml.safe_load(v) for v in parts]
        elif value is None:
            value = []
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} expects a mapping, got {value!r}")
        key_hint, value_hint = args if len(args) == 2 else (Any, Any)
        return {coerce(k, key_hint, f"{key} key"): coerce(v, value_hint, f"{key}[{k}]") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise ConfigError(f"{key} expects true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} expects a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} expects a string, got {value!r}")
    if typing.get_origin(hint) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} expects a mapping of {hint.__name__} keys, got {value!r}")
        return merge(hint(), value, prefix=key + ".")
    raise ConfigError(f"{key}: unsupported field type {hint!r}")


def _base(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _hints(cfg: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(cfg))


def _field(cfg: Any, name: str, dotted: str, origin: str, prefix: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    if name in fields:
        return fields[name]
    valid = _keys(cfg, prefix)
    close = difflib.get_close_matches(dotted, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    where = f" in {origin}" if origin else ""
    raise ConfigError(f"unknown key {dotted!r}{where}.{hint} Valid keys: {', '.join(valid)}")


def _keys(cfg: Any, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(_keys(value, f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}")
    return out


def job_config(cls: type, argv: Sequence[str], prog: str) -> Any | None:
    """The configuration of a job's command line, or None after `--print-config` printed it.

    A configuration error ends the program with its message (no traceback): the user typed it.
    """
    args = [a for a in argv if a != "--print-config"]
    try:
        cfg = load(cls, args)
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    if "--print-config" in argv:
        print(to_yaml(cfg))
        return None
    return cfg
