"""``iemocap``: IEMOCAP emotion recognition, the standard 4-class setup with session folds.

``speechssl prepare iemocap ROOT --out DIR [--option fold=1] [--option dev_ratio=0.2] [--option seed=0]``

Layout (the ``IEMOCAP_full_release`` folder as distributed by USC SAIL; ROOT may be that
folder or its parent)::

    ROOT/Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav   one file per turn, 16 kHz
    ROOT/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt                consensus labels, per turn:
        [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
    ROOT/Session1/dialog/transcriptions/Ses01F_impro01.txt
        Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    ... Session2 .. Session5

Labels: the consensus category of each turn (the EmoEvaluation summary line). The standard
4-class setup (SUPERB / s3prl ``emotion``): ``neu``, ``hap`` (``hap`` + ``exc`` merged),
``sad``, ``ang``; every other category (``fru, sur, fea, dis, oth, xxx``) is left out and
counted in corpus.json ``excluded`` (5,531 utterances remain in the full corpus).

Splits (leave-one-session-out, 5 folds): ``test`` = Session ``fold`` (1-5); the other four
sessions are split at random into ``train`` and ``dev`` (``dev_ratio`` of their utterances,
seeded). This follows s3prl's SUPERB ER recipe, which takes ``valid_ratio: 0.2`` of the
training sessions' utterances at random (``torch.random_split``, seed 0) as validation; the
draw here is our own seeded shuffle, so the exact dev utterances differ from s3prl's, and
dev is not speaker-disjoint (as in s3prl). Report the mean over ``fold=1..5``.

Per utterance: ``speaker`` = session + speaker gender (``Ses01F``: the actor of the turn, from
the last part of the id, ``..._F000`` or ``..._M000``), ``gender`` (``f``/``m``), ``language``
``en``, ``text`` (the transcription, when the transcriptions folder is there), and in
``custom``: ``emotion`` (the 4-class label), ``emotion_original`` (the annotated category,
e.g. ``exc``), ``fold_session`` (the session 1-5, i.e. the fold it is the test set of),
``dialog``, ``improvised`` (impro vs script dialog), ``valence``/``arousal``/``dominance``
(the dimensional means, 1-5).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, inside, option_float, option_int, write_corpus

NAME = "iemocap"
SESSIONS = (1, 2, 3, 4, 5)
CLASSES = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
"""Annotated category -> 4-class label (excited merged into happy, as SUPERB/s3prl do)."""
RELEASE_FOLDER = "IEMOCAP_full_release"
LABEL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]")
TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s*(.*)$")


def _text_files(directory: Path) -> list[Path]:
    """The per-dialog .txt files (not the Categorical/, Attribute/ subfolders, nor macOS ._ files)."""
    return sorted(p for p in directory.glob("*.txt") if p.is_file() and not p.name.startswith("._"))


def _read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def prepare(root: Path, out: Path, *, fold: int | str = 1, dev_ratio: float | str = 0.2,
            seed: int | str = 0) -> dict[str, Any]:
    fold = option_int(fold, "fold", NAME, 1, 5, what="fold (the test session)")
    dev_ratio = option_float(dev_ratio, "dev_ratio", NAME, 0.0, 0.9)
    seed = option_int(seed, "seed", NAME)
    root = Path(root).expanduser()
    if not (root / "Session1").is_dir() and (root / RELEASE_FOLDER).is_dir():
        base = RELEASE_FOLDER + "/"  # ROOT is the folder the release was unpacked into
    else:
        base = ""
    check = TreeCheck(NAME, root)

    labelled: list[tuple[int, Path, str, str, str, list[float]]] = []  # session, wav, dialog, utt, category, vad
    transcripts: dict[str, str] = {}
    no_transcripts: list[int] = []
    for n in SESSIONS:
        session = f"{base}Session{n}"
        if not (root / session).is_dir():
            check.problem(f"missing directory {session}/ (IEMOCAP session {n}; all five are needed for the "
                          "leave-one-session-out folds)")
            continue
        labels = check.dir(f"{session}/dialog/EmoEvaluation", f"session {n} emotion labels")
        wav_dir = check.dir(f"{session}/sentences/wav", f"session {n} utterance audio")
        files = _text_files(labels) if labels is not None else []
        if labels is not None and not files:
            check.problem(f"{session}/dialog/EmoEvaluation/: no <dialog>.txt label files")
        missing_wavs, unparsed = [], 0
        for path in files:
            dialog = path.stem
            for line in _read(path):
                if not line.startswith("["):
                    continue
                match = LABEL_LINE.match(line)
                if match is None:
                    unparsed += 1
                    continue
                utt, category = match.group(3), match.group(4)
                try:
                    vad = [float(v) for v in match.group(5).split(",")]
                except ValueError:
                    vad = []
                wav = (wav_dir / dialog / f"{utt}.wav") if wav_dir is not None else None
                if category in CLASSES and wav is not None and not wav.is_file():
                    missing_wavs.append(f"{session}/sentences/wav/{dialog}/{utt}.wav")
                labelled.append((n, wav, dialog, utt, category, vad))
        if unparsed:
            check.problem(f"{session}/dialog/EmoEvaluation/: {unparsed} line(s) starting with '[' are not "
                          "'[start - end]<TAB>utterance<TAB>category<TAB>[V, A, D]'")
        if missing_wavs:
            check.problem(f"{len(missing_wavs)} labelled 4-class utterance(s) of session {n} have no wav "
                          f"(first: {missing_wavs[0]})")
        transcript_dir = root / session / "dialog" / "transcriptions"
        if transcript_dir.is_dir():
            for path in _text_files(transcript_dir):
                for line in _read(path):
                    match = TRANSCRIPT_LINE.match(line.strip())
                    if match:
                        transcripts[match.group(1)] = match.group(2).strip()
        else:
            no_transcripts.append(n)
    check.done()

    seen = Counter(utt for _, _, _, utt, _, _ in labelled)
    repeated = sorted(u for u, k in seen.items() if k > 1)
    if repeated:
        raise CorpusError(f"{NAME}: {len(repeated)} utterance(s) are labelled twice (e.g. {repeated[0]})")
    excluded = Counter(category for *_, category, _ in labelled if category not in CLASSES)
    utterances = []
    for n, wav, dialog, utt, category, vad in labelled:
        if category not in CLASSES:
            continue
        gender = utt.rsplit("_", 1)[-1][:1].upper()
        custom: dict[str, Any] = {
            "emotion": CLASSES[category], "emotion_original": category, "fold_session": n,
            "dialog": dialog, "improvised": "_impro" in dialog,
        }
        if len(vad) == 3:
            custom.update(valence=vad[0], arousal=vad[1], dominance=vad[2])
        utterances.append(Utterance(
            id=utt, audio=inside(root, wav), split="test" if n == fold else "", text=transcripts.get(utt),
            speaker=f"Ses{n:02d}{gender}", language="en", gender=gender.lower() if gender in "FM" else None,
            custom=custom,
        ))
    rest = sorted((u for u in utterances if not u.split), key=lambda u: u.id)
    random.Random(seed).shuffle(rest)
    n_dev = round(len(rest) * dev_ratio)
    for i, u in enumerate(rest):
        u.split = "dev" if i < n_dev else "train"
    notes: dict[str, Any] = {
        "fold": fold,
        "classes": {"neu": ["neu"], "hap": ["hap", "exc"], "sad": ["sad"], "ang": ["ang"]},
        "excluded": dict(sorted(excluded.items())),
        "split_note": (f"fold {fold}: test = Session{fold}; train/dev = the other sessions, dev = "
                       f"{n_dev} of {len(rest)} utterances at random (ratio {dev_ratio}, seed {seed}; s3prl SUPERB ER "
                       "convention); 4 classes neu/hap(+exc)/sad/ang, "
                       f"{sum(excluded.values())} other-category utterances excluded"),
    }
    if base:
        notes["release_folder"] = RELEASE_FOLDER
    if no_transcripts:
        notes["no_transcriptions"] = [f"Session{n}" for n in no_transcripts]
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=None, notes=notes)
