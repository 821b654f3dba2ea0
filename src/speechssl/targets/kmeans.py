"""k-means for pretraining targets: fit on a bounded sample of frames, assign by streaming.

Why a sample: HuBERT's recipe fits its k-means on a fraction of the corpus, and the fit's
memory must not grow with the corpus. :class:`FrameReservoir` keeps a uniform random
sample of at most ``capacity`` frames from a stream of any length (Vitter's algorithm R),
so fitting on 3 hours or 3000 hours holds the same ``capacity x dim`` floats.

Why standardise: MFCC dimensions differ in scale by orders of magnitude (c0 versus the
delta-deltas), and k-means' Euclidean distance would otherwise cluster on the loudest few.
Mean and scale come from the same sample and are kept with the centroids, so assignment
applies exactly the transform the fit saw.

The fit is scikit-learn's ``MiniBatchKMeans`` with fairseq's HuBERT settings
(``examples/hubert/simple_kmeans/learn_kmeans.py``: k-means++ init, batch 10 000,
``tol=0``, ``max_no_improvement=100``, ``reassignment_ratio=0``) except ``n_init``: 5
instead of their 20. On the 3 h synthetic corpus's MFCCs (K=100, 100k-frame sample) n_init
1, 3, 5 and 20 gave whole-corpus inertias within 0.5% of each other -- no more than two
seeds of the same n_init differ -- while 20 took 2.5x as long (17 s vs 6.5 s on one core).
The same runs put the sample's inertia within 0.6% of the whole corpus's, i.e. 100k frames
already represent it. Seeded, so the same sample and seed give the same centroids.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechssl.errors import ConfigError
from speechssl.extras import require

DEFAULT_N_INIT = 5
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_MAX_ITER = 100
_ASSIGN_CHUNK = 1 << 15  # frames per distance matrix in assign(): 32k x K floats
_MIN_SCALE = 1e-6  # a constant dimension is left unscaled instead of divided by ~0


class FrameReservoir:
    """A uniform random sample of at most ``capacity`` rows from a stream of frame blocks.

    ``add`` takes blocks ``[frames, dim]`` of any size; after any number of blocks every
    frame seen so far is in :attr:`sample` with the same probability. Memory is the
    ``capacity x dim`` float32 buffer plus one block's temporaries, however long the stream.
    The sample depends only on the seed and the order of the frames.
    """

    def __init__(self, capacity: int, dim: int, *, seed: int = 0) -> None:
        if capacity < 1:
            raise ConfigError(f"the k-means sample needs capacity >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.dim = int(dim)
        self.seen = 0
        self._rows = np.empty((self.capacity, self.dim), dtype=np.float32)
        self._rng = np.random.default_rng([seed, 0x6B6D])  # own stream: independent of the k-means seed use

    @property
    def sample(self) -> np.ndarray:
        """``[min(seen, capacity), dim]`` float32 (a view; copy it to keep it past the next ``add``)."""
        return self._rows[: min(self.seen, self.capacity)]

    def add(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise ValueError(f"expected frames [n, {self.dim}], got {frames.shape}")
        count = frames.shape[0]
        if count == 0:
            return
        # Frames that still fit go straight in.
        free = max(self.capacity - self.seen, 0)
        direct = min(free, count)
        if direct:
            self._rows[self.seen : self.seen + direct] = frames[:direct]
        rest = frames[direct:]
        if len(rest):
            # Algorithm R: the t-th frame (0-based) replaces a random slot with probability capacity / (t + 1).
            positions = np.arange(self.seen + direct, self.seen + count, dtype=np.int64)
            slots = self._rng.integers(0, positions + 1)
            chosen = np.flatnonzero(slots < self.capacity)
            if len(chosen):
                # Sequentially, a later frame overwrites an earlier one that drew the same slot.
                chosen_slots = slots[chosen]
                _, last_first = np.unique(chosen_slots[::-1], return_index=True)
                keep = chosen[len(chosen) - 1 - last_first]
                self._rows[slots[keep]] = rest[keep]
        self.seen += count


@dataclass
class KMeansModel:
    """Centroids in standardised space plus the standardisation: ``z = (x - mean) / scale``."""

    centroids: np.ndarray
    """[K, dim] float32, in standardised units."""
    mean: np.ndarray
    """[dim] float32."""
    scale: np.ndarray
    """[dim] float32, > 0."""
    inertia: float = float("nan")
    """Mean squared distance of the fit sample to its centroid (standardised units)."""

    @property
    def num_classes(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def assign(self, frames: np.ndarray) -> np.ndarray:
        """Index of the nearest centroid for each row of ``frames [n, dim]`` (int64 ``[n]``)."""
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise ValueError(f"expected frames [n, {self.dim}], got {frames.shape}")
        labels = np.empty(frames.shape[0], dtype=np.int64)
        # argmin |z - c|^2 = argmin (|c|^2 - 2 z.c): |z|^2 is the same for every centroid.
        centroid_norms = np.einsum("kd,kd->k", self.centroids, self.centroids)
        for start in range(0, frames.shape[0], _ASSIGN_CHUNK):
            z = (frames[start : start + _ASSIGN_CHUNK].astype(np.float32) - self.mean) / self.scale
            distances = centroid_norms[None, :] - 2.0 * (z @ self.centroids.T)
            labels[start : start + len(z)] = np.argmin(distances, axis=1)
        return labels

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, centroids=self.centroids, mean=self.mean, scale=self.scale, inertia=np.float64(self.inertia))
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Path) -> KMeansModel:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                centroids=data["centroids"].astype(np.float32),
                mean=data["mean"].astype(np.float32),
                scale=data["scale"].astype(np.float32),
                inertia=float(data["inertia"]),
            )


def fit_kmeans(
    sample: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_init: int = DEFAULT_N_INIT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_iter: int = DEFAULT_MAX_ITER,
) -> KMeansModel:
    """Standardise ``sample [n, dim]`` and fit ``k`` clusters on it (``n >= k``)."""
    # Imported on use: scikit-learn is slow to import, and optional (the [pretrain] extra).
    MiniBatchKMeans = require("sklearn.cluster", "k-means targets", extra="pretrain").MiniBatchKMeans  # noqa: N806

    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim != 2 or sample.shape[0] == 0:
        raise ConfigError(f"k-means needs a non-empty [frames, dim] sample, got shape {sample.shape}")
    if sample.shape[0] < k:
        raise ConfigError(f"only {sample.shape[0]} frames to fit k={k} clusters: use a smaller k or more audio")
    if not np.isfinite(sample).all():
        raise ConfigError("the k-means sample holds NaN or infinite features")
    mean = sample.mean(axis=0, dtype=np.float64)
    scale = sample.std(axis=0, dtype=np.float64)
    scale = np.where(scale > _MIN_SCALE, scale, 1.0)
    standardised = ((sample - mean) / scale).astype(np.float32)
    kmeans = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        n_init=n_init,
        batch_size=min(batch_size, len(standardised)),
        max_iter=max_iter,
        tol=0.0,
        max_no_improvement=100,
        reassignment_ratio=0.0,
        random_state=seed,
        compute_labels=True,
    )
    kmeans.fit(standardised)
    return KMeansModel(
        centroids=kmeans.cluster_centers_.astype(np.float32),
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        inertia=float(kmeans.inertia_) / len(standardised),
    )
