"""``commonvoice``: Mozilla Common Voice, any language and release.

``speechssl prepare commonvoice ROOT --out DIR [--option language=fr,de] [--option splits=train,dev,test]``

ROOT is an extracted release (``cv-corpus-<version>-<date>/``) holding one folder per
language, or one language folder itself::

    ROOT/<lang>/clips/*.mp3
    ROOT/<lang>/{train,dev,test,validated,invalidated,other}.tsv   (tab separated, header row)

The lists have a header row; this recipe needs ``client_id``, ``path`` (the clip's file name
under ``clips/``) and ``sentence``, and reads, where present, ``gender``, ``age``,
``accents`` (``accent`` in releases before 8.0), ``variant``, ``locale``, ``sentence_id``,
``sentence_domain`` and ``segment``. Lines are split on tabs only (sentences hold unbalanced
quotes); a line with the wrong number of fields is left out *and listed* in
``corpus.json`` ``bad_rows``.

Options:

- ``language``: comma-separated language folder names (``en``, ``zh-CN``, ``sv-SE``, ...) or
  ``all`` (default): every language folder under ROOT.
- ``splits``: comma-separated list names, default ``train,dev,test`` (the official,
  speaker-disjoint split); ``validated``, ``invalidated`` and ``other`` are accepted too.
  Utterance ids are the clip names (``common_voice_en_123``); clips of a non-standard list get
  ``__<list>`` appended, since ``validated`` repeats train/dev/test.
- ``seed``: seed of the generated ASV trials.

Labels: ``text`` = ``sentence`` as written; ``speaker`` = ``client_id``; ``language`` = the
``locale`` column (else the folder name), Common Voice's own code (ISO 639-1 or 639-3,
with a region for some: ``zh-CN``, ``sv-SE``); ``gender`` = ``m``/``f`` from ``male``/``female``
and from the newer spellings (``male_masculine``, ``female_feminine``); other values
(``intersex``, ``transgender``, ``non-binary``, ``do_not_wish_to_say``, ``other``) give no
gender and are kept, as written, in ``custom.gender_label``. ``custom`` also holds ``age``,
``accents``, ``variant``, ``sentence_id``, ``sentence_domain`` and ``segment`` where given.
ASV trials for ``test`` are generated (same- and different-speaker pairs within a language).

Clips are MP3 (48 or 32 kHz): they are read through libsndfile, which decodes MP3 from version
1.1.0 on (``soundfile.available_formats()`` lists ``MP3``). A clip listed in a requested list
but missing from ``clips/`` is a tree problem (all of them named at once, per list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechssl.corpora.base import (TreeCheck, Utterance, gender_mf, inside, language_folders, make_trials, option_int,
                                    option_list, write_corpus)

NAME = "commonvoice"
LISTS = ("train", "dev", "test", "validated", "invalidated", "other")
STANDARD_SPLITS = ("train", "dev", "test")
REQUIRED = ("client_id", "path", "sentence")
CUSTOM = ("age", "accents", "accent", "variant", "sentence_id", "sentence_domain", "segment")


Rows = list[tuple[int, dict[str, str]]]


def read_tsv(path: Path, *, header: list[str] | None = None) -> tuple[list[str], Rows, list[str]]:
    """Header, rows (with their line numbers) and descriptions of malformed lines of a TSV
    file, split on tabs only (no quoting). ``header`` given: the file has none."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    lines = text.split("\n")
    first = 0
    if header is None:
        header = [h.strip() for h in lines[0].rstrip("\r").split("\t")] if lines else []
        first = 1
    rows, bad = [], []
    for line_no, line in enumerate(lines[first:], first + 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            bad.append(f"{path.name}:{line_no}: {len(fields)} fields, expected {len(header)}")
            continue
        rows.append((line_no, {h: v.strip() for h, v in zip(header, fields)}))
    return header, rows, bad


def _is_language_dir(path: Path) -> bool:
    return (path / "clips").is_dir() or any((path / f"{name}.tsv").is_file() for name in LISTS)


def _languages(check: TreeCheck, language: str | list) -> list[tuple[str, Path]]:
    """(language folder name, folder relative to ROOT) for every requested language."""
    return language_folders(
        check, language, _is_language_dir, describe="Common Voice language {}",
        parent="the release folder holding the language folders",
        none_found="no language folder (one with clips/ and train.tsv, dev.tsv, ...) under ROOT; "
                   "point ROOT at the extracted cv-corpus-<version>-<date>/ folder or at one language in it")


def prepare(root: Path, out: Path, *, language: str = "all", splits: str = "train,dev,test",
            seed: int | str = 0) -> dict[str, Any]:
    check = TreeCheck(NAME, root)
    lists = option_list(splits, "splits", NAME, LISTS, what="split(s)")
    seed = option_int(seed, "seed", NAME)

    tables: list[tuple[str, str, Path, list[tuple[int, dict[str, str]]]]] = []
    bad_rows: list[str] = []
    for lang, folder in _languages(check, language):
        clips = check.dir(folder / "clips", f"the {lang} audio clips")
        for split in lists:
            tsv = check.file(folder / f"{split}.tsv", f"the {lang} {split} list")
            if tsv is None:
                continue
            header, rows, bad = read_tsv(tsv)
            bad_rows += [f"{lang}/{b}" for b in bad]
            if not check.columns(tsv, header, REQUIRED) or clips is None:
                continue
            missing = [row["path"] for _, row in rows if _clip(clips, row["path"]) is None]
            if missing:
                check.problem(f"{(folder / split).as_posix()}.tsv: {len(missing)} of {len(rows)} listed clips are "
                              f"missing from {(folder / 'clips').as_posix()}/ (first: {', '.join(missing[:3])})")
            tables.append((lang, split, folder, rows))
    check.done()

    utterances = []
    for lang, split, folder, rows in tables:
        clips = root / folder / "clips"
        for _, row in rows:
            clip = _clip(clips, row["path"])
            stem = Path(row["path"]).name.removesuffix(".mp3")
            uid = stem if stem.startswith("common_voice_") else f"{lang}_{stem}"
            if split not in STANDARD_SPLITS:
                uid = f"{uid}__{split}"
            custom = {key: row[key] for key in CUSTOM if row.get(key)}
            if "accent" in custom:  # releases before 8.0
                custom.setdefault("accents", custom.pop("accent"))
            gender = gender_mf(row.get("gender"))
            if row.get("gender") and gender is None:
                custom["gender_label"] = row["gender"]
            utterances.append(Utterance(
                id=uid, audio=inside(root, clip), split=split,
                text=row["sentence"] or None, speaker=row["client_id"] or None,
                language=row.get("locale") or lang, gender=gender, custom=custom,
            ))
    test = [u for u in utterances if u.split == "test" and u.speaker]
    trials = {"test": make_trials(test, seed=seed, group=lambda u: u.language)} if test else None
    empty = [f"{lang}/{split}.tsv" for lang, split, _, rows in tables if not rows]
    notes: dict[str, Any] = {
        "languages": sorted({lang for lang, *_ in tables}),
        "split_note": f"official Common Voice lists: {', '.join(lists)}",
        "rows": {f"{lang}/{split}": len(rows) for lang, split, _, rows in tables},
    }
    if empty:
        notes["empty_lists"] = empty
    if bad_rows:
        notes["bad_rows"] = bad_rows
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=trials, notes=notes)


def _clip(clips: Path, name: str) -> Path | None:
    """The clip file a list names (early releases wrote ``path`` without ``.mp3``)."""
    if not name:
        return None
    path = clips / name
    if path.is_file():
        return path
    path = clips / f"{name}.mp3"
    return path if path.is_file() else None
