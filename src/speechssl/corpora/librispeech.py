"""``librispeech`` (LibriSpeech ASR corpus) and ``librilight`` (Libri-Light's limited-supervision
fine-tuning sets, built from LibriSpeech): English read audiobook speech, 16 kHz FLAC.

``speechssl prepare librispeech ROOT --out DIR [--option subsets=all] [--option lm_text=FILE]``

ROOT is the ``LibriSpeech/`` directory the OpenSLR tarballs unpack to, or its parent::

    LibriSpeech/
      SPEAKERS.TXT                      optional: speaker gender ("ID | SEX | SUBSET | MINUTES | NAME")
      train-clean-100/ train-clean-360/ train-other-500/ dev-clean/ dev-other/ test-clean/ test-other/
        <speaker>/<chapter>/
          <speaker>-<chapter>.trans.txt  "<speaker>-<chapter>-<utt> TRANSCRIPT IN CAPITALS"
          <speaker>-<chapter>-<utt>.flac

``subsets``: ``all`` (default: the seven standard subsets that are present; the Mini
LibriSpeech ``dev-clean-2``/``train-clean-5`` only when no standard one is) or a comma list;
a named subset that is missing is an error. Each subset becomes a split of the same name.
Labels: ``text`` (as written, upper case), ``speaker``, ``gender`` (``f``/``m`` from
SPEAKERS.TXT), ``language = "en"``, ``custom.chapter``, ``custom.subset``. ASV trials
(seeded, balanced; LibriSpeech has no official list) for every ``test-*`` split.

``lm_text``: the LibriSpeech LM corpus ``librispeech-lm-norm.txt`` (or ``.txt.gz``, or a
directory holding it). Its path, size and line count are recorded in ``corpus.json``
under ``lm_text``; nothing is copied or linked.

``speechssl prepare librilight ROOT --out DIR [--option split_set=10h] [--option librispeech=LS_ROOT]``

ROOT is ``librispeech_finetuning/`` (from ``librispeech_finetuning.tgz``) or its parent::

    librispeech_finetuning/
      1h/0/ ... 1h/5/                    six 10-minute folds, each {clean,other}/<spk>/<chapter>/
      9h/{clean,other}/<spk>/<chapter>/  the rest of the 10 h set
      phones/                            frame-wise phone alignments (not read)

``split_set``: ``10min`` = ``1h/0``; ``1h`` = ``1h/0..5``; ``10h`` = ``1h/0..5 + 9h``. Those
utterances form one ``train`` split. With ``librispeech=`` (a LibriSpeech ROOT as above) its
``dev-clean, dev-other, test-clean, test-other`` (those present, at least one) are added as
splits of the same names; SPEAKERS.TXT there gives the gender. ``custom.fold`` (``1h/3``,
``9h``), ``custom.condition`` (clean/other) and ``custom.subset`` (the LibriSpeech subset the
fold was drawn from) are kept.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, inside, make_trials, option_list, write_corpus

SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
           "test-other")
MINI_SUBSETS = ("dev-clean-2", "train-clean-5")
EVAL_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")
LM_TEXT_NAMES = ("librispeech-lm-norm.txt.gz", "librispeech-lm-norm.txt")

LIBRILIGHT_SETS = {
    "10min": ["1h/0"],
    "1h": [f"1h/{i}" for i in range(6)],
    "10h": [f"1h/{i}" for i in range(6)] + ["9h"],
}
LIBRILIGHT_ALIASES = {"10m": "10min", "10min": "10min", "1h": "1h", "1hr": "1h", "10h": "10h", "10hr": "10h"}
CONDITION_SUBSET = {"clean": "train-clean-100", "other": "train-other-500"}
"""Libri-Light drew its clean folds from train-clean-100 and its other folds from train-other-500."""

_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


# ---------------------------------------------------------------- shared: chapter trees


@dataclass
class _Line:
    id: str
    audio: Path
    text: str
    speaker: str
    chapter: str


def _list_dirs(path: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir())
    except OSError:
        return []


def scan_chapters(check: TreeCheck, top: Path, label: str, *, lines_need_audio: bool = True) -> tuple[list[_Line], int]:
    """Utterances of a LibriSpeech-style tree ``top/<speaker>/<chapter>/`` (``.flac`` files and
    ``<speaker>-<chapter>.trans.txt``). Problems go to ``check`` (one line per kind, with counts
    and first examples). Returns the utterances and the number of transcript lines without
    audio that were ignored (``lines_need_audio=False``; otherwise they are a problem)."""
    lines: list[_Line] = []
    no_trans: list[str] = []
    no_text: list[str] = []
    no_audio: list[str] = []
    bad: list[str] = []
    chapters = 0
    for speaker_dir in _list_dirs(top):
        for chapter_dir in _list_dirs(speaker_dir):
            speaker, chapter = speaker_dir.name, chapter_dir.name
            try:
                names = {e.name for e in os.scandir(chapter_dir) if e.is_file()}
            except OSError:
                names = set()
            flacs = {n[: -len(".flac")] for n in names if n.endswith(".flac")}
            trans_name = f"{speaker}-{chapter}.trans.txt"
            if not flacs and trans_name not in names:
                continue
            chapters += 1
            where = f"{speaker}/{chapter}"
            if trans_name not in names:
                no_trans.append(where)
                continue
            trans = chapter_dir / trans_name
            try:
                content = trans.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                bad.append(f"{where}/{trans_name} ({exc.__class__.__name__})")
                continue
            seen = set()
            for number, raw in enumerate(content.splitlines(), start=1):
                if not raw.strip():
                    continue
                utt, _, text = raw.strip().partition(" ")
                match = _UTT_ID.match(utt)
                if not match or match.group(1) != speaker or match.group(2) != chapter:
                    bad.append(f"{where}/{trans_name}:{number}")
                    continue
                seen.add(utt)
                if utt not in flacs:
                    no_audio.append(utt)
                    continue
                lines.append(_Line(utt, chapter_dir / f"{utt}.flac", text.strip(), speaker, chapter))
            no_text += sorted(flacs - seen)
    if not chapters:
        check.problem(f"{label}: no <speaker>/<chapter>/ directories with .flac files and a .trans.txt")

    def report(items: list[str], what: str) -> None:
        if items:
            check.problem(f"{label}: {len(items)} {what} (first: {', '.join(items[:3])})")

    report(no_trans, "chapter folder(s) without a <speaker>-<chapter>.trans.txt")
    report(bad, "unreadable or malformed transcript line(s) (expected '<speaker>-<chapter>-<utt> TEXT')")
    report(no_text, ".flac file(s) with no line in their chapter's .trans.txt")
    if lines_need_audio:
        report(no_audio, "utterance(s) listed in .trans.txt without their .flac file")
    return lines, (0 if lines_need_audio else len(no_audio))


def read_speakers(path: Path | None) -> dict[str, str]:
    """Speaker id -> ``f``/``m`` from LibriSpeech's SPEAKERS.TXT (``;`` comment lines,
    ``ID | SEX | SUBSET | MINUTES | NAME``; a name may itself contain ``|``)."""
    genders: dict[str, str] = {}
    if path is None or not path.is_file():
        return genders
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not raw.strip() or raw.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in raw.split("|", 4)]
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].upper() in ("F", "M"):
            genders[fields[0]] = fields[1].lower()
    return genders


def librispeech_base(root: Path) -> Path:
    """The ``LibriSpeech/`` directory: ROOT itself when it holds subset directories, else
    ``ROOT/LibriSpeech`` when that exists, else ROOT (whose check then names what is missing)."""
    if any((root / s).is_dir() for s in SUBSETS + MINI_SUBSETS):
        return root
    if (root / "LibriSpeech").is_dir():
        return root / "LibriSpeech"
    return root


def _utterances(lines: Iterable[_Line], base: Path, split: str, genders: dict[str, str],
                custom: dict[str, Any]) -> list[Utterance]:
    return [Utterance(id=line.id, audio=inside(base, line.audio), split=split, text=line.text,
                      speaker=line.speaker, language="en", gender=genders.get(line.speaker),
                      custom={"chapter": line.chapter, **custom})
            for line in lines]


def _test_trials(utterances: list[Utterance]) -> dict[str, list[tuple[str, str, int]]]:
    trials = {}
    for split in sorted({u.split for u in utterances if u.split.startswith("test")}):
        pairs = make_trials([u for u in utterances if u.split == split], seed=0)
        if pairs:
            trials[split] = pairs
    return trials


# ---------------------------------------------------------------- LM text


def _find_lm_text(value: str | Path, roots: Iterable[Path]) -> Path | None:
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [path, *(r / path for r in roots)]
    for candidate in candidates:
        if candidate.is_dir():
            for name in LM_TEXT_NAMES:
                if (candidate / name).is_file():
                    return candidate / name
        elif candidate.is_file():
            return candidate
    return None


def count_lines(path: Path) -> int:
    """Lines of a text file, read as bytes in large chunks (``.gz``: decompressed)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    count, last = 0, b"\n"
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                count += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise CorpusError(f"librispeech: cannot read the LM text {path}: {exc}") from None
    return count + (last != b"\n")


# ---------------------------------------------------------------- librispeech


def prepare_librispeech(root: Path, out: Path, *, subsets: str = "all",
                        lm_text: str | Path | None = None) -> dict[str, Any]:
    root = Path(root).expanduser()
    TreeCheck("librispeech", root)  # ROOT must be a directory
    base = librispeech_base(root)
    check = TreeCheck("librispeech", base)
    wanted = option_list(subsets, "subsets", "librispeech",
                         hint="use 'all' or a comma list such as dev-clean,test-clean")
    known = SUBSETS + MINI_SUBSETS
    if wanted == ["all"]:
        chosen = [s for s in SUBSETS if (base / s).is_dir()] or [s for s in MINI_SUBSETS if (base / s).is_dir()]
        if not chosen:
            check.problem(f"no LibriSpeech subset directory (none of {', '.join(SUBSETS)}) in {base} "
                          f"or in {base / 'LibriSpeech'}")
    else:
        unknown = [s for s in wanted if s not in known]
        if unknown:
            check.problem(f"unknown subset(s) {', '.join(unknown)} in subsets= (known: {', '.join(known)}, or all)")
        chosen = []
        for s in wanted:
            if s in known and check.dir(s, "a LibriSpeech subset named in subsets=") is not None:
                chosen.append(s)
    lm_path = None
    if lm_text not in (None, ""):
        lm_path = _find_lm_text(lm_text, [root, base])
        if lm_path is None:
            check.problem(f"lm_text={lm_text}: no such file (nor a directory holding {' or '.join(LM_TEXT_NAMES)})")
    scanned = {s: scan_chapters(check, base / s, s)[0] for s in chosen}
    check.done()

    speakers_txt = base / "SPEAKERS.TXT"
    genders = read_speakers(speakers_txt)
    utterances = []
    for subset, lines in scanned.items():
        utterances += _utterances(lines, base, subset, genders, {"subset": subset})
    _refuse_overlap(utterances)
    notes: dict[str, Any] = {
        "subsets": chosen,
        "split_note": "splits are the LibriSpeech subsets of the same names",
        "speakers_file": str(speakers_txt) if speakers_txt.is_file() else None,
    }
    if not speakers_txt.is_file():
        notes["gender_note"] = "SPEAKERS.TXT not found: no gender labels"
    if lm_path is not None:
        notes["lm_text"] = {"path": str(lm_path.resolve()), "lines": count_lines(lm_path),
                            "bytes": lm_path.stat().st_size, "gzip": lm_path.name.endswith(".gz")}
    return write_corpus(out, name="librispeech", root=base, utterances=utterances,
                        trials=_test_trials(utterances), notes=notes)


def _refuse_overlap(utterances: list[Utterance]) -> None:
    """Mini LibriSpeech subsets are drawn from the full ones: the same utterance twice."""
    first: dict[str, str] = {}
    clashes: dict[tuple[str, str], int] = {}
    for u in utterances:
        if u.id in first and first[u.id] != u.split:
            key = (first[u.id], u.split)
            clashes[key] = clashes.get(key, 0) + 1
        first.setdefault(u.id, u.split)
    if clashes:
        pairs = "; ".join(f"{a} and {b} ({n})" for (a, b), n in clashes.items())
        raise CorpusError(f"librispeech: the same utterance ids occur in several subsets: {pairs}. Mini "
                          "LibriSpeech subsets overlap the full ones: name the subsets to use with subsets=")


# ---------------------------------------------------------------- librilight


def prepare_librilight(root: Path, out: Path, *, split_set: str = "10h",
                       librispeech: str | Path | None = None) -> dict[str, Any]:
    name = LIBRILIGHT_ALIASES.get(str(split_set).strip().lower())
    if name is None:
        raise CorpusError(f"librilight: split_set={split_set!r} is not one of 10min, 1h, 10h")
    root = Path(root).expanduser()
    TreeCheck("librilight", root)
    base = root
    if not ((root / "1h").is_dir() or (root / "9h").is_dir()) and (root / "librispeech_finetuning").is_dir():
        base = root / "librispeech_finetuning"
    check = TreeCheck("librilight", base)
    folds: dict[tuple[str, str], list[_Line]] = {}
    ignored = 0
    for fold in LIBRILIGHT_SETS[name]:
        what = "a 10-minute fold" if fold.startswith("1h/") else "the 9 h part of the 10 h set"
        if check.dir(fold, f"{what}, needed for split_set={name}") is None:
            continue
        for condition in ("clean", "other"):
            top = check.dir(f"{fold}/{condition}", f"{condition} speakers of {fold}")
            if top is not None:
                folds[fold, condition], extra = scan_chapters(check, top, f"{fold}/{condition}", lines_need_audio=False)
                ignored += extra

    ls_base, eval_lines = None, {}
    if librispeech not in (None, ""):
        ls_root = Path(librispeech).expanduser()
        if not ls_root.is_dir():
            check.problem(f"librispeech={librispeech}: not a directory (the LibriSpeech ROOT for dev/test)")
        else:
            ls_base = librispeech_base(ls_root)
            ls_check = TreeCheck("librispeech", ls_base)
            present = [s for s in EVAL_SUBSETS if (ls_base / s).is_dir()]
            if not present:
                ls_check.problem(f"none of {', '.join(EVAL_SUBSETS)} under {ls_base}")
            eval_lines = {s: scan_chapters(ls_check, ls_base / s, s)[0] for s in present}
            check.problems += [f"librispeech={ls_base}: {p}" for p in ls_check.problems]
    check.done()

    speakers_txt = next((p for p in ([ls_base / "SPEAKERS.TXT"] if ls_base else []) + [base / "SPEAKERS.TXT"]
                         if p.is_file()), None)
    genders = read_speakers(speakers_txt)
    utterances = []
    for (fold, condition), lines in folds.items():
        utterances += _utterances(lines, base, "train", genders,
                                  {"fold": fold, "condition": condition, "subset": CONDITION_SUBSET[condition]})
    for subset, lines in eval_lines.items():
        utterances += _utterances(lines, ls_base, subset, genders, {"subset": subset})
    notes: dict[str, Any] = {
        "split_set": name,
        "folds": LIBRILIGHT_SETS[name],
        "split_note": (f"train = Libri-Light {name} ({' + '.join(LIBRILIGHT_SETS[name])})"
                       + (f"; {', '.join(eval_lines)} from LibriSpeech {ls_base}" if eval_lines
                          else "; no dev/test (give librispeech=LS_ROOT for dev-*/test-*)")),
        "librispeech": str(ls_base) if ls_base else None,
        "speakers_file": str(speakers_txt) if speakers_txt else None,
    }
    if ignored:
        notes["transcript_lines_without_audio"] = ignored
    return write_corpus(out, name="librilight", root=base, utterances=utterances,
                        trials=_test_trials(utterances), notes=notes)
