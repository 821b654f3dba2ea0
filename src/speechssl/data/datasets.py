"""Several "datasets" per language, and few-shot train splits, derived from one corpus.

ML-SUPERB 2.0 scores every (language, dataset) pair and reports how far the error rate
of one language moves between its datasets (read speech, telephone speech, ...); its
train sets come in few-shot sizes per pair (10 min inside 1 h). The synthetic corpus has
a single recording condition, so ``speechssl corpus datasets`` builds that structure
from it: every utterance of ``train``/``dev``/``test`` goes to exactly one *dataset*,
a recording condition applied to its audio::

    OUT/corpus.json                                 datasets, shots, hours per split/language/dataset
    OUT/manifests/cuts_{train,dev,test}.jsonl.gz    every utterance once, custom["dataset"] set
    OUT/manifests/cuts_train_<shot>.jsonl.gz        few-shot train sets, e.g. train_1min, train_4min
    OUT/audio/<dataset>/<split>/<dataset>__<id>.flac

Design choices, and why:

* **Balanced assignment.** Within each (split, language) the utterances are shuffled
  (seeded) and dealt round-robin over the datasets, so counts differ by one at most and a
  language has every dataset in every split whenever it has as many utterances as there
  are datasets (a pair that cannot be filled is listed under ``missing_pairs``). The
  dealing continues across languages, so a split's totals stay balanced too.
* **Reproducible audio.** A degraded file depends only on the seed, the dataset and the
  source utterance id (its own random generator), never on worker scheduling; re-runs
  give byte-identical files. Clean audio is *hard-linked* to the source file (no copy,
  and the output survives the source being regenerated); where linking is impossible
  (another file system) it is copied.
* **New ids.** Cut and recording ids carry the dataset (``telephone__spk003-it-000047``,
  ``audio/telephone/...``), so a feature cache shared with the source corpus never mixes
  a degraded cut with its clean original.
* **Nested few-shot sets.** Each (language, dataset) pair's train utterances get one
  seeded order; the set for S seconds is the longest prefix of that order within S. A
  smaller shot is therefore a prefix of a larger one (10 min inside 1 h, as ML-SUPERB),
  and every train cut records in ``custom["shots"]`` the smallest shot that holds it.
* **Resumable, never half-read.** A marker file exists while a run writes; audio files
  are written atomically, so an interrupted run with the same settings resumes (files
  already written are kept), and ``corpus.json`` without the marker means finished. A
  finished directory with the same settings is reused at once; other settings are
  refused unless ``overwrite`` is set.

The manifests are written by :func:`speechssl.corpora.base.write_corpus`, the writer
of ``speechssl prepare``, so the output reads like any prepared corpus
(:func:`speechssl.data.manifests.load_cuts`, ``speechssl corpus check``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from speechssl.errors import ConfigError, SpeechSSLError

GENERATOR_VERSION = "1"
"""Bump when the same settings would give different files (it is part of the settings hash)."""

SOURCE_SPLITS = ("train", "dev", "test")
DEFAULT_DATASETS = ("clean", "telephone", "reverb")
DEFAULT_SHOTS = (60.0, 240.0)
SAMPLE_RATE = 16_000
_MARKER = ".datasets-incomplete"
_OURS = ("audio", "manifests", "corpus.json")

CONDITIONS: dict[str, str] = {
    "clean": "the source audio unchanged (hard-linked, or copied across file systems)",
    "telephone": "narrowband phone line: 300-3400 Hz band-pass, 8 kHz, 8-bit mu-law",
    "reverb": "synthetic room: exponentially decaying impulse response, RT60 0.2-0.9 s",
    "noise": "additive white/pink/brown/babble noise at 5-25 dB SNR",
}
"""Dataset names accepted by ``datasets=`` and what each does to the audio."""


# ---------------------------------------------------------------- shot labels


_SHOT_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|h)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}


def shot_label(seconds: float) -> str:
    """A shot size as a split-name label: whole hours as ``1h``, whole minutes as ``10min``,
    anything else in seconds (``30s``, ``90s``, ``2.5s``); :func:`parse_shot` reads it back."""
    seconds = _positive_seconds(seconds)
    rounded = round(seconds, 3)
    if rounded >= 3600 and rounded % 3600 == 0:
        return f"{int(rounded // 3600)}h"
    if rounded >= 60 and rounded % 60 == 0:
        return f"{int(rounded // 60)}min"
    text = f"{rounded:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def parse_shot(value: str | float | int) -> float:
    """Seconds of a shot size: a number (seconds) or a label ``30s``, ``10min``, ``1h``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _positive_seconds(value)
    text = str(value)
    match = _SHOT_PATTERN.match(text)
    if match is None:
        if text.strip().startswith("-"):
            raise ConfigError(f"shot {text!r}: a shot size must be positive (e.g. 30s, 10min, 1h)")
        raise ConfigError(f"shot {text!r}: expected a number with a unit s, min or h (e.g. 30s, 10min, 1h)")
    return _positive_seconds(float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()], text)


def _positive_seconds(seconds: float, shown: Any = None) -> float:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"shot {seconds!r}: not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"shot {shown if shown is not None else seconds!r}: a shot size must be a positive, "
                          "finite number of seconds (e.g. 30s, 10min, 1h)")
    return value


def _parse_shots(shots: str | Iterable[str | float] | None) -> dict[str, float]:
    """Label -> seconds, ascending; the same size given twice (``1min,60s``) counts once."""
    if shots is None:
        return {}
    items = [s for s in shots.split(",") if s.strip()] if isinstance(shots, str) else list(shots)
    parsed = sorted(parse_shot(item) for item in items)
    return {shot_label(seconds): seconds for seconds in parsed}


def _parse_datasets(datasets: str | Iterable[str]) -> list[str]:
    items = datasets.split(",") if isinstance(datasets, str) else [str(d) for d in datasets]
    names = [item.strip().lower() for item in items if item.strip()]
    if not names:
        raise ConfigError(f"datasets: give at least one of {', '.join(CONDITIONS)}")
    unknown = [name for name in names if name not in CONDITIONS]
    if unknown:
        raise ConfigError(f"datasets: unknown dataset {', '.join(repr(u) for u in unknown)} "
                          f"(choose from {', '.join(CONDITIONS)}, comma-separated)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"datasets: {', '.join(repeated)} given more than once")
    return names


# ---------------------------------------------------------------- the source


@dataclass
class _Source:
    """One source utterance, and what this run does with it."""

    split: str
    id: str
    path: str
    start: float
    duration: float
    text: str | None
    speaker: str | None
    language: str | None
    gender: str | None
    custom: dict[str, Any]
    dataset: str = ""
    new_id: str = ""
    audio: Path | None = None
    seconds: float = 0.0
    """Duration of the derived cut (the written file's, for degraded audio)."""


def _check_source(source: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """A content hash per source split manifest, and the source's corpus.json (may be empty).

    Cheap on purpose (no lhotse import, no cut parsing): it is all a reused output needs."""
    from speechssl.data.manifests import available_splits, cuts_path

    if not source.is_dir():
        raise ConfigError(f"source corpus directory not found: {source} "
                          "(make one with `speechssl corpus synth --out DIR`)")
    missing = [split for split in SOURCE_SPLITS if not cuts_path(source, split).is_file()]
    if missing:
        have = ", ".join(available_splits(source)) or "none"
        raise ConfigError(f"{source}: no manifests/cuts_{{{','.join(missing)}}}.jsonl.gz (splits found: {have}); "
                          "SOURCE must be a corpus directory with train, dev and test splits")
    info: dict[str, Any] = {}
    if (source / "corpus.json").is_file():
        try:
            info = json.loads((source / "corpus.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            info = {}
    return {split: _manifest_hash(cuts_path(source, split)) for split in SOURCE_SPLITS}, info


def _read_source(source: Path) -> list[_Source]:
    """The source's train/dev/test utterances with their labels."""
    from speechssl.data.manifests import load_cuts

    items: list[_Source] = []
    for split in SOURCE_SPLITS:
        for cut in load_cuts(source, split):
            sources = cut.recording.sources if cut.recording is not None else []
            if len(sources) != 1 or sources[0].type != "file":
                raise ConfigError(f"{source}: cut {cut.id!r} ({split}) is not read from one audio file")
            if len(cut.supervisions) != 1:
                raise ConfigError(f"{source}: cut {cut.id!r} ({split}) has {len(cut.supervisions)} supervisions; "
                                  "one per cut is needed to carry its labels")
            sup = cut.supervisions[0]
            custom = dict(sup.custom or {})
            # The source's own dataset/shot labels would be wrong here; they are kept under other names.
            for key in ("dataset", "shots"):
                if key in custom:
                    custom[f"source_{key}"] = custom.pop(key)
            items.append(_Source(split, str(cut.id), str(sources[0].source), float(cut.start), float(cut.duration),
                                 sup.text, sup.speaker, sup.language, sup.gender, custom))
    return items


def _manifest_hash(path: Path) -> str:
    """Hash of the manifest's *content*: gzip headers carry a time stamp that is not content."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_hash(datasets: Sequence[str], shots: dict[str, float], seed: int, source_hashes: dict[str, str]) -> str:
    """What makes two derived corpora identical: generator, datasets, shots, seed and the source's manifests."""
    blob = json.dumps({"generator": GENERATOR_VERSION, "datasets": list(datasets), "shots": sorted(shots.values()),
                       "seed": seed, "source": source_hashes}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- assignment and shots


def _assign(items: list[_Source], datasets: Sequence[str], seed: int) -> None:
    """Deal every (split, language) group's shuffled utterances round-robin over ``datasets``."""
    groups: dict[tuple[str, str], list[_Source]] = defaultdict(list)
    for item in items:
        groups[(item.split, item.language or "")].append(item)
    cursor: Counter[str] = Counter()  # per split: where the dealing continues in the next language
    for (split, language) in sorted(groups):
        group = sorted(groups[(split, language)], key=lambda s: s.id)
        random.Random(f"{seed}/assign/{split}/{language}").shuffle(group)
        for i, item in enumerate(group):
            item.dataset = datasets[(cursor[split] + i) % len(datasets)]
        cursor[split] += len(group)


def _select_shots(items: list[_Source], shots: dict[str, float], seed: int) -> dict[str, list[_Source]]:
    """Few-shot train sets per label: per (language, dataset), the longest prefix of one seeded
    order that fits the budget. Sets the smallest containing label in each train item's custom."""
    pairs: dict[tuple[str, str], list[_Source]] = defaultdict(list)
    for item in items:
        if item.split == "train":
            pairs[(item.language or "", item.dataset)].append(item)
    chosen: dict[str, list[_Source]] = {label: [] for label in shots}
    for (language, dataset) in sorted(pairs):
        order = sorted(pairs[(language, dataset)], key=lambda s: s.id)
        random.Random(f"{seed}/shots/{language}/{dataset}").shuffle(order)
        total = 0.0
        for item in order:
            total += item.seconds
            inside = [label for label, budget in shots.items() if total <= budget + 1e-9]
            if not inside:
                break  # a prefix: the first utterance over the largest budget ends every set
            item.custom["shots"] = inside[0]  # shots are ascending, so the first is the smallest
            for label in inside:
                chosen[label].append(item)
    return chosen


# ---------------------------------------------------------------- audio


@dataclass(frozen=True)
class _Job:
    """One degraded file to write (plain values: it travels to a worker process)."""

    source: str
    start: float
    duration: float
    out: str
    condition: str
    seed: int
    key: int


def _conditions() -> dict[str, Callable]:
    from speechssl.data.synth import augment

    return {"telephone": augment.telephone, "reverb": augment.add_reverb, "noise": augment.add_noise}


def _render(job: _Job) -> int:
    """Write one degraded file (unless a finished one is there) and return its sample count."""
    import soundfile as sf

    from speechssl.data.audio import load_audio
    from speechssl.fsutil import write_bytes_atomic

    out = Path(job.out)
    if out.is_file():  # written atomically by an interrupted run with the same settings
        try:
            frames = sf.info(str(out)).frames
            if frames > 0:
                return int(frames)
        except Exception:  # unreadable leftovers (e.g. after a power loss) are redone
            pass
    wave = load_audio(job.source, offset=job.start, duration=job.duration, min_seconds=0.0).astype(np.float64)
    rng = np.random.default_rng([job.seed, job.key])
    processed, _ = _conditions()[job.condition](wave, rng)
    # Back to the source's peak: never clips, and levels stay comparable between datasets.
    processed = processed * (np.max(np.abs(wave)) / (np.max(np.abs(processed)) + 1e-12))
    buffer = io.BytesIO()
    sf.write(buffer, processed.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, buffer.getvalue())
    return len(processed)


def _rng_key(dataset: str, utterance_id: str) -> int:
    """A stable 63-bit number for (dataset, utterance): Python's hash() changes between runs."""
    return int.from_bytes(hashlib.sha256(f"{dataset}/{utterance_id}".encode()).digest()[:8], "big") >> 1


def _file_name(new_id: str, suffix: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", new_id)
    if safe != new_id:  # keep names unique when ids hold characters a path cannot
        safe += "-" + hashlib.sha1(new_id.encode()).hexdigest()[:8]
    return safe + suffix


def _link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link ``source`` at ``target`` (copy where linking is impossible); True if linked."""
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return os.path.samefile(source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
        linked = True
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, tmp)
        linked = False
    os.replace(tmp, target)
    return linked


def _write_audio(items: list[_Source], out: Path, seed: int, workers: int, progress: bool) -> dict[str, int]:
    """Link the clean files and render the degraded ones; sets each item's ``audio`` and ``seconds``."""
    from tqdm import tqdm

    counts: Counter[str] = Counter()
    jobs: list[tuple[_Source, _Job]] = []
    for item in items:
        folder = out / "audio" / item.dataset / item.split
        if item.dataset == "clean":
            item.audio = folder / _file_name(item.new_id, Path(item.path).suffix or ".flac")
            counts["linked" if _link_or_copy(Path(item.path), item.audio) else "copied"] += 1
            item.seconds = item.duration
        else:
            item.audio = folder / _file_name(item.new_id, ".flac")
            jobs.append((item, _Job(item.path, item.start, item.duration, str(item.audio), item.dataset, seed,
                                    _rng_key(item.dataset, item.id))))
    interactive = sys.stderr.isatty()
    with tqdm(total=len(jobs), desc="degrading", unit="utt", disable=not progress or not jobs, file=sys.stderr,
              mininterval=0.1 if interactive else 10.0) as bar:
        if workers == 1 or len(jobs) < 2:
            results = map(_render, (job for _, job in jobs))
            for (item, _), samples in zip(jobs, results):
                item.seconds = samples / SAMPLE_RATE
                bar.update()
        else:
            # "spawn": the caller may hold torch or tqdm threads, which forking would copy half-held.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                # map keeps the order of the jobs, so results do not depend on scheduling.
                for (item, _), samples in zip(jobs, pool.map(_render, [job for _, job in jobs], chunksize=16)):
                    item.seconds = samples / SAMPLE_RATE
                    bar.update()
    counts["rendered"] = len(jobs)
    return dict(counts)


# ---------------------------------------------------------------- output directory


def _reusable(out: Path, digest: str, overwrite: bool) -> dict[str, Any] | None:
    """The finished description in ``out`` when it holds these settings; None when ``out`` is to be
    (re)written. Refuses a directory that holds something else."""
    info_path, marker = out / "corpus.json", out / _MARKER
    if not out.exists():
        return None
    if not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    info: dict[str, Any] | None = None
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            info = None
    ours = isinstance(info, dict) and isinstance(info.get("derived"), dict)
    if marker.exists():
        return None  # our own unfinished run: resumed or redone by _prepare
    if info is None or not ours:
        if info is not None or any((out / name).exists() for name in _OURS):
            raise ConfigError(f"{out} holds files not written by `speechssl corpus datasets`; "
                              "choose an empty or new --out")
        return None
    if info["derived"].get("settings_hash") == digest:
        from speechssl.data.manifests import cuts_path

        if all(cuts_path(out, split).is_file() for split in info.get("splits", {})):
            return info
        return None  # finished once, but manifests are gone: write again
    if not overwrite:
        raise ConfigError(f"{out} already holds datasets derived with other settings (settings "
                          f"{info['derived'].get('settings_hash')}, requested {digest}); choose another --out "
                          "or pass overwrite=True (--overwrite)")
    return None


def _prepare(out: Path, digest: str, progress: bool) -> None:
    """Set the marker, then clear what a run with other settings left; an interrupted run with
    the same settings keeps its finished audio files (they were written atomically)."""
    marker = out / _MARKER
    previous = None
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8")).get("settings_hash")
        except (OSError, json.JSONDecodeError, AttributeError):
            previous = None
    out.mkdir(parents=True, exist_ok=True)
    from speechssl.fsutil import write_text_atomic

    write_text_atomic(marker, json.dumps({"settings_hash": digest, "pid": os.getpid()}) + "\n")
    resume = previous == digest
    if progress and previous is not None:
        what = "resuming it" if resume else "it used other settings; starting over"
        print(f"{out}: an earlier `speechssl corpus datasets` run did not finish; {what}", file=sys.stderr)
    (out / "corpus.json").unlink(missing_ok=True)
    if resume:
        for leftover in (out / "audio").rglob(".*.tmp-*") if (out / "audio").is_dir() else ():
            leftover.unlink(missing_ok=True)
        return
    for name in ("audio", "manifests"):
        if (out / name).is_dir():
            shutil.rmtree(out / name)


# ---------------------------------------------------------------- public API


def derive_datasets(source_dir: str | Path, out_dir: str | Path, *,
                    datasets: str | Sequence[str] = DEFAULT_DATASETS,
                    shots: str | Sequence[str | float] | None = DEFAULT_SHOTS,
                    seed: int = 0, workers: int = 1, progress: bool = True,
                    overwrite: bool = False) -> dict[str, Any]:
    """Derive an ML-SUPERB-style corpus (several datasets per language, few-shot train splits)
    from ``source_dir`` into ``out_dir`` and return its ``corpus.json`` content.

    ``datasets``: names from :data:`CONDITIONS` (a list or a comma-separated string);
    ``shots``: few-shot sizes per (language, dataset) pair, seconds or labels (``"10min"``),
    each giving a split ``train_<label>``; ``workers``: processes that degrade audio ("spawn",
    so a script calling this needs the ``if __name__ == "__main__":`` guard). A finished
    ``out_dir`` with the same settings is reused; see the module docstring for the rest.
    """
    from speechssl.corpora.base import Utterance, write_corpus
    from speechssl.fsutil import write_text_atomic

    names = _parse_datasets(datasets)
    shot_sizes = _parse_shots(shots)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    source, out = Path(source_dir), Path(out_dir)
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the source corpus itself; choose another directory")

    source_hashes, source_info = _check_source(source)
    digest = settings_hash(names, shot_sizes, seed, source_hashes)
    reused = _reusable(out, digest, overwrite)
    if reused is not None:
        if progress:
            print(f"reusing derived datasets in {out} (settings {digest})", file=sys.stderr)
        return reused
    items = _read_source(source)
    _prepare(out, digest, progress)

    _assign(items, names, seed)
    for item in items:
        item.new_id = f"{item.dataset}__{item.id}"
    # Absolute paths: write_corpus stores them as given, and load_cuts would read a relative
    # one against OUT itself.
    audio_counts = _write_audio(items, out.resolve(), seed, workers, progress)
    chosen = _select_shots(items, shot_sizes, seed)

    utterances = [
        Utterance(id=item.new_id, audio=item.audio, split=item.split, text=item.text, speaker=item.speaker,
                  language=item.language, gender=item.gender,
                  start=item.start if item.dataset == "clean" else 0.0,
                  duration=item.duration if item.dataset == "clean" else None,
                  custom={**item.custom, "dataset": item.dataset, "source_id": item.id})
        for item in items
    ]
    languages = sorted({item.language or "" for item in items})
    notes = {
        "source": str(source.resolve()),
        "source_name": source_info.get("name"),
        "derived": {"tool": "speechssl corpus datasets", "generator": GENERATOR_VERSION, "settings_hash": digest,
                    "seed": seed, "source_manifests": source_hashes},
        "datasets": names,
        "dataset_conditions": {name: CONDITIONS[name] for name in names},
        "shots": shot_sizes,
        "languages": languages,
        "audio": audio_counts,
        "split_note": (f"each utterance of the source's train/dev/test in one of {len(names)} datasets "
                       f"({', '.join(names)}), balanced per (split, language); few-shot train splits "
                       + (", ".join(f"train_{label}" for label in shot_sizes) or "none")
                       + " per (language, dataset) pair, nested"),
    }
    name = f"{source_info.get('name') or source.name}-datasets"
    info = write_corpus(out, name=name, root=out, utterances=utterances, notes=notes)
    if info.get("skipped"):
        first = info["skipped"][0]
        raise SpeechSSLError(f"{len(info['skipped'])} derived utterance(s) could not be read back (first: "
                             f"{first['file']}: {first['reason']}); check the source with "
                             f"`speechssl corpus check {source}`")

    _write_shot_manifests(out, {label: {item.new_id for item in picked} for label, picked in chosen.items()})
    by_split: dict[str, list[_Source]] = defaultdict(list)
    for item in items:
        by_split[item.split].append(item)
    for label, picked in chosen.items():
        by_split[f"train_{label}"] = picked
    for split, members in by_split.items():
        entry = info["splits"].setdefault(split, _split_entry(members))
        entry["hours"] = round(sum(m.seconds for m in members) / 3600, 4)
        entry["datasets"] = {d: sum(1 for m in members if m.dataset == d) for d in names}
    info["hours"] = {split: _hours_table(members, names, languages) for split, members in by_split.items()}
    info["missing_pairs"] = []
    for split, members in by_split.items():
        filled = {(m.language or "", m.dataset) for m in members}
        info["missing_pairs"] += [f"{split}/{language}/{dataset}" for language in languages for dataset in names
                                  if (language, dataset) not in filled]
    write_text_atomic(out / "corpus.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    (out / _MARKER).unlink(missing_ok=True)
    return info


def _split_entry(members: list[_Source]) -> dict[str, Any]:
    """A few-shot split's counts, in the form :func:`write_corpus` gives the others."""
    return {"utterances": len(members),
            "speakers": len({m.speaker for m in members if m.speaker is not None}),
            "languages": dict(sorted(Counter(m.language for m in members if m.language).items()))}


def _hours_table(members: list[_Source], datasets: Sequence[str], languages: Sequence[str]) -> dict[str, Any]:
    seconds: dict[str, dict[str, float]] = {lang: {d: 0.0 for d in datasets} for lang in languages}
    for m in members:
        seconds[m.language or ""][m.dataset] += m.seconds
    return {
        "total": round(sum(m.seconds for m in members) / 3600, 4),
        "datasets": {d: round(sum(seconds[lang][d] for lang in languages) / 3600, 4) for d in datasets},
        "languages": {lang: {d: round(s / 3600, 4) for d, s in row.items()} for lang, row in seconds.items()},
    }


def _write_shot_manifests(out: Path, chosen: dict[str, set[str]]) -> None:
    """``cuts_train_<label>``: the train manifest's own records of the chosen cuts, so a few-shot
    cut is the same cut (same id, labels and audio) as in ``train``."""
    from speechssl.corpora.base import _write_jsonl_gz
    from speechssl.data.manifests import cuts_path

    with gzip.open(cuts_path(out, "train"), "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for label, ids in chosen.items():
        target = cuts_path(out, f"train_{label}")
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        _write_jsonl_gz(tmp, [r for r in records if r["id"] in ids])
        os.replace(tmp, target)


def format_summary(info: dict[str, Any]) -> str:
    """Hours per split and dataset, shots, and the (split, language, dataset) cells left empty."""
    names = info["datasets"]
    header = f"{'split':<14} {'utts':>6} {'hours':>7}  " + " ".join(f"{d:>9}" for d in names)
    shots = ", ".join(f"{label} ({seconds:g} s)" for label, seconds in info["shots"].items()) or "none"
    lines = [f"{info['name']}: {len(names)} datasets x {len(info['languages'])} languages from {info['source']}",
             f"few-shot sizes per (language, dataset): {shots}", "", header, "-" * len(header)]
    for split, table in info["hours"].items():
        entry = info["splits"][split]
        lines.append(f"{split:<14} {entry['utterances']:>6} {table['total']:>7.3f}  "
                     + " ".join(f"{table['datasets'][d]:>9.3f}" for d in names))
    audio = info.get("audio", {})
    lines.append(f"audio: {audio.get('rendered', 0)} degraded, {audio.get('linked', 0)} clean hard-linked, "
                 f"{audio.get('copied', 0)} clean copied")
    missing = info.get("missing_pairs") or []
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        lines.append(f"empty (split/language/dataset) cells: {shown}")
    return "\n".join(lines)
