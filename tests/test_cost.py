"""Cost accounting: FLOPs against hand counts, GPU-hours, and the offline energy tracker."""

import socket
import sys
import time

import pytest
import torch
from torch import nn

from speechssl.config import load_config
from speechssl.downstream.config import BenchConfig, CostConfig
from speechssl.downstream.cost import EnergyTracker, count_upstream_flops, gpu_hours
from speechssl.errors import ConfigError
from speechssl.upstream import Upstream, UpstreamOutput, build_upstream
from test_upstream import LAYER_NORM_EXTRACTOR, needs_ge2e, save_checkpoint, save_hf

# lhotse's mel-scale helpers under NumPy 2 (the mfcc upstream)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]

HOP = 160


class FrameLinear(Upstream):
    """Non-overlapping 10 ms frames -> Linear: exactly 2 * HOP * dim FLOPs per frame."""

    name = "fake-linear"
    frame_rate = 100.0

    def __init__(self, dim=32, lstm_hidden=None):
        super().__init__()
        self.proj = nn.Linear(HOP, dim)
        self.lstm = None if lstm_hidden is None else nn.LSTM(dim, lstm_hidden, batch_first=True)
        self.feature_dim = dim if lstm_hidden is None else lstm_hidden

    def forward(self, waveforms, lengths):
        frames = waveforms.shape[1] // HOP
        x = self.proj(waveforms[:, : frames * HOP].reshape(waveforms.shape[0], frames, HOP))
        x = torch.tanh(x)  # elementwise: never counted
        if self.lstm is not None:
            x, _ = self.lstm(x)
        return UpstreamOutput(layers=[x], lengths=lengths // HOP)

    def fingerprint(self):
        return "fake"


def lstm_flops(frames, inp, hidden):
    """The gates of one LSTM layer: x W_ih^T and h W_hh^T, 4*hidden outputs each, per frame."""
    return 2 * frames * 4 * hidden * (inp + hidden)


# ---------------------------------------------------------------- FLOPs


def test_flops_equal_a_hand_count_for_a_linear_upstream():
    up = FrameLinear(dim=32)
    out = count_upstream_flops(up, seconds=1.0)
    frames = 16000 // HOP
    assert out["flops"] == 2 * HOP * 32 * frames
    assert out["flops_per_second"] == out["flops"] and out["macs_per_second"] == out["flops"] / 2
    assert out["counted_ops"] == {"aten.addmm": out["flops"]}
    assert out["uncounted_ops"] == [] and out["partial"] is False and out["seconds"] == 1.0


def test_flops_scale_linearly_with_seconds_for_a_frame_wise_upstream():
    up = FrameLinear(dim=16)
    one, three = count_upstream_flops(up, 1.0), count_upstream_flops(up, 3.0)
    assert three["flops"] == 3 * one["flops"]
    assert three["flops_per_second"] == pytest.approx(one["flops_per_second"])
    with pytest.raises(ValueError):
        count_upstream_flops(up, 0.0)


def test_lstm_flops_are_counted_exactly_despite_the_fused_cpu_kernel():
    up = FrameLinear(dim=24, lstm_hidden=20)
    before = torch._C._get_mkldnn_enabled()
    out = count_upstream_flops(up, seconds=0.5)
    frames = 8000 // HOP
    assert out["flops"] == 2 * HOP * 24 * frames + lstm_flops(frames, 24, 20)
    assert out["partial"] is False
    assert torch._C._get_mkldnn_enabled() == before  # backend flags restored


class Attention(Upstream):
    """One self-attention over 20 ms frames: QK^T and AV are 2 * heads * T * T * d FLOPs each."""

    name = "fake-attention"
    heads, dim = 2, 8

    def forward(self, waveforms, lengths):
        frames = waveforms.shape[1] // 320
        x = waveforms[:, : frames * 320].reshape(1, frames, self.heads, self.dim, 20).sum(-1).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(x, x, x)  # [1, heads, T, dim]
        return UpstreamOutput(layers=[out.transpose(1, 2).flatten(2)], lengths=lengths // 320)

    def fingerprint(self):
        return "fake"


def test_attention_flops_are_counted_on_cpu_too():
    out = count_upstream_flops(Attention(), seconds=1.0)
    frames = 16000 // 320
    assert out["flops"] == 2 * (2 * Attention.heads * frames * frames * Attention.dim)
    assert out["partial"] is False
    # the quadratic term: per-second FLOPs grow with the length of the pass
    assert count_upstream_flops(Attention(), seconds=2.0)["flops_per_second"] == 2 * out["flops_per_second"]


def test_native_checkpoint_counts_convs_linears_and_cpu_attention(tmp_path):
    up = build_upstream(f"ckpt:{save_checkpoint(tmp_path / 'best.pt')}")
    out = count_upstream_flops(up, seconds=1.0)
    assert {"aten.convolution", "aten.addmm"} <= set(out["counted_ops"])
    assert sum(out["counted_ops"].values()) == out["flops"] > 0
    assert any("attention" in op for op in out["counted_ops"]), out["counted_ops"]
    assert out["partial"] is False, out["uncounted_ops"]


def test_hf_model_counts_without_gaps(tmp_path, no_network):
    directory = save_hf(tmp_path / "w2v", "Wav2Vec2Model", extractor=LAYER_NORM_EXTRACTOR)
    out = count_upstream_flops(build_upstream(f"hf:{directory}"), seconds=1.0)
    assert {"aten.convolution", "aten.addmm"} <= set(out["counted_ops"]) and out["flops"] > 0
    assert out["partial"] is False, out["uncounted_ops"]


def test_mfcc_counts_its_filterbank_matmuls_and_flags_the_uncounted_fft():
    out = count_upstream_flops(build_upstream("mfcc"), seconds=1.0)
    # 40 mel filters x 257 FFT bins at 100 frames/s, + the 13 x 40 DCT: a few MFLOPs
    assert 0 < out["flops_per_second"] < 1e7
    assert any("fft" in op for op in out["uncounted_ops"]) and out["partial"] is True


@needs_ge2e
def test_ge2e_flops_are_the_mel_projection_plus_three_lstm_layers():
    up = build_upstream("ge2e")
    out = count_upstream_flops(up, seconds=1.0)
    frames = 16000 // HOP + 1  # centred STFT
    expected = 2 * 40 * 201 * frames + lstm_flops(frames, 40, 256) + 2 * lstm_flops(frames, 256, 256)
    assert out["flops"] == expected
    assert any("fft" in op for op in out["uncounted_ops"])


# ---------------------------------------------------------------- GPU-hours


def test_gpu_hours():
    assert gpu_hours(7200, "cpu") == 0.0
    assert gpu_hours(7200, torch.device("cpu")) == 0.0
    assert gpu_hours(7200, "cuda") == 2.0
    assert gpu_hours(1800, torch.device("cuda:1"), num_gpus=4) == 2.0
    assert gpu_hours(3600, "auto") == (1.0 if torch.cuda.is_available() else 0.0)


# ---------------------------------------------------------------- energy


def busy(seconds):
    end, x = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        x += 1
    return x


def test_energy_tracker_measures_offline_and_writes_nothing(no_network, tmp_path, monkeypatch):
    pytest.importorskip("codecarbon")
    attempts = []  # codecarbon swallows its own errors: record attempts, not just refuse them

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline test")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    with EnergyTracker(country="fra") as energy:
        busy(0.3)
    r = energy.result
    assert r["energy_error"] is None, r
    assert r["energy_kwh"] > 0 and r["co2_kg"] >= 0 and r["cpu_power_w"] >= 0 and r["ram_power_w"] >= 0
    assert r["energy_kwh"] == pytest.approx(r["cpu_energy_kwh"] + r["ram_energy_kwh"] + r["gpu_energy_kwh"])
    assert r["country"] == "FRA" and r["tracker"].startswith("codecarbon-offline ")
    assert r["duration_s"] >= 0.3 and r["overhead_s"] >= 0 and r["measure"]
    assert list(tmp_path.iterdir()) == []  # no emissions.csv, no lock file in the cwd
    assert attempts == []


def test_energy_tracker_writes_its_csv_only_where_asked(tmp_path):
    pytest.importorskip("codecarbon")
    with EnergyTracker(output_dir=tmp_path / "energy") as energy:
        pass
    assert energy.result["energy_error"] is None
    assert (tmp_path / "energy" / "emissions.csv").is_file()


def test_a_held_codecarbon_lock_does_not_block_the_run(tmp_path, monkeypatch):
    lock = pytest.importorskip("codecarbon.lock")
    held = tmp_path / ".codecarbon.lock"
    held.touch()  # another process's run
    monkeypatch.setattr(lock, "LOCKFILE", str(held))
    with EnergyTracker() as energy:
        pass
    assert energy.result["energy_error"] is None and energy.result["energy_kwh"] is not None
    assert held.exists()


def test_without_codecarbon_the_run_goes_on_with_null_energy(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon -> ImportError
    with EnergyTracker() as energy:
        busy(0.01)
    r = energy.result
    assert r["energy_kwh"] is None and r["co2_kg"] is None and r["cpu_power_w"] is None
    assert set(r) == set(EnergyTracker(enabled=False).__enter__().stop())  # the same keys either way
    assert r["energy_error"].startswith("codecarbon failed to start: MissingExtraError")
    assert r["energy_error"].endswith("pip install 'speechssl[energy]'")  # says how to get it
    assert r["duration_s"] > 0 and r["country"] == "FRA"


def test_unknown_country_keeps_the_energy_and_drops_the_co2():
    pytest.importorskip("codecarbon")
    with EnergyTracker(country="XXX") as energy:
        pass
    r = energy.result
    assert r["energy_kwh"] is not None and r["co2_kg"] is None and "XXX" in r["energy_error"]
    bad = EnergyTracker(country="France")
    bad.start()
    assert bad.stop()["energy_error"].startswith("codecarbon failed to start: ValueError")


def test_an_exception_in_the_body_propagates_and_the_tracker_still_stops():
    with pytest.raises(ZeroDivisionError):
        with EnergyTracker(enabled=False) as energy:
            1 / 0
    assert energy.result["tracker"] == "disabled" and energy.result["energy_kwh"] is None
    assert energy.result["energy_error"] is None
    with pytest.raises(RuntimeError):
        EnergyTracker().stop()


# ---------------------------------------------------------------- config


def test_cost_config_defaults_overrides_and_validation():
    cfg = load_config(BenchConfig, None, [])
    assert cfg.cost == CostConfig(energy=True, country="FRA", flops_seconds=1.0)
    cfg = load_config(BenchConfig, None, ["cost.country=DEU", "cost.energy=false", "cost.flops_seconds=2"])
    assert (cfg.cost.country, cfg.cost.energy, cfg.cost.flops_seconds) == ("DEU", False, 2.0)
    with pytest.raises(ConfigError, match="cost.*country"):
        load_config(BenchConfig, None, ["cost.country=France"])
    with pytest.raises(ConfigError, match="flops_seconds"):
        load_config(BenchConfig, None, ["cost.flops_seconds=0"])
