"""Typed configuration of one benchmark run: (upstream, task, probe) on a manifest directory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from speechssl.config import param
from speechssl.errors import ConfigError


@dataclass
class FeaturizerConfig:
    layer: int | None = param(
        None, help="use only this upstream layer (negative counts from the end); null = learn a softmax-weighted sum"
    )
    normalize_layers: bool = param(False, help="layer-normalise each layer (no affine) before weighting")
    standardize: bool = param(
        False,
        help="standardise every used layer per dimension with the train split's mean and std "
        "(computed once from the feature cache) before weighting",
    )


@dataclass
class CacheConfig:
    enabled: bool = param(True, help="cache the frozen upstream's features on disk (computed once per split)")
    dir: str = param("runs/feature_cache", help="cache directory, shared by all runs")
    max_gb: float = param(20.0, gt=0.0, help="disk cap of the cache directory; least recently used entries go first")
    verify: Literal["full", "size"] = param("full", help="check shard checksums (full) or only sizes when opening")


@dataclass
class ProbeConfig:
    """Hyper-parameters shared by the probe families; each probe reads the ones it has."""

    hidden: int = param(
        256, gt=0,
        help="width of the probe body: BiLSTM units per direction, MLP/CNN/TDNN/ECAPA channels, "
        "Transformer/Conformer/E-Branchformer/decoder model size (SUPERB's ASR BiLSTM: 1024)",
    )
    num_layers: int = param(
        2, min=1, help="layers (blocks) of the BiLSTM / CNN / Transformer / Conformer / E-Branchformer body"
    )
    heads: int = param(
        4, min=1, help="attention heads (Transformer, Conformer, E-Branchformer, attention decoder); must divide hidden"
    )
    kernel_size: int = param(
        15, min=1, help="depthwise convolution kernel (CNN body, Conformer convolution module, "
        "E-Branchformer cgMLP gate and branch merge)"
    )
    pre_project: int = param(
        0, min=0, help="linear projection of the features to this width before the probe's encoder "
        "(ML-SUPERB 2.0: 1280 -> 80); applies to every encoder-based probe (*_ctc, *_pool, *_ctcattn, "
        "linear_ctc, mean_linear, asp_linear), not to the speaker probes xvector, ecapa, cosine; 0 = off"
    )
    dropout: float = param(0.2, min=0.0, lt=1.0)
    embed_dim: int = param(256, gt=0, help="speaker embedding size (x-vector, ECAPA)")
    margin: float = param(0.2, min=0.0, help="AM-softmax / AAM-softmax margin (speaker training)")
    scale: float = param(30.0, gt=0.0, help="AM-softmax / AAM-softmax scale")
    decoder_layers: int = param(2, min=1, help="Transformer decoder layers of the *_ctcattn probes")
    ctc_weight: float = param(
        0.3, min=0.0, max=1.0,
        help="hybrid CTC-attention: weight of CTC in the loss and in joint beam search (ESPnet's default 0.3)",
    )
    label_smoothing: float = param(0.1, min=0.0, lt=1.0, help="label smoothing of the attention decoder's loss")

    def validate(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"probe_cfg.heads ({self.heads}) must divide probe_cfg.hidden ({self.hidden})")


@dataclass
class TrainConfig:
    lr: float | None = param(None, help="peak AdamW learning rate; null = the task's default")
    weight_decay: float = param(0.01, min=0.0)
    batch_seconds: float = param(160.0, gt=0.0, help="seconds of audio per update (duration-bucketed batches)")
    max_epochs: int | None = param(None, help="epochs at most; null = the task's default")
    patience: int = param(3, min=1, help="stop after this many dev evaluations without improvement")
    warmup_updates: int = param(50, min=0, help="linear warmup; then cosine decay to 0 over max_epochs")
    clip_norm: float = param(5.0, min=0.0, help="clip the gradient norm (0 = off)")
    num_workers: int = param(1, min=0, help="audio-loading worker processes when features are not cached")


@dataclass
class AsrConfig:
    """Text handling and decoding of every sequence task (asr, pr, sf, sa, ast)."""

    lowercase: bool = param(True)
    remove_punctuation: bool = param(True)
    beam_size: int = param(
        8, min=1, help="beam width on the test set: CTC prefix beam search, or joint CTC-attention beam search "
        "for *_ctcattn probes (1 = greedy only)"
    )
    lm_order: int = param(
        0, min=0, max=6, help="asr / asr_lid: also decode the test set with a word n-gram LM of this order estimated "
        "on the train transcripts (shallow fusion in CTC beam search via pyctcdecode + kenlm, the lm extra); 0 = off"
    )
    lm_alpha: float = param(0.5, min=0.0, help="LM weight of shallow fusion (the value used when lm_tune is off)")
    lm_beta: float = param(1.0, help="word insertion bonus of shallow fusion (used when lm_tune is off)")
    lm_tune: bool = param(
        True, help="choose lm_alpha and lm_beta on dev after training, from alpha in {0, 0.25, 0.5, 1} x "
        "beta in {0, 1, 2}, by the task's primary metric (as recipes tune LM weights on dev)"
    )
    worst_languages: int = param(15, min=1, help="asr_lid: N of the worst-N languages mean (ML-SUPERB 2.0: 15)")

    def validate(self) -> None:
        if self.lm_order == 1:
            raise ConfigError("lm_order: use 2 or more (KenLM cannot load a unigram model); 0 = no LM")


@dataclass
class AstConfig:
    source: str = param("fr", help="source language(s) of speech translation: comma-separated codes, or * for all but the target")
    target: str = param("en", help="target language (the corpus's `translations` field)")


@dataclass
class AdaptConfig:
    """How the upstream is adapted during probe training (docs/adaptation.md)."""

    partial: Literal["bottom", "middle", "top"] = param(
        "top", help="regime=partial: which block of Transformer layers is trained (ML-SUPERB 2.0's three variants)"
    )
    partial_layers: int = param(2, min=1, help="regime=partial: how many Transformer layers are trained")
    train_cnn: bool = param(False, help="regime=full: train the CNN waveform front end too (frozen by default)")
    freeze_updates: int = param(
        0, min=0, help="regimes that train upstream weights: keep them fixed for the first N updates (probe warm-up)"
    )
    upstream_lr: float | None = param(
        None, help="peak learning rate of the upstream's trained weights; null = train.lr / 10 for full and "
        "partial, train.lr for adapters and LoRA (new, small modules)"
    )
    layer_decay: float = param(
        1.0, gt=0.0, max=1.0, help="layer-wise learning-rate decay: Transformer layer i (1-based) of L gets "
        "upstream_lr * decay^(L-i), everything below the layers decay^L (1 = off)"
    )
    adapter_size: int = param(32, min=1, help="regime=adapter: bottleneck width of the Houlsby adapters")
    lora_rank: int = param(8, min=1, help="regime=lora: rank r")
    lora_alpha: float = param(16.0, gt=0.0, help="regime=lora: scaling alpha (the update is scaled by alpha/r)")
    lora_dropout: float = param(0.0, min=0.0, lt=1.0, help="regime=lora: dropout on the LoRA branch input")
    lora_targets: list[str] = param(
        default_factory=lambda: ["attention"],
        help="regime=lora: which projections get LoRA: attention (q, k, v, out) and/or ffn (both dense layers)",
    )
    gradient_checkpointing: bool = param(
        False, help="recompute Transformer layers in the backward pass (less memory, ~30% more time)"
    )
    max_tunable_params: int = param(
        100_000_000, min=1, help="refuse a run whose trained parameters (upstream + probe) exceed this "
        "before training (ML-SUPERB 2.0's budget: 100 M)"
    )

    def validate(self) -> None:
        unknown = sorted(set(self.lora_targets) - {"attention", "ffn"})
        if unknown or not self.lora_targets:
            raise ConfigError(f"lora_targets: a non-empty subset of [attention, ffn], got {self.lora_targets}")


@dataclass
class SpecAugmentConfig:
    """Time and feature masking of the probe's input while training (s3prl's downstream SpecAugment)."""

    time_masks: int = param(0, min=0, help="time masks per utterance (0 = off)")
    time_width: int = param(10, min=1, help="longest time mask, frames")
    feature_masks: int = param(0, min=0, help="feature (channel) masks per utterance (0 = off)")
    feature_width: int = param(8, min=1, help="widest feature mask, dimensions")

    @property
    def enabled(self) -> bool:
        return self.time_masks > 0 or self.feature_masks > 0


@dataclass
class CostConfig:
    """Compute and energy accounting of a run (speechssl.downstream.cost)."""

    energy: bool = param(
        True, help="measure energy (kWh) and CO2 with codecarbon's offline tracker (null values if unavailable)"
    )
    country: str = param(
        "FRA", help="ISO 3166-1 alpha-3 code of the grid whose carbon intensity converts kWh to CO2"
    )
    flops_seconds: float = param(1.0, gt=0.0, help="seconds of audio in the upstream FLOPs-counting forward pass")

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Za-z]{3}", self.country):
            raise ConfigError(f"country: must be an ISO 3166-1 alpha-3 code such as FRA, got {self.country!r}")


@dataclass
class BenchConfig:
    """A benchmark run. `speechssl bench --upstream U --task T [--probe P] [--data DIR] KEY=VALUE...`"""

    upstream: str = param("mfcc", help="mfcc | fbank | ge2e | hf:<dir or hub id> | ckpt:<checkpoint or run dir>")
    task: Literal["asr", "asr_lid", "pr", "lid", "asv", "er", "ic", "sf", "sa", "ast"] = param(
        "lid", help="downstream task (docs/benchmark.md, 'Tasks')"
    )
    probe: str = param("", help="probe family ('' = the task's default)")
    regime: Literal["frozen", "full", "partial", "adapter", "lora"] = param(
        "frozen", help="what of the upstream trains with the probe (settings under adapt.*; docs/adaptation.md)"
    )
    data: str = param("data/synth", help="manifest directory (speechssl corpus synth / prepare)")
    train_split: str = param("train")
    dev_split: str = param("dev")
    test_split: str = param("test")
    train_hours: float | None = param(
        None, help="train on a fixed random subset of about this many hours (null = the whole train split)"
    )
    dev_hours: float | None = param(
        None, help="early-stop on a fixed random subset of about this many hours of dev (null = the whole dev "
        "split; useful when an adapted upstream recomputes dev features every epoch)"
    )
    seed: int = param(0, min=0)
    device: Literal["auto", "cpu", "cuda"] = param("auto")
    health_utterances: int = param(
        200, min=0, help="dev utterances for the representation-health monitors (effective rank, ...); 0 = off"
    )
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    probe_cfg: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    ast: AstConfig = field(default_factory=AstConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    def validate(self) -> None:
        if not self.upstream.strip():
            raise ConfigError("upstream: must name an upstream (e.g. mfcc, hf:<dir>, ckpt:<path>)")
        if self.train.max_epochs is not None and self.train.max_epochs < 1:
            raise ConfigError(f"train.max_epochs: must be >= 1 or null, got {self.train.max_epochs}")
        if self.train_hours is not None and not self.train_hours > 0:
            raise ConfigError(f"train_hours: must be > 0 or null, got {self.train_hours}")
        if self.dev_hours is not None and not self.dev_hours > 0:
            raise ConfigError(f"dev_hours: must be > 0 or null, got {self.dev_hours}")
        if self.train.lr is not None and not self.train.lr > 0:
            raise ConfigError(f"train.lr: must be > 0 or null, got {self.train.lr}")


REGIMES = ("frozen", "full", "partial", "adapter", "lora")


def regime_label(cfg: BenchConfig) -> str:
    """The regime as results and tables show it: ``partial`` carries its block and size
    (``partial-top2``); the others are their name."""
    if cfg.regime == "partial":
        return f"partial-{cfg.adapt.partial}{cfg.adapt.partial_layers}"
    return cfg.regime


def parse_regime(label: str) -> list[str]:
    """A regime label (``lora``, ``partial-top2``, ``partial-middle``) as dotted bench overrides."""
    match = re.fullmatch(r"partial-(bottom|middle|top)(\d*)", label)
    if match:
        overrides = ["regime=partial", f"adapt.partial={match.group(1)}"]
        return overrides + ([f"adapt.partial_layers={match.group(2)}"] if match.group(2) else [])
    if label in REGIMES:
        return [f"regime={label}"]
    raise ConfigError(f"unknown regime {label!r}: one of {', '.join(REGIMES[:2])}, partial-bottom|middle|top[K], "
                      f"{', '.join(REGIMES[3:])}")


def with_overrides(settings: BenchConfig, overrides: list[str], *, prefix: str) -> BenchConfig:
    """``settings`` with dotted ``overrides`` applied and validated (errors name ``prefix``)."""
    from speechssl.config import apply_overrides, from_dict, to_dict

    return from_dict(BenchConfig, apply_overrides(to_dict(settings), overrides, BenchConfig), prefix=prefix)


def settings_for_task(settings: BenchConfig, task: str, task_settings: dict[str, list[str]]) -> BenchConfig:
    """``settings`` with the dotted overrides listed for ``task`` applied (sweeps and the demo:
    sequence tasks need more updates and a higher learning rate than classification)."""
    if task not in task_settings:
        return settings
    return with_overrides(settings, task_settings[task], prefix=f"task_settings.{task}")
