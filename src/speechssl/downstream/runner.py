"""One benchmark run: (upstream, task, probe) trained on train, early-stopped on dev, scored on test.

In the ``frozen`` regime (the default) the upstream's features come either from the on-disk
cache (computed once per upstream fingerprint and split, then read by every epoch, probe and
seed) or, with ``cache.enabled=false``, from running the upstream on every batch. The other
regimes (:mod:`speechssl.downstream.adaptation`) train part of the upstream with the probe,
so its features are computed live, with gradients, on every training batch. Before training, the
representation-health monitors (:mod:`speechssl.upstream.health`) run on a fixed dev subset,
so that a collapsed upstream is reported in seconds rather than after the probe.
"""

from __future__ import annotations

import copy
import io
import json
import math
import re
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from speechssl.config import config_hash, to_dict
from speechssl.downstream.adaptation import (
    Adaptation,
    SpecAugment,
    apply_regime,
    check_budget,
    regime_label,
    upstream_param_groups,
)
from speechssl.downstream.cost import EnergyTracker, PeakMemory, count_upstream_flops, gpu_hours
from speechssl.data.collate import CutAudioDataset, supervision_info
from speechssl.data.manifests import load_cuts
from speechssl.data.sampler import DurationBucketSampler
from speechssl.downstream.config import BenchConfig, ProbeConfig
from speechssl.downstream.featurizer import Featurizer, resolve_layer
from speechssl.downstream.probes import check_probe
from speechssl.downstream.tasks import ProbeBatch, Task, task_class
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.fsutil import write_bytes_atomic, write_text_atomic

RESULT_FORMAT = "speechssl.bench/1"
ROLES = ("train", "dev", "test")


# ---------------------------------------------------------------- feature sources


@dataclass
class LayerBatch:
    layers: Tensor  # [L, B, T, D] float32
    lengths: Tensor  # [B]
    cut_ids: list[str]
    supervisions: list[dict[str, Any]]


def _pad_layers(arrays: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Per-utterance ``[L, T_i, D]`` arrays -> zero-padded ``[L, B, T, D]`` float32 + lengths.

    Each array (an fp16 view of the memory-mapped cache) is read once: the fp16 -> fp32
    conversion happens in the copy into the batch (3x faster than converting first).
    """
    lengths = torch.tensor([a.shape[1] for a in arrays], dtype=torch.long)
    num_layers, _, dim = arrays[0].shape
    out = torch.zeros(num_layers, len(arrays), int(lengths.max()), dim)
    with warnings.catch_warnings():
        # The cache's read-only map is only read here (the copy's source), never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for i, a in enumerate(arrays):
            out[:, i, : a.shape[1]] = torch.from_numpy(a)
    return out, lengths


class CachedFeatureDataset(Dataset):
    """``dataset[cuts] -> LayerBatch`` read from a cache entry (memory-mapped fp16)."""

    def __init__(self, cached) -> None:
        self.cached = cached

    def __getitem__(self, cuts) -> LayerBatch:
        cut_list = list(cuts)
        # The cache stores [T', L, D] per utterance (one contiguous read).
        layers, lengths = _pad_layers([self.cached[c.id].transpose(1, 0, 2) for c in cut_list])
        return LayerBatch(layers, lengths, [c.id for c in cut_list], [supervision_info(c) for c in cut_list])


class FeatureSource:
    """Batches of upstream layers over one split, from the cache or computed live."""

    def __init__(self, cuts: list, *, upstream: nn.Module, layer_ids: list[int], cached, cfg: BenchConfig, device) -> None:
        if cached is not None and any(p.requires_grad for p in upstream.parameters()):
            raise ValueError("a cached feature source needs a frozen upstream")
        self.cuts = cuts
        self.upstream = upstream
        self.layer_ids = layer_ids
        self.cached = cached
        self.cfg = cfg
        self.device = device

    def batches(self, *, shuffle: bool, epoch: int = 0) -> Iterator[LayerBatch]:
        sampler = DurationBucketSampler(
            self.cuts, batch_seconds=self.cfg.train.batch_seconds, shuffle=shuffle, seed=self.cfg.seed
        )
        sampler.set_epoch(epoch)
        return self._cached_batches(sampler) if self.cached is not None else self._live_batches(sampler)

    def _cached_batches(self, sampler) -> Iterator[LayerBatch]:
        loader = DataLoader(CachedFeatureDataset(self.cached), sampler=sampler, batch_size=None)
        for batch in loader:
            yield LayerBatch(batch.layers.to(self.device), batch.lengths.to(self.device), batch.cut_ids, batch.supervisions)

    def _live_batches(self, sampler) -> Iterator[LayerBatch]:
        loader = DataLoader(
            CutAudioDataset(seed=self.cfg.seed), sampler=sampler, batch_size=None,
            num_workers=self.cfg.train.num_workers, persistent_workers=False,
        )
        # An adapted upstream trains: its forward pass keeps the graph whenever gradients
        # are on (training batches). Otherwise (a frozen upstream, or evaluation under
        # no_grad) it runs in inference mode.
        tuning = any(p.requires_grad for p in self.upstream.parameters())
        for audio in loader:
            audio = audio.to(self.device)
            with torch.inference_mode(not (tuning and torch.is_grad_enabled())):
                out = self.upstream(audio.waveforms, audio.lengths)
                layers = torch.stack([out.layers[i] for i in self.layer_ids]).float()
            if torch.is_inference(layers):
                # inference tensors cannot be saved for backward; clone() makes normal ones.
                layers, lengths = layers.clone(), out.lengths.clone()
            else:
                lengths = out.lengths
            yield LayerBatch(layers, lengths, audio.cut_ids, audio.supervisions)


# ---------------------------------------------------------------- the run


def upstream_slug(upstream: str) -> str:
    """An upstream spec as a folder name (``ckpt:runs/x`` -> ``ckpt-runs_x``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", upstream.replace(":", "-")).strip("_")[-60:]


def default_run_dir(cfg: BenchConfig, probe: str) -> Path:
    slug = upstream_slug(cfg.upstream)
    layer = "" if cfg.featurizer.layer is None else f"-layer{cfg.featurizer.layer}"
    regime = "" if cfg.regime == "frozen" else f"-{regime_label(cfg)}"
    train = "" if cfg.train_split == "train" else f"-{cfg.train_split}"
    return Path("runs/bench") / slug / f"{cfg.task}-{probe_label(cfg, probe)}{regime}{train}{layer}-seed{cfg.seed}"


def resolve_run_dir(cfg: BenchConfig, out_dir: str | Path | None = None) -> Path:
    """Where :func:`run_bench` writes: ``out_dir`` if given, else :func:`default_run_dir` with
    the probe the run will use (an unknown task or unfit probe raises ConfigError here)."""
    if out_dir is not None:
        return Path(out_dir)
    return default_run_dir(cfg, _check_probe(cfg, task_class(cfg.task)))


# Probe bodies built from probe_cfg.num_layers layers (the head-only probes have none).
_LAYERED_BODIES = ("bilstm", "cnn", "transformer", "conformer", "ebranchformer")


def probe_label(cfg: BenchConfig, probe: str) -> str:
    """The probe as results name it: a layered body of other than the default depth carries
    it (``transformer_ctc-L6``), because ML-SUPERB 2.0 compares a shallow and a deep
    Transformer as two architectures and the store must keep them apart."""
    layers = cfg.probe_cfg.num_layers
    if probe.split("_")[0] in _LAYERED_BODIES and layers != ProbeConfig().num_layers:
        return f"{probe}-L{layers}"
    return probe


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    return torch.device(name)


def _hours(cuts: list) -> float:
    return sum(float(c.duration) for c in cuts) / 3600.0


def _check_probe(cfg: BenchConfig, task: type[Task]) -> str:
    """The probe's name, refused before any work if unknown or unfit for the task."""
    name = cfg.probe or task.default_probe
    try:
        check_probe(name, task.needs)
    except ConfigError as exc:
        raise ConfigError(f"task {task.name}: {exc} (does not fit task {task.name})") from None
    return name


def _load_splits(cfg: BenchConfig, select=None) -> tuple[dict[str, list], dict[str, list]]:
    """The train/dev/test cuts a task uses -- each split filtered by ``select`` (the task's
    choice), then train and dev cut to ``train_hours`` / ``dev_hours`` -- and, per split, the cuts whose feature-cache
    entry to read them from: the split every other task uses when it holds them all (a
    selected dev or test set), else the selection itself."""
    data_dir = Path(cfg.data)
    if not data_dir.is_dir():
        hint = " (make it with: speechssl corpus synth)" if cfg.data == "data/synth" else ""
        raise ConfigError(f"data directory {data_dir} does not exist{hint}")
    names = {"train": cfg.train_split, "dev": cfg.dev_split, "test": cfg.test_split}
    whole = {role: list(load_cuts(data_dir, split)) for role, split in names.items()}
    splits = {role: select(cuts) for role, cuts in whole.items()} if select is not None else dict(whole)
    for role, hours in (("train", cfg.train_hours), ("dev", cfg.dev_hours)):
        if hours is not None:
            whole[role] = subset_hours(whole[role], hours)
            splits[role] = subset_hours(splits[role], hours)
    cached = {}
    for role in ROLES:
        ids = {c.id for c in whole[role]}
        cached[role] = whole[role] if all(c.id in ids for c in splits[role]) else splits[role]
    return splits, cached


def subset_hours(cuts: list, hours: float) -> list:
    """A fixed pseudo-random subset of about ``hours`` (the same for every seed and upstream,
    so runs stay comparable and share one feature-cache entry); manifest order is kept."""
    ranked = sorted(cuts, key=lambda c: zlib.crc32(c.id.encode()))
    chosen, total = set(), 0.0
    for cut in ranked:
        if total >= hours * 3600.0:
            break
        chosen.add(cut.id)
        total += float(cut.duration)
    return [c for c in cuts if c.id in chosen]


def run_bench(cfg: BenchConfig, out_dir: str | Path | None = None, *, fresh: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train and score one probe; returns the result dict (also written to ``out_dir/result.json``)."""
    from speechssl.upstream import build_upstream

    started = time.perf_counter()
    task_cls = task_class(cfg.task)
    probe_name = _check_probe(cfg, task_cls)
    run_dir = resolve_run_dir(cfg, out_dir)
    result_path = run_dir / "result.json"
    key = config_hash(cfg)
    if result_path.is_file() and not fresh:
        previous = json.loads(result_path.read_text())
        if previous.get("config_hash") == key:
            previous["reused"] = True
            return previous
    # The scoring packages come with the [bench] extra; missing, they would fail the run at its end.
    from speechssl.extras import check_installed

    check_installed(("sklearn", "jiwer", "sacrebleu"), f"scoring the {cfg.task} task")

    device = _device(cfg.device)
    # Energy covers everything from here: feature extraction, training and test.
    # "process" mode: concurrent sweep workers each count their own use, not the machine's.
    tracker = EnergyTracker(enabled=cfg.cost.energy, country=cfg.cost.country, tracking_mode="process")
    tracker.start()
    sources: dict[str, FeatureSource] = {}
    try:
        upstream = build_upstream(cfg.upstream)
        # The regime decides what of the upstream trains (adapters / LoRA are inserted
        # here); an over-budget upstream is refused before any feature is computed.
        adaptation = apply_regime(upstream, cfg)
        check_budget(adaptation.tunable_params, cfg.adapt, f"regime {adaptation.label}")
        upstream = upstream.to(device).eval()
        flops = count_upstream_flops(upstream, cfg.cost.flops_seconds)
        task = task_cls(cfg, Path(cfg.data))
        # The task may use part of a split (speech translation: its source languages); it is
        # chosen before train_hours, so that budget counts the audio the task trains on.
        splits, cache_cuts = _load_splits(cfg, task.select)
        task.prepare(splits)
        if cfg.featurizer.layer is None:
            layer_ids = list(range(upstream.num_layers))
        else:
            layer_ids = [resolve_layer(cfg.featurizer.layer, upstream.num_layers)]
        run_dir.mkdir(parents=True, exist_ok=True)

        cache_seconds = 0.0
        # Features of an upstream that trains change every update: nothing to cache.
        use_cache = cfg.cache.enabled and cfg.regime == "frozen"
        cache_info: dict[str, Any] = {"enabled": use_cache}
        for role in ROLES:
            cached = None
            if use_cache:
                t0 = time.perf_counter()
                cached, info = _open_cache(cfg, upstream, cache_cuts[role], layer_ids, device, progress)
                cache_seconds += time.perf_counter() - t0
                cache_info[role] = info
            sources[role] = FeatureSource(splits[role], upstream=upstream, layer_ids=layer_ids, cached=cached, cfg=cfg, device=device)
        cache_info["seconds"] = round(cache_seconds, 2)
        health = _dev_health(cfg, upstream, layer_ids, sources["dev"], device)
        return _train_and_score(cfg, task, probe_name, upstream, layer_ids, sources, splits, run_dir, device,
                                cache_info, started, key, progress, cost=(tracker, flops), health=health,
                                adaptation=adaptation)
    finally:
        tracker.stop()  # a no-op after a finished run; ends the measurement of a failed one
        for source in sources.values():
            if source.cached is not None:
                source.cached.close()  # releases the entry's lock (evictable again)


def train_statistics(source: FeatureSource, num_layers: int) -> tuple[Tensor, Tensor]:
    """Per-layer, per-dimension mean and std ``[L, D]`` over every valid train frame (float64
    sums), read from the cache when there is one, else from a pass of the upstream."""
    total = count = total_sq = None
    if source.cached is not None:
        arrays = (np.asarray(source.cached[c.id], dtype=np.float64).transpose(1, 0, 2) for c in source.cuts)
    else:
        arrays = (batch.layers[:, i, :n].double().cpu().numpy()
                  for batch in source.batches(shuffle=False) for i, n in enumerate(batch.lengths.tolist()))
    for frames in arrays:  # [L, T, D]
        if total is None:
            total = np.zeros(frames.shape[::2])
            total_sq = np.zeros(frames.shape[::2])
            count = 0
        total += frames.sum(1)
        total_sq += (frames**2).sum(1)
        count += frames.shape[1]
    if total is None or total.shape[0] != num_layers or not count:
        raise SpeechSSLError("cannot standardise: the train split gave no frames")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    bad = [i for i in range(num_layers) if not (np.isfinite(mean[i]).all() and np.isfinite(std[i]).all())]
    if bad:
        raise SpeechSSLError(f"cannot standardise: the train features of layer(s) {bad} hold NaN or infinite "
                             "values; check the upstream's numerics and the audio")
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


@dataclass
class Fit:
    """What training a probe produced (the best dev state is loaded into the modules)."""

    best_value: float
    best_epoch: int
    history: list[dict[str, Any]]
    updates: int
    skipped: int
    seconds: float


def _lr_schedule(optimizer, cfg: BenchConfig, total_updates: int):
    """Linear warmup then cosine decay for every group; the upstream's groups stay at 0
    for the first ``adapt.freeze_updates`` updates."""
    warmup = min(cfg.train.warmup_updates, max(total_updates // 10, 1))

    def lr_factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / warmup
        progress_ = (update - warmup) / max(total_updates - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress_, 1.0)))

    def upstream_factor(update: int) -> float:
        return 0.0 if update < cfg.adapt.freeze_updates else lr_factor(update)

    factors = [upstream_factor if group.get("upstream") else lr_factor for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _trained_state(upstream: nn.Module) -> dict[str, Tensor]:
    """Copies of the upstream's trained parameters (all that an adapted regime changes)."""
    return {n: p.detach().clone() for n, p in upstream.named_parameters() if p.requires_grad}


def _fit(cfg: BenchConfig, task, featurizer: Featurizer, probe: nn.Module, upstream: nn.Module, batches, evaluate,
         splits, run_dir: Path, progress: bool) -> Fit:
    """Train on train, evaluate on dev after every epoch, keep the best dev state.

    A batch whose loss or gradient norm is NaN/inf is skipped (no optimizer step) and counted
    (``Fit.skipped``, ``skipped_batches`` in the epoch log); an epoch without one finite batch,
    or more than max(10, half an epoch) bad batches in all, stops the run (SpeechSSLError).
    """
    lr = cfg.train.lr or task.default_lr
    own = [p for p in list(featurizer.parameters()) + list(probe.parameters()) if p.requires_grad]
    groups = [{"params": own, "lr": lr}] + upstream_param_groups(upstream, cfg, lr)
    trainable = [p for group in groups for p in group["params"]]
    tuning = len(groups) > 1
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.train.weight_decay)
    max_epochs = cfg.train.max_epochs or task.default_epochs
    batches_per_epoch = len(DurationBucketSampler(splits["train"], batch_seconds=cfg.train.batch_seconds, seed=cfg.seed))
    scheduler = _lr_schedule(optimizer, cfg, max_epochs * batches_per_epoch)
    log_path = run_dir / "metrics.jsonl"
    log_path.write_text("")
    best_value: float | None = None
    best_state = None
    best_epoch = stale = updates = skipped = 0
    train_seconds = 0.0
    history = []
    for epoch in range(max_epochs):
        featurizer.train()
        probe.train()
        upstream.train(tuning)
        t0 = time.perf_counter()
        losses = []
        skipped_before = skipped
        iterator = batches("train", shuffle=True, epoch=epoch)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=batches_per_epoch, desc=f"{cfg.task} epoch {epoch + 1}/{max_epochs}", leave=False)
        for batch in iterator:
            loss = task.loss(probe, batch)
            optimizer.zero_grad(set_to_none=True)
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                # clip_norm=0 measures only (max_norm=inf scales by exactly 1): a NaN/inf gradient
                # of a finite loss is caught too.
                norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.train.clip_norm or math.inf)
                finite = bool(torch.isfinite(norm))
            if not finite:
                # A bad batch must not poison the probe (no step); too many means a broken setup.
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                if skipped > max(10, batches_per_epoch // 2):
                    raise SpeechSSLError(f"{skipped} batches gave a non-finite loss or gradient (the last in epoch "
                                         f"{epoch + 1}); stopping: the probe or its features are broken")
                continue
            optimizer.step()
            scheduler.step()
            updates += 1
            losses.append(float(loss.detach()))
        if not losses and skipped > skipped_before:
            raise SpeechSSLError(f"every batch of epoch {epoch + 1} gave a non-finite loss or gradient ({skipped} "
                                 "skipped in all); stopping: the probe or its features are broken")
        epoch_train = time.perf_counter() - t0
        train_seconds += epoch_train
        value = float(evaluate("dev", final=False)[task.primary_metric])
        improved = task.is_better(value, best_value)
        if improved:
            best_value, best_epoch, stale = value, epoch + 1, 0
            best_state = {"probe": copy.deepcopy(probe.state_dict()), "featurizer": copy.deepcopy(featurizer.state_dict()),
                          "upstream": _trained_state(upstream)}
        else:
            stale += 1
        record = {
            "epoch": epoch + 1,
            "updates": updates,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "skipped_batches": skipped,
            f"dev_{task.primary_metric}": value,
            "lr": scheduler.get_last_lr()[0],
            "epoch_seconds": round(epoch_train, 3),
        }
        history.append(record)
        with open(log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        # One line per epoch even without progress bars: the run's heartbeat in logs.
        print(
            f"  epoch {epoch + 1}: loss {record['train_loss']:.3f}  dev {task.primary_metric} {value:.4f}"
            f"{'  *' if improved else ''}  ({epoch_train:.1f}s)",
            flush=True,
        )
        if stale >= cfg.train.patience:
            break
    assert best_state is not None and best_value is not None
    probe.load_state_dict(best_state["probe"])
    featurizer.load_state_dict(best_state["featurizer"])
    upstream.load_state_dict(best_state["upstream"], strict=False)
    upstream.eval()
    return Fit(best_value, best_epoch, history, updates, skipped, train_seconds)


def _train_and_score(cfg, task, probe_name, upstream, layer_ids, sources, splits, run_dir, device, cache_info,
                     started, key, progress, cost, health, adaptation: Adaptation) -> dict[str, Any]:
    from speechssl.downstream.cost import count_probe_macs

    torch.manual_seed(cfg.seed)
    stats = train_statistics(sources["train"], len(layer_ids)) if cfg.featurizer.standardize else None
    featurizer = Featurizer(len(layer_ids), normalize=cfg.featurizer.normalize_layers, stats=stats).to(device)
    spec = check_probe(probe_name, task.needs)
    probe = spec.build(upstream.feature_dim, task.num_outputs, cfg.probe_cfg).to(device)
    macs = count_probe_macs(probe, upstream.feature_dim, float(upstream.frame_rate))
    probe_params = sum(p.numel() for p in probe.parameters()) + sum(p.numel() for p in featurizer.parameters())
    tunable = adaptation.tunable_params + (probe_params if spec.trainable else 0)
    check_budget(tunable, cfg.adapt, f"regime {adaptation.label} with probe {probe_name}")
    augment = SpecAugment(cfg.specaugment)

    def probe_batches(role: str, *, shuffle: bool, epoch: int = 0) -> Iterator[ProbeBatch]:
        for batch in sources[role].batches(shuffle=shuffle, epoch=epoch):
            features = featurizer(batch.layers)
            if featurizer.training:
                features = augment(features, batch.lengths)
            yield ProbeBatch(features, batch.lengths, batch.cut_ids, batch.supervisions)

    def evaluate(role: str, final: bool) -> dict[str, Any]:
        featurizer.eval()
        probe.eval()
        upstream.eval()
        with torch.no_grad():
            return task.evaluate(probe, probe_batches(role, shuffle=False), final=final)

    with PeakMemory(device) as peak:
        if spec.trainable:
            fit = _fit(cfg, task, featurizer, probe, upstream, probe_batches, evaluate, splits, run_dir, progress)
        elif cfg.regime != "frozen":
            raise ConfigError(f"probe {probe_name} trains nothing, so regime {cfg.regime} cannot adapt the upstream; "
                              "use regime=frozen")
        else:
            # A training-free probe (cosine scoring): equal layer weights, dev scored once.
            featurizer.requires_grad_(False)
            fit = Fit(float(evaluate("dev", final=False)[task.primary_metric]), 0, [], 0, 0, 0.0)
    _save_weights(cfg, run_dir, task, featurizer, probe, upstream)
    featurizer.eval()
    probe.eval()
    upstream.eval()
    with torch.no_grad():  # e.g. the n-gram LM's weights, chosen on dev with the final probe
        task.tune_decoding(probe, probe_batches("dev", shuffle=False))
    t0 = time.perf_counter()
    test = evaluate("test", final=True)
    test_seconds = time.perf_counter() - t0
    tracker, flops = cost
    energy = tracker.stop()
    total_seconds = time.perf_counter() - started

    result = {
        "format": RESULT_FORMAT,
        "upstream": cfg.upstream,
        "task": cfg.task,
        "probe": probe_label(cfg, probe_name),
        "regime": adaptation.label,
        "seed": cfg.seed,
        "config_hash": key,
        "metrics": test,
        "primary_metric": task.primary_metric,
        "higher_is_better": task.higher_is_better,
        "dev": {"best": fit.best_value, "best_epoch": fit.best_epoch, "epochs_run": len(fit.history)},
        "layer_weights": featurizer.layer_weights(),
        "layers_used": layer_ids,
        "health": health,
        "upstream_meta": upstream.metadata(),
        "probe_params": probe_params,
        "adaptation": {
            **adaptation.summary(), "tunable_params": tunable,
            "step_seconds": round(fit.seconds / fit.updates, 4) if fit.updates else None,
            "peak_memory_mb": None if peak.mb is None else round(peak.mb, 1), "peak_memory_kind": peak.kind,
        },
        "probe_macs_per_second": macs,
        "probe_kinds": {"input": spec.input_kind, "output": spec.output_kind, "trainable": spec.trainable},
        "updates": fit.updates,
        "skipped_batches": fit.skipped,
        "hours": {role: round(_hours(splits[role]), 4) for role in ROLES},
        "utterances": {role: len(splits[role]) for role in ROLES},
        "wall_seconds": {
            "total": round(total_seconds, 2),
            "features": cache_info["seconds"],
            "train": round(fit.seconds, 2),
            "test": round(test_seconds, 2),
        },
        "cache": cache_info,
        "cost": {
            "flops_per_second": flops["flops_per_second"],
            "flops_partial": flops["partial"],
            "gpu_hours": gpu_hours(total_seconds, device),
            **{k: energy.get(k) for k in ("energy_kwh", "co2_kg", "country", "measure", "energy_error")},
        },
        "device": str(device),
        "history": fit.history,
        "labels": task.label_state(),
        "config": to_dict(cfg),
    }
    write_text_atomic(run_dir / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    return result


def _save_weights(cfg: BenchConfig, run_dir: Path, task, featurizer: Featurizer, probe: nn.Module,
                  upstream: nn.Module) -> None:
    """The best probe (``best.pt``) and, for an adapted upstream, only the weights its regime
    trained (``tuned:<run dir>`` rebuilds the adapted upstream from them)."""
    buffer = io.BytesIO()
    torch.save(
        {"format": RESULT_FORMAT, "config": to_dict(cfg), "probe": probe.state_dict(),
         "featurizer": featurizer.state_dict(), "labels": task.label_state()},
        buffer,
    )
    write_bytes_atomic(run_dir / "best.pt", buffer.getvalue())  # a killed run never leaves half a file
    if cfg.regime != "frozen":
        from speechssl.upstream.tuned import ADAPTED_FILE, save_adapted

        save_adapted(upstream, cfg, run_dir / ADAPTED_FILE, base_fingerprint=upstream.fingerprint())


def _dev_health(cfg: BenchConfig, upstream, layer_ids: list[int], dev: FeatureSource, device) -> dict[str, Any] | None:
    """The health monitors of the used layers on a fixed dev subset (None when ``health_utterances=0``).

    Read from the dev split's feature cache when there is one (no second upstream pass; the
    fp16 storage moved MFCC, fbank and GE2E numbers by < 1e-5 relative), else computed by
    running the upstream.
    The subset does not depend on the seed: every run of an upstream reports the same numbers.
    """
    from speechssl.upstream.health import (
        DEFAULT_FRAMES_PER_UTTERANCE,
        HealthAccumulator,
        collapse_warnings,
        health_subset,
        upstream_health,
    )

    if cfg.health_utterances == 0:
        return None
    t0 = time.perf_counter()
    if dev.cached is None:
        health = upstream_health(upstream, dev.cuts, max_utterances=cfg.health_utterances, device=device,
                                 layers=layer_ids)
    else:
        subset = health_subset(dev.cuts, cfg.health_utterances)
        per_utterance = DEFAULT_FRAMES_PER_UTTERANCE
        accumulator = HealthAccumulator(max_frames=max(len(subset), 1) * per_utterance,
                                        frames_per_utterance=per_utterance, layer_ids=layer_ids)
        for cut in subset:
            frames = torch.from_numpy(np.asarray(dev.cached[cut.id], dtype=np.float32)).transpose(0, 1)  # [L, T, D]
            accumulator.update(list(frames[:, None]), torch.tensor([frames.shape[1]]), [cut.id])
        health = accumulator.result()
        health["warnings"] = collapse_warnings(health, health["dim"])
    health["source"] = "upstream" if dev.cached is None else "cache"
    health["seconds"] = round(time.perf_counter() - t0, 2)
    for warning in health["warnings"]:
        print(f"{cfg.upstream}: {warning}", file=sys.stderr, flush=True)
    return health


def _open_cache(cfg: BenchConfig, upstream, cuts: list, layer_ids: list[int], device, progress: bool):
    from speechssl.downstream.cache import FeatureCache, cache_key, split_fingerprint

    cache = FeatureCache(Path(cfg.cache.dir), max_bytes=int(cfg.cache.max_gb * 1e9), verify=cfg.cache.verify)
    preprocessing = {"sample_rate": upstream.sample_rate}
    key = cache_key(upstream.fingerprint(), split_fingerprint(cuts), layer_ids, preprocessing)
    cached = cache.get_or_build(
        key, cuts, upstream, layers=layer_ids, device=device, progress=progress,
        num_workers=cfg.train.num_workers, key_inputs={"upstream": cfg.upstream, "layers": layer_ids, **preprocessing},
    )
    return cached, {"key": key, "bytes": cached.bytes, "disk_usage": cache.disk_usage()}


def format_result(result: dict[str, Any]) -> str:
    """A few human lines about a finished (or reused) run."""
    metrics = result["metrics"]
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items()
        if isinstance(v, float) and not k.startswith("chance") and k != "p_target"
    )
    weights = result.get("layer_weights") or []
    top = max(range(len(weights)), key=weights.__getitem__) if len(weights) > 1 else None
    lines = [
        f"{result['upstream']} / {result['task']} / {result['probe']}: {shown}"
        + (" (reused)" if result.get("reused") else ""),
        f"  dev best {result['primary_metric']} {result['dev']['best']:.4f} at epoch {result['dev']['best_epoch']}"
        f" of {result['dev']['epochs_run']}; {result['updates']} updates; {result['wall_seconds']['total']:.0f} s",
    ]
    cache = result.get("cache") or {}
    if cache.get("enabled"):
        entry_bytes = sum(cache[role]["bytes"] for role in ROLES if role in cache)
        total = max((cache[role].get("disk_usage", 0) for role in ROLES if role in cache), default=0)
        lines.append(f"  cached features {entry_bytes / 1e6:.0f} MB (cache directory {total / 1e9:.2f} GB)")
    if top is not None:
        lines.append(f"  heaviest layer {result['layers_used'][top]} (weight {weights[top]:.3f} of {len(weights)})")
    health = result.get("health")
    if health:  # absent from results written before the monitors existed
        from speechssl.upstream.health import health_summary

        lines.append(f"  {health_summary(health)}")
        lines += [f"  {warning}" for warning in health.get("warnings", [])]
    return "\n".join(lines)
