"""Pretraining objectives; each wraps an encoder and returns an :class:`ObjectiveOutput`.

:data:`OBJECTIVES` maps the config's ``objective`` name to its config section and model
class; :func:`build_objective` is the one place that looks it up.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from speechssl.errors import ConfigError
from speechssl.models.config import EncoderConfig
from speechssl.models.objectives.base import ObjectiveOutput, PretrainingObjective
from speechssl.models.objectives.contrastive import (
    ContrastiveConfig,
    GumbelQuantizer,
    Wav2Vec2Pretraining,
    contrastive_logits,
)
from speechssl.models.objectives.hubert import HubertConfig, HubertPretraining
from speechssl.models.objectives.masking import span_mask


class ObjectiveEntry(NamedTuple):
    section: str
    """The PretrainConfig field holding this objective's settings."""
    model: type[PretrainingObjective]


OBJECTIVES: dict[str, ObjectiveEntry] = {
    "wav2vec2": ObjectiveEntry("wav2vec2", Wav2Vec2Pretraining),
    "hubert": ObjectiveEntry("hubert", HubertPretraining),
}


def build_objective(name: str, encoder_cfg: EncoderConfig, sections: Any) -> PretrainingObjective:
    """The objective ``name`` around a fresh encoder; ``sections`` has one attribute per objective."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    entry = OBJECTIVES[name]
    return entry.model(encoder_cfg, getattr(sections, entry.section))


__all__ = [
    "OBJECTIVES",
    "ContrastiveConfig",
    "GumbelQuantizer",
    "HubertConfig",
    "HubertPretraining",
    "ObjectiveOutput",
    "PretrainingObjective",
    "Wav2Vec2Pretraining",
    "build_objective",
    "contrastive_logits",
    "span_mask",
]
