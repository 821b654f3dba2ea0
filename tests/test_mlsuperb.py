"""ML-SUPERB 2.0 scoring of joint ASR + LID (speechssl.benchmark.mlsuperb) and the asr_lid task."""

from __future__ import annotations

import json
import math

import pytest

from speechssl.benchmark.mlsuperb import (
    JointItem,
    normalize_text,
    parse_tag,
    score_joint,
    spread,
    utterance_cer,
)
from speechssl.benchmark.store import ResultStore, result_to_records
from speechssl.benchmark.stats import multilingual
from speechssl.cli import main
from speechssl.data.manifests import read_corpus_info
from speechssl.errors import ConfigError

from test_downstream import FAST


def test_normalisation_is_the_scoring_scripts():
    # The scoring script's own examples: punctuation out, upper case; no spaces for Mandarin.
    assert normalize_text("I'll be going to the CMU campus.") == "ILL BE GOING TO THE CMU CAMPUS"
    assert normalize_text("我想去餐厅 我非常饿", "cmn") == "我想去餐厅我非常饿"
    assert normalize_text("¿Qué tal?", "es") == "QUÉ TAL"


def test_parse_tag():
    assert parse_tag("[fr] bonjour") == ("fr", "bonjour")
    assert parse_tag("  [deu]hallo welt ") == ("deu", "hallo welt")
    assert parse_tag("") == (None, "")
    assert parse_tag("bonjour [fr]") == (None, "bonjour [fr]")  # a tag later on is not a prediction


def test_utterance_cer():
    assert utterance_cer("abcd", "abcd") == 0.0
    assert utterance_cer("ab", "ax") == 0.5
    assert utterance_cer("Oui!", "oui") == 0.0  # normalised before the edit distance
    assert utterance_cer("abc", "") == 1.0
    assert utterance_cer("!!", "x") is None  # nothing left of the reference: skipped, as the script does


def test_score_joint_hand_case():
    items = [
        JointItem("en", "abcd", "[en] abcd", "A"),     # CER 0, LID right
        JointItem("en", "ab", "[fr] ax", "B"),         # CER 1/2, LID wrong
        JointItem("fr", "bonjour", "", "A"),           # empty hypothesis: CER 1, LID wrong, no crash
        JointItem("fr", "oui", "[fr] oui", "A"),       # CER 0, LID right
        JointItem("de", "ja", "ja [de]", "A"),         # tag not first: LID wrong; text "ja [de]" -> "JA DE", 3 inserts
        JointItem("de", "nein", "[de] nein", "B"),
        JointItem("de", "...", "[de] x", "B"),         # empty reference after normalisation: skipped
    ]
    s = score_joint(items, worst_n=2)
    # per language (mean of utterance CERs): en (0 + 0.5)/2 = 0.25, fr (1 + 0)/2 = 0.5, de (1.5 + 0)/2 = 0.75
    assert {k: v["cer"] for k, v in s["per_language"].items()} == pytest.approx({"de": 0.75, "en": 0.25, "fr": 0.5})
    assert {k: v["lid_accuracy"] for k, v in s["per_language"].items()} == pytest.approx({"de": 0.5, "en": 0.5, "fr": 0.5})
    assert s["cer"] == pytest.approx(0.5)  # (0.25 + 0.5 + 0.75) / 3
    assert s["cer_std"] == pytest.approx(0.25)  # sample std of 0.25, 0.5, 0.75
    assert s["worst_languages"] == ["de", "fr"] and s["cer_worst"] == pytest.approx(0.625)
    assert s["lid_accuracy"] == pytest.approx(0.5)
    assert s["utterances"] == 6 and s["skipped"] == 1
    # per dataset: en A 0, en B 0.5 -> range 0.5; de A 1.5, de B 0 -> range 1.5; fr only on A
    assert s["per_dataset"]["B"]["en"]["cer"] == pytest.approx(0.5)
    assert s["dataset_range"] == pytest.approx({"de": 1.5, "en": 0.5})
    json.dumps(s, allow_nan=False)


def test_score_joint_refuses_nonsense():
    with pytest.raises(ConfigError, match="no utterance"):
        score_joint([JointItem("en", "", "[en] a")])
    with pytest.raises(ConfigError, match="reference language"):
        score_joint([JointItem("", "a", "[en] a")])
    with pytest.raises(ConfigError, match="worst_n"):
        spread({"en": 0.1}, worst_n=0)
    assert spread({"en": 0.1})["std"] is None  # one language: no sample std


def test_store_keeps_per_dataset_scores_and_multilingual_reads_them():
    metrics = score_joint([JointItem("en", "ab", "[en] ab", "clean"), JointItem("en", "ab", "[en] xx", "phone"),
                           JointItem("fr", "ab", "[fr] ax", "clean"), JointItem("fr", "ab", "[en] ab", "phone")])
    result = {"format": "speechssl.bench/1", "config_hash": "h", "upstream": "u", "task": "asr_lid",
              "probe": "transformer_ctc", "seed": 0, "primary_metric": "cer", "metrics": metrics,
              "config": {"data": "data/synth_ml", "train_split": "train_1min"}}
    run, scores = result_to_records(result)
    assert run["dataset"] == "synth_ml:train_1min"
    assert {s["split"] for s in scores if "split" in s} == {"test@clean", "test@phone"}
    rows = [{**run, **s, "split": s.get("split", "test"), "language": s.get("language", ""),
             "higher_is_better": s["metric"] == "lid_accuracy"} for s in scores]
    (m,) = multilingual(rows, metric="cer", worst_n=1)
    assert m["per_language"] == pytest.approx({"en": 0.5, "fr": 0.25})
    assert m["per_dataset"]["en"] == pytest.approx({"clean": 0.0, "phone": 1.0})
    assert m["max_dataset_range"] == pytest.approx(1.0) and m["max_dataset_range_language"] == "en"
    (lid,) = multilingual(rows, metric="lid_accuracy")
    assert lid["macro"] == pytest.approx(0.75) and lid["worst_languages"][0] == "fr"


def test_asr_lid_bench_end_to_end(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    argv = ["bench", "--upstream", "mfcc", "--task", "asr_lid", "--probe", "linear_ctc", "--data", str(tiny_corpus),
            "--out", str(out), "--no-progress", f"cache.dir={tmp_path / 'cache'}", "--store", str(tmp_path / "r.db"),
            "asr.worst_languages=2", *FAST]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    m = result["metrics"]
    assert 0.0 <= m["lid_accuracy"] <= 1.0 and m["cer"] >= 0.0 and len(m["worst_languages"]) == 2
    assert set(m["per_language"]) == set(read_corpus_info(tiny_corpus)["languages"])
    assert all(not math.isnan(v["cer"]) for v in m["per_language"].values())
    assert "cer_beam" in m and "lid_accuracy_beam" in m
    with ResultStore(tmp_path / "r.db") as store:
        assert {r["language"] for r in store.scores(metric="lid_accuracy")} >= {""}


def test_lm_order_is_refused_for_tasks_without_words(tiny_corpus, tmp_path, capsys):
    argv = ["bench", "--upstream", "mfcc", "--task", "pr", "--data", str(tiny_corpus), "--out", str(tmp_path / "r"),
            "--no-progress", f"cache.dir={tmp_path / 'cache'}", "asr.lm_order=2", *FAST]
    assert main(argv) == 2
    assert "lm_order" in capsys.readouterr().err


def test_bench_multilingual_cli(tiny_corpus, tmp_path, capsys):
    common = ["--upstream", "mfcc", "--data", str(tiny_corpus), "--no-progress", "--store", str(tmp_path / "r.db"),
              f"cache.dir={tmp_path / 'cache'}", *FAST]
    assert main(["bench-multilingual", "--arch", "transformer-deep", "--out", str(tmp_path / "run"), *common,
                 "probe_cfg.num_layers=1"]) == 0
    out = capsys.readouterr().out
    assert "| greedy |" in out and "| beam |" in out and "LID acc" in out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    # the deep Transformer keeps its depth in the probe label unless overridden (here: 1 layer)
    assert result["task"] == "asr_lid" and result["probe"] == "transformer_ctc-L1"
    # a few-shot split the corpus lacks: one clear line naming how to make them
    assert main(["bench-multilingual", "--shots", "10min", *common]) == 2
    assert "speechssl corpus datasets" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own choices message
        main(["bench-multilingual", "--arch", "lstm", *common])


def test_asr_lid_with_lm_reports_greedy_beam_and_lm(tiny_corpus, tmp_path):
    pytest.importorskip("kenlm")
    pytest.importorskip("pyctcdecode")
    out = tmp_path / "run"
    assert main(["bench", "--upstream", "mfcc", "--task", "asr_lid", "--probe", "linear_ctc", "--data",
                 str(tiny_corpus), "--out", str(out), "--no-progress", "--no-store",
                 f"cache.dir={tmp_path / 'cache'}", "asr.lm_order=2", *FAST]) == 0
    m = json.loads((out / "result.json").read_text())["metrics"]
    assert {"cer", "cer_beam", "cer_lm", "lid_accuracy_lm"} <= set(m)
    assert m["lm"]["order"] == 2 and 0.0 <= m["lid_accuracy_lm"] <= 1.0
    tuned = m["lm"]["tuned_on_dev"]  # the grid's best (alpha, beta) on dev is the one the test pass used
    assert len(tuned["grid"]) == 12 and (m["lm"]["alpha"], m["lm"]["beta"]) == (tuned["alpha"], tuned["beta"])
    assert tuned["dev_cer"] == min(p["dev"] for p in tuned["grid"])


def test_report_has_the_mlsuperb_table_and_marks_worst_languages(monkeypatch):
    from speechssl.benchmark import plots
    from speechssl.benchmark.report import build_report

    marked = []
    real = plots.language_bars
    monkeypatch.setattr(plots, "language_bars", lambda *a, **k: marked.append(k.get("worst")) or real(*a, **k))
    rows, runs = [], []
    for shots, miss in (("train_1min", "[en] xx"), ("train_4min", "[en] ab")):
        metrics = score_joint([JointItem("en", "ab", miss, "clean"), JointItem("en", "ab", "[en] ab", "phone"),
                               JointItem("fr", "ab", "[fr] ax", "clean"), JointItem("fr", "ab", "[en] ab", "phone")],
                              worst_n=1)
        result = {"format": "speechssl.bench/1", "config_hash": shots, "upstream": "u", "task": "asr_lid",
                  "probe": "transformer_ctc", "seed": 0, "primary_metric": "cer", "metrics": metrics,
                  "config": {"data": "data/synth_ml", "train_split": shots}}
        run, scores = result_to_records(result)
        runs.append({**run, "status": "finished", "updated_at": "2026-12-01"})
        rows += [{**run, **s, "split": s.get("split", "test"), "language": s.get("language", ""),
                  "higher_is_better": s["metric"] == "lid_accuracy", "status": "finished"} for s in scores]
    report = build_report(rows, runs, timestamp=False)
    table = next(t for t in report.tables if t.label == "tab:mlsuperb")
    assert [r[3] for r in table.rows] == ["synth_ml:train_1min", "synth_ml:train_4min"]  # one row per shot size
    # macro CER: 1 min (en 0.5, fr 0.25) -> 0.375; 4 min (en 0, fr 0.25) -> 0.125
    assert table.rows[0][6] == "0.3750" and table.rows[1][6] == "0.1250"
    assert table.rows[0][9] == "1.000 (en)" and table.rows[1][9] == "0.5000 (fr)"  # widest dataset range
    assert table.rows[0][10] == "0.7500"  # LID: en 2/2, fr 1/2
    # the per-language plots get each system's worst languages, worst first (1 min CER: en 0.5, fr 0.25)
    assert marked[0] == {"u": ["en", "fr"]}
