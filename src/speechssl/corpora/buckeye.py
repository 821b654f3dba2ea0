"""``buckeye``: the Buckeye Corpus of conversational speech (40 speakers of Columbus, Ohio).

``speechssl prepare buckeye ROOT --out DIR [--option pause=0.5] [--option max_duration=20]``

ROOT holds the unpacked speaker archives: ``s01.zip`` ... ``s40.zip`` contain one zip per
track (``s0101a.zip``, ...), each holding ``s0101a.wav`` (16 kHz mono), ``.words``, ``.phones``,
``.log``, ``.txt``. Any nesting works as long as a track's files sit side by side::

    ROOT/s01/s0101a.wav  s0101a.words  s0101a.phones  (s0101a.txt, s0101a.log: not read)
    ROOT/s01/s0101b.wav  ...
    ROOT/s40/s4004a.wav  ...

``.words`` and ``.phones`` are ESPS/xlabel files: a header up to a line ``#``, then one line per
label, ``<end time> <colour> <label>``; a label's start is the previous line's end. Word lines
are ``word; phonemic form; phonetic form; POS``; non-words are ``<SIL>``, ``<IVER>`` (the
interviewer talking), ``{B_TRANS}``/``{E_TRANS}`` (start/end of the transcribed part),
``<NOISE>``, ``<VOCNOISE>``, ``<LAUGH>``, ``<UNKNOWN>``, ``<CUTOFF-...>``, ``<EXCLUDE-...>``, ...

Utterances are segments of one speaker's speech: a segment ends at ``{B_TRANS}``,
``{E_TRANS}``, any ``<IVER...>`` or ``<EXCLUDE...>`` label, and at any run of ``<SIL>``,
``<NOISE>``, ``<VOCNOISE>``, ``<LAUGH...>``, ``<UNKNOWN>`` labels lasting ``pause`` seconds or
more (0.5 s, as the ``buckeye`` Python package's ``words_to_utterances``); a segment longer
than ``max_duration`` is cut at its longest inner gap between words, recursively. A segment
spans its first word's start to its last word's end; other markers (``<CUTOFF-...>``,
``<HES-...>``, ...) stay inside a segment but are not words. Words with a non-positive duration
(timing errors in the corpus) end a segment and are left out (counted in corpus.json), and so
does any label ending before it starts.

Labels: ``text`` = the words joined by spaces (the corpus's lower-case orthography),
``custom.words``, ``custom.pos`` (the corpus's POS tag per word), ``custom.word_alignment`` =
``[[start, end, word], ...]`` in seconds from the segment start, ``custom.phonemes`` = the
``.phones`` labels whose midpoint lies inside the segment (ARPAbet-like, as given, after dropping
the ``+1``/``;`` suffixes and the upper-case non-speech labels), ``speaker`` = ``sNN``,
``gender`` = ``f``/``m`` and ``custom.age`` = ``young``/``old`` (the corpus documentation's
speaker table), ``language`` = ``en``.

Split (fixed, speaker-disjoint, balanced like the corpus design): within each of the four
sex x age groups of 10 speakers (numbers sorted), the last two speakers are test and the third
to last is dev: test = s25 s27 s34 s36 s37 s38 s39 s40, dev = s20 s31 s33 s35, train = the
other 28. ``test_speakers`` / ``dev_speakers`` override it. ASV trials for the test split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechssl.corpora.base import (CorpusError, TreeCheck, Utterance, inside, make_trials, option_float, option_int,
                                    option_list, write_corpus)

# Speaker -> (sex, age, interviewer sex), from the corpus documentation (also in the
# ``buckeye`` Python package by S. Seyfarth).
SPEAKERS = {
    "s01": ("f", "y", "f"), "s02": ("f", "o", "m"), "s03": ("m", "o", "m"), "s04": ("f", "y", "f"),
    "s05": ("f", "o", "f"), "s06": ("m", "y", "f"), "s07": ("f", "o", "f"), "s08": ("f", "y", "f"),
    "s09": ("f", "y", "f"), "s10": ("m", "o", "f"), "s11": ("m", "y", "m"), "s12": ("f", "y", "m"),
    "s13": ("m", "y", "f"), "s14": ("f", "o", "f"), "s15": ("m", "y", "m"), "s16": ("f", "o", "m"),
    "s17": ("f", "o", "m"), "s18": ("f", "o", "f"), "s19": ("m", "o", "f"), "s20": ("f", "o", "f"),
    "s21": ("f", "y", "m"), "s22": ("m", "o", "f"), "s23": ("m", "o", "m"), "s24": ("m", "o", "m"),
    "s25": ("f", "o", "m"), "s26": ("f", "y", "f"), "s27": ("f", "o", "m"), "s28": ("m", "y", "m"),
    "s29": ("m", "o", "f"), "s30": ("m", "y", "m"), "s31": ("f", "y", "m"), "s32": ("m", "y", "f"),
    "s33": ("m", "y", "f"), "s34": ("m", "y", "m"), "s35": ("m", "o", "m"), "s36": ("m", "o", "f"),
    "s37": ("f", "y", "m"), "s38": ("m", "o", "m"), "s39": ("f", "y", "m"), "s40": ("m", "y", "f"),
}
TRACK = re.compile(r"^(s[0-4][0-9])[0-9]{2}[a-z]$")
BREAKS = ("{B_TRANS", "{E_TRANS", "<B_TRANS", "<E_TRANS", "<IVER", "<EXCLUDE")
"""Labels that always end a segment: edges of the transcribed part, the interviewer, excluded parts."""
QUIET = ("<SIL", "<NOISE", "<VOCNOISE", "<LAUGH", "<UNKNOWN")
"""Non-speech labels whose run of ``pause`` seconds ends a segment (other markers, such as
``<CUTOFF-...>`` or ``<HES-...>``, are the speaker talking: they stay inside a segment)."""


def default_split() -> dict[str, str]:
    """Speaker -> split of the fixed rule (see the module doc)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for speaker, (sex, age, _) in sorted(SPEAKERS.items()):
        groups.setdefault((sex, age), []).append(speaker)
    split = {}
    for members in groups.values():
        for i, speaker in enumerate(members):
            split[speaker] = "test" if i >= len(members) - 2 else "dev" if i == len(members) - 3 else "train"
    return split


@dataclass
class Label:
    start: float
    end: float
    label: str
    pos: str = ""

    @property
    def is_word(self) -> bool:
        return bool(self.label) and not self.label.startswith(("<", "{"))


def read_xlabel(path: Path, *, words: bool) -> list[Label]:
    """The labels of a ``.words`` (``words=True``) or ``.phones`` file, with start times."""
    lines = path.read_text(encoding="latin-1").splitlines()
    try:
        body = next(i for i, line in enumerate(lines) if line.strip() == "#") + 1
    except StopIteration:
        raise CorpusError(f"buckeye: {path}: no '#' line ending the xlabel header") from None
    labels: list[Label] = []
    previous = 0.0
    for line in lines[body:]:
        head, _, rest = line.partition(";")
        fields = head.split(None, 2)
        if len(fields) < 2:
            continue
        try:
            time = float(fields[0])
        except ValueError:
            continue
        label = fields[2].strip() if len(fields) > 2 else ""
        pos = ""
        if words:
            parts = [p.strip() for p in rest.split(";")] if rest else []
            pos = parts[-1] if parts else ""
        else:
            label = label.replace("+1", "").strip()
        labels.append(Label(max(previous, 0.0), time, label, pos))
        previous = time
    return labels


def _is_phone(label: str) -> bool:
    return bool(label) and not label.startswith(("<", "{")) and label == label.lower()


def _segments(labels: list[Label], pause: float) -> tuple[list[list[Label]], int]:
    """Runs of words split at breaks and long pauses; also the count of bad-timing words."""
    segments: list[list[Label]] = []
    current: list[Label] = []
    gap = 0.0
    bad = 0

    def close() -> None:
        nonlocal current
        if current:
            segments.append(current)
        current = []

    for item in labels:
        if item.end < item.start or (item.is_word and item.end == item.start):
            # A timestamp before the previous one (or a zero-length word): nothing around it can be trusted.
            bad += item.is_word
            close()
            gap = 0.0
        elif item.is_word:
            current.append(item)
            gap = 0.0
        elif item.label.startswith(BREAKS):
            close()
            gap = 0.0
        elif item.label.startswith(QUIET) or not item.label:
            gap += max(0.0, item.end - item.start)
            if gap >= pause:
                close()
        else:
            gap = 0.0
    close()
    return segments, bad


def _cut(words: list[Label], max_duration: float) -> list[list[Label]]:
    """``words`` cut at its longest inner gap until every piece fits ``max_duration``."""
    if words[-1].end - words[0].start <= max_duration or len(words) == 1:
        return [words]
    middle = (words[0].start + words[-1].end) / 2
    best = max(range(1, len(words)),
               key=lambda i: (round(words[i].start - words[i - 1].end, 3), -abs(words[i].start - middle)))
    return _cut(words[:best], max_duration) + _cut(words[best:], max_duration)


def _speakers(value: Any, name: str) -> set[str]:
    """Speaker codes ``sNN`` of list option ``name`` (``s5``, ``05``, ``S05`` and ``5`` are ``s05``)."""
    try:
        return {f"s{int(s.lstrip('sS')):02d}" for s in option_list(value, name, "buckeye", required=False)}
    except ValueError:
        raise CorpusError(f"buckeye: option {name}={value!r}: use speaker codes such as s05,s12") from None


def prepare(root: Path, out: Path, *, pause: float | str = 0.5, max_duration: float | str = 20.0,
            test_speakers: str = "", dev_speakers: str = "", seed: int | str = 0) -> dict[str, Any]:
    """Prepare Buckeye as pause-delimited segments (see the module doc)."""
    pause = option_float(pause, "pause", "buckeye")
    max_duration = option_float(max_duration, "max_duration", "buckeye")
    seed = option_int(seed, "seed", "buckeye")
    check = TreeCheck("buckeye", root)
    words_files = sorted(p for p in root.rglob("*.words") if TRACK.match(p.stem))
    tracks: dict[str, tuple[Path, Path, Path]] = {}
    missing = []
    for words in words_files:
        if words.stem in tracks:
            check.problem(f"track {words.stem} found twice ({tracks[words.stem][0].relative_to(root)} and "
                          f"{words.relative_to(root)})")
            continue
        wav, phones = words.with_suffix(".wav"), words.with_suffix(".phones")
        for path in (wav, phones):
            if not path.is_file():
                missing.append(str(path.relative_to(root)))
        tracks[words.stem] = (words, wav, phones)
    if missing:
        check.problem(f"{len(missing)} file(s) missing beside their .words file: {', '.join(missing[:6])}"
                      + (" ..." if len(missing) > 6 else ""))
    if not tracks:
        zips = sorted(p.name for p in root.rglob("s[0-4][0-9]*.zip"))
        hint = (f" (found {len(zips)} zip archive(s) such as {zips[0]}: unzip the speaker archives and the track "
                "archives inside them)") if zips else ""
        check.problem(f"no track files sNNMMx.words (e.g. s01/s0101a.words) under ROOT{hint}")
    unknown = sorted({TRACK.match(t).group(1) for t in tracks} - set(SPEAKERS))
    if unknown:
        check.problem(f"speaker folder(s) {', '.join(unknown)} are not Buckeye speakers s01..s40")
    split_of = default_split()
    test, dev = _speakers(test_speakers, "test_speakers"), _speakers(dev_speakers, "dev_speakers")
    if test or dev:
        if test & dev:
            check.problem(f"speaker(s) {', '.join(sorted(test & dev))} in both test_speakers and dev_speakers")
        split_of = {s: "test" if s in test else "dev" if s in dev else "train" for s in SPEAKERS}
    check.done()

    utterances: list[Utterance] = []
    bad_timing = 0
    cut_long = 0
    for track, (words_path, wav, phones_path) in sorted(tracks.items()):
        speaker = TRACK.match(track).group(1)
        sex, age, interviewer = SPEAKERS[speaker]
        labels = read_xlabel(words_path, words=True)
        phones = [p for p in read_xlabel(phones_path, words=False) if _is_phone(p.label) and p.end > p.start]
        segments, bad = _segments(labels, pause)
        bad_timing += bad
        pieces = []
        for segment in segments:
            parts = _cut(segment, max_duration)
            cut_long += len(parts) - 1
            pieces += parts
        audio = inside(root, wav.relative_to(root))
        for i, seg in enumerate(pieces):
            start, end = seg[0].start, seg[-1].end
            words = [w.label for w in seg]
            phonemes = [p.label for p in phones if start <= (p.start + p.end) / 2 < end]
            utterances.append(Utterance(
                id=f"{track}_{i:04d}", audio=audio, split=split_of[speaker], text=" ".join(words),
                speaker=speaker, language="en", gender=sex, start=round(start, 6), duration=round(end - start, 6),
                custom={
                    "words": words,
                    "pos": [w.pos or "null" for w in seg],
                    "word_alignment": [[round(w.start - start, 6), round(w.end - start, 6), w.label] for w in seg],
                    "phonemes": " ".join(phonemes),
                    "track": track,
                    "age": {"y": "young", "o": "old"}[age],
                    "interviewer_gender": interviewer,
                },
            ))
    if not utterances:
        raise CorpusError(f"buckeye: no word segments in the .words files under {root}")
    test_utts = [u for u in utterances if u.split == "test"]
    trials = {"test": make_trials(test_utts, seed=seed)} if test_utts else None
    by_split = {s: sorted({sp for sp, x in split_of.items() if x == s and any(t.startswith(sp) for t in tracks)})
                for s in ("train", "dev", "test")}
    return write_corpus(out, name="buckeye", root=root, utterances=utterances, trials=trials, notes={
        "tracks": len(tracks),
        "pause": pause,
        "max_duration": max_duration,
        "words_with_bad_timing_left_out": bad_timing,
        "segments_cut_for_length": cut_long,
        "speakers_by_split": by_split,
        "split_note": ("fixed speaker-disjoint split: last two speakers of each sex x age group test, the "
                       "third to last dev" if not (test or dev)
                       else "speaker-disjoint split from test_speakers/dev_speakers"),
    })
