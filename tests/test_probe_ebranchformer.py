"""E-Branchformer probes (ML-SUPERB 2.0's third downstream encoder) and the pre-encoder projection.

The generic probe tests (test_probes.py, test_task_matrix.py) already run every registered
probe through shapes, padding and training; here are the checks specific to the new body
(exact size, padding with dropout configured, even kernels) and to ``probe_cfg.pre_project``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechssl.config import from_dict
from speechssl.downstream.config import BenchConfig, ProbeConfig
from speechssl.downstream.probes import PROBES, build_probe
from speechssl.downstream.probes.encoders import CGMLP_EXPANSION, EBranchformer, PreProjected
from speechssl.errors import ConfigError

IN_DIM, NUM_OUTPUTS = 12, 7


def cfg(**overrides) -> ProbeConfig:
    values = dict(hidden=16, heads=2, num_layers=2, kernel_size=5, embed_dim=8, dropout=0.0)
    return ProbeConfig(**{**values, **overrides})


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(name: str, in_dim: int = IN_DIM, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return PROBES[name].build(in_dim, NUM_OUTPUTS, cfg(**overrides))


# ---------------------------------------------------------------- the encoder


def test_encoder_keeps_frames_and_lengths():
    encoder = EBranchformer(IN_DIM, cfg()).eval()
    x, lengths = torch.randn(3, 21, IN_DIM), torch.tensor([21, 14, 3])
    hidden, out_lengths = encoder(x, lengths)
    assert hidden.shape == (3, 21, 16) and encoder.out_dim == 16
    assert torch.equal(out_lengths, lengths) and torch.isfinite(hidden).all()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel_size", [4, 7])  # an even kernel pads asymmetrically
def test_padding_in_a_batch_does_not_change_an_utterance(kernel_size):
    # Dropout is configured but off in eval mode; the padding holds large garbage, not zeros.
    torch.manual_seed(0)
    encoder = EBranchformer(IN_DIM, cfg(dropout=0.3, kernel_size=kernel_size)).eval()
    x = torch.randn(1, 17, IN_DIM)
    garbage = 100 * torch.randn(1, 13, IN_DIM)
    batch = torch.cat([torch.cat([x, garbage], dim=1), torch.randn(1, 30, IN_DIM)])
    # Grad on and off: without grad, eval-mode attention takes PyTorch's fused fast path.
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            alone, _ = encoder(x, torch.tensor([17]))
            batched, _ = encoder(batch, torch.tensor([17, 30]))
        torch.testing.assert_close(alone[0], batched[0, :17], atol=1e-5, rtol=1e-4)


def test_parameter_count_matches_the_architecture():
    h, k, layers, e = 16, 5, 2, CGMLP_EXPANSION
    encoder = EBranchformer(IN_DIM, cfg(hidden=h, kernel_size=k, num_layers=layers))
    norm = 2 * h
    feed_forward = norm + (h * 4 * h + 4 * h) + (4 * h * h + h)
    attention = norm + 4 * h * h + 4 * h  # q, k, v and output projections with biases
    half = e * h // 2
    cgmlp = norm + (h * e * h + e * h) + 2 * half + (half * k + half) + (half * h + h)
    merge = (2 * h * k + 2 * h) + (2 * h * h + h)
    block = 2 * feed_forward + attention + cgmlp + merge + norm
    assert params(encoder) == (IN_DIM * h + h) + layers * block


def test_size_is_close_to_a_conformer_of_the_same_width():
    for hidden in (16, 64):
        conformer, ebranchformer = (params(build(f"{body}_ctc", hidden=hidden)) for body in ("conformer", "ebranchformer"))
        # Same FFNs and attention; the cgMLP and merge outweigh the convolution module a little.
        assert conformer < ebranchformer < 1.5 * conformer


def test_one_update_lowers_a_ctc_loss():
    probe = build("ebranchformer_ctc").train()
    generator = torch.Generator().manual_seed(1)
    x, lengths = torch.randn(4, 20, IN_DIM, generator=generator), torch.tensor([20, 18, 15, 11])
    targets = torch.randint(1, NUM_OUTPUTS, (4, 3), generator=generator)  # 0 is the blank

    def ctc_loss() -> torch.Tensor:
        logits, out_lengths = probe(x, lengths)
        log_probs = logits.log_softmax(-1).transpose(0, 1)
        return F.ctc_loss(log_probs, targets, out_lengths, torch.full((4,), 3), blank=0)

    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-3)
    before = ctc_loss()
    before.backward()
    grads = [p.grad for p in probe.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    with torch.no_grad():
        assert ctc_loss() < before.detach()


@pytest.mark.parametrize(("name", "needs"), [
    ("ebranchformer_ctc", "frames"), ("ebranchformer_pool", "utterance"), ("ebranchformer_ctcattn", "sequence"),
])
def test_the_three_probes_build_through_the_registry(name, needs):
    assert "E-Branchformer" in PROBES[name].description
    probe = build_probe(name, needs=needs, in_dim=IN_DIM, num_outputs=NUM_OUTPUTS, cfg=cfg()).eval()
    assert isinstance(probe.encoder, EBranchformer)
    x, lengths = torch.randn(2, 9, IN_DIM), torch.tensor([9, 6])
    out = probe(x, lengths)
    if needs == "utterance":
        assert out.shape == (2, NUM_OUTPUTS)
    else:
        assert out[0].shape == (2, 9, NUM_OUTPUTS) and torch.equal(out[1], lengths)


# ---------------------------------------------------------------- pre_project

ENCODER_PROBES = ["linear_ctc", "mean_linear", "asp_linear", "transformer_pool", "bilstm_ctc",
                  "ebranchformer_ctc", "ebranchformer_ctcattn"]


@pytest.mark.parametrize("name", ENCODER_PROBES)
def test_pre_projection_keeps_the_output_shape(name):
    x, lengths = torch.randn(2, 11, IN_DIM), torch.tensor([11, 7])
    with torch.no_grad():
        plain, projected = (build(name, pre_project=p).eval()(x, lengths) for p in (0, 4))
    assert isinstance(build(name, pre_project=4).encoder, PreProjected)
    if isinstance(plain, tuple):
        assert plain[0].shape == projected[0].shape and torch.equal(plain[1], projected[1])
    else:
        assert plain.shape == projected.shape


@pytest.mark.parametrize("name", ENCODER_PROBES)
def test_pre_projection_adds_exactly_one_linear_layer(name):
    pre = 4
    # The same probe on pre-dim features, plus the in_dim -> pre layer (weights and bias).
    assert params(build(name, pre_project=pre)) == params(build(name, in_dim=pre)) + IN_DIM * pre + pre


def test_the_gradient_reaches_the_projection():
    probe = build("ebranchformer_ctc", pre_project=4)
    logits, _ = probe(torch.randn(2, 8, IN_DIM), torch.tensor([8, 5]))
    logits.logsumexp(-1).sum().backward()
    for grad in (probe.encoder.project.weight.grad, probe.encoder.project.bias.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["xvector", "ecapa", "cosine"])
def test_speaker_probes_ignore_the_pre_projection(name):
    assert params(build(name, pre_project=4)) == params(build(name))


def test_a_negative_width_and_an_empty_projection_are_refused():
    with pytest.raises(ConfigError, match="pre_project"):
        from_dict(BenchConfig, {"probe_cfg": {"pre_project": -1}})
    with pytest.raises(ConfigError, match="pre_project"):
        PreProjected(IN_DIM, cfg(pre_project=0), EBranchformer)
