"""Probe families: shapes, padding invariance, a training step, MAC counts and the speaker margins."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.cost import _native_kernels, count_probe_macs
from speechssl.downstream.probes import PROBES
from speechssl.downstream.probes.base import AttentiveStatsPooling, masked_mean_std
from speechssl.downstream.probes.encoders import _fused_cpu_lstm, sinusoidal_positions
from speechssl.downstream.probes.speaker import ECAPA, CosineScorer, XVector, _res2_scale

IN_DIM, NUM_OUTPUTS = 6, 5
# The hybrid CTC-attention probes have their own tests (tests of seq2seq).
NAMES = sorted(name for name in PROBES if not name.endswith("_ctcattn"))
TRAINABLE = [name for name in NAMES if PROBES[name].trainable]


def tiny_cfg(**overrides) -> ProbeConfig:
    values = dict(hidden=16, heads=2, num_layers=2, kernel_size=5, embed_dim=8, dropout=0.0)
    return ProbeConfig(**{**values, **overrides})


def build(name: str, in_dim: int = IN_DIM, num_outputs: int = NUM_OUTPUTS, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return PROBES[name].build(in_dim, num_outputs, tiny_cfg(**overrides))


def run(probe: torch.nn.Module, name: str, x: torch.Tensor, lengths: torch.Tensor):
    """What a task reads from the probe: embeddings for verification-only probes, else the forward pass."""
    return probe.embed(x, lengths) if PROBES[name].output_kind == "verification" else probe(x, lengths)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_follows_the_output_kind(name):
    probe = build(name).eval()
    x, lengths = torch.randn(3, 25, IN_DIM), torch.tensor([25, 17, 9])
    kind = PROBES[name].output_kind
    assert probe.output_kind == kind
    if kind == "frames":
        logits, out_lengths = probe(x, lengths)
        assert logits.shape[0] == 3 and logits.shape[-1] == NUM_OUTPUTS
        assert logits.shape[1] >= int(out_lengths.max()) and torch.equal(out_lengths, lengths)
    elif kind in ("utterance", "embedding"):
        assert probe(x, lengths).shape == (3, NUM_OUTPUTS)
    if kind == "embedding":
        assert probe.embed(x, lengths).shape == (3, 8)
    if kind == "verification":
        assert probe.embed(x, lengths).shape == (3, 2 * IN_DIM)


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("name", NAMES)
def test_padding_in_a_batch_does_not_change_an_utterance(name):
    probe = build(name).eval()
    x = torch.randn(1, 30, IN_DIM)
    garbage = torch.randn(1, 12, IN_DIM) * 100
    batch = torch.cat([torch.cat([x, garbage], dim=1), torch.randn(1, 42, IN_DIM)])
    # Grad on and off: without grad, eval-mode attention takes PyTorch's fused fast path.
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            alone = run(probe, name, x, torch.tensor([30]))
            batched = run(probe, name, batch, torch.tensor([30, 42]))
        if PROBES[name].output_kind == "frames":
            torch.testing.assert_close(alone[0][0], batched[0][0, :30], atol=1e-5, rtol=1e-4)
        else:
            torch.testing.assert_close(alone[0], batched[0], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_bilstm_on_cpu_computes_the_packed_lstm_on_the_padded_batch():
    # With oneDNN on, the CPU path runs each direction on the padded batch (the backward one
    # on per-utterance reversed frames); with it off, nn.LSTM runs on the packed batch. Same
    # outputs, padding zeros, gradients and dropout draws (three layers: two dropouts between).
    encoder = build("bilstm_ctc", num_layers=3, dropout=0.3).encoder
    x = torch.randn(4, 23, IN_DIM)
    x[1, 17:] = 1e3  # garbage in the padding
    lengths = torch.tensor([23, 17, 0, 9])  # an empty utterance keeps its first frame
    for training in (True, False):
        encoder.train(training)
        results = []
        for fused in (True, False):
            # _native_kernels: oneDNN off, as while counting MACs.
            with contextlib.nullcontext() if fused else _native_kernels():
                assert _fused_cpu_lstm(x) == fused
                torch.manual_seed(3)
                inputs = x.clone().requires_grad_()
                out, out_lengths = encoder(inputs, lengths)
                out.square().mean().backward()
            assert torch.equal(out_lengths, lengths)
            results.append((out.detach(), inputs.grad, [p.grad.clone() for p in encoder.parameters()]))
            encoder.zero_grad()
        (fused_out, fused_input_grad, fused_grads), (packed_out, packed_input_grad, packed_grads) = results
        assert (fused_out[1, 17:] == 0).all() and (fused_out[2, 1:] == 0).all()
        torch.testing.assert_close(fused_out, packed_out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fused_input_grad, packed_input_grad, atol=1e-5, rtol=1e-4)
        for fused_grad, packed_grad in zip(fused_grads, packed_grads):
            torch.testing.assert_close(fused_grad, packed_grad, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- training


def task_loss(probe: torch.nn.Module, name: str, x, lengths, targets, labels) -> torch.Tensor:
    kind = PROBES[name].output_kind
    if kind == "frames":
        logits, out_lengths = probe(x, lengths)
        log_probs = logits.log_softmax(-1).transpose(0, 1)  # [T, B, V]
        return F.ctc_loss(log_probs, targets, out_lengths, torch.full((len(x),), targets.shape[1]), blank=0)
    if kind == "embedding":
        return probe.loss(x, lengths, labels)
    return F.cross_entropy(probe(x, lengths), labels)


@pytest.mark.parametrize("name", TRAINABLE)
def test_a_few_updates_lower_the_loss_with_finite_gradients(name):
    probe = build(name, margin=0.1, scale=10.0).train()
    generator = torch.Generator().manual_seed(1)
    x, lengths = torch.randn(4, 20, IN_DIM, generator=generator), torch.tensor([20, 18, 15, 11])
    targets = torch.randint(1, NUM_OUTPUTS, (4, 3), generator=generator)  # CTC labels, 0 is blank
    labels = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = task_loss(probe, name, x, lengths, targets, labels)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in probe.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_cosine_has_no_parameters_and_refuses_to_classify():
    probe = build("cosine")
    assert not PROBES["cosine"].trainable
    assert sum(p.numel() for p in probe.parameters()) == 0
    x, lengths = torch.randn(2, 10, IN_DIM), torch.tensor([10, 6])
    torch.testing.assert_close(probe.embed(x, lengths), masked_mean_std(x, lengths))
    with pytest.raises(TypeError, match="cannot produce logits"):
        probe(x, lengths)


# ---------------------------------------------------------------- building blocks


def test_attentive_pooling_with_constant_scores_is_plain_statistics_pooling():
    pool = AttentiveStatsPooling(4, 8, channel_wise=True, global_context=True)
    torch.nn.init.zeros_(pool.scorer[-1].weight)  # every frame scores the same: uniform weights
    x, lengths = torch.randn(2, 9, 4), torch.tensor([9, 5])
    x[1, 5:] = 1e4  # garbage in the padding
    torch.testing.assert_close(pool(x, lengths), masked_mean_std(x, lengths))


def test_sinusoidal_positions_handle_an_odd_width():
    codes = sinusoidal_positions(7, 5)
    assert codes.shape == (7, 5)
    torch.testing.assert_close(codes[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize("hidden, scale", [(16, 8), (12, 6), (64, 8), (7, 7), (11, 1)])
def test_ecapa_res2_groups_divide_the_channels(hidden, scale):
    assert _res2_scale(hidden) == scale
    probe = ECAPA(IN_DIM, NUM_OUTPUTS, tiny_cfg(hidden=hidden)).eval()
    assert probe(torch.randn(2, 12, IN_DIM), torch.tensor([12, 7])).shape == (2, NUM_OUTPUTS)


# ---------------------------------------------------------------- margins


@pytest.mark.parametrize("family", [ECAPA, XVector])
def test_the_margin_raises_the_training_loss(family):
    torch.manual_seed(0)
    probe = family(IN_DIM, 3, tiny_cfg(margin=0.0)).eval()
    x, lengths, targets = torch.randn(6, 20, IN_DIM), torch.full((6,), 20), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = probe.loss(x, lengths, targets)
    torch.testing.assert_close(plain, F.cross_entropy(probe(x, lengths), targets))
    probe.margin = 0.3
    assert probe.loss(x, lengths, targets) > plain


def test_the_angular_margin_keeps_the_target_logit_decreasing_in_the_angle():
    probe = ECAPA(IN_DIM, 3, tiny_cfg(margin=0.5))
    angles = torch.linspace(0.0, torch.pi, 200)
    penalised = probe.penalise(torch.cos(angles))
    assert (penalised.diff() <= 1e-6).all()
    # cos(theta + m) where theta + m <= pi; off by ~1e-4 at theta = 0, where sin^2 is clamped for the gradient
    inside = angles <= torch.pi - 0.5
    torch.testing.assert_close(penalised[inside], torch.cos(angles[inside] + 0.5), atol=2e-4, rtol=0)


# ---------------------------------------------------------------- MACs


def test_linear_ctc_macs_are_frames_times_in_times_out():
    probe = build("linear_ctc", in_dim=39, num_outputs=40)
    assert count_probe_macs(probe, 39, frame_rate=50.0) == 50 * 39 * 40


def test_bilstm_macs_match_the_gate_formula():
    hidden, layers, frames = 16, 2, 50
    probe = build("bilstm_ctc", hidden=hidden, num_layers=layers)
    lstm_inputs = [IN_DIM] + [2 * hidden] * (layers - 1)
    gates = sum(4 * (inputs + hidden) * hidden * 2 for inputs in lstm_inputs)  # 2 directions
    assert count_probe_macs(probe, IN_DIM, frame_rate=50.0) == frames * (gates + 2 * hidden * NUM_OUTPUTS)


def test_transformer_macs_count_the_attention_matmuls():
    hidden, frames = 16, 40
    probe = build("transformer_ctc", hidden=hidden, num_layers=1)
    projections = IN_DIM * hidden + 4 * hidden * hidden + 2 * 4 * hidden * hidden + hidden * NUM_OUTPUTS
    attention = 2 * frames * hidden  # QK^T and AV, per query frame, summed over heads
    assert count_probe_macs(probe, IN_DIM, frame_rate=40.0) == frames * (projections + attention)


def test_cosine_costs_no_macs_and_counting_restores_the_training_mode():
    assert count_probe_macs(build("cosine"), IN_DIM, frame_rate=50.0) == 0
    probe = build("ecapa").train()
    assert count_probe_macs(probe, IN_DIM, frame_rate=50.0) > 0
    assert probe.training


@pytest.mark.parametrize("name", ["mlp_ctc", "cnn_pool", "bilstm_pool", "xvector", "ecapa", "asp_linear"])
def test_macs_of_frame_wise_and_convolutional_probes_grow_linearly_with_seconds(name):
    probe = build(name)
    one, three = (count_probe_macs(probe, IN_DIM, frame_rate=50.0, seconds=s) for s in (1.0, 3.0))
    # Only the utterance-level layers (after pooling) do not scale with the length.
    per_utterance = one - (three - one) // 2
    assert 0 <= per_utterance < one / 5
    assert count_probe_macs(probe, IN_DIM, frame_rate=50.0, seconds=5.0) == 5 * one - 4 * per_utterance


def test_attention_probes_grow_faster_than_linearly():
    probe = build("conformer_ctc")
    one, two = (count_probe_macs(probe, IN_DIM, frame_rate=50.0, seconds=s) for s in (1.0, 2.0))
    assert two > 2 * one


def test_counting_refuses_an_empty_pass():
    with pytest.raises(ValueError):
        count_probe_macs(build("linear_ctc"), IN_DIM, frame_rate=50.0, seconds=0.0)
