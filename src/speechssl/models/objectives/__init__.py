"""Pretraining objectives; each wraps an encoder and returns an :class:`ObjectiveOutput`."""

from speechssl.models.objectives.contrastive import (
    ContrastiveConfig,
    GumbelQuantizer,
    ObjectiveOutput,
    Wav2Vec2Pretraining,
    contrastive_logits,
)
from speechssl.models.objectives.masking import span_mask

__all__ = [
    "ContrastiveConfig",
    "GumbelQuantizer",
    "ObjectiveOutput",
    "Wav2Vec2Pretraining",
    "contrastive_logits",
    "span_mask",
]
