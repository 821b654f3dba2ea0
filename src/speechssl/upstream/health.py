"""Representation-health monitors: is an encoder's feature space alive?

A probe takes minutes to hours to say that an upstream is useless; these statistics say it
in seconds, from a few thousand frames of a fixed dev subset, for every layer:

- ``effective_rank`` -- RankMe (Garrido et al., 2023): ``exp`` of the entropy of the
  normalised singular values of the centred frame matrix. ``k`` equal singular values give
  ``k``; a collapsed space gives ~1.
- ``participation_ratio`` -- ``(sum l)^2 / sum l^2`` of the covariance eigenvalues ``l``;
  the same idea on variances instead of singular values, so it discounts weak directions
  more (our earlier notes used it).
- ``top_pc_share`` / ``top2_pc_share`` -- the share of the frame variance along the first
  principal direction / the first two.
- ``anisotropy`` -- the mean cosine similarity between two distinct frames (uncentred):
  ~0 when frames point every way, ~1 when they all sit in one narrow cone.
- ``utterance_variance_share`` -- the share of the frame variance explained by the
  per-utterance means: ~1 when a layer encodes only who/what the utterance is (a constant
  per utterance), ~0 when frames vary independently of their utterance.

Measured on the synthetic dev set (docs/benchmark.md, "Representation health"): MFCC
(39-d) has participation ratio 7.4 and RankMe 23; fbank (80-d) 1.5 and 29 (its loudness
direction holds 81 % of the variance, yet it is a healthy baseline). The "effective rank" of
our earlier notes was evidently the participation ratio (they put MFCC at 7.5): the collapsed
run they describe went from 2.5 to 1.1, with 99.9 % of the variance in two directions, and
healthy tiny 192-d encoders read 8-40. These numbers depend on
the frame budget, so compare runs only at the same ``max_frames`` / ``frames_per_utterance``.

Everything is plain torch in float64 (RankMe reads the smallest singular values, which
float32 round-off inflates); 200 utterances x 50 frames x 5 layers take about 0.5 s for
192-d features and 3 s for 768-d ones on one CPU core.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from speechssl.upstream.base import Upstream

HEALTH_METRICS = (
    "effective_rank",
    "participation_ratio",
    "anisotropy",
    "utterance_variance_share",
    "top_pc_share",
    "top2_pc_share",
)
"""The per-layer lists of :meth:`HealthAccumulator.result`, in this order."""

MIN_EFFECTIVE_RANK = 2.0
"""RankMe below this: fewer than two directions even counting the noise floor -- a total
collapse. RankMe alone is a weak alarm: it reads singular values, so a collapse onto two
directions with a faint noise floor in 190 others still reads ~10 (MFCC reads 23)."""

MAX_TOP_PC_SHARE = 0.95
"""One direction holds more than this share of the variance: every other feature is noise
around a line (participation ratio ~1.1, where the collapsed run ended). The most concentrated
healthy features we know, fbank, hold 0.81 in their loudness direction."""

MAX_TOP2_PC_SHARE = 0.99
"""The first two directions hold more than this share: the collapse we diagnosed (99.9 % in
two directions) that neither RankMe nor the top direction alone catch. fbank holds 0.86,
MFCC 0.44, GE2E's layers 0.19-0.42."""

DEFAULT_FRAMES_PER_UTTERANCE = 50
DEFAULT_MAX_FRAMES = 10_000


# ------------------------------------------------------------------ statistics of one frame matrix


def covariance_eigenvalues(frames: Tensor) -> Tensor:
    """Eigenvalues (float64, descending, >= 0) of ``X^T X / N`` for the centred ``[N, D]`` frames.

    Computed on the smaller of the two Gram matrices, which share their non-zero eigenvalues.
    """
    x = _centred(frames)
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):  # eigh refuses NaN; a NaN spectrum makes every monitor NaN
        return torch.full((min(x.shape),), math.nan, dtype=torch.float64)
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    eigenvalues = torch.linalg.eigvalsh(gram / x.shape[0]).clamp(min=0.0)
    return eigenvalues.flip(0)


def effective_rank(frames: Tensor, *, eps: float = 1e-7) -> float:
    """RankMe of the centred ``[N, D]`` frames: ``exp(-sum p log p)``, ``p_k = s_k / sum s + eps``.

    ``s`` are the singular values. Unlike the paper we centre first, so that a constant offset
    (common in encoder outputs, see :func:`anisotropy`) does not count as a direction. ``eps``
    is the paper's (it keeps ``log`` finite); with ``k`` equal non-zero singular values the
    result is ``k`` up to ``~D * eps``.
    """
    return _effective_rank(covariance_eigenvalues(frames), eps)


def participation_ratio(frames: Tensor) -> float:
    """``(sum l)^2 / sum l^2`` over the covariance eigenvalues ``l`` of the ``[N, D]`` frames."""
    return _participation_ratio(covariance_eigenvalues(frames))


def top_pc_share(frames: Tensor, *, directions: int = 1) -> float:
    """Share of the total variance of the ``[N, D]`` frames along their first ``directions`` principal directions."""
    return _top_pc_share(covariance_eigenvalues(frames), directions)


def anisotropy(frames: Tensor) -> float:
    """Mean cosine similarity over all ordered pairs of distinct frames, computed exactly.

    With ``u_i = x_i / |x_i|`` and ``s = sum u_i``, ``sum_{i != j} u_i . u_j = |s|^2 - sum |u_i|^2``,
    so the mean over the ``N (N - 1)`` pairs costs one pass instead of ``N^2`` products.
    Frames are *not* centred: the common offset that makes all frames point one way is what
    this measures. A zero frame counts as orthogonal to every other.
    """
    x = frames.detach().to(torch.float64)
    n = x.shape[0]
    if n < 2:
        return math.nan
    norms = x.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, x / norms.clamp(min=1e-300), torch.zeros_like(x))
    total = unit.sum(dim=0)
    self_pairs = float((norms > 0).sum())
    return float((total @ total - self_pairs) / (n * (n - 1)))


def utterance_variance_share(frames: Tensor, utterance_index: Tensor) -> float:
    """Between-utterance variance over total variance of the ``[N, D]`` frames, summed over dims.

    ``utterance_index [N]`` says which utterance each frame is from (any integers).
    This is the ANOVA eta^2: ``sum_u n_u |m_u - m|^2 / sum_i |x_i - m|^2``. It is not corrected
    for chance: frames drawn independently of their utterance still give about
    ``(U - 1) / (N - 1)`` (1 / frames per utterance), 0.02 at 50 frames per utterance.
    """
    x = frames.detach().to(torch.float64)
    if x.shape[0] == 0:
        return math.nan
    _, groups = torch.unique(utterance_index.to(x.device), return_inverse=True)
    count = torch.bincount(groups).to(torch.float64)
    sums = torch.zeros(len(count), x.shape[1], dtype=torch.float64, device=x.device).index_add_(0, groups, x)
    mean = x.mean(dim=0)
    between = float((count[:, None] * (sums / count[:, None] - mean) ** 2).sum())
    total = float(((x - mean) ** 2).sum())
    return between / total if total > 0 else math.nan


def frame_health(frames: Tensor, utterance_index: Tensor) -> dict[str, float]:
    """Every monitor of one layer's ``[N, D]`` frames (one eigendecomposition for the spectral ones)."""
    eigenvalues = covariance_eigenvalues(frames)
    return {
        "effective_rank": _effective_rank(eigenvalues),
        "participation_ratio": _participation_ratio(eigenvalues),
        "anisotropy": anisotropy(frames),
        "utterance_variance_share": utterance_variance_share(frames, utterance_index),
        "top_pc_share": _top_pc_share(eigenvalues),
        "top2_pc_share": _top_pc_share(eigenvalues, 2),
    }


def _centred(frames: Tensor) -> Tensor:
    if frames.dim() != 2:
        raise ValueError(f"frames must be [N, D], got shape {tuple(frames.shape)}")
    x = frames.detach().to(torch.float64)
    return x - x.mean(dim=0, keepdim=True) if x.shape[0] else x


def _effective_rank(eigenvalues: Tensor, eps: float = 1e-7) -> float:
    singular = eigenvalues.sqrt()
    total = float(singular.sum())
    if not total > 0:
        return math.nan
    p = singular / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def _participation_ratio(eigenvalues: Tensor) -> float:
    squares = float((eigenvalues**2).sum())
    return float(eigenvalues.sum()) ** 2 / squares if squares > 0 else math.nan


def _top_pc_share(eigenvalues: Tensor, directions: int = 1) -> float:
    total = float(eigenvalues.sum())
    return float(eigenvalues[:directions].sum()) / total if total > 0 else math.nan


# ------------------------------------------------------------------ collecting frames


class HealthAccumulator:
    """Collects a bounded, deterministic sample of per-layer frames, then reports the monitors.

    ``update(layers, lengths, utterance_ids)`` takes a batch (``layers``: one ``[B, T, D]``
    tensor per layer; frames past ``lengths`` are padding and never read). Of each utterance
    it keeps ``frames_per_utterance`` evenly spaced frames (all of them if it has fewer).
    It keeps at most ``max_frames // frames_per_utterance`` utterances: those whose id hashes
    lowest (a bottom-k sample), so the sample -- and the result -- is the same whatever order
    or batching the utterances come in, and memory stays bounded however many batches are fed.
    An utterance id seen before is ignored (a second validation pass adds nothing).
    """

    def __init__(
        self,
        *,
        max_frames: int = DEFAULT_MAX_FRAMES,
        frames_per_utterance: int = DEFAULT_FRAMES_PER_UTTERANCE,
        layer_ids: Sequence[int] | None = None,
    ) -> None:
        if frames_per_utterance < 1 or max_frames < frames_per_utterance:
            raise ValueError(
                f"need 1 <= frames_per_utterance <= max_frames, got {frames_per_utterance} and {max_frames}"
            )
        self.max_frames = max_frames
        self.frames_per_utterance = frames_per_utterance
        self.max_utterances = max_frames // frames_per_utterance
        self.layer_ids = None if layer_ids is None else list(layer_ids)
        self._kept: dict[str, tuple[int, list[Tensor]]] = {}  # id -> (priority, per-layer [k, D])
        self._largest: list[tuple[int, str]] = []  # max-heap of (-priority, id) over _kept
        self._anonymous = 0  # ids handed to batches that came without any

    @property
    def num_utterances(self) -> int:
        return len(self._kept)

    @property
    def num_frames(self) -> int:
        """Frames kept per layer."""
        return sum(frames[0].shape[0] for _, frames in self._kept.values())

    def update(self, layers: Sequence[Tensor], lengths: Tensor, utterance_ids: Sequence[str] | None = None) -> None:
        if not layers:
            raise ValueError("update needs at least one layer")
        if self.layer_ids is None:
            self.layer_ids = list(range(len(layers)))
        elif len(layers) != len(self.layer_ids):
            raise ValueError(f"got {len(layers)} layers, earlier batches had {len(self.layer_ids)}")
        batch = layers[0].shape[0]
        if utterance_ids is None:
            utterance_ids = [f"#{self._anonymous + b}" for b in range(batch)]
            self._anonymous += batch
        if len(utterance_ids) != batch or lengths.shape[0] != batch:
            raise ValueError(f"{batch} utterances in the layers, {len(utterance_ids)} ids, {lengths.shape[0]} lengths")
        for b, (utterance_id, length) in enumerate(zip(utterance_ids, lengths.tolist())):
            utterance_id = str(utterance_id)
            if length <= 0 or utterance_id in self._kept:
                continue
            priority = _priority(utterance_id)
            full = len(self._kept) >= self.max_utterances
            if full and priority >= -self._largest[0][0]:
                continue
            picks = evenly_spaced(int(length), self.frames_per_utterance).to(layers[0].device)
            frames = [layer[b].detach().index_select(0, picks).to("cpu", torch.float32) for layer in layers]
            if full:
                _, evicted = heapq.heappop(self._largest)
                del self._kept[evicted]
            self._kept[utterance_id] = (priority, frames)
            heapq.heappush(self._largest, (-priority, utterance_id))

    def result(self) -> dict[str, Any]:
        """Per-layer lists of :data:`HEALTH_METRICS` plus ``layers``, ``frames`` (per layer),
        ``utterances``, ``utterance_variance_chance`` and ``dim``."""
        ordered = sorted(self._kept.values(), key=lambda entry: entry[0])  # arrival order must not matter
        layer_ids = self.layer_ids or []
        out: dict[str, Any] = {"layers": list(layer_ids), **{name: [] for name in HEALTH_METRICS}}
        if ordered:
            counts = torch.tensor([frames[0].shape[0] for _, frames in ordered])
            utterance_index = torch.repeat_interleave(torch.arange(len(ordered)), counts)
            for position in range(len(layer_ids)):
                frames = torch.cat([per_layer[position] for _, per_layer in ordered])
                for name, value in frame_health(frames, utterance_index).items():
                    out[name].append(round(value, 4) if math.isfinite(value) else value)
        out["frames"] = self.num_frames
        out["utterances"] = self.num_utterances
        # What utterance_variance_share reads for frames unrelated to their utterance.
        out["utterance_variance_chance"] = (
            round((self.num_utterances - 1) / (self.num_frames - 1), 4) if self.num_frames > 1 else math.nan
        )
        out["dim"] = int(ordered[0][1][0].shape[1]) if ordered else 0
        return out


def evenly_spaced(length: int, count: int) -> Tensor:
    """``min(length, count)`` frame indices at the centres of equal segments of ``range(length)``."""
    count = min(length, count)
    return torch.div((2 * torch.arange(count) + 1) * length, 2 * count, rounding_mode="floor")


def _priority(utterance_id: str) -> int:
    # A stable hash (Python's str hash is salted per process): the same sample in every run.
    return int.from_bytes(hashlib.blake2b(utterance_id.encode(), digest_size=8).digest(), "big")


# ------------------------------------------------------------------ verdicts


def collapse_warnings(
    result: dict[str, Any],
    dim: int,
    *,
    min_effective_rank: float = MIN_EFFECTIVE_RANK,
    max_top_pc_share: float = MAX_TOP_PC_SHARE,
    max_top2_pc_share: float = MAX_TOP2_PC_SHARE,
) -> list[str]:
    """One loud line per collapsed (or non-finite) layer of a :meth:`HealthAccumulator.result`.

    A layer is collapsed when any rule fires (see the constants for why these values):
    RankMe below ``min_effective_rank``, or the first principal direction holding more than
    ``max_top_pc_share`` of the variance, or the first two more than ``max_top2_pc_share``.
    ``dim`` is the feature dimension; features of 2 dimensions or fewer cannot be told from a
    collapse by these rules, so only non-finite values are reported for them.
    """
    warnings = []
    layer_ids = result.get("layers") or list(range(len(result.get("effective_rank", []))))
    for position, layer in enumerate(layer_ids):
        rank = result["effective_rank"][position]
        top = result["top_pc_share"][position]
        top2 = result["top2_pc_share"][position]
        if not all(math.isfinite(value) for value in (rank, top, top2)):
            warnings.append(
                f"WARNING layer {layer}: representation health is not finite (effective rank {rank}, top PC share "
                f"{top}): the features hold NaN/inf or do not vary at all"
            )
            continue
        if dim <= 2:
            continue
        reasons = []
        if rank < min_effective_rank:
            reasons.append(f"effective rank (RankMe) {rank:.2f} < {min_effective_rank:g}")
        if top > max_top_pc_share:
            reasons.append(f"one direction holds {top:.1%} of the variance (> {max_top_pc_share:.0%})")
        elif top2 > max_top2_pc_share:
            reasons.append(f"two directions hold {top2:.2%} of the variance (> {max_top2_pc_share:.0%})")
        if reasons:
            warnings.append(
                f"WARNING layer {layer}: COLLAPSED representation: {'; '.join(reasons)}, in {dim} dimensions "
                f"({result.get('frames', '?')} frames): its frames vary along a line or a plane only, and probes "
                "on it are likely to score near chance (docs/benchmark.md, 'Representation health')."
            )
    return warnings


def health_summary(health: dict[str, Any]) -> str:
    """One line: the monitors averaged over layers, with the lowest-rank layer."""
    ranks = health.get("effective_rank") or []
    if not ranks:
        return "health: no frames"
    layers = health.get("layers") or list(range(len(ranks)))
    worst = min(range(len(ranks)), key=lambda i: ranks[i] if math.isfinite(ranks[i]) else -math.inf)

    def mean(name: str) -> float:
        values = health.get(name) or []
        return sum(values) / len(values) if values else math.nan

    return (
        f"health ({health.get('utterances', '?')} dev utterances, {len(ranks)} layer(s), means): "
        f"effective rank {mean('effective_rank'):.1f} of {health.get('dim', '?')} (lowest {ranks[worst]:.1f}, "
        f"layer {layers[worst]}), top PC {mean('top_pc_share'):.2f}, utterance share "
        f"{mean('utterance_variance_share'):.2f}, anisotropy {mean('anisotropy'):.2f}"
    )


# ------------------------------------------------------------------ running an upstream


def health_subset(cuts: Iterable[Any], max_utterances: int, *, seed: int = 0) -> list[Any]:
    """A fixed pseudo-random subset of ``max_utterances`` cuts, in their original order.

    Chosen by a seeded hash of each cut id, so the subset does not depend on the order of
    ``cuts`` and is the same for every upstream (their numbers stay comparable).
    """
    cut_list = list(cuts)
    ranked = sorted(cut_list, key=lambda c: _priority(f"{seed}:{c.id}"))
    chosen = {c.id for c in ranked[:max_utterances]}
    return [c for c in cut_list if c.id in chosen]


def upstream_health(
    upstream: Upstream,
    cuts: Iterable[Any],
    *,
    max_utterances: int = 200,
    seed: int = 0,
    device: torch.device | str | None = None,
    layers: Sequence[int] | None = None,
    frames_per_utterance: int = DEFAULT_FRAMES_PER_UTTERANCE,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Run ``upstream`` on a fixed subset of ``cuts`` (:func:`health_subset`) and report the monitors.

    ``layers`` picks upstream layers (default all); ``device`` defaults to the upstream's.
    The result is :meth:`HealthAccumulator.result` plus ``warnings`` (:func:`collapse_warnings`).
    """
    from speechssl.data.audio import load_cut_audio
    from speechssl.data.collate import collate_waveforms

    if device is None:
        tensors = [*upstream.parameters(), *upstream.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
    layer_ids = list(range(upstream.num_layers)) if layers is None else list(layers)
    subset = health_subset(cuts, max_utterances, seed=seed)
    # Similar lengths together: less padding to compute (the result does not depend on batching).
    subset.sort(key=lambda c: float(c.duration))
    accumulator = HealthAccumulator(
        max_frames=max(len(subset), 1) * frames_per_utterance,
        frames_per_utterance=frames_per_utterance,
        layer_ids=layer_ids,
    )
    for start in range(0, len(subset), batch_size):
        batch = subset[start : start + batch_size]
        waveforms, lengths, _ = collate_waveforms([load_cut_audio(c, target_sr=upstream.sample_rate) for c in batch])
        with torch.inference_mode():
            out = upstream(waveforms.to(device), lengths.to(device))
        accumulator.update([out.layers[i] for i in layer_ids], out.lengths, [c.id for c in batch])
    result = accumulator.result()
    result["warnings"] = collapse_warnings(result, result["dim"])
    return result
