"""``covost2``: CoVoST 2 speech translation over Common Voice audio.

``speechssl prepare covost2 ROOT --out DIR --option source=fr --option target=en
[--option clips=PATH] [--option cv_tsv=PATH]``

ROOT holds the CoVoST 2 translation tables (``covost_v2.<src>_<tgt>.tsv``, unpacked from
``covost_v2.<src>_<tgt>.tsv.tar.gz``) and, by default, the Common Voice 4 (2019-12-10)
folder of the source language::

    ROOT/covost_v2.fr_en.tsv            path, translation, split (+ sentence, client_id when present)
    ROOT/fr/clips/common_voice_fr_*.mp3
    ROOT/fr/validated.tsv               Common Voice: client_id, path, sentence, ..., gender

The per-split tables ``get_covost_splits.py`` writes (``covost_v2.fr_en.train.tsv``, ``.dev.tsv``,
``.test.tsv``: path, sentence, translation, client_id) are read instead when the full table is
absent. Tables are read as the CoVoST scripts read them (tab-separated, ``\\`` escapes, no quoting).
``sentence`` and ``client_id`` are taken from the CoVoST table when it has them, otherwise from
Common Voice's ``validated.tsv`` joined on ``path`` (what ``get_covost_splits.py`` does); its
``gender`` is used when present. ``clips`` / ``cv_tsv`` point elsewhere (relative to ROOT or
absolute: naming a folder outside ROOT is your decision; paths in the table must stay inside it).

``target`` may list several targets (``de,ja`` for an English source): each table adds its
translation; splits come from the first. ``source``/``target`` may be left empty when ROOT
holds exactly one table.

Splits: ``train`` (CoVoST's ``train`` + ``train_covost`` rows, as the official scripts),
``dev``, ``test``; the original value is kept in ``custom.covost_split``. Labels:
``text`` = source transcript, ``language`` = source code as CoVoST writes it (``fr``,
``zh-CN``, ``sv-SE``), ``custom.translations`` = ``{target: translation}``, ``speaker`` =
Common Voice ``client_id``; ASV trials for the test split.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from speechssl.corpora.base import (CorpusError, TreeCheck, Utterance, gender_mf, inside, make_trials, option_bool,
                                    option_int, option_list, write_corpus)

SPLITS = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}
TABLE = re.compile(r"^covost_v2\.([A-Za-z-]+)_([A-Za-z-]+)(?:\.(?:train|dev|test))?\.tsv$")


def read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CoVoST / Common Voice table (tab, ``\\`` escapes, no quoting)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
        header = [h.strip() for h in (reader.fieldnames or [])]
    return header, rows


def _folder(root: Path, value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _read_table(check: TreeCheck, root: Path, name: str) -> tuple[list[str], list[dict[str, str]]] | None:
    """Header and rows of one CoVoST table: ``name`` itself, or else the per-split tables
    ``get_covost_splits.py`` writes (``<stem>.train.tsv``, ``.dev.tsv``, ``.test.tsv``, no ``split``
    column: it is taken from the file name). None (and a problem noted) when unusable."""
    stem = name[: -len(".tsv")]
    parts = {split: root / f"{stem}.{split}.tsv" for split in ("train", "dev", "test")}
    if not (root / name).is_file() and all(p.is_file() for p in parts.values()):
        header: list[str] = []
        rows: list[dict[str, str]] = []
        for split, path in parts.items():
            part_header, part_rows = read_tsv(path)
            if not check.columns(path, part_header, ["path", "translation"]):
                return None
            header = [h for h in part_header if h != "split"] + ["split"]
            rows += [{**r, "split": split} for r in part_rows]
    else:
        path = check.file(name, f"CoVoST 2 table (unpack {name}.tar.gz)")
        if path is None:
            return None
        header, rows = read_tsv(path)
        if not check.columns(path, header, ["path", "translation", "split"]):
            return None
    if not rows:
        check.problem(f"{name}: no rows after the header")
    return header, rows


def prepare(root: Path, out: Path, *, source: str = "", target: str = "", clips: str = "", cv_tsv: str = "",
            allow_missing: bool | str = False, seed: int | str = 0) -> dict[str, Any]:
    """Prepare CoVoST 2 for ``source`` -> ``target``(s). ``allow_missing``: clips named by the
    table but absent are listed in corpus.json "skipped" instead of refusing the tree."""
    allow_missing = option_bool(allow_missing, "allow_missing", "covost2")
    seed = option_int(seed, "seed", "covost2")
    check = TreeCheck("covost2", root)
    tables = sorted(p.name for p in root.iterdir() if p.is_file() and TABLE.match(p.name))
    source, targets = str(source).strip(), option_list(target, "target", "covost2", required=False)
    if not source or not targets:
        pairs = sorted({TABLE.match(t).groups() for t in tables})
        pairs = [p for p in pairs if (not source or p[0] == source) and (not targets or p[1] in targets)]
        if len(pairs) != 1:
            found = ", ".join(tables) or "none"
            raise CorpusError(f"covost2: give --option source=XX --option target=YY (tables in {root}: {found})")
        source = source or pairs[0][0]
        targets = targets or [pairs[0][1]]
    names = [f"covost_v2.{source}_{t}.tsv" for t in targets]
    clips_dir = _folder(root, clips) if clips else root / source / "clips"
    if not clips_dir.is_dir():
        check.problem(f"missing directory {clips_dir}/ (Common Voice clips of {source!r}; "
                      "set --option clips=PATH)")
    tables_read: list[tuple[str, list[str], list[dict[str, str]]]] = []
    for name, t in zip(names, targets):
        table = _read_table(check, root, name)
        if table is not None:
            tables_read.append((t, *table))
    first_header = tables_read[0][1] if tables_read else []
    cv_rows: dict[str, dict[str, str]] = {}
    need_cv = bool(tables_read) and not {"sentence", "client_id"} <= set(first_header)
    cv_path = _folder(root, cv_tsv) if cv_tsv else clips_dir.parent / "validated.tsv"
    if cv_path.is_file():
        cv_header, rows = read_tsv(cv_path)
        if check.columns(cv_path, cv_header, ["path", "sentence", "client_id"] if need_cv else ["path"]):
            cv_rows = {r["path"]: r for r in rows}
    elif need_cv:
        check.problem(f"missing file {cv_path} (Common Voice validated.tsv: {names[0]} has no sentence/client_id "
                      "columns; set --option cv_tsv=PATH)")
    check.done()

    main_target, _, rows = tables_read[0]
    translations: dict[str, dict[str, str]] = {r["path"]: {main_target: r["translation"]} for r in rows}
    for t, _, other in tables_read[1:]:
        for r in other:
            if r["path"] in translations:
                translations[r["path"]][t] = r["translation"]
    other_splits: Counter = Counter()
    missing_cv, missing_clip, repeated = [], [], 0
    utterances: list[Utterance] = []
    seen: set[str] = set()
    for r in rows:
        split = SPLITS.get(r["split"].strip())
        if split is None:
            other_splits[r["split"]] += 1
            continue
        if r["path"] in seen:
            repeated += 1
            continue
        seen.add(r["path"])
        cv = cv_rows.get(r["path"], {})
        if need_cv and not cv:
            missing_cv.append(r["path"])
            continue
        audio = inside(clips_dir, r["path"])
        if not audio.is_file():
            missing_clip.append(r["path"])
        sentence = r.get("sentence", cv.get("sentence", ""))
        speaker = r.get("client_id") or cv.get("client_id") or None
        custom = {"translations": translations[r["path"]], "covost_split": r["split"].strip()}
        utterances.append(Utterance(
            id=Path(r["path"]).stem, audio=audio, split=split, text=sentence, speaker=speaker, language=source,
            gender=gender_mf(cv.get("gender")), custom=custom,
        ))
    if missing_cv:
        check.problem(f"{len(missing_cv)} of {len(rows)} rows of {names[0]} have no line in {cv_path.name} "
                      f"(first: {', '.join(missing_cv[:3])}); use the Common Voice release CoVoST 2 was built on "
                      "(cv-corpus-4-2019-12-10)")
    if missing_clip and not allow_missing:
        check.problem(f"{len(missing_clip)} of {len(utterances)} clips named in {names[0]} do not exist under "
                      f"{clips_dir} (first: {', '.join(missing_clip[:3])}; --option allow_missing=true lists "
                      "them as skipped)")
    if not utterances:
        check.problem(f"{names[0]}: no row with split train, train_covost, dev or test")
    check.done()

    test = [u for u in utterances if u.split == "test" and u.speaker]
    trials = {"test": make_trials(test, seed=seed)} if test else None
    return write_corpus(out, name="covost2", root=root, utterances=utterances, trials=trials, notes={
        "source": source,
        "targets": targets,
        "tables": names,
        "clips": str(clips_dir.resolve()),
        "sentence_from": "covost table" if not need_cv else str(cv_path.resolve()),
        "other_split_rows": dict(other_splits),
        "repeated_paths_dropped": repeated,
        "split_note": "official CoVoST 2 splits (train = train + train_covost rows)",
    })
