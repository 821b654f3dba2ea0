"""Probe families: small trainable heads on top of the featurizer's output.

Every probe takes ``(features [B, T, D], lengths [B])``. What it returns depends on its
*output kind*, which is what a task checks when it is paired with a probe:

- ``frames``: per-frame logits ``[B, T', V]`` and their lengths (CTC recognition);
- ``utterance``: one logits row per utterance ``[B, C]`` (classification);
- ``embedding``: an utterance logits row *and* an ``embed()`` for verification.

An embedding probe is also an utterance probe, so any compatible pair combines; the
probe-family issue adds more families to :data:`PROBES` without touching the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechssl.downstream.config import ProbeConfig
from speechssl.errors import ConfigError


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the valid frames of ``x [B, T, D]``."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    return (x * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)


class BiLSTMCTC(nn.Module):
    """SUPERB's ASR probe: stacked BiLSTM then a linear layer to the CTC vocabulary."""

    output_kind = "frames"

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            in_dim,
            cfg.hidden,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # Packing keeps padding out of the backward direction's state.
        packed = pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=x.shape[1])
        return self.out(self.dropout(hidden)), lengths


class FrameMLPCTC(nn.Module):
    """Seed 002's light ASR probe (Welsh/Basque): a two-layer dense network per frame, CTC.

    No context beyond the frame itself, so it measures what each frame encodes alone.
    """

    output_kind = "frames"

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden), nn.LeakyReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, num_outputs)
        )

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x), lengths


class MeanPoolLinear(nn.Module):
    """SUPERB's classification probe: average over time, then one linear layer."""

    output_kind = "utterance"

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.out = nn.Linear(in_dim, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.out(masked_mean(x, lengths))


class _TDNNBlock(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, kernel: int, dilation: int) -> None:
        super().__init__(
            nn.Conv1d(in_dim, out_dim, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
            nn.ReLU(),
            nn.BatchNorm1d(out_dim),
        )


class XVector(nn.Module):
    """Snyder et al.'s x-vector: five TDNN layers (contexts 5/3/3/1/1 with dilations
    1/2/3/1/1), mean+std statistics pooling over valid frames, a segment-level embedding
    layer, and an AM-softmax speaker classifier (seed 002's ASV probe).

    ``forward`` returns AM-softmax logits *without* the margin (what evaluation uses);
    :meth:`loss` applies the margin to the target class during training. ``embed`` is
    the segment-level layer's output, scored by cosine similarity.
    """

    output_kind = "embedding"

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        channels = cfg.hidden
        self.frames = nn.Sequential(
            _TDNNBlock(in_dim, channels, 5, 1),
            _TDNNBlock(channels, channels, 3, 2),
            _TDNNBlock(channels, channels, 3, 3),
            _TDNNBlock(channels, channels, 1, 1),
            _TDNNBlock(channels, 3 * channels, 1, 1),
        )
        self.segment = nn.Linear(2 * 3 * channels, cfg.embed_dim)
        self.classifier = nn.Parameter(torch.randn(num_outputs, cfg.embed_dim) * 0.01)
        self.margin = cfg.margin
        self.scale = cfg.scale

    def embed(self, x: Tensor, lengths: Tensor) -> Tensor:
        # Zero the padding before every block: the convolutions then see exactly what an
        # utterance alone sees at its edges (zero "same" padding), whatever the batch.
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
        hidden = x.transpose(1, 2) * mask
        for block in self.frames:
            hidden = block(hidden) * mask
        hidden = hidden.transpose(1, 2)  # [B, T, C]
        mean = masked_mean(hidden, lengths)
        var = masked_mean((hidden - mean[:, None, :]) ** 2, lengths)
        stats = torch.cat([mean, torch.sqrt(var.clamp(min=1e-6))], dim=-1)
        return self.segment(stats)

    def cosine_logits(self, embeddings: Tensor) -> Tensor:
        return F.normalize(embeddings, dim=-1) @ F.normalize(self.classifier, dim=-1).T

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.scale * self.cosine_logits(self.embed(x, lengths))

    def loss(self, x: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
        cosine = self.cosine_logits(self.embed(x, lengths))
        margins = F.one_hot(targets, cosine.shape[-1]).to(cosine.dtype) * self.margin
        return F.cross_entropy(self.scale * (cosine - margins), targets)


@dataclass(frozen=True)
class ProbeSpec:
    build: Callable[[int, int, ProbeConfig], nn.Module]
    output_kind: str
    description: str


PROBES: dict[str, ProbeSpec] = {
    "bilstm_ctc": ProbeSpec(BiLSTMCTC, "frames", "stacked BiLSTM + linear, CTC (SUPERB ASR)"),
    "mlp_ctc": ProbeSpec(FrameMLPCTC, "frames", "two dense layers per frame, CTC (seed 002 light ASR probe)"),
    "mean_linear": ProbeSpec(MeanPoolLinear, "utterance", "mean pooling + linear (SUPERB classification)"),
    "xvector": ProbeSpec(XVector, "embedding", "x-vector TDNN + stats pooling, AM-softmax (seed 002 ASV)"),
}

# Which output kinds can serve which task input.
COMPATIBLE = {"frames": {"frames"}, "utterance": {"utterance", "embedding"}, "embedding": {"embedding"}}


def check_probe(name: str, needs: str) -> ProbeSpec:
    """The spec of probe ``name``, refused if unknown or unfit for a task whose input kind is ``needs``."""
    if name not in PROBES:
        raise ConfigError(f"unknown probe {name!r}; known: {', '.join(sorted(PROBES))}")
    spec = PROBES[name]
    if spec.output_kind not in COMPATIBLE[needs]:
        fitting = sorted(n for n, s in PROBES.items() if s.output_kind in COMPATIBLE[needs])
        raise ConfigError(f"probe {name!r} gives {spec.output_kind} outputs; this task needs {needs}: use one of {', '.join(fitting)}")
    return spec


def build_probe(name: str, *, needs: str, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> nn.Module:
    """Build probe ``name`` for a task whose input kind is ``needs``; refuse incompatible pairs."""
    return check_probe(name, needs).build(in_dim, num_outputs, cfg)
