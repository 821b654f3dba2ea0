"""``fsc``: Fluent Speech Commands (Lugosch et al., 2019), SUPERB's intent classification corpus.

``speechssl prepare fsc ROOT --out DIR``

ROOT is the unpacked ``fluent_speech_commands_dataset`` directory, or the directory holding it::

    fluent_speech_commands_dataset/
        data/train_data.csv, valid_data.csv, test_data.csv
        data/speaker_demographics.csv          (optional: gender, age range, first language)
        wavs/speakers/<speakerId>/<uuid>.wav   (16 kHz mono)

The split CSVs have a header ``,path,speakerId,transcription,action,object,location`` (the
first, unnamed column is a row index); ``path`` is relative to the dataset directory. Splits:
``train`` (``train_data.csv``), ``dev`` (``valid_data.csv``), ``test`` (``test_data.csv``).
Utterance id = the wav file name without ``.wav`` (a uuid; should one repeat, ``-2``, ``-3``
... are appended and counted under ``repeated_ids``).

Labels: ``text`` = ``transcription``; ``speaker`` = ``speakerId``; ``language`` = ``en``;
``custom.intent`` = ``<action>_<object>_<location>`` (e.g. ``activate_lights_kitchen``,
``change language_Chinese_none``): the 31 intents SUPERB's IC task scores (its accuracy
counts an utterance right when all three slots are), with ``custom.action``,
``custom.object``, ``custom.location`` kept apart. From ``speaker_demographics.csv`` when
present: ``gender`` (``f``/``m``), ``custom.age_range``, ``custom.first_language``,
``custom.work_language``, ``custom.fluency``.

Listed wav files that are absent are listed in ``corpus.json`` "skipped" as long as they are at
most 1% of a split; more than that is reported as a wrong tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, gender_mf, inside, read_csv, write_corpus

NAME = "fsc"
DATASET_DIR = "fluent_speech_commands_dataset"
SPLITS = (("train", "train_data.csv"), ("dev", "valid_data.csv"), ("test", "test_data.csv"))
COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")
MISSING_TOLERANCE = 0.01
"""Share of a split's wav files that may be missing before the tree is called wrong."""
_DEMOGRAPHICS = {  # speaker_demographics.csv column (stripped) -> custom key
    "ageRange": "age_range",
    "First Language spoken": "first_language",
    "Current language used for work/school": "work_language",
    "Self-reported fluency level": "fluency",
}


def _dataset_dir(root: Path) -> Path:
    """The dataset directory relative to ROOT: ROOT itself, or the ``fluent_speech_commands_dataset``
    inside it."""
    if not (root / "data").is_dir() and (root / DATASET_DIR).is_dir():
        return Path(DATASET_DIR)
    return Path()


def prepare(root: Path, out: Path) -> dict[str, Any]:
    check = TreeCheck(NAME, root)
    base = _dataset_dir(check.root)
    data = check.dir(base / "data", "the split lists train_data.csv, valid_data.csv, test_data.csv")
    wavs = check.dir(base / "wavs" / "speakers", "the recordings, wavs/speakers/<speakerId>/*.wav")
    tables: dict[str, list[dict[str, str]]] = {}
    for split, filename in SPLITS:
        path = check.file(base / "data" / filename, f"the {split} split") if data is not None else None
        if path is None:
            continue
        header, rows = read_csv(path, NAME)
        if not check.columns(path, header, COLUMNS):
            continue
        if not rows:
            check.problem(f"{(base / 'data' / filename).as_posix()}: no rows after the header")
            continue
        empty = sum(1 for r in rows if not r.get("path"))
        if empty:
            check.problem(f"{(base / 'data' / filename).as_posix()}: {empty} row(s) with an empty 'path'")
        listed = [r["path"] for r in rows if r.get("path")]
        missing = [p for p in listed if not (check.root / base / p).is_file()] if wavs is not None else []
        if len(missing) > MISSING_TOLERANCE * len(listed):
            check.problem(f"{len(missing)} of the {len(listed)} wav files listed in {filename} ({split}) are "
                          f"missing under {(base.as_posix() + '/') if base.parts else ''}wavs/ "
                          f"(first: {', '.join(missing[:3])})")
        tables[split] = [r for r in rows if r.get("path")]
    check.done()

    demographics = _demographics(root / base / "data" / "speaker_demographics.csv")
    utterances = []
    ids: dict[str, int] = {}
    repeated = 0
    for split, _ in SPLITS:
        for row in tables[split]:
            action, obj, location = row["action"], row["object"], row["location"]
            stem = Path(row["path"]).stem
            ids[stem] = ids.get(stem, 0) + 1
            if ids[stem] > 1:
                repeated += 1
            speaker = row["speakerId"] or None
            info = demographics.get(speaker or "", {})
            custom: dict[str, Any] = {"intent": f"{action}_{obj}_{location}", "action": action, "object": obj,
                                      "location": location}
            custom.update({k: v for k, v in info.items() if k != "gender"})
            utterances.append(Utterance(
                id=stem if ids[stem] == 1 else f"{stem}-{ids[stem]}", audio=inside(root, base / row["path"]),
                split=split, text=row["transcription"], speaker=speaker, language="en",
                gender=info.get("gender"), custom=custom,
            ))
    notes = {
        "dataset_dir": (root / base).resolve().as_posix(),
        "repeated_ids": repeated,
        "demographics": bool(demographics),
        "split_note": "official FSC splits: train (train_data.csv), dev (valid_data.csv), test (test_data.csv)",
    }
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=None, notes=notes)


def _demographics(path: Path) -> dict[str, dict[str, str]]:
    """speakerId -> gender (``f``/``m``) and the other demographic fields, when the file exists."""
    if not path.is_file():
        return {}
    header, rows = read_csv(path, NAME)
    if "speakerId" not in header:
        raise CorpusError(f"{NAME}: {path}: no 'speakerId' column (has: {', '.join(header)})")
    out = {}
    for row in rows:
        info = {key: row[column] for column, key in _DEMOGRAPHICS.items() if row.get(column)}
        gender = gender_mf(row.get("gender"))
        if gender:
            info["gender"] = gender
        out[row["speakerId"]] = info
    return out
