"""Turns an upstream's layers into the one feature sequence a probe reads.

SUPERB's convention: a learnable softmax-weighted sum of all layers, weights starting
equal, trained with the probe; or one fixed layer. The weights are part of every result
so that layer-usage plots can be drawn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import ConfigError


def resolve_layer(layer: int, num_layers: int) -> int:
    """A layer index in ``[0, num_layers)``; negative ones count from the end."""
    index = layer + num_layers if layer < 0 else layer
    if not 0 <= index < num_layers:
        raise ConfigError(f"featurizer.layer: {layer} is out of range for an upstream with {num_layers} layers")
    return index


class Featurizer(nn.Module):
    """``[L, B, T, D] -> [B, T, D]``: softmax-weighted sum over the L layers it is given.

    The caller passes only the layers that are in use (a fixed ``layer=N`` run gives one),
    so a single input layer just passes through (after the optional normalisation).
    """

    def __init__(self, num_inputs: int, *, normalize: bool = False, stats: tuple[Tensor, Tensor] | None = None) -> None:
        super().__init__()
        if num_inputs < 1:
            raise ValueError("the featurizer needs at least one layer")
        self.num_inputs = num_inputs
        self.normalize = normalize
        # Per-layer, per-dimension train mean and std ([L, D] each): buffers, so they are
        # saved with the probe, but never trained.
        if stats is not None:
            mean, std = stats
            if mean.shape != std.shape or mean.shape[0] != num_inputs:
                raise ValueError(f"standardisation stats must be [{num_inputs}, D], got {tuple(mean.shape)}")
            self.register_buffer("mean", mean.float())
            self.register_buffer("std", std.float().clamp(min=1e-5))
        else:
            self.mean = self.std = None
        # Zeros -> equal weights after the softmax; no parameter for a single layer.
        self.logits = nn.Parameter(torch.zeros(num_inputs)) if num_inputs > 1 else None

    def weights(self) -> Tensor:
        if self.logits is None:
            return torch.ones(1)
        return F.softmax(self.logits, dim=0)

    def forward(self, layers: Tensor) -> Tensor:
        if layers.dim() != 4 or layers.shape[0] != self.num_inputs:
            raise ValueError(f"expected [{self.num_inputs}, B, T, D] layers, got {tuple(layers.shape)}")
        if self.mean is not None:
            layers = (layers - self.mean[:, None, None, :]) / self.std[:, None, None, :]
        if self.normalize:
            layers = F.layer_norm(layers, layers.shape[-1:])
        if self.logits is None:
            return layers[0]
        weights = F.softmax(self.logits, dim=0).to(layers.dtype)
        return torch.einsum("l,lbtd->btd", weights, layers)

    def layer_weights(self) -> list[float]:
        return [float(w) for w in self.weights().detach().cpu()]
