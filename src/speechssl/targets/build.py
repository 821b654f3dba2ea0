"""``build_targets``: upstream features -> k-means -> labels at the encoder's frame rate.

The HuBERT recipe: iteration 1 clusters MFCCs, iteration 2 clusters a layer of the
iteration-1 model (``ckpt:<run>``), or any ``hf:`` model. Steps:

1. features of every split come from the frozen-feature cache (one entry per split, the
   same entries ``speechssl bench`` uses, so an upstream already benchmarked is not run
   again; an entry with all layers is used when one exists);
2. a uniform sample of at most ``max_fit_frames`` train frames (reservoir sampling over the
   cached utterances in manifest order) is standardised and clustered;
3. every utterance of every requested split is assigned frame by frame, its labels moved
   onto the encoder's frame grid (:mod:`speechssl.targets.alignment`), and streamed into a
   :class:`~speechssl.targets.store.TargetSetWriter`.

Everything that decides the labels is in the key, so asking again for the same set reuses
it, and changing any input builds a new one beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechssl.errors import ConfigError
from speechssl.models.config import ConvLayer, conv_stack
from speechssl.targets.alignment import (
    FrameGrid,
    align_labels,
    conv_geometry,
    encoder_frames,
    geometry_only,
    loaded_num_samples,
    upstream_layout,
)
from speechssl.targets.kmeans import DEFAULT_N_INIT, FrameReservoir, KMeansModel, fit_kmeans
from speechssl.targets.store import (
    SET_FORMAT,
    TargetSet,
    TargetSetError,
    TargetSetWriter,
    discard,
    entropy_bits,
    geometry_record,
    label_dtype,
)
from speechssl.upstream.base import SAMPLE_RATE

log = logging.getLogger(__name__)

DEFAULT_K = 100
DEFAULT_MAX_FIT_FRAMES = 100_000
"""The fit holds this many frames (plus a standardised copy) whatever the corpus size:
2 x 16 MB for 39-dim MFCCs, 2 x 307 MB for a 768-dim layer (lower it for big models)."""
DEFAULT_CACHE_DIR = Path("runs/feature_cache")
"""The benchmark's default cache, so both commands share feature entries."""
FIT_SPLIT = "train"


def build_targets(
    spec: str,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    k: int = DEFAULT_K,
    frame_ms: int | None = None,
    conv_layers: Sequence[ConvLayer] | None = None,
    layer: int | None = None,
    splits: Sequence[str] = ("train", "dev"),
    max_fit_frames: int = DEFAULT_MAX_FIT_FRAMES,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> Path:
    """Build (or reuse) the target set for these inputs under ``out_dir``; returns its directory.

    ``spec`` is any upstream spec (``mfcc``, ``ckpt:<run>``, ``hf:<dir>``); ``layer`` picks
    its layer (default: the last; negative counts from the end). The labels are for an
    encoder with ``conv_layers`` or, instead, the standard stack at ``frame_ms`` (20, 40 or
    80; default 20). k-means is fitted on the ``train`` split and applied to ``splits``.
    Features are read from (or added to) the feature cache at ``cache_dir`` (default
    ``runs/feature_cache``); building runs the upstream on ``device`` if it is not cached.
    """
    from speechssl.data.manifests import load_cuts
    from speechssl.downstream.cache import FeatureCache, split_fingerprint
    from speechssl.upstream import build_upstream, parse_spec

    started = time.time()
    _check_arguments(k, max_fit_frames, seed)
    split_names = _check_splits(splits)
    layers = _encoder_layers(frame_ms, conv_layers)
    parse_spec(spec)  # a malformed or unknown spec fails before any manifest is read

    cut_sets = {name: list(load_cuts(data_dir, name)) for name in dict.fromkeys([FIT_SPLIT, *split_names])}
    _check_unique_ids(cut_sets, split_names)
    upstream = build_upstream(spec)
    layer_index = _resolve_layer(layer, upstream)
    fingerprints = {name: split_fingerprint(cuts) for name, cuts in cut_sets.items()}
    key_inputs = {
        "format": SET_FORMAT,
        "upstream": upstream.fingerprint(),
        "layer": layer_index,
        "k": k,
        "seed": seed,
        "max_fit_frames": max_fit_frames,
        "kmeans": {"n_init": DEFAULT_N_INIT, "standardize": True},
        "conv_layers": [list(layer) for layer in layers],
        "fit_split": [FIT_SPLIT, fingerprints[FIT_SPLIT]],
        "splits": [[name, fingerprints[name]] for name in split_names],
    }
    key = hashlib.sha256(json.dumps(key_inputs, sort_keys=True).encode()).hexdigest()[:32]
    out_dir = Path(out_dir)
    name = _set_name(spec, layer_index, k, seed, layers, key)
    existing = _reusable(out_dir / name)
    if existing is not None:
        log.info("reusing target set %s", existing)
        return existing

    cache = FeatureCache(DEFAULT_CACHE_DIR if cache_dir is None else cache_dir)
    grid, expected_frames = upstream_layout(upstream)
    cache_keys: dict[str, str] = {}
    with ExitStack() as stack:
        def features(split: str):
            cached, column = _cached_layer(cache, upstream, cut_sets[split], layer_index, device, progress)
            stack.callback(cached.close)
            cache_keys[split] = cached.key
            return cached, column

        fit_cached, fit_column = features(FIT_SPLIT)
        model, fit_info = _fit(fit_cached, fit_column, cut_sets[FIT_SPLIT], k, max_fit_frames, seed)
        samples = {name: [loaded_num_samples(cut) for cut in cut_sets[name]] for name in split_names}
        frames = {name: encoder_frames(samples[name], layers) for name in split_names}
        total = int(sum(int(f.sum()) for f in frames.values()))
        split_info: dict[str, dict[str, Any]] = {}
        with TargetSetWriter(out_dir, name, num_classes=k, total_frames=total) as writer:
            for split in split_names:
                cached, column = (fit_cached, fit_column) if split == FIT_SPLIT else features(split)
                split_info[split] = _label_split(
                    writer, split, cut_sets[split], samples[split], frames[split], cached, column,
                    model, grid, layers, expected_frames, upstream.name or spec,
                )
                split_info[split]["fingerprint"] = fingerprints[split]
            meta = {
                "key": key,
                "created": started,
                "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "build_seconds": round(time.time() - started, 3),
                "upstream": {
                    "spec": spec,
                    "name": upstream.name,
                    "fingerprint": upstream.fingerprint(),
                    "frame_rate": float(upstream.frame_rate),
                    "num_layers": int(upstream.num_layers),
                    "feature_dim": int(fit_cached.feature_dim),
                    "frame_grid": {"hop": grid.hop, "first_centre": grid.first_centre},
                },
                "layer": layer_index,
                "k": k,
                "seed": seed,
                "dtype": str(label_dtype(k)),
                "encoder": geometry_record(layers),
                "fit": {"split": FIT_SPLIT, "fingerprint": fingerprints[FIT_SPLIT], **fit_info},
                "splits": split_info,
                "feature_cache": {"dir": str(cache.root), "keys": cache_keys},
                "key_inputs": key_inputs,
            }
            path = writer.commit(meta, model)
    log.info("wrote target set %s in %.1f s", path, time.time() - started)
    return path


def _fit(cached: Any, column: int, cuts: list[Any], k: int, max_fit_frames: int, seed: int) -> tuple[KMeansModel, dict[str, Any]]:
    """k-means on a uniform sample of the split's frames; returns the model and its ``meta.json`` record."""
    reservoir = FrameReservoir(max_fit_frames, cached.feature_dim, seed=seed)
    for cut in cuts:
        reservoir.add(cached[cut.id][:, column])  # float16 in, stored as float32
    started = time.time()
    model = fit_kmeans(reservoir.sample, k, seed=seed)
    seconds = time.time() - started
    log.info("k-means K=%d fitted on %d of %d frames in %.1f s", k, len(reservoir.sample), reservoir.seen, seconds)
    return model, {
        "frames_seen": int(reservoir.seen),
        "frames_used": int(len(reservoir.sample)),
        "max_fit_frames": max_fit_frames,
        "n_init": DEFAULT_N_INIT,
        "inertia": model.inertia,
        "seconds": round(seconds, 3),
    }


def _label_split(
    writer: TargetSetWriter,
    split: str,
    cuts: list[Any],
    samples: list[int],
    frames: np.ndarray,
    cached: Any,
    column: int,
    model: KMeansModel,
    grid: FrameGrid,
    layers: list[ConvLayer],
    expected_frames: Any,
    upstream_name: str,
) -> dict[str, Any]:
    """Assign, align and write one split; returns its summary for ``meta.json``."""
    if expected_frames is not None:
        _check_frame_counts(cuts, samples, cached, expected_frames, upstream_name)
    encoder_grid = conv_geometry(layers).grid
    counts = np.zeros(model.num_classes, dtype=np.int64)
    for cut, num_samples, count in zip(cuts, samples, frames.tolist()):
        upstream_features = cached[cut.id][:, column]
        if count and len(upstream_features) == 0:
            raise TargetSetError(
                f"upstream {upstream_name} gave no frames for cut {cut.id!r} ({num_samples} samples) "
                f"but the encoder has {count}: nothing to take its labels from"
            )
        upstream_labels = model.assign(upstream_features.astype(np.float32)) if count else np.zeros(0, np.int64)
        labels = align_labels(upstream_labels, grid, encoder_grid, count)
        counts += np.bincount(labels, minlength=model.num_classes)
        writer.add(split, cut.id, labels, num_samples)
    return {
        "utterances": len(cuts),
        "frames": int(frames.sum()),
        "empty_utterances": int((frames == 0).sum()),
        "cluster_counts": counts.tolist(),
        "entropy_bits": round(entropy_bits(counts), 4),
        "unused_clusters": int((counts == 0).sum()),
    }


def _check_frame_counts(cuts: list[Any], samples: list[int], cached: Any, expected_frames: Any, name: str) -> None:
    """The upstream's cached frame counts must be the ones its own rule gives for our sample counts."""
    expected = expected_frames(torch.as_tensor(samples, dtype=torch.int64)).tolist()
    for cut, num_samples, wanted in zip(cuts, samples, expected):
        got = cached.frames(cut.id)
        if got != int(wanted):
            raise TargetSetError(
                f"upstream {name} has {got} cached frames for cut {cut.id!r}, but {int(wanted)} for the "
                f"{num_samples} samples its manifest entry describes: the manifest and the audio disagree"
            )


def _cached_layer(cache: Any, upstream: Any, cuts: list[Any], layer: int, device: Any, progress: bool) -> tuple[Any, int]:
    """A cache entry holding ``layer`` of ``cuts`` and the column of that layer in it.

    An existing all-layers entry (what ``speechssl bench`` stores for a weighted-sum probe)
    is used as it is; otherwise an entry with only this layer is read or built, which for
    a 13-layer model is a 13th of the disk and time.
    """
    from speechssl.downstream.cache import cache_key, split_fingerprint

    preprocessing = {"sample_rate": upstream.sample_rate}  # as the benchmark keys its entries
    fingerprint, split = upstream.fingerprint(), split_fingerprint(cuts)
    every_layer = list(range(upstream.num_layers))
    all_key = cache_key(fingerprint, split, every_layer, preprocessing)
    if any(entry.key == all_key and entry.complete for entry in cache.entries()):
        chosen = every_layer
    else:
        chosen = [layer]
    key = cache_key(fingerprint, split, chosen, preprocessing)
    cached = cache.get_or_build(
        key, cuts, upstream, layers=chosen, device=device, progress=progress,
        key_inputs={"upstream": upstream.name, "layers": chosen, **preprocessing},
    )
    return cached, cached.layers.index(layer)


# ---------------------------------------------------------------------------- small helpers


def _check_arguments(k: int, max_fit_frames: int, seed: int) -> None:
    label_dtype(k)  # 2 <= k <= 65536
    if not isinstance(max_fit_frames, int) or max_fit_frames < k:
        raise ConfigError(f"max_fit_frames must be an integer >= k ({k}), got {max_fit_frames!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")


def _check_splits(splits: Sequence[str]) -> list[str]:
    names = [str(name).strip() for name in ([splits] if isinstance(splits, str) else splits)]
    if not names or any(not name for name in names):
        raise ConfigError(f"splits must be a non-empty list of split names, got {list(splits)!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"splits name the same split twice: {names}")
    return names


def _encoder_layers(frame_ms: int | None, conv_layers: Sequence[ConvLayer] | None) -> list[ConvLayer]:
    if conv_layers is not None and frame_ms is not None:
        raise ConfigError("give the encoder's conv_layers or frame_ms, not both")
    if conv_layers is not None:
        return geometry_only(conv_layers)
    return geometry_only(conv_stack(1, frame_ms=20 if frame_ms is None else frame_ms))


def _resolve_layer(layer: int | None, upstream: Any) -> int:
    count = int(upstream.num_layers)
    if layer is None:
        return count - 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
        raise ConfigError(
            f"layer {layer} does not exist: upstream {upstream.name} has {count} layer{'s' if count > 1 else ''} "
            f"(0..{count - 1})"
        )
    return layer % count


def _check_unique_ids(cut_sets: dict[str, list[Any]], split_names: list[str]) -> None:
    # One set holds several splits keyed by cut id: an id in two splits would be ambiguous.
    seen: dict[str, str] = {}
    for split in split_names:
        for cut in cut_sets[split]:
            other = seen.setdefault(cut.id, split)
            if other != split:
                raise ConfigError(f"cut id {cut.id!r} is in both the {other} and {split} splits")


def _set_name(spec: str, layer: int, k: int, seed: int, layers: list[ConvLayer], key: str) -> str:
    """``mfcc-L0-k100-20ms-seed0-<hash>``, ``ckpt_hubert_it1_best-L6-...``: readable, unique by the key."""
    prefix, _, argument = spec.strip().partition(":")
    # The last two path components name a model well enough (runs/<run>/checkpoints/best.pt -> <run>_best).
    parts = [part for part in Path(argument.rstrip("/")).parts if part not in ("/", "checkpoints")][-2:]
    parts = [part[: -len(".pt")] if part.endswith(".pt") else part for part in parts]
    detail = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(parts)).strip("_")
    label = f"{prefix}_{detail[-(40 - len(prefix)):]}" if detail else prefix
    frame_ms = conv_geometry(layers).stride * 1000 / SAMPLE_RATE
    return f"{label}-L{layer}-k{k}-{frame_ms:g}ms-seed{seed}-{key[:12]}"


def _reusable(path: Path) -> Path | None:
    """``path`` if it holds a good set; a damaged one is reported and removed for rebuilding."""
    if not path.exists():
        return None
    try:
        TargetSet.open(path)
    except TargetSetError as exc:
        log.warning("%s; rebuilding it", exc)
        discard(path)
        return None
    return path


def format_summary(target_set: TargetSet, *, since: float | None = None) -> str:
    """A few lines for the CLI; ``since`` (a start time) tells a reused set from a new one."""
    meta = target_set.meta
    fit = meta["fit"]
    upstream = meta["upstream"]
    lines = [
        f"targets: {upstream['spec']} layer {meta['layer']} -> k-means K={meta['k']} "
        f"(fit on {fit['frames_used']:,} of {fit['frames_seen']:,} {fit['split']} frames, seed {meta['seed']}, "
        f"inertia {fit['inertia']:.3g}); labels at {meta['encoder']['frame_ms']:g} ms frames "
        f"(stride {meta['encoder']['stride']}), {meta['dtype']}"
    ]
    for split, info in meta["splits"].items():
        ideal = np.log2(meta["k"])
        lines.append(
            f"  {split}: {info['utterances']} utterances, {info['frames']:,} frames; cluster usage entropy "
            f"{info['entropy_bits']:.2f} bits of {ideal:.2f} (perplexity {2 ** info['entropy_bits']:.1f}), "
            f"{info['unused_clusters']} unused clusters"
        )
    if since is not None and meta["created"] < since:
        lines.append(f"reused {target_set.path} (built {meta['created_iso']} in {meta['build_seconds']:.1f} s)")
    else:
        lines.append(f"built {target_set.path} in {meta['build_seconds']:.1f} s (k-means fit {fit['seconds']:.1f} s)")
    return "\n".join(lines)
