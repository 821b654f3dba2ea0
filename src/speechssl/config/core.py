"""Typed configs: nested dataclasses, loaded from YAML, overridden with dotted CLI keys.

A config class is a plain ``@dataclass`` whose fields carry their constraints in
``metadata`` (use :func:`param`): ``min``/``max`` (inclusive), ``gt``/``lt``
(exclusive), ``choices`` and ``help``. A class may also define ``validate(self)``
for checks that involve several fields; it raises :class:`ConfigError`.

Everything is validated before any work starts: unknown keys get a "did you mean",
wrong types and out-of-range values name the dotted key. Values are parsed with
``yaml.safe_load`` -- nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

import yaml

from speechssl.errors import ConfigError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    *,
    default_factory: Any = _MISSING,
    help: str = "",
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A dataclass field with its documentation and constraints."""
    metadata = {"help": help}
    for key, value in (("min", min), ("max", max), ("gt", gt), ("lt", lt), ("choices", choices)):
        if value is not None:
            metadata[key] = value
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ---------------------------------------------------------------- building


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, prefix: str = "") -> T:
    """Build and validate a ``cls`` instance from plain data (e.g. parsed YAML)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(_join(prefix, str(key)), str(key), fields))
    kwargs = {}
    for name, fld in fields.items():
        dotted = _join(prefix, name)
        if name in data:
            value = data[name]
            if dataclasses.is_dataclass(hints[name]) and fld.default_factory is not _MISSING and isinstance(value, Mapping):
                # A nested section given in part keeps the *enclosing* config's defaults for the
                # rest (e.g. the demo's HuBERT recipe under `pretrain`), not its class defaults.
                value = _merge(to_dict(fld.default_factory()), value)
            kwargs[name] = _convert(value, hints[name], dotted)
        elif fld.default is _MISSING and fld.default_factory is _MISSING:
            raise ConfigError(f"{dotted}: required key is missing")
    try:
        instance = cls(**kwargs)
    except TypeError as exc:  # a __post_init__ complaining about a value
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None
    check(instance, prefix=prefix)
    return instance


def check(cfg: Any, *, prefix: str = "") -> None:
    """Check types and constraints of every field (recursively), then run ``validate`` hooks.

    Also catches wrongly typed values set in code, e.g. ``SynthConfig(hours="3")``.
    """
    hints = typing.get_type_hints(type(cfg))
    for fld in dataclasses.fields(cfg):
        dotted = _join(prefix, fld.name)
        value = getattr(cfg, fld.name)
        if dataclasses.is_dataclass(value):
            check(value, prefix=dotted)
            continue
        # Store the canonical form (an int given for a float field becomes a float, a str
        # for a Path a Path) so that equal configs compare and hash equal.
        value = _convert(_plain(value), hints[fld.name], dotted)
        object.__setattr__(cfg, fld.name, value)  # also works on frozen dataclasses
        _check_constraints(value, fld.metadata, dotted)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{prefix + ': ' if prefix else ''}{exc}") from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``cls`` <- YAML file at ``path`` <- dotted ``overrides`` (``a.b=value``)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    data = apply_overrides(data, overrides, cls)
    return from_dict(cls, data)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], cls: type | None = None) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to nested plain data.

    With ``cls`` the dotted path is checked against the dataclass tree as it is
    walked (so a typo fails with a suggestion), and a value for a ``str`` field is
    kept verbatim instead of being YAML-parsed (``name=1e3`` stays ``"1e3"``).
    """
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        parts = key.split(".")
        node, node_cls = data, cls
        for depth, part in enumerate(parts):
            dotted = ".".join(parts[: depth + 1])
            field_type = None
            if node_cls is not None:
                fields = {f.name: f for f in dataclasses.fields(node_cls) if f.init}
                if part not in fields:
                    raise ConfigError(_unknown_key_message(dotted, part, fields))
                field_type = typing.get_type_hints(node_cls)[part]
            last = depth == len(parts) - 1
            if last:
                node[part] = raw if _is_plain_str(field_type) else _parse_scalar(raw, item)
                break
            child_cls = field_type if field_type is not None and dataclasses.is_dataclass(field_type) else None
            if node_cls is not None and child_cls is None:
                raise ConfigError(f"{dotted}: is a value, not a section; cannot set {key!r}")
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: is a value, not a section; cannot set {key!r}")
            node, node_cls = child, child_cls
    return data


# ---------------------------------------------------------------- output


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-serialisable data of a config (Paths become strings)."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (the record kept next to a run's outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
    return path


def config_hash(cfg: Any, length: int = 12) -> str:
    """A stable short hash of a config's content (key order independent)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """One line per leaf key: ``dotted.key (type, default): help [constraints]``.

    Defaults are read from an instance built with no arguments, so a nested section
    whose ``default_factory`` differs from its class defaults (e.g. a tiny encoder
    inside a pretraining config) shows the values a run would actually get.
    """
    if defaults is None:
        try:
            defaults = cls()
        except TypeError:  # required fields: fall back to the field declarations
            defaults = None
    lines = []
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        dotted = _join(prefix, fld.name)
        tp = hints[fld.name]
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, dotted, getattr(defaults, fld.name) if defaults is not None else None)
            continue
        if defaults is not None:
            default = getattr(defaults, fld.name)
        else:
            default = fld.default if fld.default is not _MISSING else (
                fld.default_factory() if fld.default_factory is not _MISSING else "required"
            )
        limits = ", ".join(f"{k}={v}" for k, v in fld.metadata.items() if k != "help")
        text = f"{dotted} ({_type_name(tp)}, default {default!r})"
        if fld.metadata.get("help"):
            text += f": {fld.metadata['help']}"
        if limits:
            text += f" [{limits}]"
        lines.append(text)
    return lines


# ---------------------------------------------------------------- internals


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it; nested mappings merge, anything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unknown_key_message(dotted: str, key: str, fields: Mapping[str, Any]) -> str:
    parent = dotted[: -len(key)]
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    hint = f"; did you mean {parent + close[0]!r}?" if close else f"; known keys: {', '.join(sorted(fields))}"
    return f"unknown config key {dotted!r}{hint}"


def _parse_scalar(raw: str, item: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: value is not valid YAML") from None


def _is_plain_str(tp: Any) -> bool:
    return tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and str in typing.get_args(tp)
                         and all(a in (str, type(None)) for a in typing.get_args(tp)))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, dotted: str) -> Any:
    """Turn plain data into the field's declared type, or fail naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=dotted)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, dotted)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{dotted}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{dotted}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{dotted}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{dotted}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{dotted}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{dotted}: expected a mapping, got {type(value).__name__}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, val_tp, f"{dotted}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, where ``3e-4`` (no dot) is a string, not a float.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{dotted}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{dotted}: unsupported config type {_type_name(tp)}")


def _check_constraints(value: Any, meta: Mapping[str, Any], dotted: str) -> None:
    if value is None:
        return
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if "choices" in meta and item not in meta["choices"]:
            close = difflib.get_close_matches(str(item), [str(c) for c in meta["choices"]], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{dotted}: {item!r} is not one of {list(meta['choices'])}{hint}")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if "min" in meta and item < meta["min"]:
                raise ConfigError(f"{dotted}: must be >= {meta['min']}, got {item}")
            if "max" in meta and item > meta["max"]:
                raise ConfigError(f"{dotted}: must be <= {meta['max']}, got {item}")
            if "gt" in meta and not item > meta["gt"]:
                raise ConfigError(f"{dotted}: must be > {meta['gt']}, got {item}")
            if "lt" in meta and not item < meta["lt"]:
                raise ConfigError(f"{dotted}: must be < {meta['lt']}, got {item}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return value
