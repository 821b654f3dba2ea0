"""fuse: upstreams of different frame rates (20 / 40 / 80 ms encoders, fbank) as one (tiny, CPU)."""

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY_W2V2, assert_upstream_contract, noise_batch

from speechssl.config import load_config, to_dict
from speechssl.errors import ConfigError
from speechssl.models import conv_stack
from speechssl.models.objectives import build_objective
from speechssl.pretrain import PretrainConfig
from speechssl.pretrain.checkpoint import FORMAT, save_atomic
from speechssl.upstream import build_upstream, known_upstreams
from speechssl.upstream.fusion import FusionUpstream, parse_fusion_spec, split_members, upsample_index

TOL = 1e-5

# lhotse's mel-scale helpers under NumPy 2 (fbank members)
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


def save_checkpoint(path: Path, frame_ms: int = 20, *overrides: str, seed=0) -> Path:
    """A tiny checkpoint as the trainer writes it, with a 20, 40 or 80 ms CNN."""
    conv = json.dumps([list(layer) for layer in conv_stack(32, frame_ms=frame_ms)]).replace(" ", "")
    cfg = load_config(PretrainConfig, None, [*TINY_W2V2, f"encoder.conv_layers={conv}", *overrides])
    torch.manual_seed(seed)
    model = build_objective(cfg.objective, cfg.encoder, cfg)
    return save_atomic({"format": FORMAT, "config": to_dict(cfg), "model": model.state_dict()}, path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion")
    return {
        20: save_checkpoint(root / "h20.pt", 20, seed=0),
        40: save_checkpoint(root / "h40.pt", 40, seed=1),
        # a padding-aware GroupNorm front end, to mix both kinds
        80: save_checkpoint(root / "h80.pt", 80, "encoder.conv_norm=group_norm", seed=2),
    }


def spec(mode: str, *members) -> str:
    return f"fuse:{mode}:" + "+".join(f"ckpt:{m}" if isinstance(m, Path) else m for m in members)


# ---------------------------------------------------------------- spec


def test_registry_lists_fuse():
    assert "fuse:<mode>:<spec>+<spec>" in known_upstreams()


def test_plus_inside_a_path_stays_in_that_member():
    assert split_members("ckpt:/r/a+b/best.pt+ckpt:/r/c.pt") == ["ckpt:/r/a+b/best.pt", "ckpt:/r/c.pt"]
    assert split_members("fbank + hf:/m/x+y + mfcc") == ["fbank", "hf:/m/x+y", "mfcc"]
    assert split_members("ckpt:/r/+mfccs.pt+fbank") == ["ckpt:/r/+mfccs.pt", "fbank"]
    assert parse_fusion_spec("concat:ckpt:a:b+fbank") == ("concat", ["ckpt:a:b", "fbank"])


@pytest.mark.parametrize(
    "bad, message",
    [
        ("fuse", re.escape("needs an argument: fuse:<mode>:<spec>+<spec>")),
        ("fuse:ckpt:/a+ckpt:/b", r"mode 'ckpt' must be one of layers, concat, sum"),
        ("fuse:avg:mfcc+fbank", r"mode 'avg' must be one of"),
        ("fuse:layers", r"expected fuse:<layers\|concat\|sum>"),
        ("fuse:layers:fbank", "at least two member specs"),
        ("fuse:layers:/data/x.pt+fbank", r"'/data/x.pt' is not an upstream spec; .*ckpt:<path>"),
        ("fuse:layers:fuse:sum:mfcc+fbank", "members cannot be fuse: specs"),
        ("fuse:sum:mfcc+fbank", r"fuse:sum needs members of one feature dim, got mfcc \(1 layers x 39"),
        ("fuse:layers:mfcc+fbank", "use fuse:concat"),
    ],
)
def test_malformed_specs_are_config_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        build_upstream(bad)


def test_missing_member_names_its_path(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope.pt"))):
        build_upstream(f"fuse:layers:fbank+ckpt:{tmp_path / 'nope.pt'}")


def test_layer_counts_must_pair_for_concat_and_sum(ckpts, tmp_path):
    deeper = save_checkpoint(tmp_path / "deep.pt", 40, "encoder.layers=3")
    with pytest.raises(ConfigError, match="needs one layer count"):
        build_upstream(spec("sum", ckpts[20], deeper))
    fused = build_upstream(spec("layers", ckpts[20], deeper))  # any counts: every layer listed
    assert fused.num_layers == 3 + 4
    assert fused.layer_sources == [[(0, 0)], [(0, 1)], [(0, 2)], [(1, 0)], [(1, 1)], [(1, 2)], [(1, 3)]]


# ---------------------------------------------------------------- alignment


def test_upsample_index_repeats_coarse_frames_and_never_reads_padding():
    lengths = torch.tensor([5, 3])
    index = upsample_index(10, 50.0, 25.0, lengths)
    assert index.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4], [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]]
    assert upsample_index(8, 50.0, 12.5, torch.tensor([2]))[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert upsample_index(4, 50.0, 50.0, torch.tensor([4]))[0].tolist() == [0, 1, 2, 3]
    assert upsample_index(3, 50.0, 25.0, torch.tensor([0]))[0].tolist() == [0, 0, 0]


def test_layers_mode_is_each_members_states_repeated_to_the_finest_rate(ckpts):
    fused = build_upstream(spec("layers", ckpts[40], ckpts[20], ckpts[80]))
    members = [build_upstream(f"ckpt:{ckpts[ms]}") for ms in (40, 20, 80)]
    assert [m.frame_rate for m in members] == [25.0, 50.0, 12.5]
    assert (fused.frame_rate, fused.num_layers, fused.feature_dim) == (50.0, 9, 32)
    assert fused.num_params == sum(m.num_params for m in members)
    waves, lengths = noise_batch((16000, 7001, 5200))
    with torch.no_grad():
        out = fused(waves, lengths)
        ref = [m(waves, lengths) for m in members]
    assert out.lengths.tolist() == ref[1].lengths.tolist() == [49, 21, 16]  # the 20 ms member's
    assert ref[0].lengths.tolist() == [24, 10, 8] and ref[2].lengths.tolist() == [12, 5, 4]
    for layer, ((member, k),) in enumerate(fused.layer_sources):
        ratio = {0: 2, 1: 1, 2: 4}[member]
        for b, n in enumerate(out.lengths.tolist()):
            src = [min(j // ratio, int(ref[member].lengths[b]) - 1) for j in range(n)]
            torch.testing.assert_close(out.layers[layer][b, :n], ref[member].layers[k][b, src], atol=0, rtol=0)
            assert not out.layers[layer][b, n:].any()


def test_concat_and_sum_pair_layers_by_index(ckpts):
    concat = build_upstream(spec("concat", ckpts[20], ckpts[40]))
    total = build_upstream(spec("sum", ckpts[20], ckpts[40]))
    layers = build_upstream(spec("layers", ckpts[20], ckpts[40]))
    assert (concat.num_layers, concat.feature_dim, total.num_layers, total.feature_dim) == (3, 64, 3, 32)
    waves, lengths = noise_batch((9000, 6400))
    with torch.no_grad():
        c, s, lay = concat(waves, lengths), total(waves, lengths), layers(waves, lengths)
    for k in range(3):
        torch.testing.assert_close(c.layers[k], torch.cat([lay.layers[k], lay.layers[3 + k]], dim=-1))
        torch.testing.assert_close(s.layers[k], lay.layers[k] + lay.layers[3 + k])


def test_single_layer_member_joins_every_layer_and_can_be_the_finest(ckpts):
    fused = build_upstream(spec("concat", ckpts[20], "fbank"))
    fbank = build_upstream("fbank")
    assert (fused.frame_rate, fused.num_layers, fused.feature_dim) == (100.0, 3, 32 + 80)
    assert fused.layer_sources == [[(0, k), (1, 0)] for k in range(3)]
    waves, lengths = noise_batch((8000, 5000))
    with torch.no_grad():
        out, ref = fused(waves, lengths), fbank(waves, lengths)
    assert out.lengths.tolist() == ref.lengths.tolist() == [50, 31]
    for k in range(3):
        torch.testing.assert_close(out.layers[k][..., 32:], ref.layers[0], atol=0, rtol=0)


# ---------------------------------------------------------------- contract, padding invariance, fingerprint


@pytest.mark.parametrize("mode", ["layers", "concat", "sum"])
def test_output_contract_and_padding_invariance(mode, ckpts, no_network):
    upstream = build_upstream(spec(mode, ckpts[20], ckpts[40], ckpts[80]))
    assert_upstream_contract(upstream, mode, TOL)
    meta = upstream.metadata()
    assert meta["fusion"]["mode"] == mode and len(meta["fusion"]["layer_sources"]) == upstream.num_layers
    assert [m["frame_rate"] for m in meta["fusion"]["members"]] == [50.0, 25.0, 12.5]
    json.dumps(meta)  # goes into result.json as is


def test_fingerprint_combines_mode_order_and_members(ckpts, tmp_path):
    a = build_upstream(spec("layers", ckpts[20], ckpts[40]))
    assert build_upstream(spec("layers", ckpts[20], ckpts[40])).fingerprint() == a.fingerprint()
    assert build_upstream(spec("concat", ckpts[20], ckpts[40])).fingerprint() != a.fingerprint()
    assert build_upstream(spec("layers", ckpts[40], ckpts[20])).fingerprint() != a.fingerprint()
    retrained = save_checkpoint(tmp_path / "h40.pt", 40, seed=5)
    assert build_upstream(spec("layers", ckpts[20], retrained)).fingerprint() != a.fingerprint()


def test_plus_in_a_checkpoint_path(ckpts, tmp_path):
    odd = save_checkpoint(tmp_path / "run+40ms" / "best.pt", 40, seed=1)
    fused = build_upstream(spec("layers", ckpts[20], tmp_path / "run+40ms"))
    assert isinstance(fused, FusionUpstream)
    assert [m.name for m in fused.members] == [f"ckpt:{ckpts[20]}", f"ckpt:{tmp_path / 'run+40ms'}"]
    assert fused.members[1].checkpoint == odd


def test_members_move_with_the_fused_upstream(ckpts):
    fused = build_upstream(spec("layers", ckpts[20], ckpts[40]), device="cpu")
    assert not fused.training and all(not m.training for m in fused.members)
    assert all(p.device.type == "cpu" for p in fused.parameters())
