"""Speech encoder models (wav2vec 2.0-style CNN + Transformer)."""

from speechssl.models.config import (
    CONV_PRESETS,
    PRESETS,
    SEED004_CONV,
    WAV2VEC2_CONV,
    EncoderConfig,
    conv_stack,
)
from speechssl.models.encoder import EncoderOutput, SpeechEncoder, build_encoder
from speechssl.models.feature_extractor import FeatureExtractor, conv_output_lengths

__all__ = [
    "CONV_PRESETS",
    "PRESETS",
    "SEED004_CONV",
    "WAV2VEC2_CONV",
    "EncoderConfig",
    "EncoderOutput",
    "FeatureExtractor",
    "SpeechEncoder",
    "build_encoder",
    "conv_output_lengths",
    "conv_stack",
]
