"""Configuration of the native wav2vec 2.0-style speech encoder, with named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Literal

from speechssl.config import check, param
from speechssl.errors import ConfigError

ConvLayer = tuple[int, int, int, int]
"""One CNN layer as ``(channels, kernel, stride, padding)``; padding is applied on both sides."""

WAV2VEC2_CONV: list[ConvLayer] = [(512, 10, 5, 0)] + [(512, 3, 2, 0)] * 4 + [(512, 2, 2, 0)] * 2
"""The wav2vec 2.0 / HuBERT waveform encoder: 320x downsampling, 49 frames for 1 s at 16 kHz."""

SEED004_CONV: list[ConvLayer] = [(512, 10, 5, 3)] + [(512, 3, 2, 1)] * 4 + [(512, 2, 2, 0)] * 2
"""Same receptive field layout, padded so that 1 s at 16 kHz gives exactly 50 frames."""


FRAME_MS = (20, 40, 80)
"""Frame periods of :func:`conv_stack` (CV-HuBERT's 50 / 25 / 12.5 Hz encoders)."""


def conv_stack(channels: int, padded: bool = False, frame_ms: int = 20) -> list[ConvLayer]:
    """The standard (or seed-004 padded) kernel/stride layout with ``channels`` in every layer.

    ``frame_ms`` 40 or 80 appends one or two ``(kernel 2, stride 2)`` layers to the 20 ms
    stack: coarser frames from the same front end (CV-HuBERT's 25 and 12.5 Hz encoders).
    """
    if frame_ms not in FRAME_MS:
        raise ConfigError(f"frame_ms must be one of {FRAME_MS}, got {frame_ms}")
    layout = SEED004_CONV if padded else WAV2VEC2_CONV
    extra = [(0, 2, 2, 0)] * {20: 0, 40: 1, 80: 2}[frame_ms]
    return [(channels, k, s, p) for _, k, s, p in layout + extra]


CONV_PRESETS: dict[str, list[ConvLayer]] = {
    "wav2vec2": WAV2VEC2_CONV,
    "seed004": SEED004_CONV,
}


@dataclass
class EncoderConfig:
    """CNN waveform encoder + convolutional positions + Transformer (wav2vec 2.0 layout)."""

    sample_rate: int = param(16000, gt=0, help="expected input sample rate in Hz")
    conv_layers: list[ConvLayer] = param(
        default_factory=lambda: list(WAV2VEC2_CONV),
        help="CNN layers as [channels, kernel, stride, padding]",
    )
    conv_norm: Literal["group_norm", "layer_norm"] = param(
        "group_norm",
        help="group_norm: GroupNorm on the first conv only (fairseq 'default'); "
        "layer_norm: LayerNorm over channels after every conv",
    )
    conv_bias: bool = param(False, help="bias in the CNN convolutions (True for fairseq large LV-60)")
    feature_grad_mult: float = param(
        1.0, min=0.0, help="gradient multiplier into the CNN (0 freezes it, 1 is a no-op)"
    )

    hidden: int = param(768, gt=0, help="Transformer model dimension")
    layers: int = param(12, min=1, help="number of Transformer layers")
    heads: int = param(12, min=1, help="attention heads per layer")
    ffn: int = param(3072, gt=0, help="feed-forward inner dimension")
    style: Literal["post_ln", "pre_ln"] = param(
        "post_ln",
        help="post_ln: LayerNorm on the encoder input, post-LN blocks (BASE); "
        "pre_ln: pre-LN blocks and a final LayerNorm (LARGE)",
    )

    pos_conv_kernel: int = param(128, min=1, help="kernel of the convolutional positional embedding")
    pos_conv_groups: int = param(16, min=1, help="groups of the convolutional positional embedding")

    feature_dropout: float = param(0.1, min=0.0, lt=1.0, help="dropout after the feature projection")
    dropout: float = param(0.1, min=0.0, lt=1.0, help="dropout on the residual stream")
    attention_dropout: float = param(0.1, min=0.0, lt=1.0, help="dropout on attention weights")
    activation_dropout: float = param(0.0, min=0.0, lt=1.0, help="dropout after the FFN activation")
    layerdrop: float = param(0.05, min=0.0, max=1.0, help="probability of skipping a layer in training")

    def validate(self) -> None:
        if not self.conv_layers:
            raise ConfigError("conv_layers: at least one CNN layer is required")
        for i, (channels, kernel, stride, padding) in enumerate(self.conv_layers):
            if channels < 1 or kernel < 1 or stride < 1 or padding < 0:
                raise ConfigError(
                    f"conv_layers[{i}]: need channels, kernel, stride >= 1 and padding >= 0, "
                    f"got {(channels, kernel, stride, padding)}"
                )
        if self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.hidden % self.pos_conv_groups:
            raise ConfigError(
                f"hidden ({self.hidden}) must be divisible by pos_conv_groups ({self.pos_conv_groups})"
            )

    @property
    def conv_dim(self) -> int:
        """Channels of the last CNN layer (the quantizer's input width)."""
        return self.conv_layers[-1][0]

    @property
    def total_stride(self) -> int:
        return math.prod(stride for _, _, stride, _ in self.conv_layers)

    @property
    def frame_rate(self) -> float:
        """Output frames per second of audio."""
        return self.sample_rate / self.total_stride

    @staticmethod
    def preset(name: str, **overrides: object) -> EncoderConfig:
        """A named configuration (see :data:`PRESETS`), optionally with fields replaced."""
        if name not in PRESETS:
            raise ConfigError(f"unknown encoder preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        cfg = dataclasses.replace(PRESETS[name](), **overrides)
        check(cfg)
        return cfg


def _tiny() -> EncoderConfig:
    # group_norm (fairseq BASE's front end, padding-aware here): a per-frame LayerNorm
    # front end turns digital silence into 1e14 gradient norms and is a much weaker
    # feature extractor at random init (docs/pretraining.md, "Front end").
    return EncoderConfig(
        conv_layers=conv_stack(128),
        conv_norm="group_norm",
        hidden=192,
        layers=4,
        heads=4,
        ffn=768,
    )


def _base() -> EncoderConfig:
    # fairseq wav2vec2_base_librispeech.yaml
    return EncoderConfig(feature_grad_mult=0.1)


def _large() -> EncoderConfig:
    # fairseq wav2vec2_large_librivox.yaml (LV-60): no dropout, no layerdrop.
    return EncoderConfig(
        conv_norm="layer_norm",
        conv_bias=True,
        hidden=1024,
        layers=24,
        heads=16,
        ffn=4096,
        style="pre_ln",
        feature_dropout=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        layerdrop=0.0,
    )


PRESETS: dict[str, Callable[[], EncoderConfig]] = {
    "tiny": _tiny,
    "base": _base,
    "large": _large,
}
