"""Featurizer, probes, tasks and the benchmark runner (end to end on the tiny corpus)."""

import json
from types import SimpleNamespace

import pytest
import torch

from speechssl.cli import main
from speechssl.config import from_dict, load_config
from speechssl.downstream.config import BenchConfig, ProbeConfig
from speechssl.downstream.featurizer import Featurizer, resolve_layer
from speechssl.downstream.probes import XVector, build_probe
from speechssl.downstream.tasks.asv import make_trials, read_trials
from speechssl.errors import ConfigError

FAST = ["train.max_epochs=2", "train.batch_seconds=20", "probe_cfg.hidden=16", "probe_cfg.embed_dim=16",
        "train.num_workers=0", "asr.beam_size=2"]


# ---------------------------------------------------------------- featurizer


def test_featurizer_weights_start_equal_and_sum_to_one():
    feat = Featurizer(5)
    weights = feat.weights()
    assert torch.allclose(weights, torch.full((5,), 0.2))
    with torch.no_grad():
        feat.logits.copy_(torch.randn(5) * 3)
    assert float(feat.weights().detach().sum()) == pytest.approx(1.0, abs=1e-6)
    assert sum(feat.layer_weights()) == pytest.approx(1.0, abs=1e-6)


def test_featurizer_is_the_weighted_sum_and_learns():
    layers = torch.randn(3, 2, 4, 6)
    feat = Featurizer(3)
    with torch.no_grad():
        feat.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    w = torch.softmax(torch.tensor([0.0, 1.0, -1.0]), 0)
    expected = w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2]
    assert torch.allclose(feat(layers), expected, atol=1e-6)
    # Gradient reaches the weights: a target equal to layer 2 pulls weight towards it.
    opt = torch.optim.SGD(feat.parameters(), lr=1.0)
    for _ in range(50):
        opt.zero_grad()
        ((feat(layers) - layers[2]) ** 2).mean().backward()
        opt.step()
    assert feat.layer_weights()[2] > 0.8


def test_featurizer_single_layer_and_normalisation():
    layers = torch.randn(1, 2, 4, 6) * 5 + 3
    assert torch.equal(Featurizer(1)(layers), layers[0])
    normed = Featurizer(1, normalize=True)(layers)
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert Featurizer(1).layer_weights() == [1.0]


def test_resolve_layer():
    assert resolve_layer(-1, 5) == 4
    assert resolve_layer(0, 5) == 0
    with pytest.raises(ConfigError, match="out of range"):
        resolve_layer(5, 5)


# ---------------------------------------------------------------- probes


def test_probe_task_compatibility_is_checked():
    cfg = ProbeConfig(hidden=8, embed_dim=8)
    with pytest.raises(ConfigError, match="needs frames"):
        build_probe("mean_linear", needs="frames", in_dim=4, num_outputs=3, cfg=cfg)
    with pytest.raises(ConfigError, match="known:"):
        build_probe("ecapa_tdnn", needs="utterance", in_dim=4, num_outputs=3, cfg=cfg)
    with pytest.raises(ConfigError, match="needs utterance"):
        build_probe("cosine", needs="utterance", in_dim=4, num_outputs=3, cfg=cfg)
    # An embedding probe also serves utterance classification.
    assert isinstance(build_probe("xvector", needs="utterance", in_dim=4, num_outputs=3, cfg=cfg), XVector)


# ---------------------------------------------------------------- trials


def _cut(cut_id, speaker):
    return SimpleNamespace(id=cut_id, supervisions=[SimpleNamespace(speaker=speaker)])


def test_make_trials_is_balanced_and_deterministic():
    cuts = [_cut(f"{s}-{i}", s) for s in "abc" for i in range(3)]
    trials = make_trials(cuts, seed=1)
    assert trials == make_trials(cuts, seed=1)
    speaker = {c.id: c.supervisions[0].speaker for c in cuts}
    for enroll, test, label in trials:
        assert enroll != test
        assert label == int(speaker[enroll] == speaker[test])
    assert sum(t[2] for t in trials) == len(trials) // 2


def test_read_trials_rejects_bad_files(tmp_path):
    bad = tmp_path / "t.tsv"
    bad.write_text("a\tb\tc\n")
    with pytest.raises(ConfigError, match="header"):
        read_trials(bad)
    bad.write_text("enroll\ttest\tlabel\nx\ty\tmaybe\n")
    with pytest.raises(ConfigError, match=":2:"):
        read_trials(bad)


def test_subset_hours_is_fixed_and_keeps_order():
    from speechssl.downstream.runner import subset_hours

    cuts = [SimpleNamespace(id=f"utt{i}", duration=10.0) for i in range(100)]
    chosen = subset_hours(cuts, 0.1)  # 360 s = 36 cuts of 10 s
    assert len(chosen) == 36
    assert chosen == subset_hours(list(reversed(cuts)), 0.1)[::-1]  # independent of input order
    assert [c.id for c in chosen] == sorted((c.id for c in chosen), key=lambda i: int(i[3:]))
    assert subset_hours(cuts, 10.0) == cuts


# ---------------------------------------------------------------- config


def test_bench_config_validates_early():
    with pytest.raises(ConfigError, match="task"):
        from_dict(BenchConfig, {"task": "emotion"})
    with pytest.raises(ConfigError, match="max_epochs"):
        from_dict(BenchConfig, {"train": {"max_epochs": 0}})
    cfg = load_config(BenchConfig, None, ["task=asr", "featurizer.layer=-1"])
    assert cfg.featurizer.layer == -1


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("task", ["lid", "asv", "asr"])
def test_bench_runs_each_task(task, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bench", "--upstream", "mfcc", "--task", task, "--data", str(tiny_corpus), "--out", str(out),
            "--no-progress", f"cache.dir={tmp_path / 'cache'}", *FAST]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == task and result["upstream"] == "mfcc"
    metric = {"lid": "accuracy", "asv": "eer", "asr": "cer"}[task]
    assert result["metrics"][metric] >= 0.0  # CER of an untrained CTC probe can exceed 1 (insertions)
    assert result["layer_weights"] == [1.0]
    assert result["cache"]["train"]["bytes"] > 0
    assert result["hours"]["train"] > 0 and result["probe_params"] > 0
    cost = result["cost"]
    assert cost["flops_per_second"] > 0 and cost["gpu_hours"] == 0.0
    assert (cost["energy_kwh"] is not None and cost["energy_kwh"] >= 0) or cost["energy_error"]
    assert (out / "best.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == result["dev"]["epochs_run"]
    if task == "asr":
        assert {"cer_beam", "wer_beam", "per_language"} <= set(result["metrics"])
    if task == "asv":
        assert result["metrics"]["trials"] == len(read_trials(tiny_corpus / "trials" / "asv_test.tsv"))
        assert result["metrics"]["test_speakers_disjoint"] is True
    # Same config again: reused, not retrained; both times recorded once in the store.
    assert main(argv + ["--store", str(tmp_path / "r.db")]) == 0
    out = capsys.readouterr().out
    assert "(reused)" in out and f"stored as {result['config_hash']}" in out
    assert main(argv + ["--store", str(tmp_path / "r.db")]) == 0
    from speechssl.benchmark.store import ResultStore

    with ResultStore(tmp_path / "r.db") as store:
        assert [r["run_id"] for r in store.runs()] == [result["config_hash"]]
        assert store.scores(metric=metric)[0]["value"] == result["metrics"][metric]


def test_bench_cache_and_live_features_agree(tiny_corpus, tmp_path):
    from speechssl.downstream.runner import run_bench

    results = []
    for enabled in (True, False):
        cfg = load_config(BenchConfig, None, [f"data={tiny_corpus}", "task=lid", f"cache.enabled={str(enabled).lower()}",
                                              f"cache.dir={tmp_path / 'cache'}", *FAST])
        results.append(run_bench(cfg, tmp_path / f"run-{enabled}", progress=False))
    cached, live = results
    # fp16 storage is the only difference: the trained probes agree closely.
    assert cached["history"][0]["train_loss"] == pytest.approx(live["history"][0]["train_loss"], rel=1e-2)
    assert live["cache"] == {"enabled": False, "seconds": 0.0}


def test_bench_refuses_data_without_the_labels(tiny_corpus, tmp_path):
    import gzip
    import shutil

    data = tmp_path / "nospk"
    shutil.copytree(tiny_corpus, data)
    for split in ("train", "dev", "test"):
        path = data / "manifests" / f"cuts_{split}.jsonl.gz"
        lines = gzip.open(path, "rt").read().splitlines()
        records = [json.loads(line) for line in lines]
        for record in records:
            for sup in record.get("supervisions", []):
                sup.pop("speaker", None)
        with gzip.open(path, "wt") as handle:
            handle.write("\n".join(json.dumps(r) for r in records) + "\n")
    argv = ["bench", "--upstream", "mfcc", "--task", "asv", "--data", str(data), "--out", str(tmp_path / "r"),
            "--no-progress", *FAST]
    assert main(argv) == 2


def test_bench_cli_errors(tmp_path, capsys):
    assert main(["bench", "--upstream", "mfc", "--data", str(tmp_path), "--no-progress"]) == 2
    assert main(["bench", "--task", "lid", "--probe", "bilstm_ctc", "--no-progress", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown upstream" in err and "does not fit task lid" in err


def _mfcc_frames(cut):
    """``[T, 39]`` float64 MFCC frames of one cut, computed directly by the upstream."""
    from speechssl.upstream import build_upstream

    audio = torch.from_numpy(cut.load_audio()[0]).float()[None]
    with torch.no_grad():
        return build_upstream("mfcc")(audio, torch.tensor([audio.shape[1]])).layers[0][0].double().numpy()


def test_cosine_probe_is_scored_without_training(tiny_corpus, tmp_path):
    import numpy as np

    from speechssl.data.manifests import load_cuts
    from speechssl.downstream.metrics import eer
    from speechssl.downstream.runner import run_bench

    cfg = load_config(BenchConfig, None, [f"data={tiny_corpus}", "task=asv", "probe=cosine",
                                          f"cache.dir={tmp_path / 'cache'}", *FAST])
    result = run_bench(cfg, tmp_path / "run", progress=False)
    assert result["updates"] == 0 and result["dev"]["epochs_run"] == 0
    assert result["probe_params"] == 0 and result["probe_macs_per_second"] == 0
    assert result["probe_kinds"] == {"input": "frames", "output": "verification", "trainable": False}
    # The same EER from first principles: mean + std of each test utterance's MFCC frames, cosine.
    vectors = {}
    for cut in load_cuts(tiny_corpus, "test"):
        frames = torch.from_numpy(_mfcc_frames(cut))
        vector = torch.cat([frames.mean(0), frames.std(0, unbiased=False)])
        vectors[cut.id] = vector / vector.norm()
    trials = read_trials(tiny_corpus / "trials" / "asv_test.tsv")
    scores = np.array([float(vectors[a] @ vectors[b]) for a, b, _ in trials])
    # fp16 feature storage is the only difference.
    assert result["metrics"]["eer"] == pytest.approx(eer(scores, [t[2] for t in trials]), abs=0.02)


def test_standardisation_uses_the_train_statistics(tiny_corpus, tmp_path):
    import numpy as np

    from speechssl.downstream.runner import run_bench

    overrides = [f"data={tiny_corpus}", "task=er", "featurizer.standardize=true", f"cache.dir={tmp_path / 'cache'}",
                 *FAST]
    result = run_bench(load_config(BenchConfig, None, overrides), tmp_path / "run", progress=False)
    from speechssl.data.manifests import load_cuts

    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["featurizer"]
    frames = np.concatenate([_mfcc_frames(cut) for cut in load_cuts(tiny_corpus, "train")])
    # fp16 storage: values near 60 keep ~0.03 of precision, so means agree to a few 1e-3.
    assert torch.allclose(saved["mean"][0].double(), torch.from_numpy(frames.mean(0)), atol=5e-3)
    assert torch.allclose(saved["std"][0].double(), torch.from_numpy(frames.std(0)), rtol=1e-3, atol=1e-4)
    assert result["probe_macs_per_second"] > 0 and result["metrics"]["accuracy"] >= 0


def test_translation_reads_its_source_language_from_the_shared_cache(tiny_corpus, tmp_path):
    from speechssl.downstream.runner import run_bench

    common = [f"data={tiny_corpus}", f"cache.dir={tmp_path / 'cache'}", "probe_cfg.heads=2",
              "probe_cfg.decoder_layers=1", "asr.beam_size=2", *FAST]
    lid = run_bench(load_config(BenchConfig, None, ["task=lid", *common]), tmp_path / "lid", progress=False)
    ast = run_bench(load_config(BenchConfig, None, ["task=ast", "probe=mlp_ctcattn", "ast.source=fr,de", *common]),
                    tmp_path / "ast", progress=False)
    # dev and test are subsets of the splits other tasks cached: one entry each, shared.
    for role in ("dev", "test"):
        assert ast["cache"][role]["key"] == lid["cache"][role]["key"]
        assert 0 < ast["utterances"][role] < lid["utterances"][role]
    assert ast["metrics"]["bleu"] >= 0 and "chrf" in ast["metrics"] and "chance_bleu" in ast["metrics"]
    assert ast["probe_kinds"]["output"] == "sequence" and ast["probe_macs_per_second"] > 0
