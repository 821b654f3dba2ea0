"""Typed dataclass configs with YAML files and dotted CLI overrides (see :mod:`.core`)."""

from speechssl.config.core import (
    apply_overrides,
    check,
    config_hash,
    describe,
    from_dict,
    load_config,
    param,
    read_yaml,
    save_config,
    to_dict,
)

__all__ = [
    "apply_overrides",
    "check",
    "config_hash",
    "describe",
    "from_dict",
    "load_config",
    "param",
    "read_yaml",
    "save_config",
    "to_dict",
]
