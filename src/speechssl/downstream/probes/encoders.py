"""Frame encoders: the trainable body of a probe, ``(x [B, T, D], lengths) -> (h [B, T', H], lengths')``.

A probe family is an encoder plus a head (:mod:`speechssl.downstream.probes.heads`): the
same BiLSTM serves CTC recognition and pooled classification, so families compare across
tasks. Every encoder keeps padded frames out of what valid frames see (packing, masks or
zeroing), so a batch's padding never changes an utterance's output.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.probes.base import SqueezeExcitation, padding_mask
from speechssl.errors import ConfigError


class FrameEncoder(nn.Module):
    """Base class: subclasses set ``out_dim`` and implement ``forward``."""

    out_dim: int

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


class Identity(FrameEncoder):
    """No body: the head reads the features as they are (frame-wise linear, mean + linear)."""

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return x, lengths


class FrameMLP(FrameEncoder):
    """Seed 002's light probe (Welsh/Basque ASR): dense layers applied to each frame alone,
    so it measures what a frame encodes without context."""

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.LeakyReLU(), nn.Dropout(cfg.dropout))
        self.out_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x), lengths


class BiLSTM(FrameEncoder):
    """SUPERB's ASR probe body: a stacked bidirectional LSTM.

    Padding never reaches a valid frame. On GPU (or with oneDNN off) the batch is packed
    for ``nn.LSTM``. On CPU a packed batch runs on PyTorch's per-time-step kernels, ~10x
    slower than oneDNN's fused LSTM, which only takes padded batches; there every layer
    and direction is one oneDNN call on the padded batch instead, the backward direction
    on each utterance reversed within its own length, so that padding follows the valid
    frames in both directions and never enters their state. Same parameters, and the
    dropout between layers draws the same random numbers as ``nn.LSTM``'s (it is applied
    in packed layout): outputs agree with the packed path to float rounding (~1e-7).
    """

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            in_dim, cfg.hidden, num_layers=cfg.num_layers, batch_first=True, bidirectional=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_dim = 2 * cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # An empty utterance keeps its first frame (packing refuses zero lengths).
        clamped = lengths.cpu().clamp(min=1)
        if _fused_cpu_lstm(x):
            hidden = self._per_direction(x, clamped)
        else:
            packed = pack_padded_sequence(x, clamped, batch_first=True, enforce_sorted=False)
            hidden, _ = self.lstm(packed)
            hidden, _ = pad_packed_sequence(hidden, batch_first=True, total_length=x.shape[1])
        return self.dropout(hidden), lengths

    def _per_direction(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``nn.LSTM`` on the packed batch, computed on the padded one (CPU, oneDNN); padded
        frames of the output are zero, as ``pad_packed_sequence`` leaves them."""
        lstm = self.lstm
        batch, frames, _ = x.shape
        steps = torch.arange(frames)
        valid = steps[None, :] < lengths[:, None]  # [B, T]
        # Frame t of an utterance of n frames, reversed: n - 1 - t, padding left in place (an involution).
        reverse = torch.where(valid, lengths[:, None] - 1 - steps[None, :], steps[None, :]).to(x.device)
        zeros = x.new_zeros(1, batch, lstm.hidden_size)
        hidden = x
        for layer in range(lstm.num_layers):
            outputs = []
            for suffix in ("", "_reverse"):
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}")
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inputs = _gather_frames(hidden, reverse) if suffix else hidden
                out = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)[0]
                outputs.append(_gather_frames(out, reverse) if suffix else out)
            hidden = torch.cat(outputs, dim=-1)
            if lstm.dropout > 0 and self.training and layer < lstm.num_layers - 1:
                # nn.LSTM drops out the packed data between layers: the same call on the
                # same layout draws the same mask.
                packed = pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
                packed = packed._replace(data=F.dropout(packed.data, lstm.dropout, training=True))
                hidden, _ = pad_packed_sequence(packed, batch_first=True, total_length=frames)
        return hidden * valid.to(device=hidden.device, dtype=hidden.dtype)[..., None]


def _fused_cpu_lstm(x: Tensor) -> bool:
    """Whether an LSTM on ``x`` runs as oneDNN's fused kernel (a CPU float tensor, oneDNN on)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _gather_frames(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, t]]`` for ``x [B, T, D]`` and ``index [B, T]``."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


# ---------------------------------------------------------------- shared pieces


def sinusoidal_positions(frames: int, dim: int, device: torch.device | None = None) -> Tensor:
    """``[frames, dim]`` absolute sinusoidal position codes (Vaswani et al. 2017)."""
    position = torch.arange(frames, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    angles = position * frequency  # [frames, ceil(dim / 2)]
    # Interleave sin and cos, then cut: an odd width keeps its last sine.
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :dim]


class _PositionalProjection(nn.Module):
    """Linear projection to the model width plus absolute sinusoidal positions.

    Positions count from each utterance's first frame, so they do not depend on the batch.
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.project(x)
        positions = sinusoidal_positions(x.shape[1], hidden.shape[-1], hidden.device).to(hidden.dtype)
        return self.dropout(hidden + positions)


class _ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of conv-layout ``[B, C, T]``: per-frame statistics, so
    padded frames never enter the statistics of valid ones (unlike BatchNorm in training)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


# ---------------------------------------------------------------- CNN (ContextNet-like)


class _SeparableConvBlock(nn.Module):
    """Residual block: depthwise conv, pointwise conv, LayerNorm, SiLU, squeeze-excitation."""

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding="same", groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.norm = _ChannelNorm(channels)
        self.activation = nn.SiLU()
        self.excitation = SqueezeExcitation(channels, max(channels // 8, 1), nn.SiLU)  # ContextNet's ratio 8
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, lengths: Tensor, valid: Tensor) -> Tensor:
        """``h [B, C, T]``; ``valid [B, 1, T]`` is 1 on valid frames and 0 on padding."""
        # Zeroed padding: the depthwise kernel then sees at an utterance's end what it sees
        # there alone (zero "same" padding), whatever the batch holds after it.
        y = self.pointwise(self.depthwise(h * valid))
        y = self.excitation(self.activation(self.norm(y)), lengths)
        return h + self.dropout(y)


class SeparableCNN(FrameEncoder):
    """ContextNet-like body (Han et al. 2020), without its subsampling: a linear projection,
    then ``num_layers`` depthwise-separable convolution blocks with squeeze-excitation."""

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.project = nn.Linear(in_dim, cfg.hidden)
        self.blocks = nn.ModuleList(
            _SeparableConvBlock(cfg.hidden, cfg.kernel_size, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.out_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        valid = padding_mask(lengths, x.shape[1]).to(x.dtype)[:, None, :]
        hidden = self.project(x).transpose(1, 2)
        for block in self.blocks:
            hidden = block(hidden, lengths, valid)
        return hidden.transpose(1, 2), lengths


# ---------------------------------------------------------------- Transformer


class Transformer(FrameEncoder):
    """Pre-LN Transformer encoder on a linear projection with sinusoidal positions."""

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.input = _PositionalProjection(in_dim, cfg.hidden, cfg.dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                cfg.hidden, cfg.heads, dim_feedforward=4 * cfg.hidden, dropout=cfg.dropout,
                batch_first=True, norm_first=True,
            )
            for _ in range(cfg.num_layers)
        )
        # Pre-LN layers leave their output unnormalised: one final norm, as in GPT-2 / ViT.
        self.norm = nn.LayerNorm(cfg.hidden)
        self.out_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        padded = ~padding_mask(lengths, x.shape[1])
        hidden = self.input(x)
        for layer in self.layers:
            hidden = layer(hidden, src_key_padding_mask=padded)
        return self.norm(hidden), lengths


# ---------------------------------------------------------------- Conformer


class _HalfStepFeedForward(nn.Module):
    """Conformer's macaron feed-forward module; its residual counts half (Gulati et al. 2020)."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(4 * hidden, hidden), nn.Dropout(dropout),
        )

    def forward(self, h: Tensor) -> Tensor:
        return h + 0.5 * self.net(h)


class _ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, LayerNorm, SiLU, pointwise conv (on ``[B, T, C]``)."""

    def __init__(self, hidden: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.expand = nn.Conv1d(hidden, 2 * hidden, 1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, padding="same", groups=hidden)
        # The paper has BatchNorm here; LayerNorm over channels keeps padding out of the statistics.
        self.depthwise_norm = _ChannelNorm(hidden)
        self.activation = nn.SiLU()
        self.project = nn.Conv1d(hidden, hidden, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """``valid [B, 1, T]``: 1 on valid frames, 0 on padding (zeroed before the depthwise conv)."""
        y = self.glu(self.expand(self.norm(h).transpose(1, 2)))
        y = self.activation(self.depthwise_norm(self.depthwise(y * valid)))
        return h + self.dropout(self.project(y).transpose(1, 2))


class _ConformerBlock(nn.Module):
    """FFN/2, self-attention, convolution module, FFN/2, LayerNorm."""

    def __init__(self, hidden: int, heads: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.feed_forward_in = _HalfStepFeedForward(hidden, dropout)
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.convolution = _ConvolutionModule(hidden, kernel_size, dropout)
        self.feed_forward_out = _HalfStepFeedForward(hidden, dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, padded: Tensor, valid: Tensor) -> Tensor:
        """``padded [B, T]`` is True on padding (attention keys to ignore); ``valid [B, 1, T]`` its 0/1 complement."""
        h = self.feed_forward_in(h)
        query = self.attention_norm(h)
        attended, _ = self.attention(query, query, query, key_padding_mask=padded, need_weights=False)
        h = h + self.attention_dropout(attended)
        h = self.convolution(h, valid)
        return self.norm(self.feed_forward_out(h))


class Conformer(FrameEncoder):
    """Conformer (Gulati et al. 2020) on a linear projection, without the convolutional subsampling.

    The paper's self-attention uses relative positional encoding (Transformer-XL); here
    absolute sinusoidal positions are added once at the input instead, which keeps the
    attention a plain ``nn.MultiheadAttention``. For a probe over frames of a few seconds
    the difference is small, and the convolution module supplies local order anyway.
    """

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.input = _PositionalProjection(in_dim, cfg.hidden, cfg.dropout)
        self.blocks = nn.ModuleList(
            _ConformerBlock(cfg.hidden, cfg.heads, cfg.kernel_size, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.out_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        padded = ~padding_mask(lengths, x.shape[1])
        valid = (~padded).to(x.dtype)[:, None, :]
        hidden = self.input(x)
        for block in self.blocks:
            hidden = block(hidden, padded, valid)
        return hidden, lengths


# ---------------------------------------------------------------- E-Branchformer

CGMLP_EXPANSION = 4
"""Width of the cgMLP's up-projection as a multiple of ``hidden`` (the gate then halves it).

ESPnet's E-Branchformer recipes pair a model size of 256 with ``cgmlp_linear_units`` 1024
(LibriSpeech-100), i.e. 4: the gated half (2 x hidden) is then as wide as a Conformer's
GLU output is to its input, and the probe stays close to a Conformer's size at equal
``hidden`` (see the parameter-count test)."""


class _ConvolutionalGatingMLP(nn.Module):
    """cgMLP, E-Branchformer's local branch (Sakuma et al. 2021; Peng et al. 2022).

    LayerNorm, linear up to ``CGMLP_EXPANSION * hidden``, GELU, then the convolutional
    gating unit: the channels split in two halves, one half goes through LayerNorm and a
    depthwise convolution over time and multiplies the other, and a linear layer maps
    the product back to ``hidden``. The gate has no activation (ESPnet's default
    ``gate_activation: identity``).

    The gate's convolution starts at weight ~0 and bias 1 (ESPnet's and WeNet's
    initialisation), so at first the gate is 1 and the branch is a plain GELU MLP; the
    local context it learns is then a correction of a working branch rather than random
    multiplicative noise on it.
    """

    def __init__(self, hidden: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        width = CGMLP_EXPANSION * hidden
        half = width // 2
        self.norm = nn.LayerNorm(hidden)
        self.expand = nn.Linear(hidden, width)
        self.activation = nn.GELU()
        self.gate_norm = nn.LayerNorm(half)
        self.gate_conv = nn.Conv1d(half, half, kernel_size, padding="same", groups=half)
        nn.init.normal_(self.gate_conv.weight, std=1e-6)
        nn.init.ones_(self.gate_conv.bias)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(half, hidden)

    def forward(self, h: Tensor, padded: Tensor) -> Tensor:
        """``h [B, T, H]``; ``padded [B, T]`` is True on padding (zeroed before the convolution)."""
        content, gate = self.activation(self.expand(self.norm(h))).chunk(2, dim=-1)
        gate = self.gate_norm(gate).masked_fill(padded[..., None], 0.0)
        gate = self.gate_conv(gate.transpose(1, 2)).transpose(1, 2)
        return self.project(self.dropout(content * gate))


class _EBranchformerBlock(nn.Module):
    """FFN/2; self-attention and cgMLP side by side on the same input; merge; FFN/2; LayerNorm.

    The merge is E-Branchformer's "enhanced" one (Kim et al. 2022): the two branch outputs
    are concatenated, a depthwise convolution over time of the concatenation is added to
    it (so the merge also sees neighbouring frames), and a linear layer maps the sum back
    to ``hidden`` for the residual. The merge convolution reuses ``cfg.kernel_size``, as
    ESPnet's LibriSpeech-100 recipe sets ``merge_conv_kernel`` equal to the cgMLP's kernel
    (31); one knob fewer, and both convolutions see the same context.
    """

    def __init__(self, hidden: int, heads: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.feed_forward_in = _HalfStepFeedForward(hidden, dropout)
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.cgmlp = _ConvolutionalGatingMLP(hidden, kernel_size, dropout)
        self.branch_dropout = nn.Dropout(dropout)
        self.merge_conv = nn.Conv1d(2 * hidden, 2 * hidden, kernel_size, padding="same", groups=2 * hidden)
        self.merge_project = nn.Linear(2 * hidden, hidden)
        self.merge_dropout = nn.Dropout(dropout)
        self.feed_forward_out = _HalfStepFeedForward(hidden, dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: Tensor, padded: Tensor) -> Tensor:
        """``padded [B, T]`` is True on padding: attention keys to ignore, frames zeroed before convolutions."""
        h = self.feed_forward_in(h)
        query = self.attention_norm(h)
        attended, _ = self.attention(query, query, query, key_padding_mask=padded, need_weights=False)
        local = self.cgmlp(h, padded)
        both = torch.cat([self.branch_dropout(attended), self.branch_dropout(local)], dim=-1)
        # masked_fill rather than a 0/1 product: it also clears a non-finite value on padding.
        both = both.masked_fill(padded[..., None], 0.0)
        merged = both + self.merge_conv(both.transpose(1, 2)).transpose(1, 2)
        h = h + self.merge_dropout(self.merge_project(merged))
        return self.norm(self.feed_forward_out(h))


class EBranchformer(FrameEncoder):
    """E-Branchformer (Kim et al. 2022), one of ML-SUPERB 2.0's three downstream encoders,
    on a linear projection, without the convolutional subsampling.

    Where a Conformer chains attention (global context) and convolution (local context),
    E-Branchformer runs them as parallel branches and learns how to merge them. As in
    :class:`Conformer`, absolute sinusoidal positions are added once at the input instead
    of ESPnet's relative-position attention, which keeps a plain ``nn.MultiheadAttention``;
    every block ends in a LayerNorm, so no final norm is added.
    """

    def __init__(self, in_dim: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.input = _PositionalProjection(in_dim, cfg.hidden, cfg.dropout)
        self.blocks = nn.ModuleList(
            _EBranchformerBlock(cfg.hidden, cfg.heads, cfg.kernel_size, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.out_dim = cfg.hidden

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        padded = ~padding_mask(lengths, x.shape[1])
        hidden = self.input(x)
        for block in self.blocks:
            hidden = block(hidden, padded)
        return hidden, lengths


# ---------------------------------------------------------------- pre-encoder projection


class PreProjected(FrameEncoder):
    """A linear layer ``in_dim -> cfg.pre_project`` in front of another encoder.

    ML-SUPERB 2.0 projects large SSL features (e.g. 1280-dim XLS-R) down to a small width
    (80) before the downstream encoder, so the encoder's cost and size no longer depend
    on the upstream's width and upstreams of different widths get the same body. As a
    wrapper the heads see one more encoder and need no change. A plain linear layer (no
    norm, activation or dropout), as ESPnet's linear pre-encoder.
    """

    def __init__(self, in_dim: int, cfg: ProbeConfig, inner: Callable[[int, ProbeConfig], FrameEncoder]) -> None:
        super().__init__()
        if cfg.pre_project < 1:
            raise ConfigError(f"probe_cfg.pre_project: a pre-projection needs a width >= 1, got {cfg.pre_project}")
        self.project = nn.Linear(in_dim, cfg.pre_project)
        self.inner = inner(cfg.pre_project, cfg)
        self.out_dim = self.inner.out_dim

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner(self.project(x), lengths)


ENCODERS: dict[str, Callable[[int, ProbeConfig], FrameEncoder]] = {
    "identity": Identity,
    "mlp": FrameMLP,
    "bilstm": BiLSTM,
    "cnn": SeparableCNN,
    "transformer": Transformer,
    "conformer": Conformer,
    "ebranchformer": EBranchformer,
}


def build_encoder(name: str, in_dim: int, cfg: ProbeConfig) -> FrameEncoder:
    """Encoder ``name`` on ``in_dim``-dim frames, behind a :class:`PreProjected` layer when
    ``cfg.pre_project`` > 0 (every probe built from an encoder goes through here)."""
    if cfg.pre_project > 0:
        return PreProjected(in_dim, cfg, ENCODERS[name])
    return ENCODERS[name](in_dim, cfg)
