"""``slurp``: SLURP, the Spoken Language Understanding Resource Package (Bastianelli et al., 2020).

``speechssl prepare slurp ROOT --out DIR [--option synthetic=true] [--option headset_only=true]``

ROOT is a checkout of the SLURP repository (``github.com/pswietojanski/slurp``) with its
audio unpacked as ``scripts/download_audio.sh`` + ``tar -xzf`` leave it::

    ROOT/dataset/slurp/train.jsonl, devel.jsonl, test.jsonl
    ROOT/dataset/slurp/train_synthetic.jsonl      (only read with synthetic=true)
    ROOT/dataset/slurp/metadata.json              (optional: speaker ids and gender)
    ROOT/audio/slurp_real/audio-<n>[-headset].flac
    ROOT/audio/slurp_synth/*.flac                 (only read with synthetic=true)

(``ROOT/slurp_real`` and ``ROOT/slurp_synth`` directly under ROOT, as SpeechBrain's recipe
unpacks them, are accepted too.)

Each jsonl line is one *text* (``slurp_id``) with its ``recordings``; every recording becomes
one utterance, id = the file name without ``.flac`` (``synth-`` in front for synthetic ones).
A file listed twice is kept once (the first occurrence, in the order train, devel, test) and
counted under ``duplicate_recordings``. Splits: ``train`` (plus the synthetic recordings when
``synthetic=true``), ``dev`` (``devel.jsonl``), ``test``.

Labels:

- ``text``: ``sentence`` as written (lower case, some punctuation); ``language`` = ``en``.
- ``custom.intent`` = ``<scenario>_<action>``, the intent SLURP's own evaluation script scores
  (the jsonl ``intent`` field disagrees with it on ~1.5% of lines, e.g. ``hue_lightup`` for
  scenario ``iot``; where it does it is kept as ``custom.intent_field``). ``custom.scenario``,
  ``custom.action`` as given.
- slot filling: ``custom.words`` and ``custom.slots`` (``type``, ``start_word``, ``end_word``
  exclusive) parsed from ``sentence_annotation`` (``wake me up at [time : five am] please``).
  Text glued to a bracket (``[person : robert],``) stays part of the adjacent word. When the
  annotation has as many words as ``sentence``, the sentence's words are used (the annotation
  keeps raw casing and a few spellings the sentence normalises: ``this Friday``, ``hwood``);
  otherwise the annotation's words are kept (``@comcast`` vs ``at comcast``; counted under
  ``annotation_words_differ``). An annotation that cannot be parsed (unbalanced brackets, no
  ``:``) gives ``words`` = ``sentence.split()`` and no slots (``unparsed_annotations``).
- ``speaker`` and ``gender`` (``f``/``m``) from ``metadata.json``'s ``usrid`` (``FE-488``:
  female, native English speaker) when that file is present; ``custom.native_english``.
  Synthetic recordings have no speaker.
- ``custom``: ``slurp_id``, ``recording`` (file name), ``headset`` (close-talk ``-headset``
  variant, else far-field), ``synthetic``, and the corpus's automatic ``wer``/``ent_wer``.

Options: ``synthetic`` (default false) adds ``train_synthetic.jsonl`` to ``train``;
``headset_only`` (default false) keeps only the close-talk recordings of the real audio
(synthetic audio has no far-field copy and is kept).

A few listed recordings are absent from the official audio release (e.g. SLURP issue #2):
missing files are listed in ``corpus.json`` "skipped" as long as they are at most 1% of a
split; more than that is reported as a wrong tree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, inside, option_bool, write_corpus

NAME = "slurp"
SPLITS = (("train", "train.jsonl"), ("dev", "devel.jsonl"), ("test", "test.jsonl"))
SYNTHETIC = "train_synthetic.jsonl"
META = Path("dataset/slurp")
MISSING_TOLERANCE = 0.01
"""Share of a split's recordings that may be missing before the tree is called wrong."""

_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def parse_annotation(annotation: str) -> tuple[list[str], list[dict[str, Any]]] | None:
    """Words and slot spans of a SLURP ``sentence_annotation``, or None when it is malformed.

    >>> parse_annotation("wake me up at [time : five am] please")
    (['wake', 'me', 'up', 'at', 'five', 'am', 'please'], [{'type': 'time', 'start_word': 4, 'end_word': 6}])
    """
    pieces: list[tuple[str, int | None]] = []
    types: list[str] = []
    position = 0
    for match in _BRACKET.finditer(annotation):
        pieces.append((annotation[position:match.start()], None))
        slot_type, colon, value = match.group(1).partition(":")
        if not colon or not slot_type.strip():
            return None
        types.append(slot_type.strip())
        pieces.append((value.strip(), len(types) - 1))
        position = match.end()
    pieces.append((annotation[position:], None))
    if any("[" in text or "]" in text for text, slot in pieces if slot is None):
        return None
    words: list[str] = []
    word_slot: list[int | None] = []
    current, current_slot = "", None
    for text, slot in pieces:
        for char in text:
            if char.isspace():
                if current:
                    words.append(current)
                    word_slot.append(current_slot)
                current, current_slot = "", None
            else:
                current += char
                if current_slot is None:
                    current_slot = slot
    if current:
        words.append(current)
        word_slot.append(current_slot)
    slots = []
    for index, slot_type in enumerate(types):
        covered = [k for k, s in enumerate(word_slot) if s == index]
        if covered:  # an empty value ("[date : ]") spans no word
            slots.append({"type": slot_type, "start_word": covered[0], "end_word": covered[-1] + 1})
    return words, slots


def _read_jsonl(path: Path, check: TreeCheck) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                check.problem(f"{META / path.name}:{line_no}: not valid JSON")
                return rows
            missing = [k for k in ("slurp_id", "sentence", "scenario", "action", "recordings") if k not in row]
            if missing or not isinstance(row.get("recordings"), list):
                check.problem(f"{META / path.name}:{line_no}: missing field(s) "
                              f"{', '.join(missing) or 'recordings (a list)'}")
                return rows
            rows.append(row)
    if not rows:
        check.problem(f"{META / path.name}: no entries")
    return rows


def _speakers(path: Path) -> dict[str, str]:
    """Recording file name -> ``usrid`` from ``metadata.json``."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorpusError(f"{NAME}: cannot read {path}: {exc}") from None
    speakers = {}
    for record in records.values() if isinstance(records, dict) else []:
        for filename, info in (record.get("recordings") or {}).items():
            if isinstance(info, dict) and info.get("usrid"):
                speakers[filename] = str(info["usrid"])
    return speakers


def _speaker_labels(usrid: str | None) -> tuple[str | None, bool | None]:
    """Gender (``f``/``m``) and native-English flag from a ``usrid`` like ``FE-488``."""
    if not usrid:
        return None, None
    code = usrid.split("-", 1)[0].upper()
    if code.startswith("UNK"):
        return None, None
    gender = {"F": "f", "M": "m"}.get(code[:1])
    native = {"E": True, "O": False}.get(code[1:2])
    return gender, native


def _audio_dir(check: TreeCheck, name: str, what: str) -> Path | None:
    for relative in (Path("audio") / name, Path(name)):
        if (check.root / relative).is_dir():
            return check.root / relative
    check.problem(f"missing directory audio/{name}/ ({what}; unpack {name}.tar.gz there)")
    return None


def prepare(root: Path, out: Path, *, synthetic: bool | str = False, headset_only: bool | str = False
            ) -> dict[str, Any]:
    synthetic = option_bool(synthetic, "synthetic", NAME)
    headset_only = option_bool(headset_only, "headset_only", NAME)
    check = TreeCheck(NAME, root)
    meta_dir = check.dir(META, "the SLURP text annotations (dataset/slurp/ of the SLURP repository)")
    sources = [(split, filename, False) for split, filename in SPLITS]
    if synthetic:
        sources.append(("train", SYNTHETIC, True))
    entries: list[tuple[str, bool, dict[str, Any]]] = []
    for split, filename, is_synth in sources:
        path = check.file(META / filename, f"the {split} split{' (synthetic)' if is_synth else ''}") \
            if meta_dir is not None else None
        if path is not None:
            entries += [(split, is_synth, row) for row in _read_jsonl(path, check)]
    real_dir = _audio_dir(check, "slurp_real", "the real recordings")
    synth_dir = _audio_dir(check, "slurp_synth", "the synthetic recordings, read with synthetic=true") \
        if synthetic else None

    # Which recordings to keep, and which of them are missing, before any audio is read.
    chosen: list[tuple[str, bool, dict[str, Any], dict[str, Any]]] = []
    seen: set[tuple[bool, str]] = set()
    duplicates = 0
    for split, is_synth, row in entries:
        for recording in row["recordings"]:
            filename = str(recording.get("file", "")) if isinstance(recording, dict) else ""
            if not filename:
                check.problem(f"slurp_id {row['slurp_id']}: a recording without 'file'")
                continue
            if headset_only and not is_synth and not _is_headset(filename):
                continue
            if (is_synth, filename) in seen:
                duplicates += 1
                continue
            seen.add((is_synth, filename))
            chosen.append((split, is_synth, row, recording))
    for label, directory, is_synth in (("real", real_dir, False), ("synthetic", synth_dir, True)):
        if directory is None:
            continue
        for split in sorted({s for s, synth, _, _ in chosen if synth == is_synth}):
            listed = [r["file"] for s, synth, _, r in chosen if s == split and synth == is_synth]
            missing = [f for f in listed if not (directory / f).is_file()]
            if len(missing) > MISSING_TOLERANCE * len(listed):
                where = directory.relative_to(check.root).as_posix()
                check.problem(f"{where}/: {len(missing)} of the {len(listed)} {label} recordings of {split} "
                              f"are missing (first: {', '.join(missing[:3])})")
    check.done()

    meta_path = root / META / "metadata.json"
    speakers = _speakers(meta_path) if meta_path.is_file() else {}
    utterances = []
    unparsed = words_differ = 0
    for split, is_synth, row, recording in chosen:
        filename = recording["file"]
        directory = synth_dir if is_synth else real_dir
        audio = inside(root, directory / filename)
        scenario, action = str(row["scenario"]), str(row["action"])
        intent = f"{scenario}_{action}"
        parsed = parse_annotation(str(row.get("sentence_annotation", row["sentence"])))
        if parsed is None:
            unparsed += 1
            parsed = (str(row["sentence"]).split(), [])
        words, slots = parsed
        sentence_words = str(row["sentence"]).split()
        if len(sentence_words) == len(words):
            # The annotation keeps the crowd-worker's casing and a few spellings ("This Friday",
            # "hwood") that ``sentence`` normalises; word for word, the sentence's words win.
            words = sentence_words
        elif words != sentence_words:
            words_differ += 1
        usrid = None if is_synth else speakers.get(filename)
        gender, native = _speaker_labels(usrid)
        custom: dict[str, Any] = {
            "intent": intent, "scenario": scenario, "action": action, "words": words, "slots": slots,
            "slurp_id": row["slurp_id"], "recording": filename, "headset": _is_headset(filename),
            "synthetic": is_synth, "wer": recording.get("wer"), "ent_wer": recording.get("ent_wer"),
        }
        if row.get("intent") not in (None, intent):
            custom["intent_field"] = row["intent"]
        if native is not None:
            custom["native_english"] = native
        stem = filename[:-len(".flac")] if filename.endswith(".flac") else Path(filename).stem
        utterances.append(Utterance(
            id=f"synth-{stem}" if is_synth else stem, audio=audio, split=split, text=str(row["sentence"]),
            speaker=usrid, language="en", gender=gender, custom=custom,
        ))
    notes = {
        "options": {"synthetic": synthetic, "headset_only": headset_only},
        "duplicate_recordings": duplicates,
        "unparsed_annotations": unparsed,
        "annotation_words_differ": words_differ,
        "speakers_from": "dataset/slurp/metadata.json" if speakers else None,
        "split_note": "official SLURP splits: train (train.jsonl" + (" + train_synthetic.jsonl" if synthetic else "")
                      + "), dev (devel.jsonl), test (test.jsonl)",
    }
    return write_corpus(out, name=NAME, root=root, utterances=utterances, trials=None, notes=notes)


def _is_headset(filename: str) -> bool:
    return Path(filename).stem.endswith("-headset")
