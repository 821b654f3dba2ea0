"""Typed configuration of a pretraining run (YAML + dotted overrides, see speechssl.config)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from speechssl.config import param
from speechssl.data.mixing import MixingConfig
from speechssl.errors import ConfigError
from speechssl.models.config import EncoderConfig
from speechssl.models.objectives import OBJECTIVES, ContrastiveConfig, HubertConfig
from speechssl.pretrain.launch import SlurmConfig
from speechssl.pretrain.perf import PerfConfig


@dataclass
class PretrainDataConfig:
    dir: str = param("data/synth", help="manifest directory (speechssl corpus synth / prepare)")
    train_split: str = param("train", help="split to train on")
    valid_split: str = param("dev", help="split for validation loss ('' = no validation)")
    crop_seconds: float = param(4.0, gt=0.0, help="random crop of longer utterances (wav2vec 2.0 max_sample_size)")
    min_seconds: float = param(0.5, min=0.0, help="drop utterances shorter than this")
    micro_batch_seconds: float = param(
        60.0, gt=0.0, help="most audio in one forward pass; updates accumulate micro-batches"
    )
    num_workers: int = param(1, min=0, help="DataLoader worker processes")
    normalize_waveform: bool = param(
        False, help="zero-mean unit-variance per utterance (HF do_normalize; LARGE models use it)"
    )
    language_alpha: Optional[float] = param(
        None, min=0.0, help="sample languages with p ~ hours^alpha (1 = natural, 0 = uniform; null = off)"
    )
    mixing: MixingConfig = field(default_factory=MixingConfig)
    """Denoising (WavLM / WavLabLM): mix other utterances or noise into training inputs;
    targets stay the primary utterance's."""


@dataclass
class Stage2Config:
    """WavLabLM's second stage: continue on a language-balanced subset of the train split."""

    steps: int = param(0, min=0, help="updates of stage 2, after the `steps` of stage 1 (0 = one stage only)")
    hours_per_language: float = param(1.0, gt=0.0, help="at most this many hours of each language (seeded subset)")
    language_alpha: Optional[float] = param(
        None, min=0.0, help="language sampling inside the subset (null = as drawn, i.e. already balanced)"
    )


@dataclass
class OptimConfig:
    lr: float = param(5e-4, gt=0.0, help="peak learning rate (ignored unless lr_scaling=none)")
    lr_scaling: Literal["none", "linear", "sqrt"] = param(
        "none",
        help="seed 004 heuristics: peak lr = ref_lr * (batch_seconds / ref_batch_seconds) ** (1 or 1/2)",
    )
    ref_lr: float = param(5e-4, gt=0.0, help="reference peak lr of the heuristics (wav2vec 2.0 BASE)")
    ref_batch_seconds: float = param(6000.0, gt=0.0, help="reference batch of the heuristics (~1.6 h)")
    beta1: float = param(0.9, min=0.0, lt=1.0)
    beta2: float = param(0.98, min=0.0, lt=1.0)
    eps: float = param(1e-6, gt=0.0)
    weight_decay: float = param(0.01, min=0.0)
    clip_norm: float = param(0.0, min=0.0, help="clip the global gradient norm to this (0 = no clipping)")
    schedule: Literal["constant", "linear", "poly", "tri_stage", "cyclic"] = param(
        "linear",
        help="linear/poly: warmup then decay to final_lr_scale; tri_stage: warmup/hold/exp decay; "
        "cyclic: seed 004's triangular cycles between lr*cyclic_base_ratio and lr",
    )
    warmup_steps: int = param(32000, min=0, help="linear warmup from 0 (linear/poly/constant/tri_stage)")
    poly_power: float = param(1.0, gt=0.0, help="exponent of the poly decay")
    final_lr_scale: float = param(0.0, min=0.0, max=1.0, help="lr at the end, as a fraction of the peak")
    tri_stage_hold_steps: int = param(0, min=0, help="steps at peak lr before the exponential decay (tri_stage)")
    tri_stage_init_scale: float = param(0.01, gt=0.0, max=1.0, help="start of the tri_stage warmup, fraction of peak")
    cycle_steps: int = param(25000, min=1, help="cyclic: steps of one half-cycle (up, then the same down)")
    cyclic_base_ratio: float = param(0.01, gt=0.0, max=1.0, help="cyclic: lowest lr as a fraction of the peak")


def _tiny_objective() -> ContrastiveConfig:
    # BASE's diversity weight 0.1 lets a tiny model's codebook collapse (RESULTS.md).
    return ContrastiveConfig(codevector_dim=128, final_dim=128, diversity_weight=1.0)


def _tiny_optim() -> OptimConfig:
    return OptimConfig(lr=2e-3, warmup_steps=30)


@dataclass
class PretrainConfig:
    """A pretraining run. Defaults: the tiny CPU recipe of configs/pretrain/w2v2_tiny.yaml;
    the section classes' own defaults are the wav2vec 2.0 BASE values (w2v2_base.yaml)."""

    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig.preset("tiny"))
    objective: Literal["wav2vec2", "hubert"] = param(
        "wav2vec2", help="pretraining objective; its settings are the section of the same name"
    )
    wav2vec2: ContrastiveConfig = field(default_factory=_tiny_objective)
    hubert: HubertConfig = field(default_factory=HubertConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    optim: OptimConfig = field(default_factory=_tiny_optim)

    steps: int = param(450, min=1, help="optimizer updates to run (of stage 1 when stage2.steps > 0)")
    stage2: Stage2Config = field(default_factory=Stage2Config)
    batch_seconds: float = param(
        60.0, gt=0.0, help="seconds of audio per update, all processes and micro-batches together"
    )
    seed: int = param(0, min=0, help="seeds weights, data order, masks, negatives, dropout")
    device: Literal["auto", "cpu", "cuda"] = param("auto", help="auto = cuda when available")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = param(
        "auto", help="auto = bf16 autocast on a GPU that supports it, fp32 on CPU"
    )
    compile: bool = param(
        False, help="torch.compile the encoder's CNN and Transformer layers (GPU runs; see perf.shape_buckets)"
    )
    perf: PerfConfig = field(default_factory=PerfConfig)
    """MFU logging, TF32, the fp16 loss-scale floor, activation checkpointing, shape buckets
    (speechssl.pretrain.perf); not part of the run's identity."""

    log_every: int = param(10, min=1, help="updates between monitor records")
    valid_every: int = param(150, min=0, help="updates between validation passes (0 = only at the end)")
    save_every: int = param(150, min=1, help="updates between checkpoints")
    keep_last: int = param(3, min=1, help="step checkpoints to keep (best.pt is kept besides)")
    max_bad_steps: int = param(5, min=1, help="non-finite losses in a row before the run stops")
    grad_variance_every: int = param(
        0, min=0, help="updates between gradient-variance estimates (needs >= 2 micro-batches; 0 = off)"
    )
    tensorboard: bool = param(True, help="also write TensorBoard event files")
    health_utterances: int = param(
        100, min=0, help="dev utterances for the representation-health monitors at every validation (0 = off)"
    )
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """Resources of `speechssl pretrain --executor slurm` (speechssl.pretrain.launch); not part of the run."""

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:  # Literal above lists them; this guards a new entry
            raise ConfigError(f"objective: unknown {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        entry = OBJECTIVES[self.objective]
        if entry.model.needs_targets and not getattr(self, entry.section).targets:
            raise ConfigError(
                f"objective={self.objective} needs {entry.section}.targets: target-set directories "
                "from `speechssl targets`"
            )
        if self.data.crop_seconds > self.data.micro_batch_seconds:
            raise ConfigError(
                f"data.crop_seconds ({self.data.crop_seconds}) exceeds data.micro_batch_seconds "
                f"({self.data.micro_batch_seconds}): one crop must fit in a micro-batch"
            )

    @property
    def total_steps(self) -> int:
        """Updates of the whole run, every stage; the LR schedule spans them all."""
        return self.steps + self.stage2.steps

    def peak_lr(self) -> float:
        """The peak learning rate after seed 004's batch-size heuristic (if any)."""
        ratio = self.batch_seconds / self.optim.ref_batch_seconds
        if self.optim.lr_scaling == "linear":
            return self.optim.ref_lr * ratio
        if self.optim.lr_scaling == "sqrt":
            return self.optim.ref_lr * math.sqrt(ratio)
        return self.optim.lr

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per process per update, so that one update sees ~batch_seconds."""
        return max(1, math.ceil(self.batch_seconds / (self.data.micro_batch_seconds * world_size) - 1e-9))


def hubert_tiny_recipe(targets: list[str] | None = None) -> PretrainConfig:
    """The tiny HuBERT CPU recipe (configs/pretrain/hubert_tiny.yaml; a test keeps them equal).

    Loss on unmasked frames too, mask 0.5, no feature penalty, clipping at 10 and small
    (16 s) updates: what learned most in a few CPU minutes (docs/pretraining.md,
    "What learns on 2 CPU cores").
    """
    return PretrainConfig(
        objective="hubert",
        hubert=HubertConfig(
            targets=list(targets) if targets else ["runs/targets/mfcc_k100"],
            final_dim=128,
            mask_prob=0.5,
            unmasked_weight=1.0,
            penalty_weight=0.0,
        ),
        data=PretrainDataConfig(micro_batch_seconds=16.0),
        optim=OptimConfig(lr=2e-3, warmup_steps=40, clip_norm=10.0),
        steps=500,
        batch_seconds=16.0,
        valid_every=250,
        save_every=250,
    )


def wavlablm_tiny_recipe(targets: list[str] | None = None) -> PretrainConfig:
    """The tiny WavLabLM CPU recipe (configs/pretrain/wavlablm_tiny.yaml; a test keeps them equal).

    The HuBERT recipe plus denoising (20 % of utterances mixed with another utterance of the
    batch or a noise clip, WavLM's rate), languages sampled with alpha 0.5 in stage 1, and the
    last 100 of its 500 updates on a language-balanced subset (seed 003's two stages). The
    demo's recipe: at seed 0 it beat the random-init encoder on both LID and ASV, plain HuBERT
    only on LID; at seeds 1 and 2 its ASV gain is 0.000 and 0.013 (RESULTS.md, "Pretraining recipes").
    """
    cfg = hubert_tiny_recipe(targets)
    cfg.data.mixing = MixingConfig(prob=0.2, noise_dir="data/synth/noise")
    cfg.data.language_alpha = 0.5
    cfg.steps = 400
    cfg.stage2 = Stage2Config(steps=100, hours_per_language=0.1)
    return cfg
