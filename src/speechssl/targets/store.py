"""Frame-level pretraining targets on disk: one verified, atomically written directory per set.

Layout of a set ``<root>/<name>/`` (``name`` is readable and ends in the key's hash)::

    labels.npy   uint8 (K <= 256) or uint16: every utterance's labels, concatenated
    index.json   per utterance: id, split, offset into labels.npy, frames, samples
    kmeans.npz   centroids + the standardisation they were fitted with
    meta.json    what made it (upstream spec and fingerprint, layer, K, seed, encoder
                 frame layout, split fingerprints), cluster usage, size + crc32 of each file
    COMPLETE     written last: the key and the crc32 of meta.json

Labels are at the *encoder's* frame rate: utterance ``u`` has exactly
``conv_output_lengths(num_samples(u), conv_layers)`` of them (see
:mod:`speechssl.targets.alignment`). A crop that starts ``offset`` samples into an
utterance (a multiple of the encoder stride) has labels ``[offset // stride, ...)``.

Crash safety is the feature cache's: a set is built in ``<root>/.tmp-<name>-<pid>-<hex>``
with ``COMPLETE`` inside and renamed into place in one ``rename(2)``, so a reader sees no
set or a whole one. Opening verifies every file's size and crc32 (labels of 1000 h at
50 Hz are 180 MB, ~70 ms of crc), so a damaged set is refused with what is wrong rather
than read as garbage.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.fsutil import fsync_dir, pid_alive, write_file_synced
from speechssl.models.config import ConvLayer
from speechssl.targets.alignment import conv_geometry, geometry_only
from speechssl.targets.kmeans import KMeansModel
from speechssl.upstream.base import SAMPLE_RATE

log = logging.getLogger(__name__)

SET_FORMAT = 1
"""Bumped when the layout changes; part of every key, so old sets are rebuilt, never misread."""
IGNORE_INDEX = -1
"""Label of padding in :meth:`TargetSet.batch` (``cross_entropy(ignore_index=-1)``)."""
MAX_CLASSES = 1 << 16

LABELS = "labels.npy"
INDEX = "index.json"
KMEANS = "kmeans.npz"
META = "meta.json"
COMPLETE = "COMPLETE"
BUILDER = "BUILDER"
_TMP_RE = re.compile(r"\.tmp-(?P<name>.+)-(?P<pid>\d+)-(?P<rand>[0-9a-f]{8})")
_TRASH_PREFIX = ".trash-"
_CRC_BLOCK = 8 << 20


class TargetSetError(SpeechSSLError):
    """A target set that is missing, incomplete or damaged; the message says which and why."""


def label_dtype(num_classes: int) -> np.dtype:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"k must be between 2 and {MAX_CLASSES}, got {num_classes}")
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


# ---------------------------------------------------------------------------- reading


class TargetSet:
    """Read-only access to one target set (labels memory-mapped; pickles by path)."""

    def __init__(self, path: Path, meta: dict[str, Any], index: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.key: str = meta["key"]
        self.num_classes: int = int(meta["k"])
        self.conv_layers: list[ConvLayer] = [tuple(int(v) for v in layer) for layer in meta["encoder"]["conv_layers"]]
        """The encoder frame layout the labels are for; channels are 0 (they play no part)."""
        self.stride: int = int(meta["encoder"]["stride"])
        """Samples per encoder frame; crop offsets must be multiples of it."""
        self.splits: dict[str, dict[str, Any]] = meta["splits"]
        self._ids: tuple[str, ...] = tuple(index["ids"])
        self._where: dict[str, tuple[int, int, int]] = {
            cut_id: (int(offset), int(frames), int(samples))
            for cut_id, offset, frames, samples in zip(
                index["ids"], index["offset"], index["frames"], index["num_samples"]
            )
        }
        self._labels = self._map_labels()

    # -------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> TargetSet:
        """The set at ``path``: a set directory, or a directory holding exactly one set.

        Raises :class:`TargetSetError` when there is none, several, or it fails
        verification (``verify=False`` checks sizes and headers but skips the crc32s).
        """
        path = resolve_set_dir(Path(path))
        meta, index = _verify(path, full=verify)
        return cls(path, meta, index)

    def _map_labels(self) -> np.ndarray:
        return np.load(self.path / LABELS, mmap_mode="r")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_labels"] = None  # a memmap would pickle its whole content
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._labels = self._map_labels()

    # -------------------------------------------------- per utterance

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, cut_id: object) -> bool:
        return cut_id in self._where

    def _locate(self, cut_id: str) -> tuple[int, int, int]:
        try:
            return self._where[cut_id]
        except KeyError:
            raise TargetSetError(
                f"cut {cut_id!r} has no targets in {self.path} (built for splits {', '.join(self.splits)})"
            ) from None

    def labels(self, cut_id: str) -> np.ndarray:
        """The cut's labels, one per encoder frame (a read-only view, uint8 or uint16)."""
        offset, frames, _ = self._locate(cut_id)
        return self._labels[offset : offset + frames].view(np.ndarray)

    def frames(self, cut_id: str) -> int:
        return self._locate(cut_id)[1]

    def num_samples(self, cut_id: str) -> int:
        """Samples (16 kHz) of the audio the labels were computed for."""
        return self._locate(cut_id)[2]

    def cluster_counts(self, split: str) -> np.ndarray:
        """How many encoder frames of ``split`` carry each label ``[K]``."""
        return np.asarray(self.splits[split]["cluster_counts"], dtype=np.int64)

    def kmeans(self) -> KMeansModel:
        return KMeansModel.load(self.path / KMEANS)

    # -------------------------------------------------- for the trainer

    def check_encoder(self, conv_layers: Sequence[ConvLayer]) -> None:
        """Raise :class:`ConfigError` unless ``conv_layers`` frame audio as the labels assume."""
        wanted = geometry_only(conv_layers)
        if wanted != self.conv_layers:
            raise ConfigError(
                f"target set {self.path} was built for encoder conv layers (kernel, stride, padding) "
                f"{[layer[1:] for layer in self.conv_layers]}, not {[layer[1:] for layer in wanted]}: "
                "build targets with the encoder's conv_layers (or matching --frame-ms)"
            )

    def batch(self, cut_ids: Sequence[str], offsets: Tensor, frame_lengths: Tensor, max_frames: int) -> Tensor:
        """Targets of a batch of crops: LongTensor ``[B, max_frames]``, ``-1`` past each crop.

        Row ``b`` is ``labels(cut_ids[b])[offsets[b] // stride :][: frame_lengths[b]]``,
        where ``offsets`` are the crops' first samples in their cuts (``AudioBatch.offsets``)
        and ``frame_lengths`` the encoder's valid frames per row.
        """
        offsets_list = [int(v) for v in torch.as_tensor(offsets).reshape(-1).tolist()]
        lengths_list = [int(v) for v in torch.as_tensor(frame_lengths).reshape(-1).tolist()]
        if not len(cut_ids) == len(offsets_list) == len(lengths_list):
            raise ValueError(
                f"batch(): {len(cut_ids)} cut ids, {len(offsets_list)} offsets, {len(lengths_list)} frame lengths"
            )
        out = torch.full((len(cut_ids), int(max_frames)), IGNORE_INDEX, dtype=torch.long)
        for row, (cut_id, offset, length) in enumerate(zip(cut_ids, offsets_list, lengths_list)):
            if offset < 0 or offset % self.stride:
                raise TargetSetError(
                    f"crop of cut {cut_id!r} starts at sample {offset}, not a multiple of the encoder stride "
                    f"{self.stride}: load crops with crop_multiple={self.stride}"
                )
            if not 0 <= length <= max_frames:
                raise ValueError(f"frame length {length} of cut {cut_id!r} is outside [0, max_frames={max_frames}]")
            labels = self.labels(cut_id)
            start = offset // self.stride
            if start + length > len(labels):
                raise TargetSetError(
                    f"crop of cut {cut_id!r} (frames {start}..{start + length}) runs past its {len(labels)} "
                    f"stored labels: the targets were made for other audio or another encoder frame layout "
                    f"(stride {self.stride})"
                )
            out[row, :length] = torch.from_numpy(labels[start : start + length].astype(np.int64))
        return out

    def __repr__(self) -> str:
        return f"TargetSet({self.path}, {len(self)} utterances, K={self.num_classes}, stride {self.stride})"


def resolve_set_dir(path: Path) -> Path:
    """``path`` itself if it is a set, else its only set child (a root used for one set)."""
    if not path.exists():
        raise TargetSetError(f"no target set at {path}: build one with `speechssl targets`")
    if (path / META).exists() or (path / COMPLETE).exists() or (path / LABELS).exists():
        return path
    children = sorted(
        child for child in path.iterdir()
        if not child.name.startswith(".") and child.is_dir() and (child / COMPLETE).is_file()  # not a build in progress
    )
    if len(children) == 1:
        return children[0]
    if not children:
        raise TargetSetError(f"no complete target set in {path}: build one with `speechssl targets`")
    names = ", ".join(child.name for child in children)
    raise TargetSetError(f"{path} holds {len(children)} target sets ({names}); name one of them")


# ---------------------------------------------------------------------------- verification


def _verify(path: Path, *, full: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    def damaged(why: str) -> TargetSetError:
        return TargetSetError(f"target set {path} is damaged: {why}; delete it and build it again")

    marker_path = path / COMPLETE
    if not marker_path.is_file():
        raise TargetSetError(f"target set {path} is incomplete (no {COMPLETE} marker): an interrupted build?")
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        meta_crc, key = int(marker["meta_crc32"]), str(marker["key"])
    except (OSError, ValueError, KeyError, TypeError):
        raise damaged(f"{COMPLETE} is unreadable") from None
    try:
        raw_meta = (path / META).read_bytes()
    except OSError:
        raise damaged(f"{META} is missing") from None
    if zlib.crc32(raw_meta) != meta_crc:
        raise damaged(f"{META} does not match the checksum in {COMPLETE}")
    try:
        meta = json.loads(raw_meta)
        if meta["format"] != SET_FORMAT:
            raise TargetSetError(
                f"target set {path} has format {meta['format']}; this version reads {SET_FORMAT}: build it again"
            )
        if meta["key"] != key:
            raise damaged(f"{META} names key {meta['key']!r}, {COMPLETE} {key!r}")
        for name, recorded in meta["files"].items():
            file = path / name
            if not file.is_file():
                raise damaged(f"{name} is missing")
            size = file.stat().st_size
            if size != recorded["bytes"]:
                raise damaged(f"{name} has {size} bytes, {recorded['bytes']} were written (truncated or overwritten)")
            if full and file_crc32(file) != recorded["crc32"]:
                raise damaged(f"{name} fails its crc32 check: its bytes changed after it was written")
        index = json.loads((path / INDEX).read_bytes())
        _check_labels_and_index(path, meta, index, damaged)
    except (KeyError, TypeError, ValueError) as exc:
        raise damaged(f"malformed metadata ({type(exc).__name__}: {exc})") from None
    return meta, index


def _check_labels_and_index(path: Path, meta: dict[str, Any], index: dict[str, Any], damaged) -> None:
    try:
        with open(path / LABELS, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy version {version}")
    except (OSError, ValueError) as exc:
        raise damaged(f"{LABELS} is not a readable .npy file ({exc})") from None
    expected = label_dtype(int(meta["k"]))
    total = int(meta["total_frames"])
    if shape != (total,) or dtype != expected or fortran:
        raise damaged(f"{LABELS} holds {dtype} {shape}, expected {expected} ({total},)")
    offsets = np.asarray(index["offset"], dtype=np.int64)
    frames = np.asarray(index["frames"], dtype=np.int64)
    columns = (index["ids"], index["split"], index["offset"], index["frames"], index["num_samples"])
    if len({len(column) for column in columns}) != 1:
        raise damaged(f"{INDEX} has columns of different lengths")
    if (frames < 0).any() or (offsets < 0).any() or (offsets + frames > total).any():
        raise damaged(f"{INDEX} points outside {LABELS}")


def file_crc32(path: Path) -> str:
    crc = 0
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


# ---------------------------------------------------------------------------- writing


class TargetSetWriter:
    """Builds one set in a temp directory beside its final place; :meth:`commit` renames it in.

    Labels are written into a preallocated memory map as utterances arrive, so building
    holds one utterance at a time, never the corpus. Used as a context manager, an
    exception (or a kill) leaves no set behind: the temp directory is removed, or, after
    SIGKILL, swept by the next writer under the same root.
    """

    def __init__(self, root: Path, name: str, *, num_classes: int, total_frames: int) -> None:
        self.root = Path(root)
        self.name = name
        self.num_classes = num_classes
        self.total_frames = int(total_frames)
        if self.total_frames <= 0:
            raise ConfigError(f"target set {name} would hold no labels: no utterance is long enough for one encoder frame")
        self.root.mkdir(parents=True, exist_ok=True)
        remove_abandoned(self.root)
        self.tmp = self.root / f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"
        self.tmp.mkdir()
        write_file_synced(self.tmp / BUILDER, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
        self._labels = np.lib.format.open_memmap(
            self.tmp / LABELS, mode="w+", dtype=label_dtype(num_classes), shape=(self.total_frames,)
        )
        self._index: dict[str, list] = {"ids": [], "split": [], "offset": [], "frames": [], "num_samples": []}
        self._filled = 0

    def add(self, split: str, cut_id: str, labels: np.ndarray, num_samples: int) -> None:
        count = len(labels)
        if self._filled + count > self.total_frames:
            raise SpeechSSLError(f"target set {self.name}: more labels than the {self.total_frames} planned")
        if count and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise SpeechSSLError(f"labels of cut {cut_id!r} are outside [0, {self.num_classes})")
        self._labels[self._filled : self._filled + count] = labels
        for column, value in zip(self._index.values(), (cut_id, split, self._filled, count, int(num_samples))):
            column.append(value)
        self._filled += count
        os.utime(self.tmp)  # heartbeat: this build is alive

    def commit(self, meta: dict[str, Any], kmeans: KMeansModel) -> Path:
        """Write index, centroids, meta and ``COMPLETE``; rename into place. Returns the set's path."""
        if self._filled != self.total_frames:
            raise SpeechSSLError(f"target set {self.name}: {self._filled} labels written, {self.total_frames} planned")
        self._labels.flush()
        del self._labels
        with open(self.tmp / LABELS, "rb") as handle:
            os.fsync(handle.fileno())
        write_file_synced(self.tmp / INDEX, json.dumps(self._index, separators=(",", ":")).encode())
        write_file_synced(self.tmp / KMEANS, kmeans.to_bytes())
        files = {name: {"bytes": (self.tmp / name).stat().st_size, "crc32": file_crc32(self.tmp / name)}
                 for name in (LABELS, INDEX, KMEANS)}
        meta = {**meta, "format": SET_FORMAT, "name": self.name, "total_frames": self.total_frames, "files": files}
        meta_bytes = json.dumps(meta, indent=1).encode()
        write_file_synced(self.tmp / META, meta_bytes)
        write_file_synced(self.tmp / COMPLETE, json.dumps({"key": meta["key"], "meta_crc32": zlib.crc32(meta_bytes)}).encode())
        (self.tmp / BUILDER).unlink()  # only a temp dir needs to say who builds it
        fsync_dir(self.tmp)
        target = self.root / self.name
        try:
            os.rename(self.tmp, target)
        except OSError:
            if not (target / COMPLETE).is_file():
                raise
            # Another process finished the same set first; both are built from the same inputs.
            log.info("target set %s was built concurrently by another process; keeping that one", target)
            shutil.rmtree(self.tmp, ignore_errors=True)
        fsync_dir(self.root)
        return target

    def abort(self) -> None:
        self._labels = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> TargetSetWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None or self.tmp.exists():
            self.abort()


def discard(path: Path) -> None:
    """Remove a set: renamed aside first, so a crash mid-delete never leaves half a set under its name."""
    trash = path.parent / f"{_TRASH_PREFIX}{path.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def remove_abandoned(root: Path, *, stale_seconds: float = 3600.0) -> None:
    """Delete temp dirs of builders that died (same host, pid gone; or no heartbeat for an hour)."""
    for child in root.iterdir():
        if child.name.startswith(_TRASH_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
            continue
        match = _TMP_RE.fullmatch(child.name)
        if match is None:
            continue
        try:
            age = time.time() - child.stat().st_mtime
            builder = json.loads((child / BUILDER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # just created, or gone meanwhile
        dead = builder.get("host") == socket.gethostname() and not pid_alive(int(match["pid"]))
        if dead or age > stale_seconds:
            log.info("removing abandoned target set build %s", child)
            shutil.rmtree(child, ignore_errors=True)




def geometry_record(conv_layers: Sequence[ConvLayer]) -> dict[str, Any]:
    """The ``encoder`` block of ``meta.json``: the layout and its stride/field/padding."""
    layers = geometry_only(conv_layers)
    geometry = conv_geometry(layers)
    return {
        "conv_layers": [list(layer) for layer in layers],
        "stride": geometry.stride,
        "receptive_field": geometry.receptive_field,
        "left_padding": geometry.left_padding,
        "frame_ms": geometry.stride * 1000 / SAMPLE_RATE,
    }


def entropy_bits(counts: Iterable[int]) -> float:
    """Entropy of the label distribution in bits (``log2 K`` when every cluster is used equally)."""
    counts = np.asarray(list(counts), dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())
