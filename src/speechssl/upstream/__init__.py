"""Upstreams by name: ``build_upstream("mfcc")``, ``build_upstream("hf:/models/wavlm")``, ...

A spec is either a bare name (``mfcc``, ``fbank``, ``ge2e``) or ``prefix:argument``
(``hf:<local dir or hub id>`` such as ``hf:facebook/wav2vec2-base[@revision]``, see
:mod:`speechssl.upstream.hf`, ``ckpt:<checkpoint or run dir>``, ``tuned:<bench run dir>`` for an
upstream as a fine-tuning run adapted it (:mod:`speechssl.upstream.tuned`), ``fuse:<mode>:<spec>+<spec>`` for
upstreams of different frame rates fused into one, see :mod:`speechssl.upstream.fusion`).
The registry stores the built-in builders as ``"module:function"`` strings and imports a
module only when its upstream is requested, so that ``import speechssl.upstream`` (and
therefore the CLI's start-up and ``--help``) never pays for importing ``transformers``.

Anything a user can get wrong -- an unknown name, a missing argument, a path that does
not exist, a malformed hub id, a hub id that is neither cached nor downloadable -- is a
:class:`~speechssl.errors.ConfigError` raised before any model is loaded, with the list of
known specs and a did-you-mean where one is close. :func:`parse_spec` checks the form only
and never touches the network; a hub id is resolved when the upstream is built.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import torch

from speechssl.errors import ConfigError
from speechssl.upstream.base import SAMPLE_RATE, Upstream, UpstreamOutput, hash_files, valid_mask

__all__ = [
    "SAMPLE_RATE",
    "Upstream",
    "UpstreamOutput",
    "build_upstream",
    "hash_files",
    "known_upstreams",
    "register_upstream",
    "valid_mask",
]

Builder = Callable[..., Upstream]
"""``builder()`` for a bare name, ``builder(argument)`` for a ``prefix:argument`` spec."""


@dataclass
class _Entry:
    name: str
    argument: str | None
    """Placeholder shown in messages (``<dir>``) for prefixed specs; None for bare names."""
    builder: Union[Builder, str]
    """A callable, or ``"module:function"`` imported on first use."""

    @property
    def display(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument}"

    def resolve(self) -> Builder:
        if isinstance(self.builder, str):
            module, _, attr = self.builder.partition(":")
            self.builder = getattr(importlib.import_module(module), attr)
        return self.builder


_REGISTRY: dict[str, _Entry] = {}


def register_upstream(name: str, *, argument: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator adding a builder under ``name``.

    With ``argument`` (a placeholder such as ``"<dir>"``) the spec is ``name:<value>`` and
    the builder is called with the value; without it the spec is the bare ``name`` and the
    builder takes no argument. Re-registering a name replaces the previous builder, so a
    plugin can override a built-in deliberately.
    """
    if not name or ":" in name:
        raise ValueError(f"upstream names must be non-empty and contain no ':', got {name!r}")

    def decorate(builder: Builder) -> Builder:
        _REGISTRY[name] = _Entry(name, argument, builder)
        return builder

    return decorate


# Built-ins, imported lazily (transformers is heavy; lhotse and the GE2E weights are not needed
# unless asked for).
_REGISTRY["mfcc"] = _Entry("mfcc", None, "speechssl.upstream.baseline:build_mfcc")
_REGISTRY["fbank"] = _Entry("fbank", None, "speechssl.upstream.baseline:build_fbank")
_REGISTRY["ge2e"] = _Entry("ge2e", None, "speechssl.upstream.ge2e:build_ge2e")
_REGISTRY["hf"] = _Entry("hf", "<dir or hub id>", "speechssl.upstream.hf:build_hf")
_REGISTRY["ckpt"] = _Entry("ckpt", "<path>", "speechssl.upstream.native:build_native")
_REGISTRY["tuned"] = _Entry("tuned", "<bench run dir>", "speechssl.upstream.tuned:build_tuned")
_REGISTRY["fuse"] = _Entry("fuse", "<mode>:<spec>+<spec>", "speechssl.upstream.fusion:build_fusion")


def known_upstreams() -> list[str]:
    """The spec forms accepted by :func:`build_upstream`, in registration order."""
    return [entry.display for entry in _REGISTRY.values()]


def _unknown(name: str, spec: str) -> ConfigError:
    message = f"unknown upstream {spec!r}; known: {', '.join(known_upstreams())}"
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1, cutoff=0.6)
    if close:
        message += f" (did you mean {_REGISTRY[close[0]].display!r}?)"
    elif Path(spec).expanduser().exists():
        message += f" ({spec} is a path: prefix it with ckpt: for a speechssl checkpoint or hf: for an HF model dir)"
    return ConfigError(message)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"hf:/a/b"`` -> ``("hf", "/a/b")``; ``"mfcc"`` -> ``("mfcc", None)``. Validates the form only."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"upstream spec must be a non-empty string; known: {', '.join(known_upstreams())}")
    spec = spec.strip()
    name, colon, argument = spec.partition(":")
    entry = _REGISTRY.get(name)
    if entry is None:
        raise _unknown(name, spec)
    if entry.argument is None:
        if colon:
            raise ConfigError(f"upstream {name!r} takes no argument, got {spec!r}")
        return name, None
    if not argument.strip():
        raise ConfigError(f"upstream {name!r} needs an argument: {entry.display}")
    return name, argument.strip()


def build_upstream(spec: str, *, device: torch.device | str | None = None) -> Upstream:
    """The upstream named by ``spec``, in eval mode, on ``device`` (default: CPU).

    Parameters keep ``requires_grad`` as loaded: freezing is the caller's decision (the
    benchmark freezes; a fine-tuning regime would not).
    """
    name, argument = parse_spec(spec)
    builder = _REGISTRY[name].resolve()
    upstream = builder() if argument is None else builder(argument)
    upstream.name = spec.strip()
    if device is not None:
        upstream = upstream.to(device)
    return upstream.eval()
