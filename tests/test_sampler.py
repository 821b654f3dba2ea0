"""Invariants of DurationBucketSampler: coverage, budget, spread, determinism, resume, DDP."""

from __future__ import annotations

import io
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from lhotse import CutSet, MonoCut

from speechssl.data.sampler import DurationBucketSampler, PlanStats, padding_waste
from speechssl.errors import ConfigError

BUDGET = 60.0


def make_cuts(n: int = 3000, seed: int = 0, low: float = 0.5, high: float = 20.0) -> CutSet:
    """Lognormal durations clipped to [low, high], like read speech."""
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.lognormal(mean=1.6, sigma=0.7, size=n), low, high)
    return CutSet.from_cuts(
        MonoCut(id=f"utt{i:05d}", start=0.0, duration=round(float(d), 3), channel=0) for i, d in enumerate(durations)
    )


@pytest.fixture(scope="module")
def cuts() -> CutSet:
    return make_cuts()


@pytest.fixture(scope="module")
def durations(cuts: CutSet) -> dict[str, float]:
    return {c.id: c.duration for c in cuts}


def sampler_for(cuts, **kwargs) -> DurationBucketSampler:
    kwargs.setdefault("batch_seconds", BUDGET)
    kwargs.setdefault("bin_size", 500)
    return DurationBucketSampler(cuts, **kwargs)


def ids_of(batches) -> list[list[str]]:
    return [[c.id for c in batch] for batch in batches]


def test_yields_cutsets_with_every_cut_exactly_once(cuts):
    sampler = sampler_for(cuts)
    batches = list(sampler)
    assert all(isinstance(b, CutSet) for b in batches)
    assert len(batches) == len(sampler)
    seen = Counter(cut_id for batch in ids_of(batches) for cut_id in batch)
    assert set(seen) == set(cuts.ids)
    assert max(seen.values()) == 1


@pytest.mark.parametrize("max_spread", [10.0, 3.0])
def test_budget_and_spread_hold_in_every_batch(cuts, durations, max_spread):
    sampler = sampler_for(cuts, max_spread_seconds=max_spread)
    for batch in sampler.plan(all_ranks=True):
        lengths = [durations[i] for i in batch]
        assert math.fsum(lengths) <= BUDGET + 1e-9
        assert max(lengths) - min(lengths) <= max_spread + 1e-9


def test_spread_rule_rebins_instead_of_dropping():
    # Short and long cuts interleaved in one bin: seed 004 would discard every mixed
    # batch; here the long cuts must wait for their own batches and nothing is lost.
    cuts = [MonoCut(id=f"c{i}", start=0, duration=1.0 if i % 2 else 15.0, channel=0) for i in range(400)]
    sampler = DurationBucketSampler(cuts, batch_seconds=40.0, bin_size=10_000, max_spread_seconds=10.0, seed=3)
    plan = sampler.plan(all_ranks=True)
    by_id = {c.id: c.duration for c in cuts}
    assert sorted(i for b in plan for i in b) == sorted(by_id)
    assert all(len({by_id[i] for i in batch}) == 1 for batch in plan)


def test_same_seed_is_deterministic_and_epochs_and_seeds_differ(cuts):
    a, b = sampler_for(cuts, seed=7), sampler_for(cuts, seed=7)
    assert ids_of(a) == ids_of(b)
    assert a.plan(epoch=1) != a.plan(epoch=0)
    assert sampler_for(cuts, seed=8).plan(epoch=0) != a.plan(epoch=0)
    a.set_epoch(1)
    assert ids_of(a) == b.plan(epoch=1)


def test_iterating_again_moves_to_next_epoch_and_set_epoch_rewinds(cuts):
    sampler = sampler_for(cuts)
    first = ids_of(sampler)
    second = ids_of(sampler)
    assert sampler.epoch == 1
    assert second == sampler.plan(epoch=1) != first
    sampler.set_epoch(0)
    assert ids_of(sampler) == first
    sampler.set_epoch(0)  # the same epoch again, explicitly: replay it, also after a save
    resumed = sampler_for(cuts)
    resumed.load_state_dict(sampler.state_dict())
    assert ids_of(sampler) == ids_of(resumed) == first


def test_batch_order_is_shuffled_across_bins(cuts, durations):
    # Without the shuffle, batches would come bin by bin, shortest first.
    plan = sampler_for(cuts).plan()
    means = [np.mean([durations[i] for i in batch]) for batch in plan]
    assert abs(np.corrcoef(np.arange(len(means)), means)[0, 1]) < 0.2


def test_no_shuffle_is_sorted_and_epoch_independent(cuts, durations):
    sampler = sampler_for(cuts, shuffle=False)
    plan = sampler.plan(epoch=0)
    assert plan == sampler.plan(epoch=5)
    firsts = [durations[batch[0]] for batch in plan]
    assert firsts == sorted(firsts)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("through_torch", [False, True])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(cuts, through_torch):
    reference = sampler_for(cuts, seed=5)
    reference.set_epoch(2)
    expected = ids_of(reference) + ids_of(reference)  # rest of epoch 2, then epoch 3

    interrupted = sampler_for(cuts, seed=5)
    interrupted.set_epoch(2)
    stream = iter(interrupted)
    consumed = [[c.id for c in next(stream)] for _ in range(17)]
    state = interrupted.state_dict()
    assert state["epoch"] == 2 and state["batches_yielded"] == 17
    if through_torch:
        state = roundtrip(state)

    resumed = sampler_for(cuts, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # what a `for epoch in range(start, n)` loop does; must keep the position
    iter(resumed)  # DataLoader calls iter() twice and drops the first iterator unstarted
    rest = ids_of(resumed)
    nxt = ids_of(resumed)
    assert consumed + rest + nxt == expected


def test_state_saved_at_epoch_end_resumes_with_next_epoch(cuts):
    sampler = sampler_for(cuts)
    list(sampler)
    state = sampler.state_dict()
    assert state["batches_yielded"] == len(sampler)
    resumed = sampler_for(cuts)
    resumed.load_state_dict(state)
    assert ids_of(resumed) == sampler.plan(epoch=1)


def test_batches_consumed_overrides_prefetched_position(cuts):
    sampler = sampler_for(cuts)
    stream = iter(sampler)
    for _ in range(10):  # a DataLoader prefetched 10 ...
        next(stream)
    state = sampler.state_dict(batches_consumed=6)  # ... but the loop trained on 6
    resumed = sampler_for(cuts)
    resumed.load_state_dict(state)
    assert ids_of(resumed) == sampler.plan(epoch=0)[6:]


def test_load_state_rejects_other_cuts_or_config(cuts):
    state = sampler_for(cuts).state_dict()
    with pytest.raises(ConfigError, match="different cut set"):
        sampler_for(make_cuts(n=2999)).load_state_dict(state)
    with pytest.raises(ConfigError, match="batch_seconds 60.0 -> 30.0"):
        sampler_for(cuts, batch_seconds=30.0).load_state_dict(state)
    with pytest.raises(ConfigError, match="missing"):
        sampler_for(cuts).load_state_dict({"epoch": 0})


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_are_equal_disjoint_and_cover_every_cut(cuts, world_size):
    for epoch in range(3):
        samplers = [sampler_for(cuts, world_size=world_size, rank=r) for r in range(world_size)]
        for s in samplers:
            s.set_epoch(epoch)
        per_rank = [ids_of(s) for s in samplers]
        assert len({len(p) for p in per_rank}) == 1
        assert all(len(p) == len(s) for p, s in zip(per_rank, samplers))
        all_ids = [i for p in per_rank for batch in p for i in batch]
        assert len(all_ids) == len(set(all_ids)) == len(cuts)


def test_state_from_rank_zero_resumes_every_rank(cuts):
    # Often only rank 0 writes the checkpoint; ranks advance in lockstep, so it fits all.
    rank0 = sampler_for(cuts, world_size=2, rank=0)
    stream = iter(rank0)
    for _ in range(5):
        next(stream)
    rank1 = sampler_for(cuts, world_size=2, rank=1)
    rank1.load_state_dict(rank0.state_dict())
    assert ids_of(rank1) == rank1.plan(epoch=0)[5:]


def test_ddp_splits_largest_batch_instead_of_dropping():
    # 7 one-second cuts with a 2 s budget make 4 batches; 3 ranks need 6.
    cuts = [MonoCut(id=f"c{i}", start=0, duration=1.0, channel=0) for i in range(7)]
    samplers = [DurationBucketSampler(cuts, batch_seconds=2.0, world_size=3, rank=r) for r in range(3)]
    per_rank = [s.plan() for s in samplers]
    assert [len(p) for p in per_rank] == [2, 2, 2]
    assert sorted(i for p in per_rank for b in p for i in b) == sorted(c.id for c in cuts)


def test_ddp_impossible_split_is_a_config_error():
    with pytest.raises(ConfigError, match="only 2 cuts for world_size=3"):
        DurationBucketSampler([MonoCut(id=f"c{i}", start=0, duration=1.0, channel=0) for i in range(2)],
                              batch_seconds=5.0, world_size=3)
    # 5 cuts that each fill a batch: 5 batches can only grow to 5, never to 6.
    with pytest.raises(ConfigError, match="equal batch counts"):
        DurationBucketSampler([MonoCut(id=f"c{i}", start=0, duration=1.0, channel=0) for i in range(5)],
                              batch_seconds=1.0, world_size=3)


def random_batches(durations: list[float], budget: float, seed: int = 0) -> list[list[float]]:
    order = list(durations)
    random.Random(seed).shuffle(order)
    batches, batch = [], []
    for d in order:
        if batch and math.fsum(batch) + d > budget:
            batches.append(batch)
            batch = []
        batch.append(d)
    return batches + [batch]


def test_bucketing_wastes_far_less_padding_than_random_batches(cuts, durations):
    sampler = sampler_for(cuts)
    bucketed = sampler.padding_waste()
    baseline = padding_waste(random_batches(list(durations.values()), BUDGET))
    assert baseline > 0.3
    assert bucketed < baseline / 3


def test_plan_stats_describe_the_epoch(cuts, durations):
    sampler = sampler_for(cuts)
    stats = sampler.plan_stats()
    assert stats.num_cuts == len(cuts)
    assert stats.num_batches == len(sampler)
    assert stats.total_seconds == pytest.approx(sum(durations.values()))
    assert stats.hours == pytest.approx(sampler.hours_per_epoch)
    assert 0 < stats.mean_seconds_per_batch <= stats.max_seconds_per_batch <= BUDGET + 1e-9
    assert "padding waste" in stats.summary()


def test_padding_waste_counts_16khz_samples():
    # [1 s, 2 s]: 2 x 32000 total, 16000 padded.
    assert padding_waste([[1.0, 2.0]]) == pytest.approx(0.25)
    assert padding_waste([[3.0], [1.0, 1.0]]) == 0.0
    assert PlanStats.from_durations([]).padding_waste == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_seconds": 0}, "batch_seconds must be a positive number"),
        ({"batch_seconds": -5.0}, "batch_seconds must be a positive number"),
        ({"bin_size": 0}, "bin_size must be a positive integer"),
        ({"queue_size": -1}, "queue_size must be a positive integer"),
        ({"max_spread_seconds": 0.0}, "max_spread_seconds must be a positive number"),
        ({"world_size": 2, "rank": 2}, "rank must be an integer in"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, message):
    cuts = [MonoCut(id=f"c{i}", start=0, duration=1.0, channel=0) for i in range(4)]
    kwargs = {"batch_seconds": 10.0, **kwargs}
    with pytest.raises(ConfigError, match=message):
        DurationBucketSampler(cuts, **kwargs)


def test_empty_and_too_long_cuts_are_config_errors():
    with pytest.raises(ConfigError, match="empty"):
        DurationBucketSampler(CutSet.from_cuts([]), batch_seconds=10.0)
    cuts = [MonoCut(id=f"c{i}", start=0, duration=d, channel=0) for i, d in enumerate([5.0, 12.0, 31.5])]
    with pytest.raises(ConfigError, match=r"2 cuts are longer than batch_seconds=10 \(longest 31.50 s\)"):
        DurationBucketSampler(cuts, batch_seconds=10.0)


def test_automatic_bin_size_keeps_small_corpora_homogeneous():
    # A 3 h corpus of short utterances fits in one of seed 004's 5000-cut bins, where the
    # 50-cut queue alone leaves ~30 % padding; the automatic size must do far better.
    rng = np.random.default_rng(1)
    small = CutSet.from_cuts(
        MonoCut(id=f"s{i:04d}", start=0.0, duration=float(d), channel=0) for i, d in enumerate(rng.uniform(1.5, 5, 4000))
    )
    auto = DurationBucketSampler(small, batch_seconds=BUDGET)
    paper = DurationBucketSampler(small, batch_seconds=BUDGET, bin_size=5000)
    assert auto.bin_size < 5000
    assert auto.padding_waste() < 0.05 < 0.2 < paper.padding_waste()
    assert auto.plan_stats().mean_seconds_per_batch > 0.9 * BUDGET  # batches still full
