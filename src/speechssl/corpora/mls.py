"""``mls``: Multilingual LibriSpeech (OpenSLR 94), read audiobooks in 8 languages.

``speechssl prepare mls ROOT --out DIR [--option language=french,polish] [--option limited_supervision=1h]``

ROOT holds one ``mls_<language>/`` directory per language as the tarballs unpack (FLAC; the
compressed release ``mls_<language>_opus/`` with ``.opus`` files works the same way), or is
one such directory itself::

    mls_french/
      metainfo.txt          optional: "SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID | TITLE | CHAPTER"
      train/ dev/ test/
        transcripts.txt     "<speaker>_<book>_<utt>\\t<transcript>"
        segments.txt        position in the original LibriVox mp3 (not needed, not read)
        audio/<speaker>/<book>/<speaker>_<book>_<utt>.flac   (.opus in mls_<language>_opus/)
      train/limited_supervision/1hr/{0..5}/handles.txt, 9hr/handles.txt   one utterance id a line

Options:

- ``language``: ``all`` (default: every ``mls_*`` directory present; ``mls_lm_*`` LM
  directories are ignored) or a comma list of folder suffixes (``french``) or ISO codes
  (``fr``); each named language must be present. When both ``mls_X`` and ``mls_X_opus`` exist
  the FLAC one is used.
- ``splits``: which of ``train,dev,test`` to prepare (default all three).
- ``limited_supervision``: ``""`` (default: the full train set) or ``10min`` (``1hr/0``),
  ``1h`` (``1hr/0..5``), ``9h`` (``9hr``), ``10h`` (``1hr/* + 9hr``): the train split keeps only
  the utterances of those handle lists (which must then exist for every language).
  Whatever the option, a train utterance found in a list carries
  ``custom.limited_supervision`` (``1hr/3`` or ``9hr``).

Splits ``train``, ``dev``, ``test`` (all languages together). Labels: ``text`` (as
written: lower case, no punctuation), ``speaker`` (LibriVox reader id), ``gender``
(``f``/``m`` from metainfo.txt), ``language`` = ISO 639-1 code mapped from the folder name
(:data:`LANGUAGES`), ``custom.book``, ``custom.mls_id`` (the corpus's own id). Utterance ids
are ``<iso>_<mls id>`` (``fr_1406_1028_000000``) so that languages never collide. ASV trials
(seeded, balanced, within a language) for ``test``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, inside, make_trials, option_list, write_corpus

LANGUAGES = {
    "english": "en",
    "german": "de",
    "dutch": "nl",
    "french": "fr",
    "spanish": "es",
    "italian": "it",
    "portuguese": "pt",
    "polish": "pl",
}
"""MLS folder suffix -> ISO 639-1 code (the LID label)."""

SPLITS = ("train", "dev", "test")
LIMITED = {
    "10min": ["1hr/0"],
    "1h": [f"1hr/{i}" for i in range(6)],
    "9h": ["9hr"],
    "10h": [f"1hr/{i}" for i in range(6)] + ["9hr"],
}
ALL_LISTS = LIMITED["10h"]
_ALIASES = {"10m": "10min", "10min": "10min", "1h": "1h", "1hr": "1h", "9h": "9h", "9hr": "9h", "10h": "10h",
            "10hr": "10h"}
_DIR = re.compile(r"^mls_([a-z]+?)(_opus)?$")
_ID = re.compile(r"^(\d+)_(\d+)_(\d+)$")


def _find_languages(root: Path) -> dict[str, list[Path]]:
    """Folder suffix -> its directories (FLAC first, then opus) under ROOT, or ROOT itself
    when ROOT is one language's directory."""
    match = _DIR.match(root.name)
    if match and any((root / s).is_dir() for s in SPLITS):
        return {match.group(1): [root]}
    found: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        match = _DIR.match(entry.name)
        if match and entry.is_dir() and not entry.name.startswith("mls_lm"):
            found.setdefault(match.group(1), []).append(Path(entry.path))
    for dirs in found.values():
        dirs.sort(key=lambda d: d.name.endswith("_opus"))
    return found


def read_metainfo(path: Path) -> dict[str, str]:
    """Speaker -> ``f``/``m`` from metainfo.txt (``|``-separated, a header line first)."""
    genders: dict[str, str] = {}
    if not path.is_file():
        return genders
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = [f.strip() for f in raw.split("|")]
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].upper() in ("F", "M"):
            genders[fields[0]] = fields[1].lower()
    return genders


def _read_lines(check: TreeCheck, path: Path | None, what: str) -> list[str]:
    if path is None:
        return []
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        check.problem(f"{what}: cannot read {path.name} ({exc.__class__.__name__})")
        return []


def prepare(root: Path, out: Path, *, language: str = "all", splits: str = "train,dev,test",
            limited_supervision: str = "") -> dict[str, Any]:
    root = Path(root).expanduser()
    check = TreeCheck("mls", root)
    limited = None
    if str(limited_supervision or "").strip():
        limited = _ALIASES.get(str(limited_supervision).strip().lower())
        if limited is None:
            raise CorpusError(f"mls: limited_supervision={limited_supervision!r} is not one of 10min, 1h, 9h, 10h "
                              "(or empty for the full train set)")
    chosen_splits = option_list(splits, "splits", "mls", SPLITS, what="split(s)")

    found = _find_languages(root)
    codes = {code: name for name, code in LANGUAGES.items()}
    wanted = list(dict.fromkeys(s.lower() for s in option_list(
        language, "language", "mls", hint="use all, a folder suffix such as french, or an ISO code such as fr")))
    ignored_dirs = []
    if wanted == ["all"]:
        names = sorted(n for n in found if n in LANGUAGES)
        ignored_dirs = sorted(d.name for n, dirs in found.items() if n not in LANGUAGES for d in dirs)
        if not names:
            check.problem("no mls_<language>/ directory (e.g. mls_french/ or mls_french_opus/) in ROOT"
                          + (f" ({', '.join(ignored_dirs)}: not MLS languages)" if ignored_dirs else ""))
    else:
        names = []
        for item in wanted:
            name = codes.get(item, item)
            if name not in LANGUAGES:
                check.problem(f"unknown language {item!r} in language= (known: {', '.join(LANGUAGES)} "
                              f"or {', '.join(codes)})")
            elif name not in found:
                check.problem(f"missing directory mls_{name}/ (or mls_{name}_opus/), named in language=")
            else:
                names.append(name)

    plans = []  # (name, directory, split, [(mls id, text, audio)], {mls id: list})
    used: dict[str, dict[str, str]] = {}
    for name in names:
        directory = found[name][0]
        rel = directory.relative_to(root) if directory != root else Path(".")
        ext = ".opus" if directory.name.endswith("_opus") else ".flac"
        used[name] = {"iso": LANGUAGES[name], "dir": str(directory), "audio": ext[1:]}
        if len(found[name]) > 1:
            used[name]["ignored"] = ", ".join(d.name for d in found[name][1:])
        for split in chosen_splits:
            split_dir = check.dir(rel / split, f"the {split} split of {directory.name}")
            if split_dir is None:
                continue
            transcripts = check.file(rel / split / "transcripts.txt", f"transcripts of {directory.name}/{split}")
            audio_dir = check.dir(rel / split / "audio", f"audio of {directory.name}/{split}")
            items = _read_transcripts(check, transcripts, audio_dir, ext, f"{rel / split}")
            lists = _read_handles(check, split_dir, rel / split, limited if split == "train" else None,
                                  {i for i, _, _ in items})
            plans.append((name, directory, split, items, lists))
    check.done()

    utterances = []
    for name, directory, split, items, lists in plans:
        iso = LANGUAGES[name]
        genders = read_metainfo(directory / "metainfo.txt")
        keep = None
        if split == "train" and limited is not None:
            keep = {i for i, fold in lists.items() if fold in LIMITED[limited]}
        for mls_id, text, audio in items:
            if keep is not None and mls_id not in keep:
                continue
            speaker, book, _ = mls_id.split("_")
            custom: dict[str, Any] = {"book": book, "mls_id": mls_id}
            if mls_id in lists:
                custom["limited_supervision"] = lists[mls_id]
            utterances.append(Utterance(id=f"{iso}_{mls_id}", audio=inside(root, audio), split=split, text=text,
                                        speaker=speaker, language=iso, gender=genders.get(speaker),
                                        custom=custom))
        if not (directory / "metainfo.txt").is_file():
            used[name]["gender_note"] = "metainfo.txt not found: no gender labels"
    test = [u for u in utterances if u.split == "test"]
    trials = {"test": make_trials(test, seed=0, group=lambda u: u.language)} if test else None
    notes = {
        "languages": used,
        "language_codes": "ISO 639-1, mapped from the mls_<language> folder name",
        "limited_supervision": limited,
        "ignored_dirs": ignored_dirs,
        "split_note": ("splits train/dev/test of MLS, all languages together"
                       + (f"; train = limited supervision {limited} ({' + '.join(LIMITED[limited])})"
                          if limited else "")),
    }
    return write_corpus(out, name="mls", root=root, utterances=utterances, trials=trials, notes=notes)


def _read_transcripts(check: TreeCheck, path: Path | None, audio_dir: Path | None, ext: str,
                      label: str) -> list[tuple[str, str, Path]]:
    """(mls id, text, audio path) of every line of transcripts.txt whose audio exists; lines that
    are malformed or whose audio file is missing are problems (counted, first examples)."""
    items, bad, missing = [], [], []
    listings: dict[Path, set[str]] = {}
    for number, raw in enumerate(_read_lines(check, path, label), start=1):
        if not raw.strip():
            continue
        mls_id, tab, text = raw.partition("\t")
        mls_id = mls_id.strip()
        if not tab or not _ID.match(mls_id):
            bad.append(str(number))
            continue
        if audio_dir is None:
            continue
        speaker, book, _ = mls_id.split("_")
        folder = audio_dir / speaker / book
        if folder not in listings:
            try:
                listings[folder] = {e.name for e in os.scandir(folder) if e.is_file()}
            except OSError:
                listings[folder] = set()
        if mls_id + ext not in listings[folder]:
            missing.append(f"{speaker}/{book}/{mls_id}{ext}")
            continue
        items.append((mls_id, text.strip(), folder / f"{mls_id}{ext}"))
    if bad:
        check.problem(f"{label}/transcripts.txt: {len(bad)} malformed line(s) (expected "
                      f"'<speaker>_<book>_<utt><TAB>text'; lines {', '.join(bad[:5])})")
    if missing:
        check.problem(f"{label}/audio/: {len(missing)} utterance(s) of transcripts.txt have no audio file "
                      f"(first: {', '.join(missing[:3])})")
    if path is not None and audio_dir is not None and not items and not bad and not missing:
        check.problem(f"{label}/transcripts.txt: no utterances")
    return items


def _read_handles(check: TreeCheck, split_dir: Path, rel: Path, limited: str | None,
                  known: set[str]) -> dict[str, str]:
    """Utterance id -> limited-supervision list (``1hr/3``, ``9hr``) from the train split's
    handle lists; the lists ``limited`` needs must exist and name transcribed utterances."""
    lists: dict[str, str] = {}
    if not (split_dir / "limited_supervision").is_dir():
        if limited is not None:
            check.dir(rel / "limited_supervision", f"the handle lists limited_supervision={limited} needs")
        return lists
    needed = set(LIMITED[limited]) if limited else set()
    for fold in ALL_LISTS:
        relative = rel / "limited_supervision" / fold / "handles.txt"
        if fold in needed:
            path = check.file(relative, f"limited-supervision list for {limited}")
        else:
            path = split_dir / "limited_supervision" / fold / "handles.txt"
            if not path.is_file():
                continue
        unknown = []
        for raw in _read_lines(check, path, str(relative)):
            handle = raw.strip()
            if handle:
                lists.setdefault(handle, fold)
                if handle not in known:
                    unknown.append(handle)
        if unknown and fold in needed:
            check.problem(f"{relative}: {len(unknown)} id(s) not in transcripts.txt or without audio "
                          f"(first: {', '.join(unknown[:3])})")
    return lists
