"""On-disk cache of a frozen upstream's hidden layers.

Why: a frozen upstream computes the same features in every epoch of every probe and
every seed, and for a large SSL model that forward pass is most of the benchmark's
cost (s3prl's most common complaint). We run it once per (upstream fingerprint, corpus
split, preprocessing, kept layers) and let every later epoch, probe and seed read the
stored frames instead.

Layout of an entry ``<root>/<key>/``::

    shard-00000.npy   float16 [frames, layers_kept, dim]: many utterances' frames, concatenated
    shard-00001.npy   ...
    index.json        per-utterance (shard, offset, frames) + metadata + per-shard size/crc32
    BUILDER           who built it (host, pid), for humans and stale-temp detection
    COMPLETE          written last; holds the key and the crc32 of index.json
    last_used         its mtime is the entry's LRU timestamp

Frames are stored frame-major (``[frames, layers, dim]``) so that one utterance is
one contiguous slice of one shard, for every kept layer at once: a read is a single
sequential range of the memory map, never ``layers`` scattered ones. An utterance never
spans two shards (a single utterance longer than the shard size gets its own shard).

Crash safety: an entry is built in ``<root>/.tmp-<key>-<pid>-<random>`` and renamed into
place in one ``rename(2)``, with ``COMPLETE`` already inside, so a reader sees either no
entry or a complete one. Temp dirs of builders that died (same host and dead pid, or
no heartbeat for ``stale_seconds``) are removed by the next caller.

Concurrency: a per-key ``flock`` in ``<root>/.locks/``. Readers hold it shared for as
long as their :class:`CachedFeatures` is open; a builder holds it exclusively while it
builds, so a second process asking for the same key waits and then reuses the first
one's result instead of running the upstream again. Eviction only takes entries whose
lock it can take exclusively without waiting, so an entry in use is never evicted.
The rename is the actual guarantee: on a filesystem where ``flock`` does not work, two
builders may both build, the second rename fails and the loser discards its copy.

Verification on open: ``COMPLETE`` present and matching ``index.json``; every shard
present with its recorded byte size and ``.npy`` header; with ``verify="full"`` (the
default) also the crc32 of every shard. zlib's crc32 runs at ~2.8 GB/s from the page
cache (200 MB in ~70 ms, vs ~240 ms for blake2b), i.e. about what reading the entry
once more costs; ``verify="size"`` skips it for very large entries on slow disks. A
damaged entry is logged (with what was wrong), deleted and rebuilt.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch.utils.data import DataLoader

from speechssl.data.collate import CutAudioDataset
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.fsutil import fsync_dir, pid_alive, write_error, write_file_synced
from speechssl.upstream.base import Upstream, valid_mask

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bumped whenever the on-disk layout changes; part of every key, so old entries are never misread."""
DEFAULT_SHARD_BYTES = 256 * 2**20
DEFAULT_BATCH_SECONDS = 100.0
DEFAULT_STALE_SECONDS = 3600.0
VERIFY_LEVELS = ("full", "size")
FP16_MAX = float(np.finfo(np.float16).max)

_ESTIMATE_MARGIN = 1.02
_CHECKSUM_BLOCK = 8 << 20
_KEY_RE = re.compile(r"[0-9a-f]{16,128}")
_TMP_RE = re.compile(r"\.tmp-(?P<key>[0-9a-f]+)-(?P<pid>\d+)-(?P<rand>[0-9a-f]+)")
_TRASH_PREFIX = ".trash-"
_LOCK_DIR = ".locks"
_COMPLETE = "COMPLETE"
_INDEX = "index.json"
_BUILDER = "BUILDER"
_LAST_USED = "last_used"
_SHARD_NAME = "shard-{:05d}.npy"


# ---------------------------------------------------------------------------- keys


def cache_key(
    upstream_fingerprint: str,
    split_fingerprint: str,
    layers: Sequence[int] | None,
    preprocessing: Mapping[str, Any],
) -> str:
    """The entry name for one (upstream, split, kept layers, preprocessing) combination.

    ``layers=None`` (all layers) and the explicit list of all layers give different keys;
    use one spelling consistently. ``preprocessing`` is anything else that changes the
    upstream's input (e.g. ``{"sample_rate": 16000, "max_seconds": None}``); it must be
    JSON-serialisable. The cache format version is mixed in, so a layout change
    invalidates old entries instead of misreading them.
    """
    if not isinstance(upstream_fingerprint, str) or not upstream_fingerprint:
        raise ConfigError(f"upstream fingerprint must be a non-empty string, got {upstream_fingerprint!r}")
    if not isinstance(split_fingerprint, str) or not split_fingerprint:
        raise ConfigError(f"split fingerprint must be a non-empty string, got {split_fingerprint!r}")
    if layers is not None:
        if isinstance(layers, (str, bytes)) or not all(_is_int(layer) for layer in layers):
            raise ConfigError(f"layers must be a list of integers or None, got {layers!r}")
        layers = [int(layer) for layer in layers]
    payload = {
        "format": CACHE_FORMAT,
        "upstream": upstream_fingerprint,
        "split": split_fingerprint,
        "layers": layers,
        "preprocessing": dict(preprocessing),
    }
    try:
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"preprocessing must be JSON-serialisable for the cache key: {exc}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def split_fingerprint(cuts: Iterable[Any]) -> str:
    """Hash of what identifies a split's audio, in cut order.

    Per cut: id, start, duration, channel, and each audio source's path plus its file
    size. That costs one ``stat`` per file (about a second per 100k files on a local
    disk, more on network filesystems) instead of reading the audio, and it changes
    when a file is re-rendered or re-encoded, which nearly always changes its size.
    Trade-offs, chosen deliberately:

    * not detected: replacing a file in place by different audio of exactly the same
      size (e.g. a WAV re-synthesised with identical length). Clear the cache, or put a
      corpus version into ``preprocessing``, after doing that;
    * mtime is not used: copying, rsync-ing or touching a corpus would otherwise throw
      away every cache although no sample changed;
    * moving the corpus (new absolute paths) gives new keys: safe, but rebuilds.
    """
    digest = hashlib.sha256()
    for cut in cuts:
        recording = getattr(cut, "recording", None)
        sources = []
        for source in getattr(recording, "sources", None) or []:
            size = _file_size(source.source) if source.type == "file" else None
            sources.append([source.type, str(source.source), size])
        item = [
            str(cut.id),
            float(cut.start),
            float(cut.duration),
            getattr(cut, "channel", None),
            sources,
        ]
        digest.update(json.dumps(item, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------------------- reading


class CachedFeatures:
    """Read-only access to one cache entry.

    ``features[cut_id]`` is a float16 ``[frames, layers_kept, dim]`` view into a memory
    map (no copy; the array is not writable). ``layers`` lists which upstream layers the
    second axis holds, in that order. A consumer typically does
    ``torch.from_numpy(features[cut_id].astype(np.float32))`` and then weights/stacks
    along axis 1; ``x.transpose(1, 0, 2)`` gives the ``[layers, frames, dim]`` view.

    While open (and returned by :meth:`FeatureCache.get_or_build`) it holds the entry's
    shared lock, so no other process evicts or rebuilds the entry under it; call
    :meth:`close` or use it as a context manager when done. Pickling (e.g. to spawned
    DataLoader workers) sends only the path and index; the copy re-maps the shards.
    """

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self._lock: _KeyLock | None = None
        self.path = Path(path)
        self.key: str = index["key"]
        self.layers: list[int] = list(index["layers"])
        self.num_layers: int = int(index["num_layers"])
        """Layers the upstream has (``len(self.layers)`` of them are stored)."""
        self.feature_dim: int = int(index["feature_dim"])
        self.frame_rate: float = float(index["frame_rate"])
        self.metadata: dict[str, Any] = {k: v for k, v in index.items() if k != "utterances"}
        utterances = index["utterances"]
        self._ids: tuple[str, ...] = tuple(utterances["ids"])
        self._where: dict[str, tuple[int, int, int]] = {
            cut_id: (int(shard), int(offset), int(frames))
            for cut_id, shard, offset, frames in zip(
                utterances["ids"], utterances["shard"], utterances["offset"], utterances["frames"]
            )
        }
        self._shards = self._map_shards()
        self.bytes: int = _tree_bytes(self.path)
        """Bytes the entry occupies on disk (shards, index and markers)."""

    @property
    def num_layers_kept(self) -> int:
        return len(self.layers)

    @property
    def ids(self) -> tuple[str, ...]:
        """Cut ids in the order of the cuts the entry was built from."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, cut_id: object) -> bool:
        return cut_id in self._where

    def frames(self, cut_id: str) -> int:
        return self._locate(cut_id)[2]

    def __getitem__(self, cut_id: str) -> np.ndarray:
        shard, offset, frames = self._locate(cut_id)
        if shard < 0:  # an utterance the upstream gave no frames for
            return np.zeros((0, self.num_layers_kept, self.feature_dim), dtype=np.float16)
        return self._shards[shard][offset : offset + frames].view(np.ndarray)

    def close(self) -> None:
        """Release the shared lock (the mapped arrays already handed out stay valid)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            _HANDLES.release(lock.path)
            lock.close()

    def __enter__(self) -> CachedFeatures:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return (
            f"CachedFeatures({self.path}, {len(self)} utterances, layers {self.layers}, "
            f"dim {self.feature_dim}, {self.bytes / 1e6:.1f} MB)"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        index = json.loads((self.path / _INDEX).read_text(encoding="utf-8"))
        if index.get("build_id") != self.metadata.get("build_id"):
            raise SpeechSSLError(f"feature cache entry {self.path} was rebuilt or evicted since it was opened")
        self._shards = self._map_shards()

    def _attach_lock(self, lock: _KeyLock) -> None:
        self._lock = lock
        _HANDLES.acquire(lock.path)

    def _locate(self, cut_id: str) -> tuple[int, int, int]:
        try:
            return self._where[cut_id]
        except KeyError:
            raise KeyError(f"cut {cut_id!r} is not in feature cache entry {self.key}") from None

    def _map_shards(self) -> list[np.ndarray]:
        # Mapped eagerly: later reads never go through paths, which a rebuild may replace.
        return [np.load(self.path / shard["file"], mmap_mode="r") for shard in self.metadata["shards"]]


@dataclass(frozen=True)
class CacheEntryInfo:
    key: str
    path: Path
    bytes: int
    last_used: float
    """Unix time of the last open (or of the build)."""
    complete: bool


# ---------------------------------------------------------------------------- the cache


class FeatureCache:
    """A directory of feature entries with an optional size cap (LRU eviction).

    ``max_bytes`` caps everything under ``root`` (entries, in-progress builds);
    ``None`` means no cap. ``shard_bytes`` bounds a shard file (an utterance is never
    split, so one very long utterance may exceed it). ``verify`` is how much is checked
    when an existing entry is opened (see the module docstring). ``stale_seconds`` is
    how long a temp build dir may go without a heartbeat before another process treats
    it as abandoned (a live builder refreshes it after every batch).
    """

    def __init__(
        self,
        root: str | Path,
        max_bytes: int | None = None,
        *,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        verify: str = "full",
        stale_seconds: float = DEFAULT_STALE_SECONDS,
    ) -> None:
        if max_bytes is not None and (not _is_int(max_bytes) or max_bytes <= 0):
            raise ConfigError(f"cache.max_gb must be positive or unset, got {max_bytes!r} bytes")
        if not _is_int(shard_bytes) or shard_bytes <= 0:
            raise ConfigError(f"shard_bytes must be a positive integer, got {shard_bytes!r}")
        if verify not in VERIFY_LEVELS:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}")
        if not stale_seconds > 0:
            raise ConfigError(f"stale_seconds must be positive, got {stale_seconds!r}")
        self.root = Path(root)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.shard_bytes = int(shard_bytes)
        self.verify = verify
        self.stale_seconds = float(stale_seconds)

    # ------------------------------------------------------------ public

    def get_or_build(
        self,
        key: str,
        cuts: Iterable[Any],
        upstream: Upstream,
        *,
        layers: Sequence[int] | None = None,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        device: str | torch.device | None = None,
        progress: bool = True,
        num_workers: int = 0,
        key_inputs: Mapping[str, Any] | None = None,
    ) -> CachedFeatures:
        """Open the entry ``key`` if it exists and verifies, else build it from ``cuts``.

        ``key`` must come from :func:`cache_key` over the same upstream, cuts
        (:func:`split_fingerprint`) and ``layers``; an existing entry with other cut ids
        or layers raises :class:`ConfigError` rather than serving wrong features.
        ``layers`` picks which upstream layers to store (negative indices count from the
        end; ``None`` keeps all). Building runs ``upstream`` on ``device`` (``None``: the
        device its parameters are already on; otherwise it is moved there), in eval mode
        under ``torch.inference_mode``, over batches of at most ``batch_seconds`` of
        audio (``num_workers`` DataLoader processes decode it), and restores its
        train/eval mode afterwards.
        ``key_inputs`` (JSON-serialisable) is recorded in ``index.json`` for humans.
        """
        _check_key(key)
        cuts = list(cuts)
        if not cuts:
            raise ConfigError("no cuts to cache features for")
        ids = [str(cut.id) for cut in cuts]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"cut ids are not unique ({len(ids) - len(set(ids))} duplicates)")
        kept = _resolve_layers(layers, upstream.num_layers)
        if isinstance(batch_seconds, bool) or not isinstance(batch_seconds, (int, float)) or not batch_seconds > 0:
            raise ConfigError(f"batch_seconds must be a positive number, got {batch_seconds!r}")
        if key_inputs is not None:
            try:
                json.dumps(dict(key_inputs), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"key_inputs must be JSON-serialisable: {exc}") from None

        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        lock = _KeyLock(self._lock_path(key))
        try:
            lock.acquire(shared=True, waiting_for=f"feature cache entry {key} (being built elsewhere)")
            try:
                features = self._open(key, self.verify)
                problem = None
            except _EntryCorrupt as exc:
                features, problem = None, str(exc)
            if features is None:
                if _HANDLES.count(lock.path):
                    raise SpeechSSLError(
                        f"feature cache entry {self._entry_path(key)} must be rebuilt ({problem or 'it is gone'}) "
                        "but this process still has it open; close() its CachedFeatures first"
                    )
                lock.acquire(shared=False, waiting_for=f"feature cache entry {key} (in use or being built elsewhere)")
                # Another process may have built (or repaired) it while we waited for the lock.
                features = self._open_or_discard(key, self.verify)
                if features is None:
                    if self.max_bytes is not None:  # the estimate needs feature_dim; only a cap needs the estimate
                        self._make_room(self.estimate_bytes(cuts, upstream, kept), protect=key, strict=True)
                    self._build(key, cuts, upstream, kept, batch_seconds, device, progress, num_workers, key_inputs)
                    # Checksums were computed from the files just written; sizes suffice here.
                    features = self._open_or_discard(key, "size")
                    if features is None:
                        raise SpeechSSLError(f"feature cache entry {self._entry_path(key)} failed verification right after it was built")
                    self._make_room(0, protect=key, strict=False)
                lock.acquire(shared=True)
            self._check_matches(features, ids, kept)
            features._attach_lock(lock)
        except BaseException:
            lock.close()
            raise
        _touch(self._entry_path(key) / _LAST_USED)
        return features

    def estimate_bytes(self, cuts: Iterable[Any], upstream: Upstream, layers: Sequence[int] | None = None) -> int:
        """Upper estimate of an entry's size, before any audio is read.

        Exact frame counts depend on the upstream's front end, so frames are estimated
        as ``ceil(duration * frame_rate) + 1`` per utterance plus a small margin.
        """
        kept = _resolve_layers(layers, upstream.num_layers)
        if not _is_int(upstream.feature_dim) or upstream.feature_dim <= 0:
            raise ConfigError(
                f"upstream {upstream.name or type(upstream).__name__} does not declare feature_dim; "
                "cannot estimate its cache size"
            )
        cuts = list(cuts)
        frames = sum(math.ceil(float(cut.duration) * float(upstream.frame_rate)) + 1 for cut in cuts)
        data = frames * len(kept) * int(upstream.feature_dim) * 2
        num_shards = data // self.shard_bytes + 1
        index = 4096 + sum(len(str(cut.id)) + 40 for cut in cuts)
        return int(data * _ESTIMATE_MARGIN) + 256 * num_shards + index

    def disk_usage(self) -> int:
        """Bytes under ``root``: entries, builds in progress and leftovers."""
        return _tree_bytes(self.root)

    def entries(self) -> list[CacheEntryInfo]:
        """The entries under ``root``, least recently used first."""
        found = []
        if not self.root.is_dir():
            return found
        for child in self.root.iterdir():
            if not _KEY_RE.fullmatch(child.name) or not child.is_dir():
                continue
            found.append(
                CacheEntryInfo(
                    key=child.name,
                    path=child,
                    bytes=_tree_bytes(child),
                    last_used=_last_used(child),
                    complete=(child / _COMPLETE).is_file(),
                )
            )
        return sorted(found, key=lambda entry: entry.last_used)

    # ------------------------------------------------------------ opening

    def _entry_path(self, key: str) -> Path:
        return self.root / key

    def _lock_path(self, key: str) -> Path:
        return self.root / _LOCK_DIR / f"{key}.lock"

    def _open(self, key: str, verify: str) -> CachedFeatures | None:
        """The verified entry, ``None`` if there is none; raises :class:`_EntryCorrupt`."""
        path = self._entry_path(key)
        if not path.exists():
            return None
        index = _verify_entry(path, key, verify)
        try:
            return CachedFeatures(path, index)
        except (OSError, ValueError) as exc:
            raise _EntryCorrupt(f"cannot map its shards ({exc})") from None

    def _open_or_discard(self, key: str, verify: str) -> CachedFeatures | None:
        """Like :meth:`_open`, but a damaged entry is reported and deleted (caller holds the exclusive lock)."""
        try:
            return self._open(key, verify)
        except _EntryCorrupt as exc:
            path = self._entry_path(key)
            log.warning("feature cache entry %s is unusable (%s); deleting and rebuilding it", path, exc)
            self._delete(path)
            return None

    def _check_matches(self, features: CachedFeatures, ids: list[str], kept: list[int]) -> None:
        if features.layers != kept:
            raise ConfigError(
                f"feature cache entry {features.key} holds layers {features.layers} but layers {kept} were "
                "requested: compute the key with cache_key() from the same layers"
            )
        if set(features.ids) != set(ids):
            missing = len(set(ids) - set(features.ids))
            raise ConfigError(
                f"feature cache entry {features.key} was built from other cuts ({missing} of the {len(ids)} "
                "requested are not in it): compute the key with split_fingerprint() of these cuts"
            )

    # ------------------------------------------------------------ building

    def _build(
        self,
        key: str,
        cuts: list[Any],
        upstream: Upstream,
        kept: list[int],
        batch_seconds: float,
        device: str | torch.device | None,
        progress: bool,
        num_workers: int,
        key_inputs: Mapping[str, Any] | None,
    ) -> None:
        started = time.time()
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except OSError as exc:
            raise write_error(self._entry_path(key), exc, "feature cache entry") from exc
        try:
            write_file_synced(tmp / _BUILDER, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
            writer = _ShardWriter(tmp, self.shard_bytes, len(kept))
            self._run_upstream(writer, tmp, cuts, upstream, kept, batch_seconds, device, progress, num_workers)
            writer.finish()
            if writer.dim is None:
                raise SpeechSSLError("the upstream produced no batches")
            where = writer.where
            index = {
                "format": CACHE_FORMAT,
                "key": key,
                "build_id": secrets.token_hex(8),
                "created": started,
                "created_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                "build_seconds": round(time.time() - started, 3),
                "dtype": "float16",
                "layout": ["frames", "layers", "dim"],
                "upstream": {
                    "name": upstream.name or type(upstream).__name__,
                    "fingerprint": upstream.fingerprint(),
                    "num_layers": int(upstream.num_layers),
                    "feature_dim": writer.dim,
                    "frame_rate": float(upstream.frame_rate),
                },
                "layers": kept,
                "num_layers": int(upstream.num_layers),
                "feature_dim": writer.dim,
                "frame_rate": float(upstream.frame_rate),
                "split_fingerprint": split_fingerprint(cuts),
                "key_inputs": None if key_inputs is None else dict(key_inputs),
                "num_utterances": len(cuts),
                "total_frames": int(sum(where[str(cut.id)][2] for cut in cuts)),
                "total_bytes": int(sum(shard["bytes"] for shard in writer.shards)),
                "checksum": "crc32",
                "shards": writer.shards,
                "utterances": {
                    "ids": [str(cut.id) for cut in cuts],
                    "shard": [where[str(cut.id)][0] for cut in cuts],
                    "offset": [where[str(cut.id)][1] for cut in cuts],
                    "frames": [where[str(cut.id)][2] for cut in cuts],
                },
            }
            index_bytes = json.dumps(index, separators=(",", ":")).encode()
            write_file_synced(tmp / _INDEX, index_bytes)
            marker = {"key": key, "index_crc32": zlib.crc32(index_bytes)}
            write_file_synced(tmp / _COMPLETE, json.dumps(marker).encode())
            _touch(tmp / _LAST_USED)
            fsync_dir(tmp)
            self._install(tmp, key)
        except OSError as exc:  # disk full, read-only cache: one line; the temp dir goes below
            raise write_error(self._entry_path(key), exc, "feature cache entry") from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info(
            "cached %d utterances of %s (layers %s) in %s: %.1f MB in %.1f s",
            len(cuts), upstream.name or type(upstream).__name__, kept, self._entry_path(key),
            index["total_bytes"] / 1e6, time.time() - started,
        )

    def _run_upstream(
        self,
        writer: _ShardWriter,
        tmp: Path,
        cuts: list[Any],
        upstream: Upstream,
        kept: list[int],
        batch_seconds: float,
        device: str | torch.device | None,
        progress: bool,
        num_workers: int,
    ) -> None:
        name = upstream.name or type(upstream).__name__
        if device is None:
            device = _module_device(upstream)
        batches = [CutSet.from_cuts(batch) for batch in _plan_batches(cuts, batch_seconds)]
        # The batches are already planned, so the "sampler" is simply that list.
        loader = DataLoader(CutAudioDataset(), sampler=batches, batch_size=None, num_workers=num_workers)
        bar = None
        if progress:
            from tqdm import tqdm

            total = math.fsum(float(cut.duration) for cut in cuts)
            bar = tqdm(total=round(total, 1), desc=f"caching {name} features", unit="s", file=sys.stderr)
        was_training = upstream.training
        upstream.to(device)
        upstream.eval()
        try:
            with torch.inference_mode():
                for batch in loader:
                    out = upstream(batch.waveforms.to(device), batch.lengths.to(device))
                    stacked, lengths = _stack_layers(out, kept, upstream, batch.cut_ids)
                    _check_values(stacked, lengths, batch.cut_ids, kept, name)
                    half = stacked.to(torch.float16).cpu().numpy()
                    for cut_id, rows, count in zip(batch.cut_ids, half, lengths.tolist()):
                        writer.add(cut_id, rows[:count])
                    os.utime(tmp)  # heartbeat: this temp dir is not abandoned
                    if bar is not None:
                        bar.update(round(batch.seconds, 1))
        finally:
            upstream.train(was_training)
            if bar is not None:
                bar.close()

    def _install(self, tmp: Path, key: str) -> None:
        """Rename the finished temp dir into place; an existing good entry wins."""
        target = self._entry_path(key)
        for _ in range(2):
            try:
                os.rename(tmp, target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                fsync_dir(self.root)
                return
            # Only reachable when flock did not exclude another builder (e.g. some network filesystems).
            try:
                existing = self._open(key, self.verify)
            except _EntryCorrupt as exc:
                log.warning("replacing unusable feature cache entry %s (%s)", target, exc)
                self._delete(target)
                continue
            if existing is not None:
                log.info("feature cache entry %s was built concurrently by another process; keeping that one", target)
                return
        raise SpeechSSLError(f"could not move the new feature cache entry into place at {target}")

    # ------------------------------------------------------------ disk space

    def _make_room(self, needed: int, *, protect: str, strict: bool) -> None:
        """Evict least recently used entries until ``needed`` more bytes fit under the cap.

        ``strict`` (before a build) raises when it cannot; after a build, when only the
        estimate was off, it warns instead of throwing the finished entry away.
        """
        if self.max_bytes is None:
            return
        cap_gb = self.max_bytes / 1e9
        if needed > self.max_bytes:
            raise SpeechSSLError(
                f"the feature cache entry needs about {needed / 1e9:.3g} GB, more than the whole cache may hold "
                f"(cache.max_gb = {cap_gb:.3g}); raise cache.max_gb or select fewer layers"
            )
        usage = self.disk_usage()
        in_use = []
        # Entries without COMPLETE are debris, not data: they go first.
        for entry in sorted(self.entries(), key=lambda e: (e.complete, e.last_used)):
            if usage + needed <= self.max_bytes:
                break
            if entry.key == protect:
                continue
            lock = _KeyLock(self._lock_path(entry.key))
            try:
                if not lock.try_exclusive():
                    in_use.append(entry.key)
                    continue
                log.info(
                    "feature cache over cache.max_gb = %.3g: evicting %s (%.1f MB, last used %s)",
                    cap_gb, entry.path, entry.bytes / 1e6, time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)),
                )
                self._delete(entry.path)
                usage -= entry.bytes
            finally:
                lock.close()
        if usage + needed <= self.max_bytes:
            return
        busy = f"; entries in use by running jobs: {', '.join(in_use)}" if in_use else ""
        message = (
            f"feature cache {self.root} holds {usage / 1e9:.3g} GB and needs {needed / 1e9:.3g} GB more, "
            f"over cache.max_gb = {cap_gb:.3g}{busy}; raise cache.max_gb, select fewer layers, "
            "or wait for the other jobs to finish"
        )
        if strict:
            raise SpeechSSLError(message)
        log.warning(message)

    def _delete(self, path: Path) -> None:
        """Remove an entry: rename it aside first, so a crash mid-delete never leaves a half entry under its key."""
        trash = self.root / f"{_TRASH_PREFIX}{path.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Delete temp dirs of dead builders and half-deleted entries."""
        for child in self.root.iterdir():
            if child.name.startswith(_TRASH_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
                continue
            match = _TMP_RE.fullmatch(child.name)
            if match is None:
                continue
            reason = self._stale_reason(child, int(match["pid"]))
            if reason:
                log.info("removing abandoned feature cache build %s (%s)", child, reason)
                shutil.rmtree(child, ignore_errors=True)

    def _stale_reason(self, tmp: Path, pid: int) -> str | None:
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > self.stale_seconds:
            return f"no progress for {age / 60:.0f} min"
        try:
            host = json.loads((tmp / _BUILDER).read_text(encoding="utf-8")).get("host")
        except (OSError, ValueError, AttributeError):
            return None  # just created, or not ours to judge: wait for the age rule
        if host == socket.gethostname() and not pid_alive(pid):
            return f"builder process {pid} is gone"
        return None


# ---------------------------------------------------------------------------- helpers: building


class _ShardWriter:
    """Packs utterances into shard files of at most ``shard_bytes`` (whole utterances only)."""

    def __init__(self, folder: Path, shard_bytes: int, num_layers: int) -> None:
        self.folder = folder
        self.shard_bytes = shard_bytes
        self.num_layers = num_layers
        self.dim: int | None = None
        self.shards: list[dict[str, Any]] = []
        self.where: dict[str, tuple[int, int, int]] = {}
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0

    def add(self, cut_id: str, frames: np.ndarray) -> None:
        if self.dim is None:
            self.dim = int(frames.shape[2])
        count = int(frames.shape[0])
        if count == 0:
            self.where[cut_id] = (-1, 0, 0)
            return
        frame_bytes = self.num_layers * self.dim * 2
        if self._pending and (self._pending_frames + count) * frame_bytes > self.shard_bytes:
            self._flush()
        self.where[cut_id] = (len(self.shards), self._pending_frames, count)
        self._pending.append(frames)
        self._pending_frames += count

    def finish(self) -> None:
        if self._pending:
            self._flush()

    def _flush(self) -> None:
        path = self.folder / _SHARD_NAME.format(len(self.shards))
        shape = (self._pending_frames, self.num_layers, self.dim)
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        offset = 0
        for frames in self._pending:
            array[offset : offset + frames.shape[0]] = frames
            offset += frames.shape[0]
        array.flush()
        del array
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        self.shards.append(
            {
                "file": path.name,
                "frames": self._pending_frames,
                "bytes": path.stat().st_size,
                "checksum": _file_checksum(path),
            }
        )
        self._pending = []
        self._pending_frames = 0


def _plan_batches(cuts: list[Any], batch_seconds: float) -> list[list[Any]]:
    """Longest first, greedily filled up to ``batch_seconds``.

    Sorting by duration keeps padding small; longest first makes an out-of-memory batch
    fail at once rather than hours in. Unlike the training sampler there is no shuffling
    and no rejection: a cut longer than ``batch_seconds`` simply forms its own batch.
    """
    ordered = sorted(cuts, key=lambda cut: float(cut.duration), reverse=True)
    batches: list[list[Any]] = []
    current: list[Any] = []
    total = 0.0
    for cut in ordered:
        duration = float(cut.duration)
        if current and total + duration > batch_seconds:
            batches.append(current)
            current, total = [], 0.0
        current.append(cut)
        total += duration
    if current:
        batches.append(current)
    return batches


def _stack_layers(out: Any, kept: list[int], upstream: Upstream, cut_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T', layers_kept, D]`` and ``[B]`` lengths, after checking the upstream contract."""
    name = upstream.name or type(upstream).__name__
    layers = list(getattr(out, "layers", None) or [])
    if len(layers) != upstream.num_layers:
        raise SpeechSSLError(f"upstream {name} returned {len(layers)} layers but declares num_layers={upstream.num_layers}")
    chosen = [layers[i] for i in kept]
    shape = tuple(chosen[0].shape)
    if len(shape) != 3 or shape[0] != len(cut_ids):
        raise SpeechSSLError(f"upstream {name} returned a layer of shape {shape}; expected [{len(cut_ids)}, frames, dim]")
    for i, layer in zip(kept, chosen):
        if tuple(layer.shape) != shape:
            raise SpeechSSLError(f"upstream {name}: layer {i} has shape {tuple(layer.shape)}, layer {kept[0]} {shape}")
    if upstream.feature_dim and shape[2] != upstream.feature_dim:
        raise SpeechSSLError(f"upstream {name} returned dim {shape[2]} but declares feature_dim={upstream.feature_dim}")
    lengths = torch.as_tensor(out.lengths).to(device=chosen[0].device, dtype=torch.int64)
    if tuple(lengths.shape) != (len(cut_ids),) or bool((lengths < 0).any()) or bool((lengths > shape[1]).any()):
        raise SpeechSSLError(f"upstream {name} returned lengths {lengths.tolist()} for {shape[1]} output frames")
    return torch.stack(chosen, dim=2), lengths


def _check_values(stacked: torch.Tensor, lengths: torch.Tensor, cut_ids: list[str], kept: list[int], name: str) -> None:
    """Refuse to store NaN/inf, or values float16 cannot hold (they would become inf)."""
    values = stacked.float()
    valid = valid_mask(lengths, values.shape[1])[:, :, None, None]  # [B, T', 1, 1]
    nonfinite = ~torch.isfinite(values) & valid
    overflow = (values.abs() > FP16_MAX) & ~nonfinite & valid
    if not bool(nonfinite.any() | overflow.any()):
        return
    for bad, what in ((nonfinite, "NaN or infinite values"), (overflow, "values beyond float16's range (+-65504)")):
        if bool(bad.any()):
            row, frame, layer, _ = (int(v) for v in bad.nonzero()[0])
            peak = f" (|x| up to {float(values[row].abs().nan_to_num(0.0).max()):.4g})" if bad is overflow else ""
            hint = (
                "the cache stores float16; run this upstream without the feature cache or rescale its outputs"
                if bad is overflow
                else "check the audio of this cut and the upstream's numerics"
            )
            raise SpeechSSLError(
                f"upstream {name} produced {what} for cut {cut_ids[row]!r} "
                f"(layer {kept[layer]}, frame {frame}){peak}; {hint}"
            )


# ---------------------------------------------------------------------------- helpers: verification


class _EntryCorrupt(Exception):
    """An entry that must not be used; the message says what is wrong with it."""


def _verify_entry(path: Path, key: str, verify: str) -> dict[str, Any]:
    complete = path / _COMPLETE
    if not complete.is_file():
        raise _EntryCorrupt("no COMPLETE marker: an interrupted build or a damaged entry")
    try:
        marker = json.loads(complete.read_text(encoding="utf-8"))
        index_crc = int(marker["index_crc32"])
        marker_key = marker["key"]
    except (OSError, ValueError, KeyError, TypeError):
        raise _EntryCorrupt("the COMPLETE marker is unreadable") from None
    if marker_key != key:
        raise _EntryCorrupt(f"the COMPLETE marker names key {marker_key!r}")
    index_path = path / _INDEX
    if not index_path.is_file():
        raise _EntryCorrupt("index.json is missing")
    raw = index_path.read_bytes()
    if zlib.crc32(raw) != index_crc:
        raise _EntryCorrupt("index.json does not match the checksum recorded in COMPLETE")
    try:
        index = json.loads(raw)
        _verify_index(path, index, key, verify)
    except (KeyError, TypeError, ValueError) as exc:
        raise _EntryCorrupt(f"index.json is malformed ({type(exc).__name__}: {exc})") from None
    return index


def _verify_index(path: Path, index: dict[str, Any], key: str, verify: str) -> None:
    if index["format"] != CACHE_FORMAT:
        raise _EntryCorrupt(f"it has cache format {index['format']}, this version reads {CACHE_FORMAT}")
    if index["key"] != key:
        raise _EntryCorrupt(f"index.json names key {index['key']!r}")
    num_kept, dim = len(index["layers"]), int(index["feature_dim"])
    shard_frames = []
    for shard in index["shards"]:
        name = shard["file"]
        file = path / name
        if not file.is_file():
            raise _EntryCorrupt(f"{name} is missing")
        size = file.stat().st_size
        if size != shard["bytes"]:
            raise _EntryCorrupt(f"{name} has {size} bytes but {shard['bytes']} were written (truncated or overwritten)")
        shape, fortran, dtype = _read_npy_header(file)
        expected = (int(shard["frames"]), num_kept, dim)
        if shape != expected or fortran or dtype != np.dtype(np.float16):
            raise _EntryCorrupt(f"{name} holds {dtype} {shape}, expected float16 {expected}")
        if verify == "full":
            actual = _file_checksum(file)
            if actual != shard["checksum"]:
                raise _EntryCorrupt(f"{name} fails its checksum ({actual} != {shard['checksum']}): its bytes changed after it was written")
        shard_frames.append(expected[0])
    utterances = index["utterances"]
    shard_ids = np.asarray(utterances["shard"], dtype=np.int64)
    offsets = np.asarray(utterances["offset"], dtype=np.int64)
    frames = np.asarray(utterances["frames"], dtype=np.int64)
    if not len(utterances["ids"]) == len(shard_ids) == len(offsets) == len(frames):
        raise _EntryCorrupt("index.json has utterance columns of different lengths")
    if (shard_ids < -1).any() or (shard_ids >= len(shard_frames)).any() or (offsets < 0).any() or (frames < 0).any():
        raise _EntryCorrupt("index.json points outside its shards")
    limits = np.asarray(shard_frames + [0], dtype=np.int64)[shard_ids]  # shard -1: zero-frame utterance
    if (offsets + frames > limits).any():
        raise _EntryCorrupt("index.json points outside its shards")


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                return np.lib.format.read_array_header_1_0(handle)
            if version == (2, 0):
                return np.lib.format.read_array_header_2_0(handle)
    except (OSError, ValueError) as exc:
        raise _EntryCorrupt(f"{path.name} is not a readable .npy file ({exc})") from None
    raise _EntryCorrupt(f"{path.name} has unsupported .npy version {version}")


def _file_checksum(path: Path) -> str:
    """crc32 of the whole file: it detects disk or copy corruption at ~3 GB/s; no adversary is assumed."""
    crc = 0
    buffer = bytearray(_CHECKSUM_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            crc = zlib.crc32(view[:count], crc)
    return f"crc32:{crc:08x}"


# ---------------------------------------------------------------------------- helpers: locking


class _KeyLock:
    """``flock`` on a per-key lock file.

    Lock files are never deleted: unlinking one while another process has it open
    would let two processes "hold" different inodes of the same lock. Where the
    filesystem does not support ``flock`` the lock degrades to a no-op with a warning
    (the atomic rename still keeps entries whole).
    """

    _warned_unsupported = False

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    def acquire(self, *, shared: bool, waiting_for: str = "") -> None:
        operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if self._flock(operation | fcntl.LOCK_NB):
            return
        if waiting_for:
            log.info("waiting for %s", waiting_for)
        self._flock(operation)

    def try_exclusive(self) -> bool:
        return self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _flock(self, operation: int) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, operation)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if not _KeyLock._warned_unsupported:
                _KeyLock._warned_unsupported = True
                log.warning("file locks are not supported under %s (%s); concurrent jobs may build the same features twice", self.path, exc)
        return True


class _HandleCounter:
    """How many open :class:`CachedFeatures` of this process hold each lock file.

    ``flock`` locks belong to open file descriptions, so a process that still holds an
    entry's shared lock and asks for its exclusive lock on a second descriptor would
    wait for itself forever; this count lets it fail with an explanation instead.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._counts: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._mutex:
            self._counts[path] = self._counts.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._mutex:
            remaining = self._counts.get(path, 0) - 1
            if remaining > 0:
                self._counts[path] = remaining
            else:
                self._counts.pop(path, None)

    def count(self, path: str) -> int:
        with self._mutex:
            return self._counts.get(path, 0)


_HANDLES = _HandleCounter()


# ---------------------------------------------------------------------------- helpers: files


def _check_key(key: object) -> None:
    # The key becomes a directory name: only hex, never a path.
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ConfigError(f"feature cache key must be a hex string from cache_key(), got {key!r}")


def _resolve_layers(layers: Sequence[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(num_layers))
    if isinstance(layers, (str, bytes)) or not all(_is_int(layer) for layer in layers):
        raise ConfigError(f"layers must be a list of integers or None, got {layers!r}")
    resolved = []
    for layer in layers:
        if not -num_layers <= layer < num_layers:
            raise ConfigError(f"layer {layer} does not exist: the upstream has {num_layers} layers (0..{num_layers - 1})")
        resolved.append(int(layer) % num_layers)
    if not resolved:
        raise ConfigError("layers must not be empty (use None for all layers)")
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"layers {list(layers)} name the same layer twice")
    return resolved


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _tree_bytes(path: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_bytes(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # removed by another process meanwhile
            continue
    return total


def _last_used(entry: Path) -> float:
    for name in (_LAST_USED, _INDEX):
        try:
            return (entry / name).stat().st_mtime
        except OSError:
            continue
    try:
        return entry.stat().st_mtime
    except OSError:
        return 0.0


def _touch(path: Path) -> None:
    """Set ``path``'s mtime to now (explicitly, not the coarse filesystem clock)."""
    try:
        path.touch(exist_ok=True)
        now = time.time_ns()
        os.utime(path, ns=(now, now))
    except OSError:  # a read-only cache still works, only LRU order suffers
        pass
