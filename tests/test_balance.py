"""Language-balanced sampling: p_l ∝ n_l^α in seconds, balanced subsets, per-language accounting."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from lhotse import MonoCut, SupervisionSegment

from speechssl.data.balance import (
    LanguageStream,
    balanced_subset,
    language_probabilities,
    seconds_by_language,
    sum_by_language,
)
from speechssl.data.collate import make_dataloader
from speechssl.data.sampler import DurationBucketSampler
from speechssl.errors import ConfigError

BUDGET = 60.0
# en : de : sw : yo = 100 : 25 : 5 : 1 — yo is upsampled ~30x at alpha = 0.
HOURS = {"en": 2.0, "de": 0.5, "sw": 0.1, "yo": 0.02}


def labelled_cut(cut_id: str, duration: float, language: str | None) -> MonoCut:
    if language is None:
        return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0)
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, language=language)
    return MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, supervisions=[sup])


def make_corpus(hours: dict[str, float], seed: int = 0) -> list[MonoCut]:
    """Lognormal durations (0.5-15 s) until every language has its hours; no audio."""
    rng = np.random.default_rng(seed)
    cuts = []
    for language, h in hours.items():
        total, i = 0.0, 0
        while total < h * 3600:
            duration = round(float(np.clip(rng.lognormal(1.5, 0.6), 0.5, 15.0)), 3)
            cuts.append(labelled_cut(f"{language}-{i:05d}", duration, language))
            total += duration
            i += 1
    return cuts


@pytest.fixture(scope="module")
def cuts() -> list[MonoCut]:
    return make_corpus(HOURS)


@pytest.fixture(scope="module")
def durations(cuts) -> dict[str, float]:
    return {c.id: c.duration for c in cuts}


def balanced(cuts, **kwargs) -> DurationBucketSampler:
    kwargs.setdefault("batch_seconds", BUDGET)
    return DurationBucketSampler(cuts, **kwargs)


def ids_of(batches) -> list[list[str]]:
    return [[c.id for c in batch] for batch in batches]


def language_of(cut_id: str) -> str:
    return cut_id.split("-")[0]


# ---------------------------------------------------------------- p ∝ n^alpha


def test_language_probabilities_follow_n_to_the_alpha():
    hours = {"en": 100.0, "de": 25.0, "yo": 1.0}
    assert language_probabilities(hours, 1.0) == pytest.approx({"en": 100 / 126, "de": 25 / 126, "yo": 1 / 126})
    assert language_probabilities(hours, 0.5) == pytest.approx({"en": 10 / 16, "de": 5 / 16, "yo": 1 / 16})
    assert language_probabilities(hours, 0) == pytest.approx({"en": 1 / 3, "de": 1 / 3, "yo": 1 / 3})
    assert list(language_probabilities(hours, 0.3)) == ["de", "en", "yo"]
    # Units do not matter, and huge amounts or exponents neither overflow nor underflow.
    seconds = {k: 3600 * v for k, v in hours.items()}
    assert language_probabilities(seconds, 0.7) == pytest.approx(language_probabilities(hours, 0.7))
    extreme = language_probabilities({"a": 1e300, "b": 1e-300}, 3.0)
    assert extreme == {"a": 1.0, "b": 0.0}


@pytest.mark.parametrize(
    "hours, alpha, message",
    [
        ({"en": 1.0}, -0.5, "finite number >= 0"),
        ({"en": 1.0}, float("nan"), "finite number >= 0"),
        ({"en": 1.0}, True, "finite number >= 0"),
        ({}, 0.5, "no languages"),
        ({"en": 1.0, "yo": 0.0}, 0.5, "positive, finite"),
    ],
)
def test_language_probabilities_reject_bad_input(hours, alpha, message):
    with pytest.raises(ConfigError, match=message):
        language_probabilities(hours, alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_seconds_per_language_match_n_to_the_alpha(cuts, alpha):
    natural = seconds_by_language(cuts)
    weights = {lang: n**alpha for lang, n in natural.items()}
    expected = {lang: w / sum(weights.values()) for lang, w in weights.items()}
    sampler = balanced(cuts, language_alpha=alpha, seed=1)
    assert sampler.language_shares == pytest.approx(expected)

    epoch_seconds = sum(natural.values())
    longest = max(c.duration for c in cuts)
    totals = Counter()
    epochs = 4
    for epoch in range(epochs):
        seen = sampler.seconds_by_language(epoch)
        assert set(seen) == set(HOURS)
        assert sum(seen.values()) == pytest.approx(epoch_seconds, abs=len(HOURS) * longest)
        for lang, seconds in seen.items():
            assert seconds / epoch_seconds == pytest.approx(expected[lang], abs=0.005), (epoch, lang)
        totals.update(seen)
    # Epochs tile each language's stream, so the error does not grow with the epochs:
    # after 4 epochs every language is within one cut of its target.
    for lang, seconds in totals.items():
        assert abs(seconds - epochs * expected[lang] * epoch_seconds) <= longest


def test_alpha_one_reproduces_the_unbalanced_plan(cuts):
    # Natural frequencies draw every cut exactly once, so the plan is the plain one.
    plain = balanced(cuts, seed=4)
    natural = balanced(cuts, seed=4, language_alpha=1.0)
    for epoch in range(3):
        assert natural.plan(epoch) == plain.plan(epoch)


def test_epoch_seconds_sets_the_epoch_length(cuts):
    sampler = balanced(cuts, language_alpha=0.5, epoch_seconds=1800.0)
    assert sampler.hours_per_epoch == pytest.approx(0.5)
    for epoch in range(3):
        stats = sampler.plan_stats(epoch)
        assert stats.total_seconds == pytest.approx(1800.0, abs=len(HOURS) * 15.0)
        assert len(sampler.plan(epoch)) == len(sampler.plan(epoch, all_ranks=True))


# ---------------------------------------------------------------- how an epoch is drawn


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_batches_keep_budget_and_spread_and_never_repeat_a_cut(cuts, durations, alpha):
    sampler = balanced(cuts, language_alpha=alpha, seed=2)
    plan = sampler.plan(all_ranks=True)
    for batch in plan:
        lengths = [durations[i] for i in batch]
        assert math.fsum(lengths) <= BUDGET + 1e-9
        assert max(lengths) - min(lengths) <= 10.0 + 1e-9
        assert len(set(batch)) == len(batch)
    # Repeats are spread over batches, not at the cost of empty ones: batches stay nearly as
    # full as without balancing (yo's ~30 copies of its 15 s cuts make a few thin batches).
    plain = balanced(cuts, seed=2).plan_stats()
    assert sampler.plan_stats().mean_seconds_per_batch > 0.9 * plain.mean_seconds_per_batch


def test_upsampled_language_repeats_evenly_and_downsampled_one_does_not_repeat(cuts):
    sampler = balanced(cuts, language_alpha=0.0, seed=6)
    yo = [c.id for c in cuts if language_of(c.id) == "yo"]
    en = [c.id for c in cuts if language_of(c.id) == "en"]
    first = Counter(i for batch in sampler.plan(0, all_ranks=True) for i in batch)
    second = Counter(i for batch in sampler.plan(1, all_ranks=True) for i in batch)
    # yo is upsampled about 30x: every cut appears, each about as often as the others.
    ratio = sampler.language_shares["yo"] * sampler.hours_per_epoch * 3600 / seconds_by_language(cuts)["yo"]
    assert 20 < ratio < 40
    assert min(first[i] for i in yo) >= math.floor(ratio) - 1
    assert max(first[i] for i in yo) <= math.ceil(ratio) + 1
    # en is downsampled to about a third: epochs 0 and 1 take disjoint parts of it.
    used = [i for i in en if first[i]]
    assert 0.2 * len(en) < len(used) < 0.5 * len(en)
    assert max(first[i] for i in en) == 1
    assert not set(used) & {i for i in en if second[i]}


def test_balanced_plan_is_deterministic_per_seed_and_epoch(cuts):
    a = balanced(cuts, language_alpha=0.5, seed=7)
    b = balanced(cuts, language_alpha=0.5, seed=7)
    assert ids_of(a) == ids_of(b)
    assert a.plan(epoch=1) != a.plan(epoch=0)
    assert balanced(cuts, language_alpha=0.5, seed=8).plan(epoch=0) != a.plan(epoch=0)
    a.set_epoch(3)
    assert ids_of(a) == b.plan(epoch=3)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_resume_mid_epoch_is_exact_with_balancing(cuts):
    reference = balanced(cuts, language_alpha=0.3, seed=5)
    reference.set_epoch(2)
    expected = ids_of(reference) + ids_of(reference)  # rest of epoch 2, then epoch 3

    interrupted = balanced(cuts, language_alpha=0.3, seed=5)
    interrupted.set_epoch(2)
    stream = iter(interrupted)
    consumed = [[c.id for c in next(stream)] for _ in range(11)]
    state = roundtrip(interrupted.state_dict())
    assert state["config"]["language_alpha"] == 0.3

    resumed = balanced(cuts, language_alpha=0.3, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    iter(resumed)  # DataLoader calls iter() twice and drops the first iterator unstarted
    assert consumed + ids_of(resumed) + ids_of(resumed) == expected


def test_state_rejects_a_different_alpha_or_relabelled_cuts(cuts):
    state = balanced(cuts, language_alpha=0.5).state_dict()
    with pytest.raises(ConfigError, match="language_alpha 0.5 -> 0.3"):
        balanced(cuts, language_alpha=0.3).load_state_dict(state)
    with pytest.raises(ConfigError, match="language_alpha 0.5 -> None"):
        balanced(cuts).load_state_dict(state)
    relabelled = [labelled_cut(c.id, c.duration, "de" if c.id == cuts[0].id else language_of(c.id)) for c in cuts]
    with pytest.raises(ConfigError, match="different cut set"):
        balanced(relabelled, language_alpha=0.5).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_split_one_balanced_plan_into_disjoint_shards(cuts, world_size):
    for epoch in range(2):
        samplers = [balanced(cuts, language_alpha=0.0, world_size=world_size, rank=r) for r in range(world_size)]
        for s in samplers:
            s.set_epoch(epoch)
        global_plan = samplers[0].plan(all_ranks=True)
        assert all(s.plan(all_ranks=True) == global_plan for s in samplers)
        per_rank = [ids_of(s) for s in samplers]
        assert len({len(p) for p in per_rank}) == 1
        # Rank r holds batches r, r + W, ...: together every drawn copy exactly once.
        interleaved = [per_rank[j % world_size][j // world_size] for j in range(len(global_plan))]
        assert interleaved == global_plan
        drawn = Counter(i for p in per_rank for batch in p for i in batch)
        assert drawn == Counter(i for batch in global_plan for i in batch)
        rank_seconds = [s.seconds_by_language(all_ranks=False) for s in samplers]
        total = samplers[0].seconds_by_language()
        for lang in total:
            assert sum(r.get(lang, 0.0) for r in rank_seconds) == pytest.approx(total[lang])


# ---------------------------------------------------------------- off = unchanged


def test_without_alpha_plans_and_state_are_byte_identical_to_before():
    # Digest recorded with the sampler before language balancing existed.
    cuts = make_corpus(HOURS)
    sampler = DurationBucketSampler(
        cuts, batch_seconds=60.0, seed=3, world_size=2, rank=1, max_cut_seconds=12.0, group_size=2
    )
    record = {
        "plans": [sampler.plan(e, all_ranks=True) for e in range(3)],
        "mine": sampler.plan(1),
        "state": sampler.state_dict(),
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    assert digest == "d59ff2d74418f229c9d0ec8196b9fb91090cce7f003ef5c1ce00580df698592f"
    assert sampler.language_shares == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"language_alpha": -1.0}, "finite number >= 0"),
        ({"language_alpha": float("inf")}, "finite number >= 0"),
        ({"epoch_seconds": 100.0}, "epoch_seconds needs language_alpha"),
        ({"language_alpha": 0.5, "epoch_seconds": 0.0}, "epoch_seconds must be a positive number"),
        ({"language_alpha": 0.5, "epoch_seconds": 30.0}, "less than one batch"),
    ],
)
def test_bad_balance_config_is_a_config_error(cuts, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        balanced(cuts, **kwargs)


def test_balancing_needs_every_cut_labelled(cuts):
    unlabelled = cuts[:50] + [labelled_cut("x-1", 3.0, None), labelled_cut("x-2", 4.0, None)]
    with pytest.raises(ConfigError, match="2 of 52 cuts have no language"):
        balanced(unlabelled, language_alpha=0.5)
    assert balanced(unlabelled).seconds_by_language()["und"] == pytest.approx(7.0)


def test_make_dataloader_passes_the_balance_options_to_its_sampler(cuts):
    loader = make_dataloader(cuts, batch_seconds=BUDGET, seed=2, language_alpha=0.5, epoch_seconds=3600.0)
    assert loader.sampler.language_alpha == 0.5
    assert loader.sampler.hours_per_epoch == pytest.approx(1.0)


# ---------------------------------------------------------------- balanced subset (WavLabLM stage 2)


def test_balanced_subset_caps_hours_per_language(cuts):
    subset = balanced_subset(cuts, hours_per_language=0.25, seed=0)
    seconds = seconds_by_language(subset)
    natural = seconds_by_language(cuts)
    for lang in ("en", "de"):  # capped, and filled to within one short cut of the cap
        assert 0.25 * 3600 - 1.0 < seconds[lang] <= 0.25 * 3600
    for lang in ("sw", "yo"):  # below the cap: kept whole
        assert seconds[lang] == pytest.approx(natural[lang])
    positions = {c.id: k for k, c in enumerate(cuts)}
    assert [positions[c.id] for c in subset] == sorted(positions[c.id] for c in subset)  # input order kept


def test_balanced_subset_is_seeded_and_languages_are_independent(cuts):
    first = [c.id for c in balanced_subset(cuts, 0.1, seed=3)]
    assert first == [c.id for c in balanced_subset(cuts, 0.1, seed=3)]
    assert first != [c.id for c in balanced_subset(cuts, 0.1, seed=4)]
    # Dropping a language does not change what the others draw.
    without_de = [c for c in cuts if language_of(c.id) != "de"]
    assert [c.id for c in balanced_subset(without_de, 0.1, seed=3)] == [i for i in first if language_of(i) != "de"]


def test_balanced_subset_rejects_bad_input(cuts):
    with pytest.raises(ConfigError, match="hours_per_language must be a positive number"):
        balanced_subset(cuts, 0.0)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        balanced_subset(cuts, 1.0, seed=-1)
    with pytest.raises(ConfigError, match="1 of 2 cuts have no language"):
        balanced_subset([labelled_cut("a", 1.0, "en"), labelled_cut("b", 1.0, None)], 1.0)


# ---------------------------------------------------------------- accounting


def test_seconds_by_language_counts_repeats_caps_and_missing_labels():
    cuts = [labelled_cut("a", 4.0, "en"), labelled_cut("b", 20.0, "yo"), labelled_cut("c", 2.5, None)]
    assert seconds_by_language(cuts + cuts[:1]) == {"en": 8.0, "und": 2.5, "yo": 20.0}
    assert seconds_by_language(cuts, max_cut_seconds=10.0) == {"en": 4.0, "und": 2.5, "yo": 10.0}
    # The form a trainer uses on a loaded batch (supervision dicts and real lengths).
    assert sum_by_language(["en", None, "en"], [1.5, 2.0, 0.5]) == {"en": 2.0, "und": 2.0}
    with pytest.raises(ValueError):
        sum_by_language(["en"], [1.0, 2.0])


def test_language_stream_epochs_tile_shuffled_passes():
    cuts = [labelled_cut(f"c{i}", d, "en") for i, d in enumerate([1.0, 2.5, 4.0, 0.5, 3.0])]
    stream = LanguageStream("en", list(range(5)), [c.duration for c in cuts])
    assert stream.seconds == 11.0
    per_epoch = 3.7 * stream.seconds  # upsampled 3.7x
    draws = [stream.draw(epoch, per_epoch, seed=9) for epoch in range(6)]
    # Brute force: lay 30 shuffled passes end to end, take the cuts whose midpoint falls in each window.
    order = np.concatenate([stream._part_of_pass(n, -math.inf, math.inf, seed=9) for n in range(30)])
    lengths = np.asarray([cuts[i].duration for i in order])
    midpoints = np.cumsum(lengths) - lengths / 2
    for epoch, drawn in enumerate(draws):
        window = (midpoints >= epoch * per_epoch) & (midpoints < (epoch + 1) * per_epoch)
        assert sorted(drawn.tolist()) == sorted(order[window].tolist())
        assert set(Counter(drawn.tolist()).values()) <= {2, 3, 4, 5}  # floor(r) - 1 .. ceil(r) + 1
    total = sum(cuts[i].duration for d in draws for i in d)
    assert abs(total - 6 * per_epoch) <= 4.0 / 2  # within half the longest cut
