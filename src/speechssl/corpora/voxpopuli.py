"""``voxpopuli``: the transcribed (ASR) part of VoxPopuli (European Parliament speech).

``speechssl prepare voxpopuli ROOT --out DIR [--option language=en,de]``

The layout written by the official tools (``python -m voxpopuli.download_audios --root ROOT
--subset asr``, then ``python -m voxpopuli.get_asr_data --root ROOT --lang <lang>``)::

    ROOT/transcribed_data/<lang>/asr_{train,dev,test}.tsv
    ROOT/transcribed_data/<lang>/<year>/<id>.ogg          (16 kHz Ogg Vorbis segments)

ROOT may also be ``transcribed_data/`` itself or one language folder. ``raw_audios/`` (the
unsegmented sessions) is not read. The TSV files have a header row: ``id, raw_text,
normalized_text, speaker_id, split, gender`` and, from the release with accented English,
``is_gold_transcript, accent``; ``id``, ``raw_text``, ``normalized_text`` and ``speaker_id``
are required. The audio of line ``id`` is ``<year>/<id>.ogg`` with ``<year>`` = the first
four characters of the id (``20180418-0900-PLENARY-3-en_20180418-08:50:52_5`` ->
``2018/20180418-0900-PLENARY-3-en_20180418-08:50:52_5.ogg``). A line with another number
of fields is left out and listed in ``corpus.json`` ``bad_rows``.

Options:

- ``language``: comma-separated language folders (``en``, ``de``, ..., ``en_accented``) or
  ``all`` (default): every language folder present.
- ``splits``: default ``train,dev,test`` (``en_accented`` has only ``test`` lines; its
  train/dev lists are empty and yield nothing).
- ``text``: ``normalized`` (default: ``normalized_text``, lower case, the text VoxPopuli ASR
  is trained and scored on) or ``raw`` (``raw_text``, as transcribed, cased and punctuated;
  ``normalized_text`` stands in where it is empty). Both are kept in ``custom``.
- ``seed``: seed of the generated ASV trials.

Labels: ``speaker`` = ``speaker_id`` (a member of parliament, the same id in every language);
``language`` = ISO 639-1 code (the folder name without ``_accented``; the folder in
``custom.subset`` when they differ); ``gender`` = ``m``/``f``; ``custom.accent`` (L1 of
accented English speakers) and ``custom.is_gold_transcript`` where given. ASV trials for
``test`` are generated (same- and different-speaker pairs within a language).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechssl.corpora.base import (CorpusError, TreeCheck, Utterance, gender_mf, inside, language_folders, make_trials,
                                    option_int, option_list, write_corpus)
from speechssl.corpora.commonvoice import read_tsv

NAME = "voxpopuli"
SPLITS = ("train", "dev", "test")
REQUIRED = ("id", "raw_text", "normalized_text", "speaker_id")
TEXTS = ("normalized", "raw")
NONE = ("", "None", "none", "null", "NULL", "nan")


def _is_language_dir(path: Path) -> bool:
    return any((path / f"asr_{s}.tsv").is_file() for s in SPLITS)


def _languages(check: TreeCheck, root: Path, language: str | list) -> list[tuple[str, Path]]:
    base = Path("transcribed_data") if (root / "transcribed_data").is_dir() else Path(".")
    return language_folders(
        check, language, _is_language_dir, base=base, describe="VoxPopuli transcribed data of {}",
        parent="the folder holding transcribed_data/",
        none_found="no VoxPopuli language folder (one with asr_train.tsv, asr_dev.tsv, asr_test.tsv) under "
                   f"{(base / '<lang>').as_posix()}/; run python -m voxpopuli.get_asr_data --root ROOT "
                   "--lang <lang> first")


def _audio(folder: Path, segment_id: str) -> Path:
    return folder / segment_id[:4] / f"{segment_id}.ogg"


def _value(row: dict[str, str], key: str) -> str | None:
    value = row.get(key, "")
    return None if value in NONE else value


def prepare(root: Path, out: Path, *, language: str = "all", splits: str = "train,dev,test",
            text: str = "normalized", seed: int | str = 0) -> dict[str, Any]:
    check = TreeCheck(NAME, root)
    wanted_splits = option_list(splits, "splits", NAME, SPLITS, what="split(s)")
    if text not in TEXTS:
        raise CorpusError(f"{NAME}: text={text!r}; use one of {', '.join(TEXTS)}")
    seed = option_int(seed, "seed", NAME)

    bad_rows: list[str] = []
    tables = []
    for lang, folder in _languages(check, root, language):
        for split in wanted_splits:
            tsv = check.file(folder / f"asr_{split}.tsv", f"the {lang} {split} list")
            if tsv is None:
                continue
            header, rows, bad = read_tsv(tsv)
            bad_rows += [f"{lang}/{b}" for b in bad]
            if not check.columns(tsv, header, REQUIRED):
                continue
            missing = [row["id"] for _, row in rows if not (root / _audio(folder, row["id"])).is_file()]
            if missing:
                check.problem(f"{tsv.relative_to(root).as_posix()}: the audio of {len(missing)} of {len(rows)} lines "
                              f"is missing (first: {', '.join(_audio(folder, m).as_posix() for m in missing[:3])})")
            tables.append((lang, split, folder, rows))
    check.done()

    utterances = []
    for lang, split, folder, rows in tables:
        code = lang.removesuffix("_accented")
        for _, row in rows:
            custom: dict[str, Any] = {"raw_text": row["raw_text"], "normalized_text": row["normalized_text"]}
            if code != lang:
                custom["subset"] = lang
            if _value(row, "accent"):
                custom["accent"] = row["accent"]
            if _value(row, "is_gold_transcript"):
                custom["is_gold_transcript"] = row["is_gold_transcript"].lower() == "true"
            gender = gender_mf(row.get("gender"))
            transcript = row["normalized_text"] if text == "normalized" else row["raw_text"] or row["normalized_text"]
            utterances.append(Utterance(
                id=row["id"] if code == lang else f"{lang}-{row['id']}",
                audio=inside(root, _audio(folder, row["id"])), split=split, text=transcript or None,
                speaker=_value(row, "speaker_id"), language=code, gender=gender, custom=custom,
            ))
    test = [u for u in utterances if u.split == "test" and u.speaker]
    trials = {"test": make_trials(test, seed=seed, group=lambda u: u.language)} if test else None
    notes: dict[str, Any] = {
        "languages": sorted({lang for lang, *_ in tables}),
        "split_note": "official VoxPopuli ASR splits (asr_train/dev/test.tsv)",
        "text": f"{text} transcription (both are in custom)",
        "rows": {f"{lang}/{split}": len(rows) for lang, split, _, rows in tables},
    }
    if bad_rows:
        notes["bad_rows"] = bad_rows
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=trials, notes=notes)
