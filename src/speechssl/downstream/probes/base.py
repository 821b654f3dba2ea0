"""What every probe shares: padding masks, pooling, and the registry entry type.

Every probe reads ``(features [B, T, D], lengths [B])`` (input kind ``frames``); what it
returns depends on its *output kind*, which a task checks when paired with a probe:

- ``frames``: per-frame logits ``[B, T', V]`` and their lengths (CTC recognition);
- ``sequence``: a ``frames`` probe that also has an attention decoder (``loss`` with
  decoder targets, ``decode`` with joint CTC-attention beam search);
- ``utterance``: one logits row per utterance ``[B, C]`` (classification);
- ``embedding``: an ``utterance`` probe with an ``embed()`` for verification;
- ``verification``: only an ``embed()`` (no classifier, e.g. the training-free ``cosine``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from speechssl.downstream.config import ProbeConfig


def padding_mask(lengths: Tensor, frames: int) -> Tensor:
    """``[B, T]`` bool, True on valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the valid frames of ``x [B, T, D]``."""
    mask = padding_mask(lengths, x.shape[1]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)


def masked_mean_std(x: Tensor, lengths: Tensor) -> Tensor:
    """``[B, 2D]``: mean and standard deviation over the valid frames (statistics pooling)."""
    mean = masked_mean(x, lengths)
    var = masked_mean((x - mean[:, None, :]) ** 2, lengths)
    return torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=-1)


@dataclass(frozen=True)
class ProbeSpec:
    build: Callable[[int, int, ProbeConfig], nn.Module]
    output_kind: str
    description: str
    input_kind: str = "frames"
    trainable: bool = True
    """False for training-free probes (``cosine``): the runner scores them without an update."""


# Which probe output kinds can serve a task's input kind. A ``sequence`` probe is also a
# CTC ``frames`` probe, and an ``embedding`` probe is also an ``utterance`` classifier.
COMPATIBLE: dict[str, set[str]] = {
    "frames": {"frames", "sequence"},
    "sequence": {"sequence"},
    "utterance": {"utterance", "embedding"},
    "embedding": {"embedding", "verification"},
}


class SqueezeExcitation(nn.Module):
    """Channel gating from an utterance-level summary (Hu et al. 2018), on conv-layout ``[B, C, T]``.

    The "squeeze" is a mean over *valid* frames only, so padding added by batching never
    changes the gates of an utterance (ContextNet and ECAPA-TDNN both use this block).
    """

    def __init__(self, channels: int, bottleneck: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, bottleneck), activation(), nn.Linear(bottleneck, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        summary = masked_mean(x.transpose(1, 2), lengths)  # [B, C]
        return x * self.gate(summary)[:, :, None]


class AttentiveStatsPooling(nn.Module):
    """Attention-weighted mean and standard deviation over valid frames: ``[B, T, D] -> [B, 2D]``.

    Okabe et al. 2018: a small tanh MLP scores every frame, a softmax over the valid frames
    turns the scores into weights. ``channel_wise`` gives every channel its own weights and
    ``global_context`` lets the scorer also see the utterance's plain mean and std; both
    on is ECAPA-TDNN's channel- and context-dependent pooling (Desplanques et al. 2020).
    """

    def __init__(
        self, in_dim: int, attention_dim: int, *, channel_wise: bool = False, global_context: bool = False
    ) -> None:
        super().__init__()
        self.global_context = global_context
        scorer_in = 3 * in_dim if global_context else in_dim
        self.scorer = nn.Sequential(
            nn.Linear(scorer_in, attention_dim), nn.Tanh(), nn.Linear(attention_dim, in_dim if channel_wise else 1)
        )
        self.out_dim = 2 * in_dim

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # An empty utterance keeps its first frame, as the BiLSTM does: a softmax over no frame is NaN.
        valid = padding_mask(lengths.clamp(min=1), x.shape[1])[..., None]  # [B, T, 1]
        # Zeroed padding: 0 * weight stays 0 even where the padding holds garbage.
        x = x.masked_fill(~valid, 0.0)
        scorer_input = x
        if self.global_context:
            mean, std = masked_mean_std(x, lengths).chunk(2, dim=-1)
            context = torch.cat([mean, std], dim=-1)[:, None, :].expand(-1, x.shape[1], -1)
            scorer_input = torch.cat([x, context], dim=-1)
        scores = self.scorer(scorer_input).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # padded frames get exactly 0
        mean = (weights * x).sum(1)
        var = (weights * (x - mean[:, None, :]) ** 2).sum(1)
        return torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=-1)
