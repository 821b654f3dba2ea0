"""The pretraining loop: one process, gradient accumulation, or torchrun DDP.

Determinism is built in rather than bolted on: before every micro-batch the global
RNG is re-seeded from ``(seed, update, global micro-batch index)``, so masks,
distractors, Gumbel noise and dropout of a micro-batch are a pure function of where
it sits in the run. That is what makes

* resume exact (the RNG state to restore is just the step counter), and
* 2 processes x 1 micro-batch equal to 1 process x 2 micro-batches: rank r's
  micro-batch m of an update has global index ``r * accumulation + m`` and the
  sampler hands rank r batches ``r, r + W, ...``, the same batches that a single
  process takes in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from speechssl.config import check, save_config, to_dict
from speechssl.data.collate import AudioBatch, make_dataloader, normalize_waveforms
from speechssl.data.manifests import available_splits, load_cuts
from speechssl.data.mixing import BatchMixer
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.memory import bound_shape_caches, current_rss_mb
from speechssl.models.objectives import OBJECTIVES, build_objective
from speechssl.pretrain import checkpoint as ckpt
from speechssl.pretrain.config import PretrainConfig
from speechssl.pretrain.monitor import Monitor
from speechssl.pretrain.schedules import lr_at
from speechssl.pretrain.signals import STOP, StopSignals, TrainingInterrupted
from speechssl.pretrain import perf
from speechssl.pretrain.mfu import MfuMeter

# Config sections that define the run; changing any of them makes a checkpoint in the
# run directory incompatible. Logging/saving cadence and the step budget may change.
_RUN_DEFINING = (
    "encoder", "objective", "wav2vec2", "hubert", "data", "optim", "batch_seconds", "seed", "precision", "stage2",
)


class TrainingDiverged(SpeechSSLError):
    """Too many non-finite losses in a row; the last good checkpoint is kept."""


@dataclass
class TrainState:
    step: int = 0
    """Updates attempted so far (a skipped non-finite update counts)."""
    epoch: int = 0
    batches_in_epoch: int = 0
    """Micro-batches this process consumed in the current epoch."""
    seconds_seen: float = 0.0
    """Audio seconds consumed by all processes (seed 004's 'data seen')."""
    skipped_steps: int = 0
    bad_in_row: int = 0
    best_valid: float = math.inf
    best_step: int = -1
    wall_seconds: float = 0.0
    stage: int = 1
    """1, or 2 once the run continues on the language-balanced subset (cfg.stage2)."""
    seconds_by_language: dict[str, float] = field(default_factory=dict)
    """Audio seconds seen per language (this process's batches x world size)."""


@dataclass
class PretrainResult:
    out_dir: Path
    state: TrainState
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    last_train: dict[str, Any] = field(default_factory=dict)
    last_valid: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    """The objective's one-line summary of the last valid (else train) record."""


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Distributed:
        """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a plain run is rank 0 of 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def all_reduce_mean(self, values: Tensor) -> Tensor:
        if self.active:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.world_size
        return values


def pretrain(
    cfg: PretrainConfig, out_dir: str | Path, *, fresh: bool = False, progress: bool = True, init_only: bool = False,
    stop_signals: Mapping[int, str] | None = None,
) -> PretrainResult:
    """Train ``cfg`` into ``out_dir``, continuing from its newest checkpoint if it has one.

    ``fresh`` deletes an earlier run's checkpoints and metrics in ``out_dir`` first.
    ``init_only`` writes the step-0 checkpoint (the initial weights: the random-init
    baseline of the same architecture, usable as ``ckpt:<out_dir>``) and stops; training
    the same config in the same directory later continues from it.
    ``stop_signals`` (signal -> "stop" | "save"; default SIGTERM and SIGUSR2 stop) finish the
    update in progress and checkpoint it; "stop" then raises :class:`TrainingInterrupted`
    (speechssl.pretrain.signals).
    """
    check(cfg)
    bound_shape_caches()  # flat RSS over variable-length batches on CPU (speechssl.memory)
    trainer = Trainer(cfg, Path(out_dir), progress=progress)
    try:
        with StopSignals(stop_signals) as trainer.stop:
            return trainer.run(fresh=fresh, init_only=init_only)
    finally:
        trainer.close()


class Trainer:
    def __init__(self, cfg: PretrainConfig, out_dir: Path, *, progress: bool = True) -> None:
        self.target_sets = _open_target_sets(cfg)
        cfg = _with_target_classes(cfg, self.target_sets)
        self.cfg = cfg
        self.out_dir = out_dir
        self.ckpt_dir = out_dir / "checkpoints"
        self.dist = Distributed.from_env()
        self._owns_process_group = False
        self.device = self._pick_device()
        if self.dist.active and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self._owns_process_group = True
        self.progress = progress and self.dist.is_main
        self.precision = self._pick_precision()
        perf.configure_tf32(self.device, cfg.perf.tf32)
        self.accumulation = cfg.accumulation(self.dist.world_size)
        self.peak_lr = cfg.peak_lr()
        self.state = TrainState()
        self.stop: StopSignals | None = None  # set by pretrain(): SIGTERM/SIGUSR2 -> checkpoint and stop

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_objective(cfg.objective, cfg.encoder, cfg).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.peak_lr,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
            # One fused kernel instead of ~3000 small ops per step (7 -> 2 ms for the tiny model
            # on one CPU core; benchmarks/pretrain_throughput.py --fused-adamw).
            fused=True,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.overflows_in_row = 0  # fp16 updates the scaler skipped, in a row (speechssl.pretrain.perf)
        perf.set_activation_checkpointing(self.model.encoder, cfg.perf.activation_checkpointing)
        self.buckets = perf.shape_buckets(cfg)  # padded batch lengths (None = pad to the longest only)
        self.forward_model: nn.Module = self.model
        if cfg.compile:  # in place, regions of the encoder; the state dict keeps its names
            perf.compile_encoder(
                self.model.encoder, mode=cfg.perf.compile_mode, static_time=self.buckets is not None,
                num_shapes=len(self.buckets.lengths()) if self.buckets is not None else None,
            )
        self.mfu = MfuMeter(
            self.device, self.precision, world_size=self.dist.world_size, enabled=cfg.perf.mfu,
            eager_while_counting=cfg.compile, say=self._say,
        )

        self.mixer = BatchMixer.from_config(cfg.data.mixing)  # None unless denoising is on
        self.train_loader = self._train_loader(stage=1)
        self.valid_loader = self._loader(cfg.data.valid_split, shuffle=False) if cfg.data.valid_split else None
        self.monitor = Monitor(out_dir, tensorboard=cfg.tensorboard, enabled=self.dist.is_main)
        # Warmup is allowed to sit at chance; collapse checks start after it.
        self.watch_after = max(cfg.optim.warmup_steps, 10 * cfg.log_every)

    # ------------------------------------------------------------------ setup

    def _pick_device(self) -> torch.device:
        want = self.cfg.device
        if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ConfigError("device=cuda but no CUDA device is available")
            torch.cuda.set_device(self.dist.local_rank)
            return torch.device("cuda", self.dist.local_rank)
        return torch.device("cpu")

    def _pick_precision(self) -> str:
        want = self.cfg.precision
        on_gpu = self.device.type == "cuda"
        if want == "auto":
            return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
        if want == "fp16" and not on_gpu:
            raise ConfigError("precision=fp16 needs a GPU; use fp32 or bf16 on CPU")
        return want

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _train_loader(self, stage: int) -> torch.utils.data.DataLoader:
        """Stage 1: the train split (language-sampled with data.language_alpha); stage 2: a
        seeded language-balanced subset of it (WavLabLM's multi-stage pretraining)."""
        if stage == 1:
            return self._loader(self.cfg.data.train_split, shuffle=True, group_size=self.accumulation,
                                language_alpha=self.cfg.data.language_alpha)
        from speechssl.data.balance import balanced_subset

        stage2 = self.cfg.stage2
        return self._loader(
            self.cfg.data.train_split, shuffle=True, group_size=self.accumulation,
            language_alpha=stage2.language_alpha,
            select=lambda cuts: balanced_subset(cuts, stage2.hours_per_language, seed=self.cfg.seed),
        )

    def _loader(
        self, split: str, *, shuffle: bool, group_size: int = 1, language_alpha: float | None = None, select=None
    ) -> torch.utils.data.DataLoader:
        data = self.cfg.data
        if split not in available_splits(data.dir):
            raise ConfigError(
                f"data.dir {data.dir} has no split {split!r} (found: {', '.join(available_splits(data.dir)) or 'none'})"
            )
        cuts = load_cuts(data.dir, split)
        cuts = [c for c in cuts if c.duration >= data.min_seconds]
        if select is not None:
            cuts = select(cuts)
        if not cuts:
            raise ConfigError(f"no utterance of split {split!r} is at least data.min_seconds={data.min_seconds} long")
        return make_dataloader(
            cuts,
            batch_seconds=data.micro_batch_seconds,
            num_workers=data.num_workers,
            seed=self.cfg.seed,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
            max_seconds=data.crop_seconds,
            # Frame-level targets stay aligned when crops start on a frame boundary.
            crop_multiple=self.cfg.encoder.total_stride if self.target_sets else 1,
            shuffle=shuffle,
            language_alpha=language_alpha,
            group_size=group_size,
            pin_memory=self.device.type == "cuda",
            pad_to=self.buckets,
        )

    # ------------------------------------------------------------------ run

    def run(self, *, fresh: bool, init_only: bool = False) -> PretrainResult:
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if fresh:
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)
                shutil.rmtree(self.out_dir / "tensorboard", ignore_errors=True)
            ckpt.remove_stale_temp_files(self.ckpt_dir)
        if self.dist.active:
            dist.barrier()
        resumed = self._try_resume()
        if not resumed:
            self.monitor.truncate_after(-1)  # records of a run that died before its first checkpoint
        if self.dist.is_main:
            save_config(cfg, self.out_dir / "config.yaml")
        self._announce(resumed)
        if init_only:
            path = ckpt.step_path(self.ckpt_dir, self.state.step)
            if not resumed:
                self._save(path)
            return PretrainResult(self.out_dir, self.state, path, None)

        train_model: nn.Module = self.forward_model
        if self.dist.active:
            train_model = nn.parallel.DistributedDataParallel(
                self.forward_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.encoder.layerdrop > 0,
            )
        stream = self._micro_batches()
        last_train: dict[str, Any] = {}
        last_valid: dict[str, Any] = {}
        last_saved: Path | None = None
        bar = self._progress_bar()
        started = time.perf_counter() - self.state.wall_seconds

        while self.state.step < cfg.total_steps:
            if self.state.step == cfg.steps and self.state.stage == 1 and cfg.stage2.steps:
                stream = self._enter_stage2()
            step = self.state.step
            with self.mfu.measure():  # times the update; counts the FLOPs of the first one
                record = self._update(train_model, stream, step)
            self.mfu.add(record["batch_seconds"])
            self.state.step += 1
            self.state.wall_seconds = time.perf_counter() - started
            done = self.state.step == cfg.total_steps

            if self.state.step % cfg.log_every == 0 or done:
                record.update(self._slow_stats())
                last_train = record
                self.monitor.write(record)
                if step >= self.watch_after:
                    for message in self.model.check_collapse(step, record):
                        self._say(message)
            if self.valid_loader is not None and (
                done or (cfg.valid_every and self.state.step % cfg.valid_every == 0)
            ):
                last_valid = self._validate()
                self.monitor.write(last_valid)
                if last_valid["loss"] < self.state.best_valid:
                    self.state.best_valid, self.state.best_step = last_valid["loss"], self.state.step
                    self._save(self.ckpt_dir / "best.pt")
            # A checkpoint at the stage boundary: resuming there starts stage 2 cleanly.
            boundary = self.state.step == cfg.steps and cfg.stage2.steps > 0
            if self.state.step % cfg.save_every == 0 or done or boundary:
                last_saved = self._save(ckpt.step_path(self.ckpt_dir, self.state.step))
                if self.dist.is_main:
                    ckpt.prune(self.ckpt_dir, cfg.keep_last)
            if self.stop is not None:
                last_saved = self._honour_stop(last_saved, bar)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(
                    f"{self.model.summary(record)} lr {record['lr']:.2e} {record['hours_seen']:.2f}h", refresh=False
                )

        if bar is not None:
            bar.close()
        best = self.ckpt_dir / "best.pt"
        return PretrainResult(
            out_dir=self.out_dir,
            state=self.state,
            last_checkpoint=last_saved or _newest(self.ckpt_dir),
            best_checkpoint=best if best.is_file() else None,
            last_train=last_train,
            last_valid=last_valid,
            summary=self.model.summary(last_valid or last_train) if (last_valid or last_train) else "",
        )

    def _honour_stop(self, last_saved: Path | None, bar: Any) -> Path | None:
        """After an update: if a stop signal reached any rank, checkpoint this step (and stop).

        The ranks agree by one all-reduce (max) per update, so all of them stop after the same
        update; resuming is the ordinary resume from the newest checkpoint.
        """
        assert self.stop is not None
        flags = torch.tensor(StopSignals.encode(*self.stop.requested))
        if self.dist.active:
            flags = flags.to(self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        action, signum = StopSignals.decode(*flags.tolist())
        if not action or self.state.step >= self.cfg.total_steps:  # the last update: the run ends anyway
            return last_saved
        path = ckpt.step_path(self.ckpt_dir, self.state.step)
        if last_saved != path:
            last_saved = self._save(path)
            if self.dist.is_main:
                ckpt.prune(self.ckpt_dir, self.cfg.keep_last)
        if self.dist.active:
            dist.barrier()  # the checkpoint is on disk before any rank leaves
        if action == STOP:
            if bar is not None:
                bar.close()
            raise TrainingInterrupted(signum, self.state.step, path)
        self.stop.saved()
        self._say(f"pretrain: checkpoint of update {self.state.step} written ({path}); training continues")
        return last_saved

    def close(self) -> None:
        self.monitor.close()
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------ one update

    def _update(self, train_model: nn.Module, stream: Iterator[AudioBatch], step: int) -> dict[str, Any]:
        cfg = self.cfg
        lr = lr_at(step, self.peak_lr, cfg.optim, cfg.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        measure_variance = bool(
            cfg.grad_variance_every and self.accumulation >= 2 and step % cfg.grad_variance_every == 0
        )
        variance = _GradientVariance(self.model, self.accumulation) if measure_variance else None

        stats_sum: Tensor | None = None
        stats_layout: list[tuple[str, int]] = []
        micro_seconds: list[float] = []
        for micro in range(self.accumulation):
            batch = next(stream).to(self.device, non_blocking=True)
            micro_seconds.append(batch.seconds)
            self._count_languages(batch)
            micro_seed = _micro_seed(cfg.seed, step, self.dist.rank * self.accumulation + micro)
            torch.manual_seed(micro_seed)
            waveforms, mix_stats = self._mixed(batch, micro_seed)
            last = micro == self.accumulation - 1
            # DDP all-reduces on the last micro-batch only; on variance steps not at all
            # (each rank's micro-gradients are needed) and the average is taken below.
            sync = self.dist.active and last and variance is None
            context = train_model.no_sync() if self.dist.active and not sync else contextlib.nullcontext()
            with context:
                with self._autocast():
                    out = train_model(waveforms, batch.lengths, num_updates=step, targets=self._targets(batch))
                self.scaler.scale(out.loss / self.accumulation).backward()
            flat, stats_layout = _flatten_stats({**out.stats, **mix_stats}, self.device)
            stats_sum = flat if stats_sum is None else stats_sum + flat
            if variance is not None:
                variance.after_micro_batch(self.scaler.get_scale() if self.scaler.is_enabled() else 1.0)

        variance_record: dict[str, float] = {}
        if variance is not None:
            variance_record = variance.result(self.dist, float(np.mean(micro_seconds)))
            if self.dist.active:
                _average_gradients(self.model, self.dist.world_size)

        assert stats_sum is not None
        seconds_t = torch.tensor([sum(micro_seconds)], device=self.device)
        reduced = self.dist.all_reduce_mean(torch.cat([stats_sum / self.accumulation, seconds_t]))
        stats = _unflatten_stats(reduced[:-1], stats_layout)
        batch_seconds = float(reduced[-1]) * self.dist.world_size
        self.state.seconds_seen += batch_seconds

        self.scaler.unscale_(self.optimizer)
        clip = cfg.optim.clip_norm if cfg.optim.clip_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        finite = math.isfinite(stats["loss"]) and math.isfinite(grad_norm)
        if finite or self.scaler.is_enabled():
            # With fp16 the scaler itself skips steps whose gradients overflowed.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        # fp16: overflowing gradients under a finite loss are the scaler's business (it skipped
        # the update and halved the scale), not divergence; the scale's floor stops the run.
        overflow = self.scaler.is_enabled() and math.isfinite(stats["loss"]) and not finite
        if overflow:
            self.state.skipped_steps += 1
            self.overflows_in_row += 1
            scale = self.scaler.get_scale()
            self._say(f"step {step}: fp16 gradient overflow, update skipped; loss scale now {scale:g}")
            perf.check_loss_scale(scale, cfg.perf.min_loss_scale, step, self.overflows_in_row)
        elif finite:
            self.overflows_in_row = 0
            self.state.bad_in_row = 0
        else:
            self.state.skipped_steps += 1
            self.state.bad_in_row += 1
            self._say(
                f"WARNING step {step}: non-finite loss/gradient (loss={stats['loss']}, grad_norm={grad_norm}); "
                f"update skipped ({self.state.bad_in_row} in a row, {self.state.skipped_steps} in total)"
            )
            if self.state.bad_in_row >= cfg.max_bad_steps:
                raise TrainingDiverged(
                    f"{self.state.bad_in_row} non-finite updates in a row at step {step}; stopping. "
                    f"The last good checkpoint is in {self.ckpt_dir}; lower optim.lr or raise optim.warmup_steps"
                )

        record: dict[str, Any] = {"split": "train", "step": step + 1, **stats}
        record.update(
            lr=lr,
            grad_norm=grad_norm,
            batch_seconds=batch_seconds,
            hours_seen=self.state.seconds_seen / 3600.0,
            hours_by_language={k: round(v / 3600.0, 5) for k, v in sorted(self.state.seconds_by_language.items())},
            stage=self.state.stage,
            epoch=self.state.epoch,
            skipped_steps=self.state.skipped_steps,
        )
        if self.scaler.is_enabled():
            record["loss_scale"] = self.scaler.get_scale()
        record.update(variance_record)
        return record

    def _count_languages(self, batch: AudioBatch) -> None:
        # Each rank counts its own batches; ranks see equal shares, hence the world size.
        seen = self.state.seconds_by_language
        for info, samples in zip(batch.supervisions, batch.lengths.tolist()):
            language = info.get("language") or "und"
            seen[language] = seen.get(language, 0.0) + samples / batch.sample_rate * self.dist.world_size

    def _waveforms(self, batch: AudioBatch, waveforms: Tensor | None = None) -> Tensor:
        waveforms = batch.waveforms if waveforms is None else waveforms
        if self.cfg.data.normalize_waveform:
            return normalize_waveforms(waveforms, batch.lengths)
        return waveforms

    def _mixed(self, batch: AudioBatch, micro_seed: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The training input: with denoising on, the batch with interferers mixed in.

        Mixing draws from its own generator seeded by the micro-batch, so it is part of the
        micro-batch's pure function of (seed, step, index) and resume needs no saved state.
        The targets are untouched: the model learns to predict the primary's labels.
        """
        if self.mixer is None:
            return self._waveforms(batch), {}
        generator = torch.Generator(device=batch.waveforms.device).manual_seed((micro_seed + 1) % 2**63)
        mixed, info = self.mixer(batch.waveforms, batch.lengths, generator)
        return self._waveforms(batch, mixed), {"fraction_mixed": torch.tensor(float(info["fraction_mixed"]))}

    def _targets(self, batch: AudioBatch) -> Tensor | None:
        """[B, T', n_sets] labels of the batch's crops at the encoder's frames (-1 = none)."""
        if not self.target_sets:
            return None
        assert batch.offsets is not None
        encoder = self.model.encoder
        frame_lengths = encoder.output_lengths(batch.lengths.cpu())
        width = int(encoder.output_lengths(torch.tensor([batch.waveforms.shape[1]]))[0])
        per_set = [s.batch(batch.cut_ids, batch.offsets, frame_lengths, width) for s in self.target_sets]
        return torch.stack(per_set, dim=-1).to(self.device, non_blocking=True)

    def _slow_stats(self) -> dict[str, Any]:
        """Numbers too costly for every update, taken when a record is written."""
        stats = self.model.monitor_stats()
        stats["wall_seconds"] = round(self.state.wall_seconds, 3)
        stats["rss_mb"] = current_rss_mb()  # resident memory now (issue 17: flat over a run)
        stats.update(self.mfu.stats())  # audio_s_per_s and mfu since the last record (speechssl.pretrain.mfu)
        return stats

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        assert self.valid_loader is not None
        self.model.eval()
        totals: Tensor | None = None
        layout: list[tuple[str, int]] = []
        weight = torch.zeros((), device=self.device)
        for index, batch in enumerate(self.valid_loader):
            batch = batch.to(self.device)
            # Same masks and distractors at every validation: comparable across steps.
            torch.manual_seed(_micro_seed(self.cfg.seed, 2**31, self.dist.rank + index * self.dist.world_size))
            with self._autocast():
                out = self.model(
                    self._waveforms(batch), batch.lengths, num_updates=self.state.step, targets=self._targets(batch)
                )
            flat, layout = _flatten_stats(out.stats, self.device)
            frames = out.stats["masked_frames"].float().to(self.device)
            totals = flat * frames if totals is None else totals + flat * frames
            weight = weight + frames
        assert totals is not None
        reduced = self.dist.all_reduce_mean(torch.cat([totals, weight[None]]))
        stats = _unflatten_stats(reduced[:-1] / reduced[-1], layout)
        record = {"split": "valid", "step": self.state.step, **stats, **self._health()}
        self.model.train()
        return record

    @torch.no_grad()
    def _health(self) -> dict[str, Any]:
        """Representation-health monitors of every layer on the first dev utterances (rank 0).

        The fast signal of a collapsing run: minutes before a probe could say so
        (speechssl.upstream.health). Unmasked forward passes, same utterances every time.
        """
        if not self.cfg.health_utterances or not self.dist.is_main or self.valid_loader is None:
            return {}
        from speechssl.upstream.health import HealthAccumulator, collapse_warnings

        accumulator = HealthAccumulator(max_frames=50 * self.cfg.health_utterances)
        encoder = self.model.encoder
        for batch in self.valid_loader:
            batch = batch.to(self.device)
            with self._autocast():
                out = encoder(self._waveforms(batch), batch.lengths)
            accumulator.update([s.float() for s in out.layer_states], out.frame_lengths, batch.cut_ids)
            if accumulator.num_utterances >= self.cfg.health_utterances:
                break
        health = accumulator.result()
        for message in collapse_warnings(health, encoder.cfg.hidden):
            self._say(f"WARNING step {self.state.step}: {message}")
        keep = ("effective_rank", "participation_ratio", "anisotropy", "utterance_variance_share", "top_pc_share")
        return {f"health_{name}": health[name] for name in keep}

    # ------------------------------------------------------------------ data stream

    def _enter_stage2(self) -> Iterator[AudioBatch]:
        """Switch the data to stage 2's balanced subset; returns the new micro-batch stream."""
        self.state.stage = 2
        self.state.epoch = 0
        self.state.batches_in_epoch = 0
        self.train_loader = self._train_loader(stage=2)
        hours = self.train_loader.sampler.seconds_by_language(0)
        self._say(
            f"stage 2 at step {self.state.step}: language-balanced subset, "
            + ", ".join(f"{lang} {sec / 3600:.2f} h" for lang, sec in sorted(hours.items()))
        )
        return self._micro_batches()

    def _micro_batches(self) -> Iterator[AudioBatch]:
        """An endless stream of micro-batches that walks through epochs and can resume mid-epoch."""
        sampler = self.train_loader.sampler
        dataset = self.train_loader.dataset
        while True:
            sampler.set_epoch(self.state.epoch)  # keeps a loaded mid-epoch position
            dataset.set_epoch(self.state.epoch)
            for batch in self.train_loader:
                self.state.batches_in_epoch += 1
                yield batch
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    # ------------------------------------------------------------------ checkpoints

    def _save(self, path: Path) -> Path:
        if self.dist.is_main:
            ckpt.save_atomic(
                {
                    "format": ckpt.FORMAT,
                    "config": to_dict(self.cfg),
                    "run_key": self._run_key(),
                    "world_size": self.dist.world_size,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "train_state": dataclasses.asdict(self.state),
                    "sampler": self.train_loader.sampler.state_dict(batches_consumed=self.state.batches_in_epoch),
                },
                path,
            )
        return path

    def _try_resume(self) -> bool:
        state = ckpt.latest_loadable(self.ckpt_dir)
        if state is None:
            return False
        if state["run_key"] != self._run_key():
            raise ConfigError(
                f"{self.out_dir} holds a run with a different config ({_diff_sections(state['config'], to_dict(self.cfg))}); "
                "use another output directory, or --fresh to start over there"
            )
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"the checkpoint was written by {state['world_size']} process(es), this run has "
                f"{self.dist.world_size}: resume with the same number of processes"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(**state["train_state"])
        if self.state.stage == 2:  # the sampler state belongs to the balanced subset's loader
            self.train_loader = self._train_loader(stage=2)
        self.train_loader.sampler.load_state_dict(state["sampler"])
        self.monitor.truncate_after(self.state.step)
        return True

    def _run_key(self) -> str:
        full = to_dict(self.cfg)
        defining = json.dumps({key: full[key] for key in _RUN_DEFINING}, sort_keys=True)
        return hashlib.sha256(defining.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ output

    def _announce(self, resumed: bool) -> None:
        if not self.dist.is_main:
            return
        cfg = self.cfg
        params = sum(p.numel() for p in self.model.parameters())
        what = f"resuming at step {self.state.step}" if resumed else "starting"
        self._say(
            f"pretrain: {what}; {params / 1e6:.2f} M params on {self.device} ({self.precision}), "
            f"{self.dist.world_size} process(es) x {self.accumulation} micro-batch(es) of <= "
            f"{cfg.data.micro_batch_seconds:g} s = ~{cfg.batch_seconds:g} s per update; "
            f"peak lr {self.peak_lr:.3g} ({cfg.optim.schedule}, scaling={cfg.optim.lr_scaling}); "
            f"{cfg.total_steps} updates"
            + (f" ({cfg.steps} + {cfg.stage2.steps} on the language-balanced subset)" if cfg.stage2.steps else "")
            + f" -> {self.out_dir}"
        )

    def _progress_bar(self):  # type: ignore[no-untyped-def]
        if not self.progress:
            return None
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        return tqdm(
            total=self.cfg.total_steps,
            initial=self.state.step,
            desc="pretrain",
            unit="step",
            file=sys.stderr,
            mininterval=0.2 if interactive else 10.0,
        )

    def _say(self, message: str) -> None:
        if self.dist.is_main:
            print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- helpers


class _GradientVariance:
    """Variance of the per-micro-batch gradients around their mean (seed 004, Sec. IV-C1).

    Reports the mean per-parameter variance, its square root, and the "simple" gradient
    noise scale of McCandlish et al. (tr(Sigma) / |G|^2, times the micro-batch
    seconds), an estimate of the critical batch size in seconds of audio.
    """

    def __init__(self, model: nn.Module, micro_batches: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.micro_batches = micro_batches
        self.previous = [torch.zeros_like(p) for p in self.params]
        self.sum_squares = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def after_micro_batch(self, loss_scale: float) -> None:
        self.loss_scale = loss_scale
        for p, prev, squares in zip(self.params, self.previous, self.sum_squares):
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            # p.grad accumulates g_k / A (times the fp16 loss scale); g_k is A * the increment.
            own = (grad - prev) * (self.micro_batches / loss_scale)
            squares.add_(own * own)
            prev.copy_(grad)

    @torch.no_grad()
    def result(self, dist_info: Distributed, micro_seconds: float) -> dict[str, float]:
        """Call after the last micro-batch, before any cross-process averaging of ``previous``."""
        a = self.micro_batches
        trace = torch.zeros((), dtype=torch.float64, device=self.previous[0].device)
        mean_sq = torch.zeros_like(trace)
        count = 0
        for prev, squares in zip(self.previous, self.sum_squares):
            mean = prev.double() / self.loss_scale  # sum_k g_k / A: the mean micro-batch gradient
            variance = (squares.double() - a * mean * mean) / (a - 1)
            trace += variance.clamp(min=0).sum()
            mean_sq += (mean * mean).sum()
            count += prev.numel()
        values = dist_info.all_reduce_mean(torch.stack([trace, mean_sq]))
        trace_f, mean_sq_f = float(values[0]), float(values[1])
        signal = max(mean_sq_f - trace_f / a, 1e-30)  # unbiased estimate of |G|^2
        return {
            "grad_var": trace_f / count,
            "grad_std": math.sqrt(trace_f / count),
            "grad_noise_scale_seconds": micro_seconds * trace_f / signal,
        }


def _average_gradients(model: nn.Module, world_size: int) -> None:
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size


def _micro_seed(seed: int, step: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, step, index]).generate_state(1, dtype=np.uint64)[0] % (2**63))


def _flatten_stats(stats: dict[str, Tensor], device: torch.device) -> tuple[Tensor, list[tuple[str, int]]]:
    layout, parts = [], []
    for key, value in stats.items():
        flat = value.detach().float().reshape(-1).to(device)
        layout.append((key, flat.numel()))
        parts.append(flat)
    return torch.cat(parts), layout


def _unflatten_stats(flat: Tensor, layout: list[tuple[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    offset = 0
    for key, size in layout:
        chunk = flat[offset : offset + size].tolist()
        out[key] = chunk if size > 1 or key == "perplexity" else chunk[0]
        offset += size
    return out


def _open_target_sets(cfg: PretrainConfig) -> list[Any]:
    """The frame-level target sets the objective trains on (none for wav2vec 2.0)."""
    section = getattr(cfg, OBJECTIVES[cfg.objective].section)
    paths = getattr(section, "targets", [])
    if not paths:
        return []
    from speechssl.targets.store import TargetSet

    sets = [TargetSet.open(path) for path in paths]
    for target_set in sets:
        target_set.check_encoder(cfg.encoder.conv_layers)
    return sets


def _with_target_classes(cfg: PretrainConfig, target_sets: list[Any]) -> PretrainConfig:
    """``cfg`` with the objective's ``num_classes`` read from its target sets (checked if given)."""
    if not target_sets:
        return cfg
    name = OBJECTIVES[cfg.objective].section
    section = getattr(cfg, name)
    counts = [int(s.num_classes) for s in target_sets]
    if section.num_classes and list(section.num_classes) != counts:
        raise ConfigError(f"{name}.num_classes {section.num_classes} disagrees with the target sets' {counts}")
    return dataclasses.replace(cfg, **{name: dataclasses.replace(section, num_classes=counts)})


def _newest(directory: Path) -> Path | None:
    found = ckpt.step_checkpoints(directory)
    return found[-1][1] if found else None


def _diff_sections(saved: dict[str, Any], now: dict[str, Any]) -> str:
    changed = [key for key in _RUN_DEFINING if saved.get(key) != now.get(key)]
    return "changed: " + ", ".join(changed) if changed else "different settings"


def read_metrics(out_dir: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """The records of ``split`` in a run's metrics.jsonl."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["split"] == split]
