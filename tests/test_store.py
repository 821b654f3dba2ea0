"""The SQLite result store: schema, exchange formats, result.json ingestion, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys

import pytest

from speechssl.benchmark.directions import metric_direction
from speechssl.benchmark.store import ResultStore, result_to_records
from speechssl.errors import ConfigError


def _run(**over):
    run = {"upstream": "mfcc", "task": "lid", "probe": "mean_linear", "seed": 0, "status": "finished",
           "source": "bench", "dataset": "synth"}
    run.update(over)
    return run


def test_metric_direction_from_names():
    assert metric_direction("cer") is False and metric_direction("WER_beam") is False
    assert metric_direction("minDCF") is False and metric_direction("eer") is False
    assert metric_direction("accuracy") is True and metric_direction("bleu") is True
    assert metric_direction("macro_f1") is True
    assert metric_direction("wobble") is None


def test_put_run_upserts_and_replaces_scores(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        rid = store.put_run(_run(run_id="a"), [{"metric": "accuracy", "value": 0.5}])
        created = store.get_run(rid)["created_at"]
        store.put_run(_run(run_id="a"), [{"metric": "accuracy", "value": 0.7}, {"metric": "macro_f1", "value": 0.6}])
        rows = store.scores()
        assert [(r["metric"], r["value"]) for r in rows] == [("accuracy", 0.7), ("macro_f1", 0.6)]
        assert store.get_run("a")["created_at"] == created
        assert store.count()["finished"] == 1
        assert all(r["higher_is_better"] is True for r in rows)


def test_unfinished_runs_are_hidden_from_scores_but_listed(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.put_run(_run(run_id="f", status="failed", error="boom"), [])
        assert store.scores() == []
        assert store.runs(status="failed")[0]["error"] == "boom"
        store.set_status("f", "running", count_attempt=True)
        assert store.get_run("f")["attempts"] == 1


def test_bad_store_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a speechssl result store"):
        ResultStore(bad)


def test_csv_import_long_format(tmp_path):
    csv_path = tmp_path / "paper.csv"
    csv_path.write_text(
        "upstream,task,probe,metric,value,seed,language,params,note\n"
        "w2v2,asr,bilstm,wer,6.2,,,95000000,from table 1\n"
        "w2v2,asr,bilstm,cer,2.0,,en,,\n"
        "w2v2,er,linear,accuracy,66.4,,,,\n"
    )
    with ResultStore(tmp_path / "r.db") as store:
        counts = store.import_file(csv_path)
        assert counts == {"runs": 2, "scores": 3}
        runs = {r["task"]: r for r in store.runs()}
        assert runs["asr"]["upstream_params"] == 95_000_000
        assert runs["asr"]["extra"] == {"note": "from table 1"}
        assert runs["asr"]["source"] == "import" and runs["asr"]["seed"] is None
        rows = {(r["metric"], r["language"]): r for r in store.scores()}
        assert rows[("wer", "")]["higher_is_better"] is False
        assert rows[("accuracy", "")]["higher_is_better"] is True
        # Importing the same file again replaces; nothing doubles.
        store.import_file(csv_path)
        assert store.count()["scores"] == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("upstream,task,metric,value\nx,asr,wer,1\n", "missing required column"),
        ("upstream,task,probe,metric,value\nx,asr,lstm,wobble,1\n", "higher_is_better"),
        ("upstream,task,probe,metric,value\nx,asr,lstm,wer,abc\n", "must be a number"),
        ("upstream,task,probe,metric,value\nx,asr,lstm,wer,nan\n", "not finite"),
        ("upstream,task,probe,metric,value\nx,,lstm,wer,1\n", "empty required column 'task'"),
        ("upstream,task,probe,metric,value,higher_is_better\nx,asr,lstm,wobble,1,maybe\n", "1/0"),
    ],
)
def test_csv_import_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with ResultStore(tmp_path / "r.db") as store:
        with pytest.raises(ConfigError, match=message):
            store.import_file(path)
        assert store.count()["scores"] == 0  # nothing half-imported


def test_direction_override_column(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("upstream,task,probe,metric,value,higher_is_better\nx,er,lin,wobble,3,1\ny,er,lin,cer,3,1\n")
    with ResultStore(tmp_path / "r.db") as store:
        store.import_file(path)
        assert {r["metric"]: r["higher_is_better"] for r in store.scores()} == {"wobble": True, "cer": True}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_export_import_round_trip(tmp_path, suffix):
    with ResultStore(tmp_path / "a.db") as a:
        a.put_run(_run(run_id="r1", wall_seconds=12.5, energy_kwh=0.001),
                  [{"metric": "accuracy", "value": 0.25}, {"metric": "accuracy", "value": 0.5, "language": "de"},
                   {"metric": "accuracy", "value": 0.3, "split": "dev"}])
        a.put_run(_run(run_id="r2", upstream="ge2e", seed=1), [{"metric": "accuracy", "value": 0.75}])
        assert a.export_file(tmp_path / f"out{suffix}") == 4
        with ResultStore(tmp_path / "b.db") as b:
            b.import_file(tmp_path / f"out{suffix}")
            key = lambda r: (r["run_id"], r["split"], r["language"], r["metric"])  # noqa: E731
            strip = lambda rows: sorted(({k: r[k] for k in ("run_id", "upstream", "seed", "split", "language",  # noqa: E731
                                                               "metric", "value", "higher_is_better")}
                                         for r in rows), key=key)
            assert strip(a.scores(split=None)) == strip(b.scores(split=None))
            assert b.get_run("r1")["wall_seconds"] == 12.5 and b.get_run("r1")["energy_kwh"] == 0.001


def _fake_result(**over):
    result = {
        "format": "speechssl.bench/1", "upstream": "mfcc", "task": "asr", "probe": "bilstm_ctc", "seed": 0,
        "config_hash": "abc123", "primary_metric": "cer", "higher_is_better": False,
        "metrics": {"cer": 0.3, "wer": 0.6, "beam_size": 8,
                    "per_language": {"de": {"cer": 0.2, "wer": 0.5, "utterances": 10},
                                     "en": {"cer": 0.4, "wer": 0.7, "utterances": 12}}},
        "dev": {"best": 0.28, "best_epoch": 2, "epochs_run": 3},
        "layer_weights": [1.0], "layers_used": [0], "upstream_meta": {"params": 0},
        "probe_params": 1234, "wall_seconds": {"total": 10.0},
        "cost": {"flops_per_second": 5.0, "energy_kwh": 0.01, "co2_kg": 0.002, "gpu_hours": 0.0},
        "config": {"data": "data/synth"},
    }
    result.update(over)
    return result


def test_bench_result_ingestion(tmp_path):
    run, scores = result_to_records(_fake_result())
    assert run["run_id"] == "abc123" and run["dataset"] == "synth"
    assert {(s["metric"], s.get("language", "")) for s in scores if s.get("split") != "dev"} == {
        ("cer", ""), ("wer", ""), ("cer", "de"), ("wer", "de"), ("cer", "en"), ("wer", "en")}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_fake_result()))
    with ResultStore(tmp_path / "r.db") as store:
        store.import_file(path)
        store.import_file(path)  # idempotent
        got = store.get_run("abc123")
        assert got["probe_params"] == 1234 and got["energy_kwh"] == 0.01 and got["extra"]["layer_weights"] == [1.0]
        assert len(store.scores()) == 6 and len(store.scores(split="dev")) == 1
    with pytest.raises(ConfigError, match="not a speechssl bench result"):
        result_to_records({"format": "other"})


def _writer(path: str, worker: int, rows: int) -> None:
    with ResultStore(path) as store:
        for i in range(rows):
            store.put_run(_run(run_id=f"w{worker}-{i}", seed=i, upstream=f"up{worker}"),
                          [{"metric": "accuracy", "value": i / rows}])


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.db")
    ResultStore(path).close()
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per writer, as separate commands would be
    procs = [ctx.Process(target=_writer, args=(path, w, 500)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM scores").fetchone() == (4000, 4000)
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4000
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    per_writer = dict(db.execute("SELECT upstream, COUNT(*) FROM runs GROUP BY upstream").fetchall())
    assert per_writer == {f"up{w}": 500 for w in range(8)}


def test_store_imports_without_torch():
    code = "import sys, speechssl.benchmark.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
