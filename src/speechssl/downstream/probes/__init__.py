"""Probe families: small trainable heads on top of the featurizer's output.

A family is a frame encoder (:mod:`.encoders`) plus a head (:mod:`.heads`, :mod:`.speaker`,
:mod:`.seq2seq`); :data:`PROBES` names every pair that makes sense. ``<encoder>_ctc`` is
a CTC recogniser, ``<encoder>_pool`` a pooled classifier and ``<encoder>_ctcattn`` a hybrid
CTC-attention recogniser / translator on the same encoder, so one body compares across
tasks (seed 002: rankings of upstreams change with the probe). Tasks declare the output
kind they need; :func:`check_probe` refuses an unfit pair before any work.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.probes.base import COMPATIBLE, ProbeSpec, masked_mean, masked_mean_std, padding_mask
from speechssl.downstream.probes.encoders import ENCODERS, FrameEncoder, build_encoder
from speechssl.downstream.probes.heads import AttentiveStatsPoolHead, CTCHead, MeanPoolHead
from speechssl.downstream.probes.seq2seq import CTCAttentionHead
from speechssl.downstream.probes.speaker import ECAPA, CosineScorer, XVector
from speechssl.errors import ConfigError

ENCODER_DESCRIPTIONS = {
    "identity": "no body",
    "mlp": "two dense layers per frame, no context",
    "bilstm": "stacked BiLSTM",
    "cnn": "1-D convolution blocks (ContextNet-like: depthwise-separable, squeeze-excitation)",
    "transformer": "Transformer encoder",
    "conformer": "Conformer encoder",
    "ebranchformer": "E-Branchformer encoder (parallel attention and cgMLP branches, convolutional merge)",
}


# Encoder-based probes build their encoder with build_encoder, which honours
# cfg.pre_project; the speaker probes read the features directly and ignore it.


def _ctc(encoder: str, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> nn.Module:
    return CTCHead(build_encoder(encoder, in_dim, cfg), num_outputs)


def _pool(encoder: str, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> nn.Module:
    return MeanPoolHead(build_encoder(encoder, in_dim, cfg), num_outputs)


def _ctcattn(encoder: str, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> nn.Module:
    return CTCAttentionHead(build_encoder(encoder, in_dim, cfg), num_outputs, cfg)


def _asp(in_dim: int, num_outputs: int, cfg: ProbeConfig) -> nn.Module:
    return AttentiveStatsPoolHead(build_encoder("identity", in_dim, cfg), num_outputs, cfg)


def _registry() -> dict[str, ProbeSpec]:
    probes = {
        "linear_ctc": ProbeSpec(partial(_ctc, "identity"), "frames", "frame-wise linear layer, CTC"),
        "mean_linear": ProbeSpec(partial(_pool, "identity"), "utterance",
                                 "mean pooling + linear (SUPERB classification)"),
        "asp_linear": ProbeSpec(_asp, "utterance", "attentive statistics pooling + linear"),
        "xvector": ProbeSpec(XVector, "embedding", "x-vector TDNN + stats pooling, AM-softmax (seed 002 ASV)"),
        "ecapa": ProbeSpec(ECAPA, "embedding", "ECAPA-TDNN (SE-Res2Net blocks, attentive stats pooling), AAM-softmax"),
        "cosine": ProbeSpec(CosineScorer, "verification", "no training: mean + std of the features, cosine scoring",
                            trainable=False),
    }
    for name, what in ENCODER_DESCRIPTIONS.items():
        if name == "identity":
            continue
        probes[f"{name}_ctc"] = ProbeSpec(partial(_ctc, name), "frames", f"{what} + linear, CTC")
        probes[f"{name}_pool"] = ProbeSpec(partial(_pool, name), "utterance", f"{what}, mean pooling + linear")
        probes[f"{name}_ctcattn"] = ProbeSpec(
            partial(_ctcattn, name), "sequence", f"{what} + attention decoder, hybrid CTC-attention"
        )
    return probes


PROBES: dict[str, ProbeSpec] = _registry()


def fitting_probes(needs: str) -> list[str]:
    """Names of the probes a task whose input kind is ``needs`` accepts."""
    return sorted(n for n, s in PROBES.items() if s.output_kind in COMPATIBLE[needs])


def check_probe(name: str, needs: str) -> ProbeSpec:
    """The spec of probe ``name``, refused if unknown or unfit for a task whose input kind is ``needs``."""
    if name not in PROBES:
        raise ConfigError(f"unknown probe {name!r}; known: {', '.join(sorted(PROBES))}")
    spec = PROBES[name]
    if spec.output_kind not in COMPATIBLE[needs]:
        raise ConfigError(
            f"probe {name!r} gives {spec.output_kind} outputs; this task needs {needs}: "
            f"use one of {', '.join(fitting_probes(needs))}"
        )
    return spec


def build_probe(name: str, *, needs: str, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> nn.Module:
    """Build probe ``name`` for a task whose input kind is ``needs``; refuse incompatible pairs."""
    return check_probe(name, needs).build(in_dim, num_outputs, cfg)


__all__ = [
    "COMPATIBLE", "ENCODERS", "PROBES", "FrameEncoder", "ProbeSpec", "XVector", "build_probe", "check_probe",
    "fitting_probes", "masked_mean", "masked_mean_std", "padding_mask",
]
