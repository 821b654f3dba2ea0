"""Transformer context network and the full wav2vec 2.0-style :class:`SpeechEncoder`.

Parameter names follow HF ``transformers`` ``Wav2Vec2Model`` so that export is a
near 1:1 rename (``mask_embedding`` <-> ``masked_spec_embed``; the positional conv
uses ``torch.nn.utils.parametrizations.weight_norm``, i.e. ``original0``/``original1``
for HF's ``weight_g``/``weight_v``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

from speechssl.config import check
from speechssl.models.config import EncoderConfig
from speechssl.models.feature_extractor import FeatureExtractor
from speechssl.models.packing import FramePacking

MaskFn = Callable[[Tensor, Tensor], Tensor]
"""``mask_fn(projected [B, T', D], padding_mask [B, T']) -> masked features [B, T', D]``."""


@dataclass
class EncoderOutput:
    layer_states: list[Tensor]
    """``layers + 1`` tensors [B, T', hidden]: the Transformer input, then each layer's output.

    For ``pre_ln`` the last state is taken after the final LayerNorm, i.e. it equals HF's
    ``last_hidden_state``; transformers 5 reports ``hidden_states[-1]`` before that norm."""
    frame_lengths: Tensor
    """[B] number of valid frames per utterance."""
    padding_mask: Tensor
    """[B, T'] bool, True where the frame is padding."""
    cnn_features: Tensor
    """[B, T', conv_dim] raw CNN output (wav2vec 2.0's L2 feature penalty is taken on these)."""
    features: Tensor
    """[B, T', conv_dim] CNN features after their LayerNorm, before the projection (quantizer input)."""
    projected: Tensor
    """[B, T', hidden] projected features before masking and positional embedding."""

    @property
    def last_hidden_state(self) -> Tensor:
        return self.layer_states[-1]


class FeatureProjection(nn.Module):
    def __init__(self, conv_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(conv_dim)
        self.projection = nn.Linear(conv_dim, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(normalised features, projected features)``."""
        normed = self.layer_norm(features)
        return normed, self.dropout(self.projection(normed))


class PositionalConvEmbedding(nn.Module):
    """Grouped, weight-normalised convolution over time; its output is added to the input."""

    def __init__(self, hidden: int, kernel: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        conv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=groups)
        # fairseq's init, scaled so the summed positional signal keeps unit-ish variance.
        std = math.sqrt(4 * (1.0 - dropout) / (kernel * hidden))
        nn.init.normal_(conv.weight, mean=0.0, std=std)
        nn.init.zeros_(conv.bias)
        # dim=2: one norm per kernel tap, as in fairseq/HF.
        self.conv = weight_norm(conv, name="weight", dim=2)
        # Symmetric padding of k//2 yields one extra frame for even kernels (fairseq SamePad).
        self.trim = 1 if kernel % 2 == 0 else 0
        self.activation = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, D] -> positional signal [B, T, D] (not yet added)."""
        y = self.conv(x.transpose(1, 2))
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.activation(y).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, attend: Tensor | None, packing: FramePacking | None = None) -> Tensor:
        """``x`` [B, T, D], or its valid frames [N, D] with their ``packing``; ``attend``:
        [B, 1, 1, T] bool, True for keys that may be attended to (or None)."""
        if packing is None:
            batch, time, hidden = x.shape
        else:
            batch, time, hidden = packing.batch, packing.time, x.shape[-1]

        def split(t: Tensor) -> Tensor:
            if packing is not None:  # only attention needs the [B, T] layout
                t = packing.unpack(t)
            return t.view(batch, time, self.heads, hidden // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q_proj(x)),
            split(self.k_proj(x)),
            split(self.v_proj(x)),
            attn_mask=attend,
            dropout_p=self.dropout if self.training else 0.0,
        )
        out = out.transpose(1, 2).reshape(batch, time, hidden)
        return self.out_proj(out if packing is None else packing.pack(out))


class FeedForward(nn.Module):
    def __init__(self, hidden: int, ffn: int, activation_dropout: float, dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden, ffn)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn, hidden)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class TransformerLayer(nn.Module):
    """One encoder block; ``pre_ln`` normalises before each sublayer, ``post_ln`` after the residual sum."""

    def __init__(
        self,
        hidden: int,
        heads: int,
        ffn: int,
        style: Literal["post_ln", "pre_ln"],
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
    ) -> None:
        super().__init__()
        self.pre_ln = style == "pre_ln"
        self.attention = SelfAttention(hidden, heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(hidden)
        self.feed_forward = FeedForward(hidden, ffn, activation_dropout, dropout)
        self.final_layer_norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor, attend: Tensor | None, packing: FramePacking | None = None) -> Tensor:
        """[B, T, D], or the valid frames [N, D] with their ``packing`` (see :class:`SelfAttention`)."""
        if self.pre_ln:
            x = x + self.dropout(self.attention(self.layer_norm(x), attend, packing))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, attend, packing)))
        return self.final_layer_norm(x + self.feed_forward(x))


class TransformerEncoder(nn.Module):
    """Positional conv + Transformer layers.

    ``layer_norm`` is the input LayerNorm for ``post_ln`` and the final one for
    ``pre_ln`` -- the same slot HF uses in both of its encoder variants.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.pre_ln = cfg.style == "pre_ln"
        self.layerdrop = cfg.layerdrop
        # Recompute each layer in the backward pass instead of keeping its activations
        # (fine-tuning regimes; speechssl.downstream.adaptation).
        self.gradient_checkpointing = False
        # Run the layers on the valid frames only (speechssl.models.packing); attention alone
        # sees the padded layout. Off under torch.compile, which wants padded static shapes.
        self.skip_padding = True
        self.pos_conv_embed = PositionalConvEmbedding(
            cfg.hidden, cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.dropout
        )
        self.layer_norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(
                cfg.hidden,
                cfg.heads,
                cfg.ffn,
                cfg.style,
                cfg.dropout,
                cfg.attention_dropout,
                cfg.activation_dropout,
            )
            for _ in range(cfg.layers)
        )

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> list[Tensor]:
        """[B, T, D] (+ [B, T] bool padding) -> ``layers + 1`` states."""
        attend, packing = None, None
        if padding_mask is not None and bool(padding_mask.any()):
            # Padded frames must not leak into valid ones through the positional conv.
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
            keep = ~padding_mask
            # A row with no valid key softmaxes over nothing: CPU SDPA returns 0 there, but
            # other backends may give NaN. Let such rows attend everywhere instead -- their
            # outputs are padding and get ignored anyway.
            keep = keep | ~keep.any(dim=1, keepdim=True)
            attend = keep[:, None, None, :]
            if self.skip_padding:
                packing = FramePacking.from_padding_mask(padding_mask)

        x = x + self.pos_conv_embed(x)
        if packing is not None:
            x = packing.pack(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        x = self.dropout(x)

        def padded(t: Tensor) -> Tensor:
            return t if packing is None else packing.unpack(t)

        states = [padded(x)]
        for layer in self.layers:
            skip = self.training and self.layerdrop > 0 and torch.rand(()).item() < self.layerdrop
            if not skip and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, attend, packing, use_reentrant=False)
            elif not skip:
                x = layer(x, attend, packing)
            states.append(states[-1] if skip else padded(x))
        if self.pre_ln:
            states[-1] = padded(self.layer_norm(x))
        return states


class SpeechEncoder(nn.Module):
    """Waveform -> CNN features -> projection -> (masking) -> positional conv -> Transformer."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = FeatureExtractor(
            cfg.conv_layers, norm=cfg.conv_norm, bias=cfg.conv_bias, grad_mult=cfg.feature_grad_mult
        )
        self.feature_projection = FeatureProjection(cfg.conv_dim, cfg.hidden, cfg.feature_dropout)
        # Used by the pretraining objective's mask_fn to replace masked frames.
        self.mask_embedding = nn.Parameter(torch.empty(cfg.hidden).uniform_())
        self.encoder = TransformerEncoder(cfg)
        self._init_transformer()

    def _init_transformer(self) -> None:
        # BERT-style init (fairseq init_bert_params) for every Linear outside the CNN.
        for module in (self.feature_projection, self.encoder):
            for sub in module.modules():
                if isinstance(sub, nn.Linear):
                    nn.init.normal_(sub.weight, mean=0.0, std=0.02)
                    nn.init.zeros_(sub.bias)

    @property
    def frame_rate(self) -> float:
        """Output frames per second of audio."""
        return self.cfg.frame_rate

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def output_lengths(self, input_lengths: Tensor) -> Tensor:
        return self.feature_extractor.output_lengths(input_lengths)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, mask_fn: MaskFn | None = None) -> EncoderOutput:
        """``waveforms`` [B, T] (zero-padded), ``lengths`` [B] valid samples (None = all full)."""
        if waveforms.dim() != 2:
            raise ValueError(f"expected waveforms of shape [batch, samples], got {tuple(waveforms.shape)}")
        batch = waveforms.shape[0]
        raw = self.feature_extractor(waveforms, lengths)
        frames = raw.shape[1]
        if lengths is None:
            frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=waveforms.device)
        else:
            frame_lengths = self.output_lengths(lengths.to(waveforms.device)).clamp(max=frames)
        padding_mask = torch.arange(frames, device=waveforms.device)[None, :] >= frame_lengths[:, None]

        features, projected = self.feature_projection(raw)
        x = projected if mask_fn is None else mask_fn(projected, padding_mask)
        states = self.encoder(x, padding_mask)
        return EncoderOutput(
            layer_states=states,
            frame_lengths=frame_lengths,
            padding_mask=padding_mask,
            cnn_features=raw,
            features=features,
            projected=projected,
        )


def build_encoder(cfg: EncoderConfig | str) -> SpeechEncoder:
    """Build a :class:`SpeechEncoder` from a config or a preset name."""
    if isinstance(cfg, str):
        cfg = EncoderConfig.preset(cfg)
    check(cfg)
    return SpeechEncoder(cfg)
