"""``fleurs``: Google FLEURS (102 languages of read FLoRes sentences), as released on the
Hugging Face hub (``google/fleurs``).

``speechssl prepare fleurs ROOT --out DIR [--option language=fr_fr,de_de] [--option translate_to=en_us]``

ROOT is the folder holding one folder per language (the hub repository's ``data/`` folder; a
snapshot of the whole repository is accepted too), or one language folder itself::

    ROOT/<code>/{train,dev,test}.tsv
    ROOT/<code>/audio/{train,dev,test}/*.wav      (audio/<split>.tar.gz extracted in place)

``<code>`` is FLEURS's language code: ISO 639 language and region, ``fr_fr``, ``en_us``,
``cmn_hans_cn``, ``es_419``. Audio folders extracted directly into the language folder
(``<code>/<split>/*.wav``) are found too. The TSV files have **no header**; their seven tab-separated
columns are: sentence id (the FLoRes sentence, shared by all languages), wav file name, raw
transcription, normalized transcription, the normalized transcription spelled out in characters
(``w o r d | ...``, not read), number of samples (16 kHz), gender (``MALE``, ``FEMALE``, ``OTHER``).
A line with another number of fields is left out and listed in ``corpus.json`` ``bad_rows``.

Options:

- ``language``: comma-separated FLEURS codes, or ``all`` (default): every language folder.
- ``splits``: default ``train,dev,test`` (FLEURS's ``validation`` is ``dev``).
- ``text``: ``normalized`` (default; the hub's ``transcription``, lower case without punctuation,
  what FLEURS ASR is scored on) or ``raw`` (``raw_transcription``, cased and punctuated). Both
  are kept in ``custom`` (``normalized_text``, ``raw_text``).
- ``translate_to``: comma-separated FLEURS codes (default none). FLEURS is n-way parallel: each
  utterance gets ``custom.translations[<language>]`` = that language's raw transcription of the
  same sentence id (from any of its splits), which feeds the ``ast`` task. Those languages'
  TSV files must be under ROOT; their audio is not needed.

Labels: ``language`` = the language part of the code (``fr`` for ``fr_fr``, ``cmn`` for
``cmn_hans_cn``: ISO 639-1 where FLEURS uses it, else ISO 639-3), the full code in
``custom.locale``; ``custom.sentence_id`` = the FLoRes sentence id; ``gender`` = ``m``/``f``.
**Speakers are unknown**: FLEURS publishes no speaker ids (the first column is the sentence,
read by up to three speakers), so ``speaker`` is empty and no ASV trials are written.

Utterance ids are ``<code>-<split>-<wav stem>``; a wav named by several lines (the same
recording listed under more than one sentence id) gets ``-2``, ``-3``, ... on its later lines,
and a line repeated verbatim is read once (counted in ``duplicate_lines``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechssl.corpora.base import (CorpusError, TreeCheck, Utterance, gender_mf, inside, language_folders, option_list,
                                    write_corpus)
from speechssl.corpora.commonvoice import read_tsv

NAME = "fleurs"
SPLITS = ("train", "dev", "test")
COLUMNS = ["sentence_id", "file", "raw_text", "normalized_text", "characters", "num_samples", "gender"]
TEXTS = ("normalized", "raw")


def _is_language_dir(path: Path) -> bool:
    return any((path / f"{s}.tsv").is_file() for s in SPLITS) or (path / "audio").is_dir()


def _base(root: Path) -> Path:
    """The folder of language folders: ROOT, or ROOT/data in a snapshot of the hub repository."""
    if not any(_is_language_dir(d) for d in root.iterdir() if d.is_dir()) and (root / "data").is_dir():
        return root / "data"
    return root


def _languages(check: TreeCheck, root: Path, language: str | list) -> list[tuple[str, Path]]:
    return language_folders(
        check, language, _is_language_dir, base=_base(root).relative_to(root), describe="FLEURS language {}",
        parent="the folder holding the language folders",
        none_found="no FLEURS language folder (one with train.tsv, dev.tsv, test.tsv and audio/) under ROOT")


def _audio_dir(root: Path, folder: Path, split: str) -> Path | None:
    for candidate in (folder / "audio" / split, folder / split):
        if (root / candidate).is_dir():
            return root / candidate
    return None


def prepare(root: Path, out: Path, *, language: str = "all", splits: str = "train,dev,test",
            text: str = "normalized", translate_to: str = "") -> dict[str, Any]:
    check = TreeCheck(NAME, root)
    wanted_splits = option_list(splits, "splits", NAME, SPLITS, what="split(s)")
    if text not in TEXTS:
        raise CorpusError(f"{NAME}: text={text!r}; use one of {', '.join(TEXTS)}")
    targets = option_list(translate_to, "translate_to", NAME, required=False)

    bad_rows: list[str] = []
    tables = []
    for code, folder in _languages(check, root, language):
        for split in wanted_splits:
            tsv = check.file(folder / f"{split}.tsv", f"the {code} {split} list")
            audio = _audio_dir(root, folder, split)
            if audio is None:
                check.problem(f"missing directory {(folder / 'audio' / split).as_posix()}/ (the {code} {split} audio: "
                              f"extract audio/{split}.tar.gz inside {(folder / 'audio').as_posix()}/)")
            if tsv is None:
                continue
            _, rows, bad = read_tsv(tsv, header=COLUMNS)
            bad_rows += [f"{code}/{b}" for b in bad]
            if audio is None:
                continue
            missing = [row["file"] for _, row in rows if not (audio / row["file"]).is_file()]
            if missing:
                check.problem(f"{(folder / split).as_posix()}.tsv: {len(missing)} of {len(rows)} listed wav files are "
                              f"missing from {audio.relative_to(root).as_posix()}/ (first: {', '.join(missing[:3])})")
            tables.append((code, split, audio, rows))
    translations = {target: _sentences(check, root, target, bad_rows) for target in targets}
    check.done()

    utterances, duplicates = [], 0
    for code, split, audio, rows in tables:
        seen_lines: set[tuple] = set()
        per_file: dict[str, int] = {}
        lang = code.split("_")[0]
        for _, row in rows:
            key = tuple(row.values())
            if key in seen_lines:
                duplicates += 1
                continue
            seen_lines.add(key)
            per_file[row["file"]] = n = per_file.get(row["file"], 0) + 1
            uid = f"{code}-{split}-{Path(row['file']).stem}" + (f"-{n}" if n > 1 else "")
            custom: dict[str, Any] = {
                "locale": code, "sentence_id": row["sentence_id"],
                "raw_text": row["raw_text"], "normalized_text": row["normalized_text"],
            }
            if row["num_samples"].isdigit():
                custom["num_samples"] = int(row["num_samples"])
            gender = gender_mf(row["gender"])
            if row["gender"] and gender is None:
                custom["gender_label"] = row["gender"]
            found = {target.split("_")[0]: sentences[row["sentence_id"]]
                     for target, sentences in translations.items()
                     if target != code and row["sentence_id"] in sentences}
            if found:
                custom["translations"] = found
            utterances.append(Utterance(
                id=uid, audio=inside(root, audio / row["file"]), split=split,
                text=(row["normalized_text"] if text == "normalized" else row["raw_text"]) or None,
                speaker=None, language=lang, gender=gender, custom=custom,
            ))
    notes: dict[str, Any] = {
        "languages": sorted({code for code, *_ in tables}),
        "split_note": "official FLEURS splits (the hub's validation split is dev)",
        "speakers": "unknown: FLEURS publishes no speaker ids, so no ASV trials",
        "text": f"{text} transcription (the other one is in custom)",
    }
    if targets:
        notes["translations"] = {t: sum(1 for u in utterances if t.split("_")[0] in u.custom.get("translations", {}))
                                 for t in targets}
    if duplicates:
        notes["duplicate_lines"] = duplicates
    if bad_rows:
        notes["bad_rows"] = list(dict.fromkeys(bad_rows))  # a language read as source and as target
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=None, notes=notes)


def _sentences(check: TreeCheck, root: Path, code: str, bad_rows: list[str]) -> dict[str, str]:
    """Sentence id -> raw transcription of language ``code`` over all its splits (translation
    references); a problem when it has no list at all."""
    folder = Path(".") if root.name == code and _is_language_dir(root) else _base(root).relative_to(root) / code
    sentences: dict[str, str] = {}
    found = 0
    for split in SPLITS:
        tsv = root / folder / f"{split}.tsv"
        if tsv.is_file():
            found += 1
            _, rows, bad = read_tsv(tsv, header=COLUMNS)
            bad_rows += [f"{code}/{b}" for b in bad]
            for _, row in rows:
                sentences.setdefault(row["sentence_id"], row["raw_text"])
    if not found:
        check.problem(f"translate_to={code}: no {folder.as_posix()}/{{train,dev,test}}.tsv under ROOT "
                      "(the translation references are read from them)")
    return sentences
