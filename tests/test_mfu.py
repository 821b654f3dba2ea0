"""MFU logging and the GPU-path options of pretraining (issue 18), tested on CPU.

FLOP counting of a training step, the measured matmul peak, the trainer's mfu /
audio_s_per_s records; the fp16 loss-scale floor, TF32 switches, activation checkpointing
(same loss and gradients), padded shape buckets (same loss, bounded shapes) and a compiled
encoder (slow: inductor builds C++ on the first run).
"""

import math

import pytest
import torch

from conftest import TINY_RUN, TINY_W2V2

from speechssl.config import load_config
from speechssl.data.collate import ShapeBuckets, collate_waveforms, make_dataloader
from speechssl.data.manifests import load_cuts
from speechssl.models.config import EncoderConfig
from speechssl.models.objectives import Wav2Vec2Pretraining
from speechssl.models.objectives.contrastive import ContrastiveConfig
from speechssl.pretrain import PretrainConfig, read_metrics
from speechssl.pretrain import mfu as mfu_module
from speechssl.pretrain import perf
from speechssl.pretrain.mfu import MfuMeter, count_flops, datasheet_peak, measured_peak
from speechssl.pretrain.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [*TINY_W2V2, "wav2vec2.num_negatives=10", *TINY_RUN]


def small_config(data, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [*SMALL, f"data.dir={data}", *extra])


def tiny_model(dropout: float = 0.0, conv_norm: str = "group_norm") -> Wav2Vec2Pretraining:
    cfg = EncoderConfig(
        conv_layers=[[32, 10, 5, 0], [32, 3, 2, 0], [32, 3, 2, 0], [32, 3, 2, 0], [32, 3, 2, 0], [32, 2, 2, 0],
                     [32, 2, 2, 0]],
        conv_norm=conv_norm, hidden=32, layers=2, heads=2, ffn=64, pos_conv_kernel=16, pos_conv_groups=4,
        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout, feature_dropout=dropout,
        layerdrop=0.0,
    )
    torch.manual_seed(0)
    return Wav2Vec2Pretraining(cfg, ContrastiveConfig(codevector_dim=16, final_dim=16, num_negatives=5,
                                                          target_dropout=dropout)).train()


def batch(lengths=(8000, 6000, 4100), seed=1):
    generator = torch.Generator().manual_seed(seed)
    waves = [torch.randn(n, generator=generator) * 0.1 for n in lengths]
    return waves


def loss_and_grads(model, waveforms, lengths, seed=3):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(waveforms, lengths, num_updates=0)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


# ---------------------------------------------------------------- FLOPs and peak


def test_step_flops_count_forward_and_backward_including_cpu_attention():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 64, 16, requires_grad=True)
    mask = torch.ones(2, 1, 1, 64, dtype=torch.bool)

    def attention(backward: bool):
        def run():
            out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
            if backward:
                out.sum().backward()
        return run

    forward = count_flops(attention(False))
    both = count_flops(attention(True))
    assert forward == 2 * 2 * (2 * 4 * 64 * 64 * 16)  # QK^T and AV
    assert both >= 3 * forward  # the CPU flash backward is counted too (torch's sdpa backward formula)

    model = tiny_model()
    waves, lengths, _ = collate_waveforms(batch())
    fwd = count_flops(lambda: model(waves, lengths))
    step = count_flops(lambda: model(waves, lengths).loss.backward())
    assert fwd > 0 and 2.0 * fwd < step < 4.0 * fwd


def test_measured_peak_is_cached_and_datasheet_known():
    first = measured_peak("cpu", torch.float32, size=256, threads=1)
    assert first["flops_per_second"] > 1e8 and "256x256" in first["source"] and "1 thread" in first["source"]
    assert measured_peak("cpu", torch.float32, size=256, threads=1) is first
    h200 = datasheet_peak("NVIDIA H200", "bf16")
    assert h200 is not None and h200["flops_per_second"] == pytest.approx(989.4e12)
    assert datasheet_peak("NVIDIA H100 PCIe", "bf16")["flops_per_second"] == pytest.approx(756.5e12)
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "fp32", tf32=True)["flops_per_second"] == pytest.approx(156e12)
    assert datasheet_peak("Some Other GPU", "bf16") is None


def test_meter_counts_the_first_update_then_reports_windows(monkeypatch):
    monkeypatch.setattr(mfu_module, "measured_peak", lambda device, dtype: {"flops_per_second": 1e9, "source": "x"})
    lines = []
    meter = MfuMeter(torch.device("cpu"), "fp32", world_size=2, say=lines.append)
    a = torch.randn(64, 64)
    with meter.measure():
        a @ a  # 2 * 64^3 FLOPs
    meter.add(4.0)  # 4 s of audio over 2 processes: 2 s in this one
    assert meter.flops_per_audio_second == pytest.approx(2 * 64**3 / 2.0)
    assert len(lines) == 1 and "GFLOP per audio-second" in lines[0]
    assert meter.stats() == {}  # the counted update is not part of any window
    for _ in range(2):
        with meter.measure():
            a @ a
        meter._elapsed = 0.5  # pin the clock
        meter.add(4.0)
    stats = meter.stats()
    assert stats["audio_s_per_s"] == pytest.approx(8.0)
    assert stats["mfu"] == pytest.approx(meter.flops_per_audio_second * 8.0 / 2 / 1e9, rel=1e-3)
    assert meter.stats() == {}


def test_training_logs_mfu_and_audio_seconds_per_second(tiny_corpus, tmp_path, capsys):
    from speechssl.pretrain import pretrain

    pretrain(small_config(tiny_corpus, "steps=3", "data.valid_split="), tmp_path / "run", progress=False)
    train = read_metrics(tmp_path / "run")
    assert "mfu" not in train[0]  # the first update is the counted one
    for record in train[1:]:
        assert record["audio_s_per_s"] > 0 and 0 < record["mfu"] < 1.5
    assert "GFLOP per audio-second" in capsys.readouterr().err
    pretrain(small_config(tiny_corpus, "steps=4", "data.valid_split=", "perf.mfu=false"), tmp_path / "run",
             progress=False)  # resumes: perf is not part of the run's identity
    last = read_metrics(tmp_path / "run")[-1]
    assert last["step"] == 4 and "mfu" not in last and "audio_s_per_s" not in last  # its first update


# ---------------------------------------------------------------- fp16 loss-scale floor


def test_loss_scale_guard_is_one_clear_error():
    perf.check_loss_scale(1e-3, 1e-4, step=5, overflows=2)
    with pytest.raises(perf.LossScaleUnderflow, match=r"fp16 loss scale fell to 6\.1e-05 .*step 9.*bf16") as info:
        perf.check_loss_scale(2.0**-14, 1e-4, step=9, overflows=31)
    assert "\n" not in str(info.value)


def test_overflowing_fp16_gradients_stop_at_the_scale_floor(tiny_corpus, tmp_path):
    """A CPU GradScaler stands in for CUDA's; every gradient is inf: skipped updates, then the floor."""
    cfg = small_config(tiny_corpus, "steps=20", "save_every=100", "data.valid_split=", "max_bad_steps=2",
                       "perf.min_loss_scale=0.1", "perf.mfu=false")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    for p in trainer.model.parameters():
        p.register_hook(lambda g: torch.full_like(g, math.inf))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    try:
        # 1.0 -> 0.5 -> 0.25 -> 0.125 -> 0.0625 < 0.1: four overflows, more than max_bad_steps=2
        with pytest.raises(perf.LossScaleUnderflow, match="at step 3 after 4 overflowing"):
            trainer.run(fresh=True)
    finally:
        trainer.close()
    records = read_metrics(tmp_path / "run")
    assert [r["skipped_steps"] for r in records] == [1, 2, 3]
    assert [r["loss_scale"] for r in records] == [0.5, 0.25, 0.125]
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())  # nothing was applied


# ---------------------------------------------------------------- TF32


def test_tf32_is_set_for_cuda_only():
    previous = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        assert perf.configure_tf32(torch.device("cpu"), True) == {}
        assert torch.get_float32_matmul_precision() == previous[0]
        assert perf.configure_tf32(torch.device("cuda", 0), True)["float32_matmul_precision"] == "high"
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        perf.configure_tf32(torch.device("cuda", 0), False)
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision(previous[0])
        torch.backends.cudnn.allow_tf32 = previous[1]
    assert PretrainConfig().perf.tf32  # on by default (a CUDA run uses it)


# ---------------------------------------------------------------- activation checkpointing


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny_model(dropout=0.1)  # dropout on: the recomputation must redraw the same masks
    waves, lengths, _ = collate_waveforms(batch())
    plain_loss, plain = loss_and_grads(model, waves, lengths)
    perf.set_activation_checkpointing(model.encoder, True)
    ckpt_loss, ckpt = loss_and_grads(model, waves, lengths)
    assert torch.equal(plain_loss, ckpt_loss)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


# ---------------------------------------------------------------- shape buckets


def test_shape_buckets_geometric_and_multiple():
    buckets = ShapeBuckets("geometric", multiple=3200, growth=1.1, max_length=64000)
    ladder = buckets.lengths()
    assert ladder[-1] == 64000 and ladder[0] == 3200 and len(ladder) <= 25
    assert all(n % 3200 == 0 for n in ladder)
    for length in (1, 3199, 3200, 3201, 40000, 63999, 64000):
        padded = buckets(length)
        assert padded in ladder and padded >= length
        assert padded <= max(3200, math.ceil(length * 1.1 / 3200) * 3200)  # <= growth, up to rounding
    assert buckets(70000) == 70400  # beyond max_length: the next multiple
    multiple = ShapeBuckets("multiple", multiple=3200, max_length=24000)
    assert [multiple(n) for n in (1, 3200, 3201, 23000, 24000)] == [3200, 3200, 6400, 24000, 24000]
    unbounded = ShapeBuckets("geometric", multiple=320, growth=1.5)
    assert unbounded(1000) == 1280 and unbounded(1000) in unbounded.lengths(up_to=2000)
    waves, lengths, mask = collate_waveforms(batch(), pad_to=buckets)
    assert waves.shape == (3, 9600) and lengths.tolist() == [8000, 6000, 4100] and mask[0, 8000:].all()


def test_padding_to_a_bucket_leaves_the_loss_unchanged():
    """The model masks padding: more of it changes nothing but float rounding (dropout off,
    since dropout draws per padded element)."""
    for conv_norm in ("group_norm", "layer_norm"):
        model = tiny_model(conv_norm=conv_norm)
        tight = collate_waveforms(batch())
        padded = collate_waveforms(batch(), pad_to=ShapeBuckets("multiple", multiple=16000))
        assert padded[0].shape[1] == 16000 > tight[0].shape[1]
        loss_tight, grads_tight = loss_and_grads(model, tight[0], tight[1])
        loss_padded, grads_padded = loss_and_grads(model, padded[0], padded[1])
        torch.testing.assert_close(loss_padded, loss_tight, rtol=1e-4, atol=1e-5)
        for name in grads_tight:
            torch.testing.assert_close(grads_padded[name], grads_tight[name], rtol=2e-3, atol=1e-5, msg=name)


def test_buckets_bound_the_shapes_of_an_epoch(tiny_corpus):
    cfg = small_config(tiny_corpus, "compile=true")  # shape_buckets=auto -> geometric with compile
    buckets = perf.shape_buckets(cfg)
    assert buckets is not None and buckets.mode == "geometric" and buckets.max_length == 24000  # the crop
    assert buckets.multiple % cfg.encoder.total_stride == 0
    assert perf.shape_buckets(small_config(tiny_corpus)) is None  # auto without compile: off
    assert perf.shape_buckets(small_config(tiny_corpus, "perf.shape_buckets=multiple")).mode == "multiple"

    # Uncropped utterances: every batch has another longest one.
    cuts = [c for c in load_cuts(tiny_corpus, "train") if c.duration >= 0.5]
    longest = int(max(c.duration for c in cuts) * 16000) + 1
    ladder = ShapeBuckets("geometric", multiple=3200, growth=1.1, max_length=longest)

    def widths(pad_to) -> list[int]:
        loader = make_dataloader(cuts, batch_seconds=10.0, seed=0, pad_to=pad_to)
        return [b.waveforms.shape[1] for b in loader]

    plain, bucketed = widths(None), widths(ladder)
    assert len(plain) == len(bucketed) and all(b >= p for p, b in zip(plain, bucketed))
    assert set(bucketed) <= set(ladder.lengths()) and len(ladder.lengths()) <= 30
    assert len(set(bucketed)) < len(set(plain))
    assert sum(bucketed) <= 1.1 * sum(plain) + 3200 * len(plain)  # the price: a bounded amount of padding


def test_training_with_buckets_and_checkpointing_runs(tiny_corpus, tmp_path):
    from speechssl.pretrain import pretrain

    cfg = small_config(tiny_corpus, "steps=2", "data.valid_split=", "perf.shape_buckets=geometric",
                       "perf.activation_checkpointing=true")
    result = pretrain(cfg, tmp_path / "run", progress=False)
    assert result.state.step == 2 and all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "run"))


# ---------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_encoder_step_matches_eager():
    """Regional compile of the CNN and the layers: same loss and gradients as eager (dropout off).

    Slow: inductor compiles C++ on CPU (~100 s cold on 2 cores, ~15 s with its cache warm).
    """
    eager = tiny_model()
    compiled = tiny_model()
    compiled.load_state_dict(eager.state_dict())
    buckets = ShapeBuckets("multiple", multiple=3200, max_length=16000)
    names = perf.compile_encoder(compiled.encoder, static_time=True, num_shapes=len(buckets.lengths()))
    assert names == ["feature_extractor", "encoder.layers.0", "encoder.layers.1"]
    assert set(compiled.state_dict()) == set(eager.state_dict())
    # Compiled: the padded layout (static bucket shapes); eager skips the padding.
    assert not compiled.encoder.feature_extractor.skip_padding and not compiled.encoder.encoder.skip_padding
    assert eager.encoder.feature_extractor.skip_padding and eager.encoder.encoder.skip_padding
    from torch._dynamo.utils import counters

    graphs = []
    # Buckets 9600, 12800, then 9600 again with other batch sizes: the time dimension is
    # static per bucket, the batch dimension turns dynamic once it has changed.
    for lengths in ((8000, 6000, 4100), (12000, 7000), (9000, 7000), (9100, 8000, 7000, 6000)):
        waves, lens, _ = collate_waveforms(batch(lengths), pad_to=buckets)
        loss_e, grads_e = loss_and_grads(eager, waves, lens)
        loss_c, grads_c = loss_and_grads(compiled, waves, lens)
        graphs.append(counters["stats"]["unique_graphs"])
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-3, atol=1e-5, msg=name)
    assert graphs[3] == graphs[2]  # a third batch size in a seen bucket: nothing new
