"""The one interface every upstream (feature extractor or SSL encoder) implements.

``upstream(waveforms [B, T], lengths [B]) -> UpstreamOutput(layers, lengths)`` where
``layers`` is a list of ``num_layers`` tensors ``[B, T', feature_dim]`` (all the same
shape) and ``lengths`` holds the valid frames per utterance. Inputs are raw 16 kHz mono
waveforms, zero-padded on the right; each upstream applies its own input normalisation
(the one it was trained with), so callers never have to know it.

Upstreams are ``nn.Module``s so that gradients can flow when a later regime fine-tunes
them; the benchmark freezes them (``requires_grad_(False)`` + ``eval()``) by default.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

SAMPLE_RATE = 16_000


@dataclass
class UpstreamOutput:
    layers: list[Tensor]
    """``num_layers`` tensors [B, T', feature_dim]; frames past ``lengths`` are padding."""
    lengths: Tensor
    """[B] int64 number of valid frames per utterance."""


class Upstream(nn.Module):
    """Base class: subclasses set the metadata attributes and implement ``forward``."""

    name: str = ""
    """The spec string it was built from (``mfcc``, ``hf:/path``, ...)."""
    frame_rate: float = 50.0
    """Output frames per second."""
    num_layers: int = 1
    feature_dim: int = 0
    sample_rate: int = SAMPLE_RATE

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:  # pragma: no cover
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash that changes whenever the features could change (weights, config,
        preprocessing, code version). Feature caches are keyed by it."""
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "frame_rate": self.frame_rate,
            "num_layers": self.num_layers,
            "feature_dim": self.feature_dim,
            "params": self.num_params,
            "fingerprint": self.fingerprint(),
        }


def valid_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B, max_len] bool, True on valid (non-padding) positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def hash_files(paths: list[Path], *, extra: str = "") -> str:
    """sha256 over the bytes of ``paths`` (in the given order) and ``extra``; 16 hex chars."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
