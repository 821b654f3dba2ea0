"""Representation-health monitors (speechssl.upstream.health) and their place in bench results."""

import math

import pytest
import torch
from torch import Tensor

from speechssl.upstream import Upstream, UpstreamOutput
from speechssl.upstream.health import (
    HEALTH_METRICS,
    HealthAccumulator,
    anisotropy,
    collapse_warnings,
    effective_rank,
    evenly_spaced,
    frame_health,
    health_subset,
    participation_ratio,
    top_pc_share,
    upstream_health,
    utterance_variance_share,
)

FAST = ["train.max_epochs=1", "train.batch_seconds=20", "train.num_workers=0", "cost.energy=false"]


def _gaussian(n: int, d: int, seed: int = 0) -> Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _verdict(frames: Tensor, per_utterance: int = 10) -> list[str]:
    """collapse_warnings on one layer made of ``frames``."""
    index = torch.arange(frames.shape[0]) // per_utterance
    result = {"layers": [0], "frames": frames.shape[0], **{k: [v] for k, v in frame_health(frames, index).items()}}
    return collapse_warnings(result, frames.shape[1])


# ---------------------------------------------------------------- statistics


def test_collapsed_representation_is_flagged_and_isotropic_one_is_not():
    n, d = 4000, 32
    direction = torch.nn.functional.normalize(_gaussian(1, d, seed=1), dim=1)
    collapsed = _gaussian(n, 1, seed=2) * direction + 1e-3 * _gaussian(n, d, seed=3)
    assert effective_rank(collapsed) < 1.5
    assert participation_ratio(collapsed) == pytest.approx(1.0, abs=1e-3)
    warnings = _verdict(collapsed)
    assert len(warnings) == 1 and "COLLAPSED" in warnings[0] and "layer 0" in warnings[0]

    isotropic = _gaussian(n, d, seed=4)
    assert effective_rank(isotropic) > 0.95 * d
    assert participation_ratio(isotropic) > 0.9 * d
    assert top_pc_share(isotropic) < 2.0 / d
    assert _verdict(isotropic) == []


def test_k_equal_singular_values_give_rank_k():
    n, d = 500, 24
    for k in (1, 3, 10):
        # k orthonormal, zero-mean columns (centring leaves them alone) rotated into d dims.
        basis, _ = torch.linalg.qr(_gaussian(n, k, seed=k).double() - _gaussian(n, k, seed=k).double().mean(0))
        rotation, _ = torch.linalg.qr(_gaussian(d, d, seed=10 + k).double())
        frames = 7.0 * basis @ rotation[:k]
        assert effective_rank(frames) == pytest.approx(k, rel=1e-4)
        assert participation_ratio(frames) == pytest.approx(k, rel=1e-6)
        assert top_pc_share(frames) == pytest.approx(1.0 / k, rel=1e-6)
        assert top_pc_share(frames, directions=2) == pytest.approx(min(2.0 / k, 1.0), rel=1e-6)


def test_a_constant_offset_does_not_change_the_spectrum():
    frames = _gaussian(1000, 8)
    assert effective_rank(frames + 100.0) == pytest.approx(effective_rank(frames), rel=1e-6)


def test_collapse_onto_two_directions_with_a_noise_floor_is_flagged_despite_its_rankme():
    # The collapse we diagnosed: 99.9 % of the variance in two directions of a 192-d space.
    n, d = 4000, 192
    scale = torch.ones(d) * math.sqrt(0.001 / (d - 2))
    scale[0], scale[1] = math.sqrt(0.6), math.sqrt(0.399)
    frames = _gaussian(n, d, seed=5) * scale
    assert effective_rank(frames) > 5  # RankMe alone would let it through...
    warnings = _verdict(frames)
    assert len(warnings) == 1 and "two directions hold" in warnings[0]  # ...the top-2 rule does not


def test_thresholds_are_parameters():
    frames = _gaussian(2000, 16)
    frames[:, 0] *= 10  # one loud direction: ~86 % of the variance
    index = torch.arange(2000) // 10
    result = {"layers": [3], **{k: [v] for k, v in frame_health(frames, index).items()}}
    assert collapse_warnings(result, 16) == []
    strict = collapse_warnings(result, 16, max_top_pc_share=0.5)
    assert len(strict) == 1 and "layer 3" in strict[0]
    assert len(collapse_warnings(result, 16, min_effective_rank=100.0)) == 1


def test_non_finite_features_warn_and_tiny_dims_are_not_called_collapsed():
    frames = _gaussian(100, 4)
    frames[3, 1] = float("nan")
    assert "not finite" in _verdict(frames)[0]
    assert _verdict(_gaussian(100, 1)) == []  # one dimension is always "one direction"


def test_utterance_variance_share_extremes():
    utterances, per = 40, 25
    index = torch.arange(utterances).repeat_interleave(per)
    constant = _gaussian(utterances, 16).repeat_interleave(per, dim=0)
    assert utterance_variance_share(constant, index) == pytest.approx(1.0, abs=1e-9)
    iid = _gaussian(utterances * per, 16, seed=6)
    share = utterance_variance_share(iid, index)
    chance = (utterances - 1) / (utterances * per - 1)
    assert share < 0.08 and share == pytest.approx(chance, rel=0.3)
    # Any integer labels, in any order.
    shuffled = torch.randperm(len(index), generator=torch.Generator().manual_seed(0))
    assert utterance_variance_share(iid[shuffled], index[shuffled] * 7 + 3) == pytest.approx(share, rel=1e-9)


def test_anisotropy_is_the_exact_mean_pairwise_cosine():
    frames = _gaussian(60, 5) + 0.7
    frames[4] = 0.0  # a zero frame: orthogonal to everything
    unit = torch.nn.functional.normalize(frames.double(), dim=1)
    cosines = unit @ unit.T
    off_diagonal = ~torch.eye(60, dtype=torch.bool)
    assert anisotropy(frames) == pytest.approx(float(cosines[off_diagonal].mean()), abs=1e-12)
    assert abs(anisotropy(_gaussian(5000, 16))) < 0.01
    assert anisotropy(_gaussian(5000, 16) + 50.0) > 0.99  # all frames in one narrow cone


# ---------------------------------------------------------------- the accumulator


def _batch(seed: int, batch: int = 4, frames: int = 30, dim: int = 6, layers: int = 2):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, frames + 1, (batch,), generator=g)
    tensors = [torch.randn(batch, frames, dim, generator=g) for _ in range(layers)]
    ids = [f"utt{seed}-{b}" for b in range(batch)]
    return tensors, lengths, ids


def test_evenly_spaced_frames():
    assert evenly_spaced(4, 10).tolist() == [0, 1, 2, 3]
    assert evenly_spaced(100, 4).tolist() == [12, 37, 62, 87]
    assert evenly_spaced(0, 4).tolist() == []


def test_accumulator_memory_is_bounded():
    def fed(num_batches: int) -> HealthAccumulator:
        acc = HealthAccumulator(max_frames=40, frames_per_utterance=4)  # every utterance has >= 5 frames
        for seed in range(num_batches):
            acc.update(*_batch(seed, frames=30))
        return acc

    few, many = fed(4), fed(40)
    assert few.num_utterances == many.num_utterances == 10
    assert few.num_frames == many.num_frames == 40
    # Feeding the same utterances again adds nothing.
    acc = fed(4)
    acc.update(*_batch(0, frames=30))
    assert acc.result() == few.result()


def test_accumulator_is_independent_of_order_and_batching():
    batches = [_batch(seed) for seed in range(12)]
    forward = HealthAccumulator(max_frames=100, frames_per_utterance=5)
    for batch in batches:
        forward.update(*batch)
    backward = HealthAccumulator(max_frames=100, frames_per_utterance=5)
    for layers, lengths, ids in reversed(batches):
        for b in reversed(range(len(ids))):  # one utterance at a time
            backward.update([layer[b : b + 1] for layer in layers], lengths[b : b + 1], ids[b : b + 1])
    assert forward.result() == backward.result()


def test_padding_frames_are_never_read():
    layers, lengths, ids = _batch(0, batch=6, frames=40)
    garbage = []
    for layer in layers:
        noisy = layer.clone()
        for b, n in enumerate(lengths.tolist()):
            noisy[b, n:] = 1e6  # padding full of garbage
        garbage.append(noisy)
    clean, dirty = HealthAccumulator(frames_per_utterance=1000), HealthAccumulator(frames_per_utterance=1000)
    clean.update(layers, lengths, ids)
    dirty.update(garbage, lengths, ids)
    assert clean.result() == dirty.result()
    assert clean.num_frames == int(lengths.sum())


def test_result_has_every_metric_per_layer():
    acc = HealthAccumulator(layer_ids=[2, 5])
    acc.update(*_batch(0, batch=8))
    result = acc.result()
    assert result["layers"] == [2, 5] and result["dim"] == 6 and result["utterances"] == 8
    for name in HEALTH_METRICS:
        assert len(result[name]) == 2 and all(math.isfinite(v) for v in result[name])
    assert HealthAccumulator().result()["effective_rank"] == []
    with pytest.raises(ValueError, match="layers"):
        acc.update(*_batch(1, layers=3))


# ---------------------------------------------------------------- running an upstream


class _CollapsedUpstream(Upstream):
    """16-d frames that all lie on one line (a little noise): a collapsed encoder."""

    frame_rate = 100.0
    num_layers = 2
    feature_dim = 16

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        frames = waveforms[:, : waveforms.shape[1] // 160 * 160].reshape(waveforms.shape[0], -1, 160)
        loudness = frames.abs().mean(-1, keepdim=True)
        direction = torch.linspace(-1.0, 1.0, self.feature_dim)
        line = loudness * direction + 1e-4 * torch.sin(torch.arange(self.feature_dim) * loudness * 1e3)
        return UpstreamOutput([line, 2 * line], lengths // 160)

    def fingerprint(self) -> str:
        return "collapsed-test-1"


def test_health_subset_is_fixed_and_order_free(tiny_corpus):
    from speechssl.data.manifests import load_cuts

    cuts = list(load_cuts(tiny_corpus, "dev"))
    chosen = health_subset(cuts, 5)
    assert len(chosen) == 5 and [c.id for c in chosen] == [c.id for c in cuts if c in chosen]
    assert [c.id for c in health_subset(list(reversed(cuts)), 5)] == [c.id for c in reversed(chosen)]
    assert health_subset(cuts, 5, seed=1) != chosen


def test_upstream_health_flags_a_collapsed_upstream(tiny_corpus):
    from speechssl.data.manifests import load_cuts

    cuts = list(load_cuts(tiny_corpus, "dev"))
    health = upstream_health(_CollapsedUpstream(), cuts, max_utterances=6, batch_size=4)
    assert health["layers"] == [0, 1] and health["utterances"] == 6 and health["dim"] == 16
    assert len(health["warnings"]) == 2 and all("COLLAPSED" in w for w in health["warnings"])
    assert upstream_health(_CollapsedUpstream(), cuts, max_utterances=6, batch_size=1, layers=[1])["layers"] == [1]


def test_bench_result_contains_health(tiny_corpus, tmp_path, capsys, monkeypatch):
    from speechssl import upstream as upstream_registry
    from speechssl.config import load_config
    from speechssl.data.manifests import load_cuts
    from speechssl.downstream.config import BenchConfig
    from speechssl.downstream.runner import format_result, run_bench
    from speechssl.upstream import build_upstream

    def config(*overrides: str) -> BenchConfig:
        return load_config(BenchConfig, None, [f"data={tiny_corpus}", "task=lid", f"cache.dir={tmp_path / 'cache'}",
                                               "health_utterances=8", *FAST, *overrides])

    result = run_bench(config(), tmp_path / "mfcc", progress=False)
    health = result["health"]
    assert health["source"] == "cache" and health["layers"] == [0] and health["utterances"] == 8
    assert health["warnings"] == [] and 3 < health["effective_rank"][0] <= 39
    # Read from the fp16 cache, it matches a live pass over the same utterances.
    live = upstream_health(build_upstream("mfcc"), load_cuts(tiny_corpus, "dev"), max_utterances=8)
    for name in HEALTH_METRICS:
        assert health[name][0] == pytest.approx(live[name][0], rel=1e-3, abs=2e-4)
    assert "health (8 dev utterances" in format_result(result)
    assert run_bench(config(), tmp_path / "mfcc", progress=False)["health"] == health  # reused as written

    assert run_bench(config("health_utterances=0"), tmp_path / "off", progress=False)["health"] is None

    # A collapsed upstream, features computed live: warned on stderr, in the result and its summary.
    monkeypatch.setattr(upstream_registry, "_REGISTRY", dict(upstream_registry._REGISTRY))  # undone after the test
    upstream_registry.register_upstream("collapsed")(_CollapsedUpstream)
    capsys.readouterr()
    result = run_bench(config("upstream=collapsed", "cache.enabled=false"), tmp_path / "collapsed", progress=False)
    assert result["health"]["source"] == "upstream" and len(result["health"]["warnings"]) == 2
    assert "COLLAPSED" in capsys.readouterr().err
    assert "COLLAPSED" in format_result(result)
