"""Duration-bucketed batching (seed 004, section III-C) with exact resume and DDP sharding.

Seed 004 builds gpu-batches like this: sort utterances by length, cut the sorted list
into bins of 5000, feed random utterances of one bin into a priority queue of 50, and
pop the shortest until the batch's total speech duration reaches a threshold; batches
whose shortest and longest utterances differ by more than 10 s are discarded.

:class:`DurationBucketSampler` follows that recipe with one change: a cut that would
break the spread rule is not thrown away with its batch, it stays in the queue and
starts a later batch. Every cut therefore appears exactly once per epoch.

With ``language_alpha`` set, an epoch is first drawn language by language so that
language l gets a share p_l ∝ n_l^α of the epoch's seconds (XLSR / XLS-R, see
:mod:`speechssl.data.balance`), then bucketed the same way.

Batches are lhotse ``CutSet`` objects, so the sampler plugs into a
``torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None)``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from lhotse import CutSet
from torch.utils.data import Sampler

from speechssl.data.balance import (
    LanguageStream,
    cut_language,
    indices_by_label,
    language_probabilities,
    sum_by_language,
    validate_language_alpha,
)
from speechssl.data.manifests import CutIndex
from speechssl.errors import ConfigError

SAMPLE_RATE = 16_000
SEED004_BIN_SIZE = 5000
_STATE_VERSION = 1


def padding_waste(batches: Iterable[Sequence[float]], sample_rate: int = SAMPLE_RATE) -> float:
    """Fraction of the padded batch tensors that is padding.

    Each batch of durations (seconds) becomes an ``n x max_len`` tensor of samples;
    the waste is ``sum(padded) / sum(total)`` over all batches.
    """
    total = 0
    real = 0
    for durations in batches:
        lengths = [_num_samples(d, sample_rate) for d in durations]
        if not lengths:
            continue
        total += len(lengths) * max(lengths)
        real += sum(lengths)
    return (total - real) / total if total else 0.0


@dataclass(frozen=True)
class PlanStats:
    """What one epoch of batches looks like: size, fill and padding."""

    num_batches: int
    num_cuts: int
    total_seconds: float
    mean_cuts_per_batch: float
    mean_seconds_per_batch: float
    max_seconds_per_batch: float
    max_spread_seconds: float  # largest longest-minus-shortest gap within one batch
    padding_waste: float

    @property
    def hours(self) -> float:
        return self.total_seconds / 3600.0

    @classmethod
    def from_durations(cls, batches: Sequence[Sequence[float]], sample_rate: int = SAMPLE_RATE) -> PlanStats:
        """Statistics of a list of batches, each given as the durations (seconds) of its cuts."""
        sums = [math.fsum(b) for b in batches]
        num_cuts = sum(len(b) for b in batches)
        n = len(batches)
        return cls(
            num_batches=n,
            num_cuts=num_cuts,
            total_seconds=math.fsum(sums),
            mean_cuts_per_batch=num_cuts / n if n else 0.0,
            mean_seconds_per_batch=math.fsum(sums) / n if n else 0.0,
            max_seconds_per_batch=max(sums, default=0.0),
            max_spread_seconds=max((max(b) - min(b) for b in batches if b), default=0.0),
            padding_waste=padding_waste(batches, sample_rate),
        )

    def summary(self) -> str:
        return (
            f"{self.num_batches} batches, {self.num_cuts} cuts ({self.hours:.2f} h), "
            f"{self.mean_cuts_per_batch:.1f} cuts and {self.mean_seconds_per_batch:.1f} s per batch "
            f"(max {self.max_seconds_per_batch:.1f} s, spread <= {self.max_spread_seconds:.1f} s), "
            f"padding waste {100 * self.padding_waste:.1f}%"
        )


class DurationBucketSampler(Sampler[CutSet]):
    """Yields ``CutSet`` batches whose summed duration stays within ``batch_seconds``.

    How an epoch is planned (deterministically from ``(seed, epoch)``):

    1. Cuts are sorted by duration and cut into bins of ``bin_size`` neighbours.
    2. Within a bin, cuts are visited in random order and fed into a priority queue of
       ``queue_size``. A batch repeatedly takes the shortest queued cut, refilling the
       queue after each take, as long as the summed duration stays ``<= batch_seconds``
       and the longest minus shortest cut stays ``<= max_spread_seconds``; when the
       shortest queued cut does not fit, the batch is closed.
    3. Batches of all bins are shuffled together, so consecutive steps see different
       length ranges.

    Unlike seed 004, which discards a batch that spreads more than 10 s, the cut that
    would break the spread rule stays in the queue and goes into a later batch
    ("re-binned"): **every cut appears exactly once per epoch**, nothing is dropped.

    With ``world_size`` W > 1, rank r yields batches ``r, r + W, r + 2W, ...`` of the
    global plan. DDP needs the same number of steps on every rank, so while the batch
    count is not divisible by W the batch with the most cuts is split in two; the
    ranks' batches are disjoint and together still cover every cut exactly once.

    Resume: ``state_dict()`` records the epoch and the number of batches yielded in it;
    a fresh sampler over the same cuts and config that loads it continues with exactly
    the batches an uninterrupted run would have yielded next. Finishing an iteration
    moves the next one to the following epoch, so ``for batch in loader`` in a loop
    walks through epochs even without ``set_epoch`` (which still works as in lhotse
    and PyTorch).

    Language balance (``language_alpha`` = α, off when None): each epoch is drawn anew
    so that language l gets ``p_l · E`` seconds, with ``p_l = n_l^α / Σ n^α``, n_l the
    seconds of language l and E = ``epoch_seconds`` (default: the whole corpus, so an
    epoch lasts as long as without balancing). Balance is in **seconds** of audio, the
    durations the sampler plans with (capped by ``max_cut_seconds``), not in utterance
    counts. A downsampled language is drawn without replacement, also across epochs (its
    cuts are used once each before any repeats); an upsampled one repeats its cuts about
    evenly (:class:`~speechssl.data.balance.LanguageStream`). The drawn copies are then
    bucketed as above, in bins re-made per epoch. Two copies of a cut never share a
    batch: a copy that meets its twin waits for the next batch, and copies left over at
    the end of a bin move on to the next bin rather than forming near-empty batches (a
    language upsampled far beyond its number of distinct cuts still gives some thin
    batches). "Every cut exactly once" becomes "every drawn copy exactly once";
    determinism, resume and DDP sharding hold as before. The language is
    ``cut.supervisions[0].language`` and every cut must have one.

    The cuts' metadata is held in memory (a lazy ``CutSet`` is read once); no audio is
    touched. Planning needs only ids, durations and (when balancing) languages: given a
    :class:`~speechssl.data.manifests.CutIndex` instead of cuts, the sampler holds no cut
    objects (~80 B per cut; 1 M cuts are indexed and planned in ~13 s) and gives the same plans,
    states and fingerprints; ``plan()`` then names the batches' cut ids, and iterating
    (which yields cuts) needs the cuts themselves.
    """

    def __init__(
        self,
        cuts: Iterable[Any],
        *,
        batch_seconds: float,
        bin_size: int | None = None,
        queue_size: int = 50,
        max_spread_seconds: float = 10.0,
        shuffle: bool = True,
        seed: int = 0,
        world_size: int = 1,
        rank: int = 0,
        max_cut_seconds: float | None = None,
        group_size: int = 1,
        language_alpha: float | None = None,
        epoch_seconds: float | None = None,
    ) -> None:
        super().__init__()
        _require_positive("batch_seconds", batch_seconds)
        if max_cut_seconds is not None:
            _require_positive("max_cut_seconds", max_cut_seconds)
        _require_positive("group_size", group_size, integer=True)
        if bin_size is not None:
            _require_positive("bin_size", bin_size, integer=True)
        _require_positive("queue_size", queue_size, integer=True)
        _require_positive("max_spread_seconds", max_spread_seconds)
        _require_positive("world_size", world_size, integer=True)
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be an integer in [0, {world_size}) for world_size={world_size}, got {rank!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        if language_alpha is not None:
            validate_language_alpha(language_alpha)
        if epoch_seconds is not None:
            if language_alpha is None:
                raise ConfigError("epoch_seconds needs language_alpha (language_alpha=1.0 keeps natural frequencies)")
            _require_positive("epoch_seconds", epoch_seconds)
            if epoch_seconds < batch_seconds:
                raise ConfigError(f"epoch_seconds={epoch_seconds:g} is less than one batch ({batch_seconds:g} s)")

        self.batch_seconds = float(batch_seconds)
        self.queue_size = queue_size
        self.max_spread_seconds = float(max_spread_seconds)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.max_cut_seconds = None if max_cut_seconds is None else float(max_cut_seconds)
        # Gradient accumulation: with the batch count divisible by world_size * group_size,
        # every update gets full micro-batches and epochs end on update boundaries, so a
        # run with W processes x A micro-batches has the same plan as 1 x (W * A).
        self.group_size = group_size

        # Planning works on compact arrays (ids, float64 durations, language labels); the
        # cut objects, when given, are only touched to yield batches.
        self._cuts: list[Any] | None
        self._languages: Sequence[str | None] | None  # computed on first use from cuts
        if isinstance(cuts, CutIndex):
            self._cuts = None
            self._ids: list[str] = cuts.ids
            raw_durations = cuts.durations
            self._languages = cuts.languages
        else:
            self._cuts = list(cuts)
            self._ids = [str(c.id) for c in self._cuts]
            raw_durations = np.asarray([float(c.duration) for c in self._cuts], dtype=np.float64)
            self._languages = None
        # With random crops (pretraining), a cut contributes at most the crop length to
        # its batch, so plan with the capped duration or batches come out under-filled.
        cap = math.inf if self.max_cut_seconds is None else self.max_cut_seconds
        self._durations: np.ndarray = np.minimum(raw_durations, cap)
        self._validate_cuts()
        self.bin_size = bin_size if bin_size is not None else self._auto_bin_size()

        self.language_alpha = None if language_alpha is None else float(language_alpha)
        self.epoch_seconds = None if epoch_seconds is None else float(epoch_seconds)
        self._streams: list[tuple[LanguageStream, float]] = []  # (stream, its seconds per epoch)
        if self.language_alpha is not None:
            self._streams = self._language_streams()

        # Bins are fixed for the whole run (only the visiting order inside them is
        # random; language balancing re-makes them per epoch from its draw); a stable sort
        # keeps equal durations in input order, so the bins do not depend on anything but
        # the cut list.
        self._by_duration = np.argsort(self._durations, kind="stable")
        by_duration = self._by_duration.tolist()
        self._bins: list[list[int]] = [
            by_duration[i : i + self.bin_size] for i in range(0, len(by_duration), self.bin_size)
        ]
        self._fingerprint = self._compute_fingerprint()

        self.epoch = 0
        self._position = 0  # batches of the current epoch already yielded on this rank
        self._resume_pending = False  # load_state_dict() was called; the next iter() continues
        self._advance_pending = False  # an iteration ran to the end; the next iter() starts epoch + 1
        self._plan_cache: tuple[int, list[list[int]]] | None = None

        # Plan epoch 0 now so an impossible DDP split fails at construction, not mid-run.
        self._global_plan(0)

    # ------------------------------------------------------------------ iteration

    def __len__(self) -> int:
        """Number of batches this rank yields in epoch ``self.epoch``."""
        return len(self._global_plan(self.epoch)) // self.world_size

    def __iter__(self) -> Iterator[CutSet]:
        # A generator on purpose: DataLoader calls iter() twice per pass and drops the
        # first iterator unstarted, so the resume/next-epoch bookkeeping must happen on
        # the first next(), never in iter() itself.
        if self._cuts is None:  # before _begin_pass: a refused iteration leaves the state as it was
            raise ConfigError(
                "this sampler was built from a CutIndex (ids and durations only): plan() gives each "
                "batch's cut ids; to iterate batches of cuts, build it from the cuts"
            )
        start = self._begin_pass()
        mine = self._rank_plan(self.epoch)
        for index in range(start, len(mine)):
            self._position = index + 1
            yield CutSet.from_cuts([self._cuts[i] for i in mine[index]])
        self._advance_pending = True

    def _begin_pass(self) -> int:
        """Settle which epoch this pass covers and return its first batch index."""
        if self._resume_pending:
            start = self._position
        elif self._advance_pending:
            self.epoch += 1
            start = 0
        else:
            start = 0
        self._resume_pending = False
        self._advance_pending = False
        if start >= len(self):  # a state saved at the very end of an epoch
            self.epoch += 1
            start = 0
        self._position = start
        return start

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield epoch ``epoch`` from its start.

        Calling it with the epoch a just-loaded state is in keeps the resume position,
        so the usual ``for epoch in range(start, n): sampler.set_epoch(epoch)`` loop
        resumes correctly.
        """
        if not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}")
        if epoch != self.epoch or not self._resume_pending:
            self._position = 0
            self._resume_pending = False
        self.epoch = epoch
        self._advance_pending = False

    # ------------------------------------------------------------------ resume

    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """Plain-python state for exact resume (safe for ``torch.load(weights_only=True)``).

        A ``DataLoader`` with workers pulls batches ahead of the training loop, so the
        sampler's own count runs ahead of what was trained on; pass the number of
        batches the loop actually consumed in the current epoch as ``batches_consumed``
        to resume from there instead.
        """
        position = self._position if batches_consumed is None else batches_consumed
        if not isinstance(position, int) or not 0 <= position <= len(self):
            raise ConfigError(f"batches_consumed must be an integer in [0, {len(self)}], got {batches_consumed!r}")
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "seed": self.seed,
            "batches_yielded": position,
            "world_size": self.world_size,
            "rank": self.rank,
            "num_cuts": len(self._ids),
            "config": self._config(),
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the cuts and config must be the ones it was saved with.

        The state decides the random stream (epoch and seed); the constructor decides
        the data and batching config, which must match or a ConfigError says what differs.
        A state saved on one rank loads on any rank: all ranks advance in lockstep.
        """
        required = ("version", "epoch", "seed", "batches_yielded", "config", "fingerprint")
        missing = [key for key in required if key not in state]
        if missing:
            raise ConfigError(f"sampler state is missing {', '.join(missing)}; was it saved by DurationBucketSampler?")
        if state["version"] != _STATE_VERSION:
            raise ConfigError(f"sampler state version {state['version']} is not supported (expected {_STATE_VERSION})")
        if state["fingerprint"] != self._fingerprint:
            raise ConfigError(self._mismatch_message(state))

        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._plan_cache = None  # the seed may have changed
        position = int(state["batches_yielded"])
        if not 0 <= position <= len(self):
            raise ConfigError(
                f"sampler state says {position} batches were yielded, but epoch {self.epoch} has {len(self)}"
            )
        self._position = position
        self._resume_pending = True
        self._advance_pending = False

    # ------------------------------------------------------------------ plan and statistics

    def plan(self, epoch: int | None = None, *, all_ranks: bool = False) -> list[list[str]]:
        """Cut ids of each batch of ``epoch`` (default: current) for this rank or all ranks."""
        epoch = self.epoch if epoch is None else epoch
        batches = self._global_plan(epoch) if all_ranks else self._rank_plan(epoch)
        return [[self._ids[i] for i in batch] for batch in batches]

    def plan_stats(self, epoch: int | None = None) -> PlanStats:
        """Statistics of the global plan of ``epoch`` (all ranks together)."""
        epoch = self.epoch if epoch is None else epoch
        durations = self._durations.tolist()
        return PlanStats.from_durations([[durations[i] for i in b] for b in self._global_plan(epoch)])

    def padding_waste(self, epoch: int | None = None) -> float:
        """Padded samples / total samples over the global plan of ``epoch`` (16 kHz samples)."""
        return self.plan_stats(epoch).padding_waste

    @property
    def hours_per_epoch(self) -> float:
        """Hours of audio in one epoch over all ranks.

        Every cut once; with language balance the target (``epoch_seconds`` or the corpus),
        which each epoch's draw meets within about one cut per language.
        """
        if self._streams:
            return math.fsum(target for _, target in self._streams) / 3600.0
        return math.fsum(self._durations.tolist()) / 3600.0

    def seconds_by_language(self, epoch: int | None = None, *, all_ranks: bool = True) -> dict[str, float]:
        """Planned seconds per language in ``epoch`` (default: current), all ranks or this rank's.

        Seconds are the planning durations (capped by ``max_cut_seconds``); a cut without a
        language counts as ``"und"``.
        """
        epoch = self.epoch if epoch is None else epoch
        batches = self._global_plan(epoch) if all_ranks else self._rank_plan(epoch)
        indices = [i for batch in batches for i in batch]
        languages = self._cut_languages()
        durations = self._durations.tolist()
        return sum_by_language((languages[i] for i in indices), (durations[i] for i in indices))

    @property
    def language_shares(self) -> dict[str, float]:
        """Each language's target share of an epoch's seconds ({} when balancing is off)."""
        total = math.fsum(target for _, target in self._streams)
        return {stream.language: target / total for stream, target in self._streams}

    # ------------------------------------------------------------------ internals

    def _cut_languages(self) -> Sequence[str | None]:
        if self._languages is None:
            assert self._cuts is not None
            self._languages = [cut_language(c) for c in self._cuts]
        return self._languages

    def _rank_plan(self, epoch: int) -> list[list[int]]:
        return self._global_plan(epoch)[self.rank :: self.world_size]

    def _global_plan(self, epoch: int) -> list[list[int]]:
        # Only the latest epoch is cached: plans are cheap to rebuild and a cache of
        # every epoch would grow for the whole run.
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        # A SeedSequence over (seed, epoch) gives independent streams per epoch that
        # every rank reproduces without communication.
        rng = np.random.default_rng([self.seed, epoch])
        bins = self._bins if not self._streams else self._balanced_bins(epoch)
        batches: list[list[int]] = []
        carried: list[int] = []  # only language balancing repeats cuts and carries some on
        for number, members in enumerate(bins):
            order = rng.permutation(carried + members).tolist() if self.shuffle else carried + members
            made, carried = self._batches_of_bin(order, may_carry=number + 1 < len(bins))
            batches.extend(made)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if not batches:
            raise ConfigError(f"epoch {epoch} drew no cuts; raise epoch_seconds")
        batches = _split_until_divisible(batches, self.world_size * self.group_size)
        self._plan_cache = (epoch, batches)
        return batches

    def _language_streams(self) -> list[tuple[LanguageStream, float]]:
        groups = indices_by_label(self._cut_languages())
        durations = self._durations.tolist()
        seconds = {lang: math.fsum(durations[i] for i in members) for lang, members in groups.items()}
        probabilities = language_probabilities(seconds, self.language_alpha)
        epoch_seconds = self.epoch_seconds if self.epoch_seconds is not None else math.fsum(durations)
        return [
            (
                LanguageStream(lang, members, durations, shuffle=self.shuffle),
                probabilities[lang] * epoch_seconds,
            )
            for lang, members in groups.items()
        ]

    def _balanced_bins(self, epoch: int) -> list[list[int]]:
        """This epoch's draw (cut positions, with repeats), sorted by duration and cut into bins."""
        counts = np.bincount(
            np.concatenate([stream.draw(epoch, target, seed=self.seed) for stream, target in self._streams]),
            minlength=len(self._ids),
        )
        laid_out = np.repeat(self._by_duration, counts[self._by_duration]).tolist()
        return [laid_out[i : i + self.bin_size] for i in range(0, len(laid_out), self.bin_size)]

    def _batches_of_bin(self, order: list[int], may_carry: bool = False) -> tuple[list[list[int]], list[int]]:
        """Seed 004's priority-queue batching over one bin visited in ``order``.

        Returns the batches and the cuts to carry over to the next bin: with repeated cuts
        (language balancing) and ``may_carry``, the copies left when the bin runs out of
        other cuts. A batch takes one copy of a cut, so placing them here would make a
        batch per copy; in the next bin (the next longer durations) they join full batches.
        """
        # The bin's durations as floats, by global index (a dict: bins are small, the cut
        # set may be huge); identical values to indexing the full array.
        durations = dict(zip(order, self._durations[order].tolist())) if order else {}
        # (duration, index): the index breaks ties so the heap order is deterministic.
        queue: list[tuple[float, int]] = [(durations[i], i) for i in order[: self.queue_size]]
        heapq.heapify(queue)
        next_in = len(queue)

        batches: list[list[int]] = []
        batch: list[int] = []
        in_batch: set[int] = set()
        # Copies of a cut already in the batch (only language balancing repeats cuts): two
        # identical rows would waste the batch, so they wait for the next one.
        deferred: list[tuple[float, int]] = []
        total = 0.0
        shortest = math.inf
        longest = -math.inf
        while queue or deferred:
            if queue:
                duration, index = queue[0]
                if index in in_batch:
                    deferred.append(heapq.heappop(queue))
                    if next_in < len(order):
                        heapq.heappush(queue, (durations[order[next_in]], order[next_in]))
                        next_in += 1
                    continue
                if not batch or (
                    total + duration <= self.batch_seconds
                    and max(longest, duration) - min(shortest, duration) <= self.max_spread_seconds
                ):
                    heapq.heappop(queue)
                    batch.append(index)
                    in_batch.add(index)
                    total += duration
                    shortest = min(shortest, duration)
                    longest = max(longest, duration)
                    if next_in < len(order):
                        heapq.heappush(queue, (durations[order[next_in]], order[next_in]))
                        next_in += 1
                    continue
            # The cut that does not fit stays queued and will open a later batch instead of
            # being dropped; so do the deferred copies.
            batches.append(batch)
            if deferred and next_in == len(order) and may_carry:
                return batches, [i for _, i in queue] + [i for _, i in deferred]
            batch, total, shortest, longest = [], 0.0, math.inf, -math.inf
            in_batch = set()
            for item in deferred:
                heapq.heappush(queue, item)
            deferred = []
        if batch:
            batches.append(batch)
        return batches, []

    def _auto_bin_size(self) -> int:
        """Bins of about ten batches' worth of cuts, at least a queue, at most seed 004's 5000.

        Seed 004's 5000-utterance bins assume LibriSpeech scale (56 bins). On a corpus of a
        few thousand cuts they make a single bin spanning every duration, and the 50-cut
        queue alone cannot keep batches homogeneous (about 30 % padding on a 3 h corpus,
        no better than random). Ten batches per bin keeps padding near 1 % while batches
        stay full; pass ``bin_size=5000`` to reproduce the paper exactly.
        """
        mean_duration = math.fsum(self._durations.tolist()) / len(self._durations)
        cuts_per_batch = max(1.0, self.batch_seconds / mean_duration)
        return int(min(SEED004_BIN_SIZE, max(self.queue_size, round(10 * cuts_per_batch))))

    def _validate_cuts(self) -> None:
        if not self._ids:
            raise ConfigError("the cut set is empty: nothing to sample")
        durations = self._durations
        bad = durations[~((durations > 0) & np.isfinite(durations))].tolist()
        if bad:
            raise ConfigError(f"{len(bad)} cuts have a non-positive or non-finite duration (e.g. {bad[0]!r})")
        too_long = durations[durations > self.batch_seconds].tolist()
        if too_long:
            raise ConfigError(
                f"{len(too_long)} cuts are longer than batch_seconds={self.batch_seconds:g} "
                f"(longest {max(too_long):.2f} s); raise batch_seconds or split/filter the cuts"
            )
        if len(set(self._ids)) != len(self._ids):
            raise ConfigError(f"cut ids are not unique ({len(self._ids) - len(set(self._ids))} duplicates)")
        if len(self._ids) < self.world_size:
            raise ConfigError(
                f"only {len(self._ids)} cuts for world_size={self.world_size}: every rank needs at least one batch"
            )

    def _config(self) -> dict[str, Any]:
        config = {
            "batch_seconds": self.batch_seconds,
            "bin_size": self.bin_size,
            "queue_size": self.queue_size,
            "max_spread_seconds": self.max_spread_seconds,
            "shuffle": self.shuffle,
            "world_size": self.world_size,
            "max_cut_seconds": self.max_cut_seconds,
            "group_size": self.group_size,
        }
        # Only when set, so states and fingerprints without balancing stay as they were.
        if self.language_alpha is not None:
            config["language_alpha"] = self.language_alpha
            config["epoch_seconds"] = self.epoch_seconds
        return config

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self._config(), sort_keys=True).encode())
        digest.update("\0".join(self._ids).encode())
        digest.update(np.ascontiguousarray(self._durations, dtype=np.float64).tobytes())
        if self.language_alpha is not None:  # relabelled languages change the draw
            digest.update("\0".join(str(language) for language in self._cut_languages()).encode())
        return digest.hexdigest()

    def _mismatch_message(self, state: dict[str, Any]) -> str:
        saved = state.get("config", {})
        now = self._config()
        keys = list(now) + [k for k in saved if k not in now]
        changed = [f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]
        if changed:
            return f"sampler state was saved with a different config: {', '.join(changed)}"
        return (
            f"sampler state was saved for a different cut set "
            f"({state.get('num_cuts', '?')} cuts then, {len(self._ids)} now, or different ids/durations)"
        )


def _split_until_divisible(batches: list[list[int]], world_size: int) -> list[list[int]]:
    """Split the largest batches in two until every rank gets the same number of batches.

    Halves of a valid batch stay within the budget and the spread limit, and no cut is
    lost or repeated, which dropping or padding with duplicates would not guarantee.
    """
    batches = list(batches)
    while len(batches) % world_size:
        largest = max(range(len(batches)), key=lambda j: len(batches[j]))
        batch = batches[largest]
        if len(batch) < 2:
            num_cuts = sum(len(b) for b in batches)
            raise ConfigError(
                f"cannot give {world_size} ranks equal batch counts: {num_cuts} cuts make "
                f"{len(batches)} single-cut batches; use fewer ranks or more cuts"
            )
        middle = (len(batch) + 1) // 2
        # The halves stay adjacent, so the shuffled batch order is otherwise unchanged.
        batches[largest : largest + 1] = [batch[:middle], batch[middle:]]
    return batches


def _num_samples(seconds: float, sample_rate: int) -> int:
    return int(round(seconds * sample_rate))


def _require_positive(name: str, value: Any, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not math.isfinite(value):
        what = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
