"""The result store: one SQLite file holding every run and every score.

Why SQLite: one file that many processes (a sweep's workers, several ``bench``
commands, an import) can write at once without a server. The database runs in WAL
mode, so readers never block the writer, and each write is one ``BEGIN IMMEDIATE``
transaction, so concurrent writers queue on SQLite's lock (``busy_timeout``) instead
of failing. WAL needs a local filesystem (shared memory): on NFS, keep the store on a
local disk and let one process (the sweep driver does this) write it.

Schema (``SCHEMA_VERSION`` 1; see docs/results.md):

``runs``, one row per run, keyed by ``run_id`` (the config hash for our runs; a hash
of the identifying columns for imported rows): upstream, task, probe, regime, seed,
dataset, status (pending | running | finished | failed), source (bench | sweep |
import), config_hash, error, attempts, primary_metric, cost columns (upstream_params,
probe_params, flops_per_second, wall_seconds, gpu_hours, energy_kwh, co2_kg),
created_at, updated_at (UTC ISO-8601), result_path, extra (JSON: layer weights,
training history, upstream metadata, imported free columns).

``scores``, one row per number: run_id, split, language ("" = overall), metric,
value, higher_is_better; primary key (run_id, split, language, metric), so writing
the same run twice replaces its scores instead of duplicating them.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from speechssl.benchmark.directions import metric_direction
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.fsutil import write_error

SCHEMA_VERSION = 1
STORE_ENV = "SPEECHSSL_STORE"


def default_store() -> Path:
    """``runs/results.db``, or ``$SPEECHSSL_STORE`` when set (the test suite points it at a temp dir)."""
    return Path(os.environ.get(STORE_ENV) or "runs/results.db")

STATUSES = ("pending", "running", "finished", "failed")

RUN_COLUMNS = (
    "run_id", "upstream", "task", "probe", "regime", "seed", "dataset", "status", "source",
    "config_hash", "error", "attempts", "primary_metric", "upstream_params", "probe_params",
    "flops_per_second", "wall_seconds", "gpu_hours", "energy_kwh", "co2_kg",
    "created_at", "updated_at", "result_path", "extra",
)
COST_COLUMNS = ("upstream_params", "probe_params", "flops_per_second", "wall_seconds", "gpu_hours",
                "energy_kwh", "co2_kg")
IDENTITY_COLUMNS = ("upstream", "task", "probe", "regime", "seed", "dataset")

# The long CSV/JSONL exchange format: one score per line, run columns repeated.
REQUIRED_IMPORT_COLUMNS = ("upstream", "task", "probe", "metric", "value")
EXPORT_COLUMNS = (
    "run_id", "upstream", "task", "probe", "regime", "seed", "dataset", "language", "split",
    "metric", "value", "higher_is_better", "status", "source", "config_hash",
    *COST_COLUMNS,
)
# Imported columns that fill run fields rather than going into ``extra``.
_IMPORT_RUN_FIELDS = {"params": "upstream_params", **{c: c for c in COST_COLUMNS}}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    upstream TEXT NOT NULL,
    task TEXT NOT NULL,
    probe TEXT NOT NULL,
    regime TEXT NOT NULL DEFAULT 'frozen',
    seed INTEGER,
    dataset TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'finished', 'failed')),
    source TEXT NOT NULL,
    config_hash TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    primary_metric TEXT,
    upstream_params INTEGER,
    probe_params INTEGER,
    flops_per_second REAL,
    wall_seconds REAL,
    gpu_hours REAL,
    energy_kwh REAL,
    co2_kg REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    result_path TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    split TEXT NOT NULL DEFAULT 'test',
    language TEXT NOT NULL DEFAULT '',
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    higher_is_better INTEGER NOT NULL,
    PRIMARY KEY (run_id, split, language, metric)
);
CREATE INDEX IF NOT EXISTS runs_by_cell ON runs (task, upstream, probe);
"""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class ResultStore:
    """A handle on one store file; cheap to open, safe to use from many processes.

    One handle per process (sqlite3 connections must not cross a fork).
    """

    def __init__(self, path: str | Path | None = None, *, create: bool = True, timeout: float = 120.0) -> None:
        self.path = Path(path) if path is not None else default_store()
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"result store {self.path} is not a file")
        if not create and not self.path.exists():
            # Readers must not leave an empty store behind a mistyped path.
            raise ConfigError(f"no result store at {self.path} (bench, sweep or `results import` make one)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc, "result store") from exc
        existed = self.path.exists()
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            failure = _store_write_failure(self.path, exc)
            if failure is not None or not existed:
                raise failure or SpeechSSLError(f"cannot create result store {self.path}: {exc}") from exc
            raise ConfigError(f"{self.path} is not a speechssl result store ({exc})") from exc
        self._db.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL keeps it consistent
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.row_factory = sqlite3.Row
        self._init_schema()

    # ------------------------------------------------------------ plumbing

    def _init_schema(self) -> None:
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise ConfigError(f"{self.path} has store schema {row[0]}; this speechssl reads {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: two writers never both read-then-
        # upgrade (which would deadlock one of them into SQLITE_BUSY).
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on e.g. a full disk
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            failure = _store_write_failure(self.path, exc)
            if failure is None:
                raise
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise failure from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def put_run(self, run: dict[str, Any], scores: Iterable[dict[str, Any]] = (), *,
                replace_scores: bool = True) -> str:
        """Insert or update one run and (optionally) replace its scores, atomically.

        ``run`` needs upstream, task, probe, status and source; run_id defaults to a
        hash of the identity columns. ``scores`` are dicts with metric, value and
        optionally split, language, higher_is_better (else read from the name).
        """
        row = _run_row(run)
        score_rows = [_score_row(row["run_id"], s) for s in scores]
        columns = ", ".join(RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS if c not in ("run_id", "created_at", "attempts"))
        if run.get("attempts") is not None:
            updates += ", attempts = excluded.attempts"
        with self._write() as db:
            # An upsert keeps created_at (and the attempt count) of a run seen before.
            db.execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' for _ in RUN_COLUMNS)}) "
                       f"ON CONFLICT(run_id) DO UPDATE SET {updates}", [row[c] for c in RUN_COLUMNS])
            if replace_scores and (score_rows or row["status"] == "finished"):
                db.execute("DELETE FROM scores WHERE run_id = ?", (row["run_id"],))
            db.executemany(
                "INSERT OR REPLACE INTO scores (run_id, split, language, metric, value, higher_is_better) "
                "VALUES (:run_id, :split, :language, :metric, :value, :higher_is_better)", score_rows)
        return row["run_id"]

    def set_status(self, run_id: str, status: str, *, error: str | None = None, count_attempt: bool = False) -> None:
        if status not in STATUSES:
            raise ConfigError(f"unknown run status {status!r}; one of {', '.join(STATUSES)}")
        with self._write() as db:
            db.execute("UPDATE runs SET status = ?, error = ?, updated_at = ?, attempts = attempts + ? WHERE run_id = ?",
                       (status, error, utc_now(), int(count_attempt), run_id))

    def add_result(self, result: dict[str, Any], *, source: str = "bench", result_path: str | Path | None = None,
                   upstream_label: str | None = None) -> str:
        """Ingest one ``result.json`` dict written by :func:`speechssl.downstream.runner.run_bench`.

        ``upstream_label`` replaces the upstream spec as the name shown in tables
        (e.g. "pretrained" for ``ckpt:runs/demo/pretrain``); the spec stays in ``extra``.
        """
        run, scores = result_to_records(result, source=source, result_path=result_path)
        if upstream_label:
            run["extra"]["upstream_spec"] = run["upstream"]
            run["upstream"] = upstream_label
        return self.put_run(run, scores)

    def add_result_file(self, path: str | Path, *, source: str = "bench") -> str:
        path = Path(path)
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read bench result {path}: {exc}") from exc
        return self.add_result(result, source=source, result_path=path)

    def delete_runs(self, run_ids: Iterable[str]) -> int:
        ids = list(run_ids)
        with self._write() as db:
            db.executemany("DELETE FROM runs WHERE run_id = ?", [(i,) for i in ids])
        return len(ids)

    # ------------------------------------------------------------ reading

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        """Run dicts (``extra`` parsed), filtered by equality on any run column."""
        where, params = _where(filters, RUN_COLUMNS)
        rows = self._db.execute(f"SELECT * FROM runs{where} ORDER BY task, upstream, probe, regime, seed, run_id",
                                params).fetchall()
        return [_run_dict(r) for r in rows]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        found = self.runs(run_id=run_id)
        return found[0] if found else None

    def scores(self, *, split: str | None = "test", include_unfinished: bool = False,
               **filters: Any) -> list[dict[str, Any]]:
        """Score rows joined with their run's identity (the package's score-row contract).

        Test-split scores of finished runs by default; ``split=None`` gives every split.
        """
        filters["split"] = split
        allowed = (*IDENTITY_COLUMNS, "run_id", "status", "source", "split", "language", "metric")
        qualified = {("s." if k in ("run_id", "split", "language", "metric") else "r.") + k: v
                     for k, v in filters.items() if k in allowed}
        unknown = set(filters) - set(allowed)
        if unknown:
            raise ConfigError(f"cannot filter scores by {sorted(unknown)}; use {', '.join(allowed)}")
        if not include_unfinished:
            qualified["r.status"] = "finished"
        where, params = _where(qualified, None)
        rows = self._db.execute(
            "SELECT s.run_id, r.upstream, r.task, r.probe, r.regime, r.seed, r.dataset, s.language, s.split, "
            "s.metric, s.value, s.higher_is_better, r.status, r.source, r.primary_metric "
            f"FROM scores s JOIN runs r ON r.run_id = s.run_id{where} "
            "ORDER BY r.task, r.dataset, s.metric, r.upstream, r.probe, r.regime, r.seed, s.language", params).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["higher_is_better"] = bool(d["higher_is_better"])
            out.append(d)
        return out

    def count(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            counts[status] = n
        counts["scores"] = self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        return counts

    # ------------------------------------------------------------ exchange

    def import_rows(self, rows: Iterable[dict[str, Any]], *, source: str = "import", origin: str = "") -> dict[str, int]:
        """Import long-format score rows (CSV/JSONL lines); returns counts.

        Rows sharing (upstream, task, probe, regime, seed, dataset) — or an explicit
        run_id — form one run. Re-importing the same file replaces, never duplicates.
        """
        grouped: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for line_no, raw in enumerate(rows, start=2):
            where = f"{origin}:{line_no}" if origin else f"row {line_no - 1}"
            run, score = _parse_import_row(raw, where, source)
            entry = grouped.setdefault(run["run_id"], (run, []))
            for key in _IMPORT_RUN_FIELDS.values():  # a cost given on any line of the run counts
                if entry[0].get(key) is None and run.get(key) is not None:
                    entry[0][key] = run[key]
            entry[0]["extra"].update(run["extra"])
            entry[1].append(score)
        for run, scores in grouped.values():
            self.put_run(run, scores)
        return {"runs": len(grouped), "scores": sum(len(s) for _, s in grouped.values())}

    def import_file(self, path: str | Path, *, source: str = "import") -> dict[str, int]:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no such results file: {path}")
        if path.suffix == ".json":  # one bench result.json
            run_id = self.add_result_file(path, source="bench")
            return {"runs": 1, "scores": len(self.scores(run_id=run_id, split=None))}
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix == ".jsonl":
            rows = []
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from exc
            return self.import_rows(rows, source=source, origin=str(path))
        if path.suffix in (".csv", ".tsv"):
            reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix == ".tsv" else ",")
            missing = [c for c in REQUIRED_IMPORT_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: missing required column(s) {', '.join(missing)}; "
                                  f"the long format needs {','.join(REQUIRED_IMPORT_COLUMNS)} (see docs/results.md)")
            return self.import_rows(reader, source=source, origin=str(path))
        raise ConfigError(f"{path}: unknown results format {path.suffix!r}; use .csv, .tsv, .jsonl or a result.json")

    def export_rows(self, *, include_unfinished: bool = False, **filters: Any) -> list[dict[str, Any]]:
        """Long-format rows (one per score, every split) that :meth:`import_rows` reads back."""
        runs = {r["run_id"]: r for r in self.runs()}
        out = []
        for s in self.scores(split=None, include_unfinished=include_unfinished, **filters):
            run = runs[s["run_id"]]
            row = {c: s.get(c, run.get(c)) for c in EXPORT_COLUMNS}
            out.append(row)
        return out

    def export_file(self, path: str | Path, **filters: Any) -> int:
        path = Path(path)
        rows = self.export_rows(**filters)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jsonl":
            text = "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows)
        elif path.suffix == ".csv":
            text = rows_to_csv(rows)
        else:
            raise ConfigError(f"{path}: export to .csv or .jsonl")
        from speechssl.fsutil import write_text_atomic

        write_text_atomic(path, text)
        return len(rows)


# ---------------------------------------------------------------- helpers


def _store_write_failure(path: Path, exc: sqlite3.Error) -> SpeechSSLError | None:
    """One line for SQLite's disk-full / read-only / cannot-open errors (None for others):
    the failed transaction was rolled back, so the store holds what it held before."""
    text = str(exc).lower()
    if "disk is full" in text or "disk full" in text:
        reason = "no space left on device; the store is unchanged (the transaction was rolled back)"
    elif "readonly" in text or "read-only" in text:
        reason = "the store or its directory is read-only"
    elif "unable to open" in text:
        reason = "cannot open or create the file (is its directory writable?)"
    else:
        return None
    return SpeechSSLError(f"cannot write result store {path}: {reason}")


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def identity_run_id(run: dict[str, Any]) -> str:
    """A stable id from a run's identity columns (for imported results)."""
    blob = json.dumps([run.get(c) for c in IDENTITY_COLUMNS], ensure_ascii=True)
    return "imp-" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def error_line(error: str | None) -> str:
    """The last non-empty line of a stored error (a traceback's tail): what to show in one line."""
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else "failed"


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    for key in ("upstream", "task", "probe", "status", "source"):
        if not run.get(key):
            raise ConfigError(f"a run needs a non-empty {key!r}: {run}")
    if run["status"] not in STATUSES:
        raise ConfigError(f"unknown run status {run['status']!r}; one of {', '.join(STATUSES)}")
    row = {c: run.get(c) for c in RUN_COLUMNS}
    row["regime"] = row["regime"] or "frozen"
    row["dataset"] = row["dataset"] or ""
    row["run_id"] = row["run_id"] or identity_run_id(row)
    row["attempts"] = int(row["attempts"] or 0)
    now = utc_now()
    row["created_at"] = row["created_at"] or now
    row["updated_at"] = now
    row["extra"] = json.dumps(row["extra"] or {}, sort_keys=True, default=str)
    return row


def _score_row(run_id: str, score: dict[str, Any]) -> dict[str, Any]:
    metric = str(score["metric"]).strip()
    value = float(score["value"])
    if not math.isfinite(value):
        raise ConfigError(f"score {metric} of run {run_id} is {value}; only finite values are stored")
    hib = score.get("higher_is_better")
    if hib is None:
        hib = metric_direction(metric)
        if hib is None:
            raise ConfigError(f"cannot tell whether higher {metric!r} is better; give higher_is_better (1 or 0)")
    return {"run_id": run_id, "split": score.get("split") or "test", "language": score.get("language") or "",
            "metric": metric, "value": value, "higher_is_better": int(bool(hib))}


def _parse_bool(text: Any, where: str) -> bool | None:
    if text is None or text == "":
        return None
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "higher", "up"):
        return True
    if value in ("0", "false", "no", "lower", "down"):
        return False
    raise ConfigError(f"{where}: higher_is_better must be 1/0 or true/false, not {text!r}")


def _parse_number(text: Any, where: str, column: str, cast=float):
    if text is None or text == "":
        return None
    try:
        return cast(float(text)) if cast is int else cast(text)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: column {column!r} must be a number, not {text!r}") from exc


def _parse_import_row(raw: dict[str, Any], where: str, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    row = {str(k).strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None}
    for column in REQUIRED_IMPORT_COLUMNS:
        if row.get(column) in (None, ""):
            raise ConfigError(f"{where}: empty required column {column!r}")
    value = _parse_number(row["value"], where, "value")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: value {row['value']!r} is not finite")
    metric = str(row["metric"])
    hib = _parse_bool(row.get("higher_is_better"), where)
    if hib is None:
        hib = metric_direction(metric)
        if hib is None:
            raise ConfigError(f"{where}: cannot tell whether higher {metric!r} is better; "
                              "add a higher_is_better column (1 or 0)")
    run = {
        "upstream": str(row["upstream"]), "task": str(row["task"]), "probe": str(row["probe"]),
        "regime": row.get("regime") or "frozen", "seed": _parse_number(row.get("seed"), where, "seed", int),
        "dataset": row.get("dataset") or "", "status": row.get("status") or "finished",
        "source": row.get("source") or source, "config_hash": row.get("config_hash") or None,
    }
    run["run_id"] = row.get("run_id") or identity_run_id(run)
    for column, field in _IMPORT_RUN_FIELDS.items():  # "params" is an alias of upstream_params
        number = _parse_number(row.get(column), where, column,
                               int if field in ("upstream_params", "probe_params") else float)
        if run.get(field) is None:
            run[field] = number
    known = {*EXPORT_COLUMNS, *REQUIRED_IMPORT_COLUMNS, *_IMPORT_RUN_FIELDS, "higher_is_better"}
    run["extra"] = {k: v for k, v in row.items() if k not in known and v not in (None, "")}
    score = {"metric": metric, "value": value, "higher_is_better": hib,
             "split": row.get("split") or "test", "language": row.get("language") or ""}
    return run, score


def result_to_records(result: dict[str, Any], *, source: str = "bench",
                      result_path: str | Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run_bench result dict as (run, scores) records for :meth:`ResultStore.put_run`."""
    if result.get("format") != "speechssl.bench/1":
        raise ConfigError(f"not a speechssl bench result (format {result.get('format')!r})")
    config = result.get("config", {})
    metrics = result.get("metrics", {})
    scores: list[dict[str, Any]] = []
    for name, value in metrics.items():
        if _is_score(name, value):
            scores.append({"metric": name, "value": float(value)})
    for language, per in (metrics.get("per_language") or {}).items():
        for name, value in per.items():
            if _is_score(name, value):
                scores.append({"metric": name, "value": float(value), "language": language})
    # A run trained on several datasets scores each one: split "test@<dataset>" (stats.split_subset).
    for dataset, languages in (metrics.get("per_dataset") or {}).items():
        for language, per in languages.items():
            for name, value in per.items():
                if _is_score(name, value):
                    scores.append({"metric": name, "value": float(value), "language": language,
                                   "split": f"test@{dataset}"})
    for name, value in (result.get("dev") or {}).items():
        if name == "best" and isinstance(value, (int, float)):
            scores.append({"metric": result["primary_metric"], "value": float(value), "split": "dev",
                           "higher_is_better": result.get("higher_is_better")})
    cost = result.get("cost") or {}
    wall = result.get("wall_seconds") or {}
    run = {
        "run_id": result["config_hash"], "config_hash": result["config_hash"],
        "upstream": result["upstream"], "task": result["task"], "probe": result["probe"],
        "regime": result.get("regime") or "frozen", "seed": result.get("seed"),
        "dataset": training_data(config), "status": "finished", "source": source,
        "primary_metric": result.get("primary_metric"),
        "upstream_params": (result.get("upstream_meta") or {}).get("params"),
        "probe_params": result.get("probe_params"),
        "flops_per_second": cost.get("flops_per_second"),
        "wall_seconds": wall.get("total"),
        "gpu_hours": cost.get("gpu_hours"),
        "energy_kwh": cost.get("energy_kwh"),
        "co2_kg": cost.get("co2_kg"),
        "result_path": str(result_path) if result_path is not None else None,
        "extra": {k: result.get(k) for k in ("layer_weights", "layers_used", "upstream_meta", "history", "hours",
                                             "device", "dev", "probe_macs_per_second", "probe_kinds", "health",
                                             "adaptation")
                  if result.get(k) is not None},
    }
    return run, scores


def training_data(config: dict[str, Any]) -> str:
    """A run's ``dataset``: the data directory's name, with the train split when it is not
    ``train`` (``synth_ml:train_1min``), so few-shot runs on one corpus stay separate cells."""
    name = Path(config.get("data", "")).name
    split = config.get("train_split") or "train"
    return name if split == "train" else f"{name}:{split}"


# Non-score numbers that sit among a result's metrics.
_NOT_SCORES = {"beam_size", "utterances", "trials", "speakers", "threshold"}


def _is_score(name: str, value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and name not in _NOT_SCORES
            and math.isfinite(float(value)) and metric_direction(name) is not None)


def _where(filters: dict[str, Any], allowed: Iterable[str] | None) -> tuple[str, list[Any]]:
    if allowed is not None:
        unknown = set(filters) - set(allowed)
        if unknown:
            raise ConfigError(f"cannot filter runs by {sorted(unknown)}")
    clauses, params = [], []
    for key, value in filters.items():
        if value is not None:  # None means "any"
            clauses.append(f"{key} = ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["extra"] = json.loads(d["extra"] or "{}")
    return d
