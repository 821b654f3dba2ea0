"""Learning-rate schedules as pure functions of the update number.

A pure function of the step needs no state of its own, so resuming a run restores
the schedule exactly from the step counter.
"""

from __future__ import annotations

import math

from speechssl.pretrain.config import OptimConfig


def lr_at(step: int, peak: float, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate for update ``step`` (0-based) of a run of ``total_steps`` updates."""
    if cfg.schedule == "cyclic":
        return _cyclic(step, peak, cfg)
    if cfg.schedule == "tri_stage":
        return _tri_stage(step, peak, cfg, total_steps)

    warmup = cfg.warmup_steps
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    final = peak * cfg.final_lr_scale
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    power = 1.0 if cfg.schedule == "linear" else cfg.poly_power
    return final + (peak - final) * (1.0 - progress) ** power


def _cyclic(step: int, peak: float, cfg: OptimConfig) -> float:
    """Seed 004: triangular cycles, ``cycle_steps`` linear up then ``cycle_steps`` down.

    The cycle starts at the base lr (``peak * cyclic_base_ratio``), so at every
    multiple of ``2 * cycle_steps`` runs of different lengths are comparable.
    """
    base = peak * cfg.cyclic_base_ratio
    position = step % (2 * cfg.cycle_steps)
    if position < cfg.cycle_steps:
        fraction = position / cfg.cycle_steps
    else:
        fraction = 2.0 - position / cfg.cycle_steps
    return base + (peak - base) * fraction


def _tri_stage(step: int, peak: float, cfg: OptimConfig, total_steps: int) -> float:
    """Fine-tuning schedule of wav2vec 2.0: linear warmup, hold, exponential decay."""
    init = peak * cfg.tri_stage_init_scale
    warmup, hold = cfg.warmup_steps, cfg.tri_stage_hold_steps
    if step < warmup:
        return init + (peak - init) * step / warmup
    if step < warmup + hold:
        return peak
    decay_steps = max(1, total_steps - warmup - hold)
    progress = min(1.0, (step - warmup - hold) / decay_steps)
    final_scale = max(cfg.final_lr_scale, 1e-12)  # exponential decay needs a non-zero end
    return peak * math.exp(math.log(final_scale) * progress)
