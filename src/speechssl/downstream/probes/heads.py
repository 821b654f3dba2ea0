"""Probe heads: what turns a frame encoder's output into a task's prediction."""

from __future__ import annotations

from torch import Tensor, nn

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.probes.base import AttentiveStatsPooling, masked_mean
from speechssl.downstream.probes.encoders import FrameEncoder


class CTCHead(nn.Module):
    """Encoder, then a linear layer per frame to the CTC vocabulary (output kind ``frames``)."""

    output_kind = "frames"

    def __init__(self, encoder: FrameEncoder, num_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.out = nn.Linear(encoder.out_dim, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        hidden, lengths = self.encoder(x, lengths)
        return self.out(hidden), lengths


class MeanPoolHead(nn.Module):
    """Encoder, mean over valid frames, one linear layer (SUPERB's classification probe
    when the encoder is the identity). Output kind ``utterance``."""

    output_kind = "utterance"

    def __init__(self, encoder: FrameEncoder, num_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.out = nn.Linear(encoder.out_dim, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        hidden, lengths = self.encoder(x, lengths)
        return self.out(masked_mean(hidden, lengths))


class AttentiveStatsPoolHead(nn.Module):
    """Encoder, attentive statistics pooling (Okabe et al. 2018: attention-weighted mean and
    std over valid frames, scored by a tanh MLP of width ``cfg.hidden``), one linear layer.
    Output kind ``utterance``."""

    output_kind = "utterance"

    def __init__(self, encoder: FrameEncoder, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.pool = AttentiveStatsPooling(encoder.out_dim, cfg.hidden)
        self.out = nn.Linear(self.pool.out_dim, num_outputs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        hidden, lengths = self.encoder(x, lengths)
        return self.out(self.pool(hidden, lengths))
