"""What every corpus recipe shares: checking a tree, describing utterances, writing manifests.

A recipe (one module per corpus, ``prepare_<name>(root, out, **options)``) does three things:

1. **Check the tree first** with a :class:`TreeCheck`: every directory, file and metadata
   column it needs, collected into *one* :class:`CorpusError` that names everything missing
   (which split, how many files, which column) before any audio is read.
2. **Describe the utterances** as :class:`Utterance` records: audio file, split, and the
   labels the benchmark tasks read (``text``, ``speaker``, ``language``, ``gender`` and, in
   ``custom``, ``emotion``, ``intent``, ``slots``/``words``, ``translations``, ...; see
   ``docs/corpora.md``). Paths go through :func:`inside` so that no manifest path escapes ROOT.
3. **Write** them with :func:`write_corpus`: the manifest directory every other command reads
   (``manifests/cuts_<split>.jsonl.gz`` as lhotse cuts, ``corpus.json``, ASV trial lists under
   ``trials/``). Every audio file is opened once; unreadable files are *listed* (in
   ``corpus.json`` and in the returned summary), never silently dropped.

Options arrive as strings from the command line (``--option key=value``) or as Python values
(``prepare(name, root, out, key=value)``); recipes read them with the option helpers below
(:func:`option_bool`, :func:`option_list`, :func:`option_int`, :func:`option_float`), which
accept both and refuse a bad value naming the corpus, the option and the value.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from speechssl.errors import SpeechSSLError

MANIFEST_FORMAT = "speechssl.prepared/1"
SEGMENT_TOLERANCE = 0.05
"""Seconds a segment may run past the end of its file (rounding in corpus metadata)."""


class CorpusError(SpeechSSLError):
    """A corpus tree that cannot be prepared; the message lists everything that is wrong."""


@dataclass
class Utterance:
    """One utterance of a corpus, as a recipe describes it."""

    id: str
    audio: Path
    """Audio file (absolute, inside ROOT)."""
    split: str
    text: str | None = None
    speaker: str | None = None
    language: str | None = None
    gender: str | None = None
    start: float = 0.0
    """Offset of the utterance inside the file, seconds (segments of long recordings)."""
    duration: float | None = None
    """Seconds from ``start``; None = to the end of the file."""
    custom: dict[str, Any] = field(default_factory=dict)
    """Task labels beyond the standard fields (emotion, intent, slots, translations, ...)."""


# ---------------------------------------------------------------- checking a tree


class TreeCheck:
    """Collects what a corpus tree lacks; :meth:`done` raises one error listing all of it.

    >>> check = TreeCheck("librispeech", root)
    >>> subset = check.dir("train-clean-100", "a training subset")
    >>> check.done()
    """

    def __init__(self, corpus: str, root: str | Path) -> None:
        self.corpus = corpus
        self.root = Path(root).expanduser()
        self.problems: list[str] = []
        if not self.root.is_dir():
            raise CorpusError(f"{corpus}: {self.root} is not a directory (point ROOT at your local copy of the corpus; "
                              "speechssl never downloads corpora)")

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def dir(self, relative: str | Path, what: str) -> Path | None:
        path = self.root / relative
        if not path.is_dir():
            self.problem(f"missing directory {relative}/ ({what})")
            return None
        return path

    def file(self, relative: str | Path, what: str) -> Path | None:
        path = self.root / relative
        if not path.is_file():
            self.problem(f"missing file {relative} ({what})")
            return None
        return path

    def glob(self, directory: Path | None, pattern: str, what: str, *, at_least: int = 1) -> list[Path]:
        """Files matching ``pattern`` under ``directory`` (recursive with ``**``); a problem when
        fewer than ``at_least`` are found."""
        if directory is None:
            return []
        found = sorted(p for p in directory.glob(pattern) if p.is_file())
        if len(found) < at_least:
            where = directory.relative_to(self.root) if directory != self.root else Path(".")
            self.problem(f"{where}/: found {len(found)} {pattern} files, need at least {at_least} ({what})")
        return found

    def columns(self, path: Path, header: Iterable[str], required: Iterable[str]) -> bool:
        missing = [c for c in required if c not in set(header)]
        if missing:
            self.problem(f"{path.relative_to(self.root) if path.is_relative_to(self.root) else path}: missing "
                         f"column(s) {', '.join(missing)} (has: {', '.join(header) or 'nothing'})")
        return not missing

    def done(self) -> None:
        if len(self.problems) == 1:  # one line; several are listed one per line
            raise CorpusError(f"{self.corpus}: {self.root} is not a usable {self.corpus} tree: {self.problems[0]} "
                              f"(expected layout: docs/corpora.md, section '{self.corpus}')")
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise CorpusError(f"{self.corpus}: {self.root} is not a usable {self.corpus} tree:\n{lines}\n"
                              f"Expected layout: docs/corpora.md, section '{self.corpus}'.")


def inside(root: Path, path: str | Path) -> Path:
    """``path`` (absolute, or relative to ``root``) resolved, refused if it leaves ``root``
    (a ``..`` or a symlink pointing out): manifests never reference files outside ROOT."""
    root = Path(root).resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise CorpusError(f"{path}: resolves to {resolved}, outside the corpus root {root}")
    return resolved


# ---------------------------------------------------------------- option and label helpers

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def option_bool(value: Any, name: str, corpus: str) -> bool:
    """Boolean option ``name``: a bool (or None = false) as given, else one of ``1``/``true``/
    ``yes``/``on`` or ``0``/``false``/``no``/``off``/empty, in any case. Anything else raises
    :class:`CorpusError` naming the option and the value."""
    if isinstance(value, bool):
        return value
    text = "" if value is None else str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CorpusError(f"{corpus}: option {name}={value!r} is not a boolean (use true or false)")


def option_list(value: Any, name: str, corpus: str,
                allowed: Iterable[str] | Mapping[str, Iterable[str]] | None = None, *,
                required: bool = True, what: str = "value(s)", hint: str = "") -> list[str]:
    """Items of list option ``name``: a comma-separated string, or (from Python) a list, tuple
    or set of values. Items are stripped; blanks and repeats (after the first) are dropped.

    - ``required``: an empty list raises :class:`CorpusError` (with ``hint``, else the choices,
      in parentheses); otherwise it is returned.
    - ``allowed``: the accepted values; items outside them raise :class:`CorpusError` naming
      them (as ``what``, e.g. ``split(s)``), the option and the choices. A mapping canonical
      name -> lower-case aliases (``{"vox1": ("vox1", "1", "both")}``) is matched
      case-insensitively and gives the canonical names, in the mapping's order.
    """
    if value is None:
        raw: list[str] = []
    elif isinstance(value, str):
        raw = value.split(",")
    else:
        raw = [str(v) for v in value]
    items = list(dict.fromkeys(item.strip() for item in raw if item.strip()))
    if isinstance(allowed, Mapping):
        aliases = {key: tuple(names) for key, names in allowed.items()}
        choices = [names[0] for names in aliases.values()]
    else:
        aliases = None
        choices = list(allowed) if allowed is not None else []
    if not items:
        if required:
            hint = hint or (f"choose from {', '.join(choices)}, comma-separated" if choices else "")
            raise CorpusError(f"{corpus}: option {name} is empty" + (f" ({hint})" if hint else ""))
        return []
    if allowed is None:
        return items
    if aliases is None:
        unknown = [item for item in items if item not in choices]
    else:
        unknown = [item for item in items if not any(item.lower() in names for names in aliases.values())]
    if unknown:
        raise CorpusError(f"{corpus}: unknown {what} {', '.join(unknown)} in {name}= "
                          f"(choose from {', '.join(choices)}, comma-separated)")
    if aliases is None:
        return items
    return [key for key, names in aliases.items() if any(item.lower() in names for item in items)]


def _option_number(value: Any, name: str, corpus: str, kind: type, minimum: Any, maximum: Any,
                   what: str | None) -> Any:
    label = what or name
    try:
        number = kind(value)
    except (TypeError, ValueError):
        article = "an integer" if kind is int else "a number"
        raise CorpusError(f"{corpus}: option {name}={value!r}: {label} must be {article}") from None
    # "not >=" rather than "<": NaN is outside every range.
    if (minimum is not None and not number >= minimum) or (maximum is not None and not number <= maximum):
        if minimum is not None and maximum is not None:
            bounds = f"between {minimum} and {maximum}"
        else:
            bounds = f"at least {minimum}" if minimum is not None else f"at most {maximum}"
        raise CorpusError(f"{corpus}: option {name}={value!r}: {label} must be {bounds}")
    return number


def option_int(value: Any, name: str, corpus: str, minimum: int | None = None, maximum: int | None = None,
               *, what: str | None = None) -> int:
    """Integer option ``name`` (``int(value)``: an int, or its decimal string from the command
    line), within ``minimum``..``maximum`` when given. A bad value raises :class:`CorpusError`
    naming the option, the value and what it must be (``what`` describes it: ``"fold (the test
    session)"``)."""
    return _option_number(value, name, corpus, int, minimum, maximum, what)


def option_float(value: Any, name: str, corpus: str, minimum: float | None = None,
                 maximum: float | None = None, *, what: str | None = None) -> float:
    """Number option ``name`` (``float(value)``), within ``minimum``..``maximum`` when given;
    errors as :func:`option_int`."""
    return _option_number(value, name, corpus, float, minimum, maximum, what)


def gender_mf(value: str | None) -> str | None:
    """``m``/``f`` from the spellings corpora use (``male``, ``Male``, ``MALE``, ``m``,
    ``masculine``, ``male_masculine``, ...; the same for ``f``); None for anything else
    (``other``, ``non-binary``, empty)."""
    g = (value or "").strip().lower()
    if g in ("m", "male", "masculine") or g.startswith("male_"):
        return "m"
    if g in ("f", "female", "feminine") or g.startswith("female_"):
        return "f"
    return None


def language_folders(check: TreeCheck, language: Any, is_language_dir: Callable[[Path], bool], *,
                     base: Path = Path("."), describe: str, parent: str, none_found: str
                     ) -> list[tuple[str, Path]]:
    """(language, folder relative to ROOT) for every language the ``language`` option asks for,
    in corpora laid out as one folder per language (``is_language_dir`` tells one).

    - ROOT itself a language folder (and none of its sub-folders one): that language alone;
      asking for another one is a problem (``parent``: what ROOT should be instead).
    - ``language=all``: every language folder in ``ROOT/base``; none is a problem (``none_found``).
    - otherwise the named folders of ``ROOT/base``; a missing one is a problem (``describe``,
      with ``{}`` for the name, says what it should hold).
    """
    root = check.root
    wanted = option_list(language, "language", check.corpus)
    if is_language_dir(root) and not any(is_language_dir(d) for d in root.iterdir() if d.is_dir()):
        if wanted != ["all"] and wanted != [root.name]:
            check.problem(f"ROOT is one language folder ({root.name}), but language={','.join(wanted)} was asked "
                          f"(use language=all, or point ROOT at {parent})")
        return [(root.name, Path("."))]
    if wanted == ["all"]:
        present = sorted(d.name for d in (root / base).iterdir() if d.is_dir() and is_language_dir(d))
        if not present:
            check.problem(none_found)
        return [(name, base / name) for name in present]
    return [(name, base / name) for name in wanted if check.dir(base / name, describe.format(name)) is not None]


def read_csv(path: Path, corpus: str, *, delimiter: str | None = ",", what: str = ""
             ) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV file with a header row (standard quoting), names and values
    stripped; a missing value is ``""``, fields beyond the header are dropped. ``delimiter``
    None: sniffed from the first line among ``,`` ``;`` tab (else ``,``). A file that cannot be
    read raises :class:`CorpusError` (``what`` names the file's role: ``"metadata"``).

    Not for Common Voice/CoVoST lists: those split on tabs only, without quoting
    (``commonvoice.read_tsv``, ``covost2.read_tsv``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{corpus}: cannot read {what + ' ' if what else ''}{path}: {exc}") from None
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text.splitlines()[0] if text else "", delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [(h or "").strip() for h in reader.fieldnames or []]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if not isinstance(v, list)}
            for row in reader]
    return header, rows


# ---------------------------------------------------------------- trials and splits


def make_trials(utterances: list[Utterance], *, per_utterance: int = 2, seed: int = 0,
                group: Callable[[Utterance], Any] | None = None) -> list[tuple[str, str, int]]:
    """Balanced ASV trials: for each utterance ``per_utterance / 2`` same-speaker and as many
    different-speaker partners, drawn from the same ``group`` (e.g. language) when given."""
    rng = random.Random(seed)
    by_group: dict[Any, dict[str, list[str]]] = {}
    for u in utterances:
        if u.speaker is not None:
            by_group.setdefault(group(u) if group else None, {}).setdefault(u.speaker, []).append(u.id)
    trials = []
    for u in sorted(utterances, key=lambda u: u.id):
        if u.speaker is None:
            continue
        speakers = by_group[group(u) if group else None]
        same = [i for i in speakers[u.speaker] if i != u.id]
        others = sorted(s for s in speakers if s != u.speaker)
        for _ in range(per_utterance // 2):
            if same and others:  # a target and a non-target, so the list stays balanced
                trials.append((u.id, rng.choice(same), 1))
                trials.append((u.id, rng.choice(speakers[rng.choice(others)]), 0))
    return trials


def assign_splits(utterances: list[Utterance], *, seed: int = 0, dev: float = 0.1, test: float = 0.1) -> str:
    """Give every utterance with ``split == ""`` a seeded train/dev/test split; speaker-disjoint
    test speakers when speakers are known. Returns a one-line description of what was done."""
    todo = [u for u in utterances if not u.split]
    if not todo:
        return "splits from the metadata"
    rng = random.Random(seed)
    speakers = sorted({u.speaker for u in todo if u.speaker is not None})
    if len(speakers) >= 3:
        rng.shuffle(speakers)
        # Two test speakers at least (when there are 4+), so ASV trials have non-targets.
        n_test = max(2 if len(speakers) >= 4 else 1, round(len(speakers) * test))
        test_speakers = set(speakers[:n_test])
        by_speaker: dict[Any, list[Utterance]] = {}
        for u in todo:
            if u.speaker in test_speakers:
                u.split = "test"
            else:
                u.split = "train"
                by_speaker.setdefault(u.speaker, []).append(u)
        # Dev: about the same share of every other speaker's utterances, two at least where a
        # speaker has five or more, so that dev holds same-speaker pairs (ASV dev trials).
        n_dev = 0
        for key in sorted(by_speaker, key=str):
            items = by_speaker[key]
            rng.shuffle(items)
            count = round(len(items) * dev / (1 - test))
            count = max(count, 2) if len(items) >= 5 else count
            for u in items[:count]:
                u.split = "dev"
            n_dev += min(count, len(items))
        return (f"seeded split (seed {seed}): test = {n_test} of {len(speakers)} speakers (speaker-disjoint), "
                f"dev = {n_dev} utterances drawn from every other speaker")
    order = list(todo)
    rng.shuffle(order)
    n_test, n_dev = max(1, round(len(order) * test)), max(1, round(len(order) * dev))
    for i, u in enumerate(order):
        u.split = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return f"seeded split (seed {seed}) by utterance: speakers unknown or fewer than 3, so test is not speaker-disjoint"


# ---------------------------------------------------------------- writing


@dataclass
class _AudioInfo:
    sampling_rate: int
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sampling_rate


def _probe(path: Path) -> _AudioInfo | str:
    """The file's header, or why it cannot be used."""
    import soundfile as sf

    try:
        if path.stat().st_size == 0:
            return "empty file"
        info = sf.info(str(path))
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # libsndfile's errors: not audio, truncated header, ...
        return f"not readable audio ({str(exc).splitlines()[0][:120]})"
    if info.samplerate <= 0 or info.frames <= 0 or info.channels <= 0:
        return f"no audio (rate {info.samplerate}, frames {info.frames}, channels {info.channels})"
    return _AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def write_corpus(out: str | Path, *, name: str, root: Path, utterances: list[Utterance],
                 trials: dict[str, list[tuple[str, str, int]]] | None = None,
                 notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the manifest directory and return its description (``corpus.json``).

    Files that cannot be read, and segments past the end of their file, are left out *and
    listed* under ``skipped``. Trials are written as ``trials/asv_<split>.tsv``; trial lines
    naming a skipped utterance are dropped (and counted). The directory is written beside
    ``out`` and moved into place, ``corpus.json`` last.
    """
    from lhotse import Recording, SupervisionSegment
    from lhotse.audio import AudioSource
    from lhotse.cut import MonoCut

    out = Path(out)
    ids = Counter(u.id for u in utterances)
    repeated = sorted(i for i, n in ids.items() if n > 1)
    if repeated:
        raise CorpusError(f"{name}: {len(repeated)} utterance ids occur more than once (e.g. {repeated[:3]})")
    infos: dict[Path, _AudioInfo | str] = {}
    skipped: list[dict[str, str]] = []
    by_split: dict[str, list[dict]] = {}
    kept: list[Utterance] = []
    for u in utterances:
        info = infos.get(u.audio)
        if info is None:
            info = infos[u.audio] = _probe(u.audio)
        if isinstance(info, str):
            skipped.append({"id": u.id, "file": str(u.audio), "reason": info})
            continue
        duration = info.duration - u.start if u.duration is None else u.duration
        if u.start < 0 or duration <= 0 or u.start + duration > info.duration + SEGMENT_TOLERANCE:
            skipped.append({"id": u.id, "file": str(u.audio),
                            "reason": f"segment {u.start:.2f}+{duration:.2f}s outside the {info.duration:.2f}s file"})
            continue
        duration = min(duration, info.duration - u.start)
        recording = Recording(
            id=_recording_id(u, root), sources=[AudioSource(type="file", channels=list(range(info.channels)),
                                                            source=str(u.audio))],
            sampling_rate=info.sampling_rate, num_samples=info.num_samples, duration=info.duration,
        )
        supervision = SupervisionSegment(
            # Multi-channel files are mixed down when read (speechssl.data.audio).
            id=u.id, recording_id=recording.id, start=0.0, duration=duration, channel=0,
            text=u.text, language=u.language, speaker=u.speaker, gender=u.gender,
            custom=u.custom or None,
        )
        cut = MonoCut(id=u.id, start=u.start, duration=duration, channel=0, recording=recording,
                      supervisions=[supervision])
        by_split.setdefault(u.split, []).append(cut.to_dict())
        kept.append(u)
    if not kept:
        reasons = Counter(s["reason"].split(" (")[0] for s in skipped)
        raise CorpusError(f"{name}: no usable utterance under {root} ({len(skipped)} skipped: "
                          f"{', '.join(f'{n} {r}' for r, n in reasons.most_common(3))})")
    known = {u.id for u in kept}
    trial_files, trial_counts = {}, {}
    for split, lines in (trials or {}).items():
        usable = [t for t in lines if t[0] in known and t[1] in known]
        if usable:
            trial_files[split] = usable
        trial_counts[split] = {"count": len(usable), "target": sum(t[2] for t in usable),
                               "dropped": len(lines) - len(usable), "file": f"trials/asv_{split}.tsv"}
    info = _describe(name, root, kept, skipped, trial_counts, notes or {})
    _write_tree(out, by_split, trial_files, info)
    return info


def _recording_id(u: Utterance, root: Path) -> str:
    try:
        return Path(u.audio).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:  # audio outside ROOT (allowed by a recipe option, or written under OUT)
        return Path(u.audio).resolve().as_posix()


def _describe(name: str, root: Path, kept: list[Utterance], skipped: list[dict], trials: dict,
              notes: dict) -> dict[str, Any]:
    splits = {}
    for split in sorted({u.split for u in kept}):
        items = [u for u in kept if u.split == split]
        entry: dict[str, Any] = {
            "utterances": len(items),
            "speakers": len({u.speaker for u in items if u.speaker is not None}),
            "languages": dict(sorted(Counter(u.language for u in items if u.language).items())),
        }
        for label in ("emotion", "intent"):
            counts = Counter(u.custom.get(label) for u in items if u.custom.get(label) is not None)
            if counts:
                entry[f"{label}s"] = dict(sorted(counts.items()))
        splits[split] = entry
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "root": str(Path(root).resolve()),
        "splits": splits,
        "trials": trials,
        "skipped": skipped,
        **notes,
    }


def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_tree(out: Path, by_split: dict[str, list[dict]], trials: dict[str, list], info: dict) -> None:
    tmp = out.with_name(f".{out.name}.prepare-{os.getpid()}")
    try:
        _write_tree_via(tmp, out, by_split, trials, info)
    except OSError as exc:  # disk full, read-only OUT: remove the half-written copy, name OUT
        shutil.rmtree(tmp, ignore_errors=True)
        from speechssl.fsutil import write_error

        raise write_error(out, exc, "corpus manifests in") from exc


def _write_tree_via(tmp: Path, out: Path, by_split: dict[str, list[dict]], trials: dict[str, list],
                    info: dict) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "manifests").mkdir(parents=True)
    for split, cuts in by_split.items():
        _write_jsonl_gz(tmp / "manifests" / f"cuts_{split}.jsonl.gz", cuts)
    if trials:
        (tmp / "trials").mkdir()
        for split, lines in trials.items():
            rows = ["enroll\ttest\tlabel"] + [f"{a}\t{b}\t{label}" for a, b, label in lines]
            (tmp / "trials" / f"asv_{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / "corpus.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    # Replace what an earlier prepare wrote, corpus.json last: a reader that sees the new
    # corpus.json sees the new manifests.
    for old in ("manifests", "trials"):
        if (out / old).exists():
            shutil.rmtree(out / old)
        if (tmp / old).exists():
            os.replace(tmp / old, out / old)
    os.replace(tmp / "corpus.json", out / "corpus.json")
    shutil.rmtree(tmp, ignore_errors=True)


def summary(info: dict[str, Any]) -> str:
    """A few lines about a prepared corpus."""
    lines = [f"{info['name']}: {info['root']}"]
    for split, entry in info["splits"].items():
        languages = ", ".join(entry["languages"]) or "-"
        lines.append(f"  {split:<12} {entry['utterances']:>7} utterances  {entry['speakers']:>5} speakers  "
                     f"languages: {languages}")
    for split, t in info.get("trials", {}).items():
        lines.append(f"  trials {split}: {t['count']} ({t['target']} target) in {t['file']}"
                     + (f"; {t['dropped']} naming skipped utterances dropped" if t["dropped"] else ""))
    if info.get("skipped"):
        lines.append(f"  skipped {len(info['skipped'])} utterance(s), listed in corpus.json 'skipped':")
        lines += [f"    {s['file']}: {s['reason']}" for s in info["skipped"][:10]]
        if len(info["skipped"]) > 10:
            lines.append(f"    ... and {len(info['skipped']) - 10} more")
    if info.get("split_note"):
        lines.append(f"  {info['split_note']}")
    return "\n".join(lines)
