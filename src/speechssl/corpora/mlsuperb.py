"""``mlsuperb``: ML-SUPERB (1.0 release, the data ML-SUPERB 2.0 benchmarks on), per dataset and language.

``speechssl prepare mlsuperb ROOT --out DIR [--option shots=1h|10min] [--option datasets=fleurs,mls]
[--option languages=lit,swa]``

ROOT is the unpacked release: one folder per source dataset, one folder per ISO 639-3 language
inside it (the layout ESPnet's ``egs2/ml_superb/asr1/local/data_prep.py`` reads)::

    ROOT/<dataset>/<iso639-3>/wav/<utt_id>.wav
                             transcript_10min_train.txt   (train, 10 minutes per dataset-language)
                             transcript_1h_train.txt      (train, 1 hour; a superset of the 10 min set)
                             transcript_10min_dev.txt     (dev)
                             transcript_10min_test.txt    (test)

A transcript line is ``<utt_id> <tag> <text>`` (tab- or space-separated); the tag, normally
``[<iso>]``, is ignored like ESPnet does and the audio is ``wav/<utt_id>.wav``.

Labels: ``language`` = the language folder's ISO 639-3 code (LID), ``text`` = the transcript
as written, without the tag (ASR; tasks normalise case and punctuation), ``custom.dataset`` =
the source dataset folder (per-dataset statistics), ``custom.shots`` = ``10min``/``1h`` for
train utterances. No speaker labels (ESPnet uses ``utt2spk = utt``), so no ASV trials.

Not reproduced from ESPnet's recipe: its 20 s cap on training utterances and its few-shot
subsets of 20 reserved languages (their full train lists are kept); both are selections a
task can make from ``custom``/durations.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, TreeCheck, Utterance, inside, option_bool, option_list, write_corpus

SHOTS = ("10min", "1h")


def transcript_files(shots: str) -> dict[str, str]:
    """Split -> transcript file name inside a language folder."""
    return {"train": f"transcript_{shots}_train.txt", "dev": "transcript_10min_dev.txt",
            "test": "transcript_10min_test.txt"}


def parse_line(line: str) -> tuple[str, str, str] | None:
    """``(utt_id, tag, text)`` of one transcript line, None for a blank line.

    Tab-separated lines are split on tabs (the text keeps its spaces); otherwise on the first
    two runs of whitespace, as ESPnet's ``split(maxsplit=2)``. A line with an id only has an
    empty tag and text.
    """
    line = line.strip("\r\n")
    if not line.strip():
        return None
    if "\t" in line:
        fields = [f.strip() for f in line.split("\t", 2)]
    else:
        fields = line.strip().split(maxsplit=2)
    fields += [""] * (3 - len(fields))
    utt, tag, text = fields
    return utt, tag, text.strip()


def _language_dirs(root: Path) -> dict[str, dict[str, Path]]:
    """dataset -> language -> folder, for every ``ROOT/<dataset>/<lang>/`` (hidden folders skipped)."""
    found: dict[str, dict[str, Path]] = {}
    for dataset in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        languages = {p.name: p for p in sorted(dataset.iterdir()) if p.is_dir() and not p.name.startswith((".", "__"))}
        # A dataset folder holds language folders that hold a wav/ folder or transcripts.
        languages = {k: v for k, v in languages.items()
                     if (v / "wav").is_dir() or any(v.glob("transcript_*.txt"))}
        if languages:
            found[dataset.name] = languages
    return found


def prepare(root: Path, out: Path, *, shots: str = "1h", datasets: str = "", languages: str = "",
            allow_missing: bool | str = False) -> dict[str, Any]:
    """Prepare ML-SUPERB. ``shots``: which train list (``10min`` or ``1h``); ``datasets`` /
    ``languages``: comma-separated filters (dataset folder names, ISO 639-3 codes);
    ``allow_missing``: list wav files named by a transcript but absent in corpus.json
    "skipped" instead of refusing the tree."""
    shots = str(shots).strip().lower()
    allow_missing = option_bool(allow_missing, "allow_missing", "mlsuperb")
    want_datasets = option_list(datasets, "datasets", "mlsuperb", required=False)
    want_languages = option_list(languages, "languages", "mlsuperb", required=False)
    check = TreeCheck("mlsuperb", root)
    if shots not in SHOTS:
        raise CorpusError(f"mlsuperb: shots={shots!r}; use one of {', '.join(SHOTS)}")
    tree = _language_dirs(root)
    if not tree:
        check.problem("no <dataset>/<iso639-3>/ folders with wav/ and transcript_*.txt found (ROOT should be the "
                      "unpacked ML-SUPERB release holding e.g. fleurs/, commonvoice/, mls/)")
        check.done()
    if want_datasets:
        by_lower = {d.lower(): d for d in tree}
        unknown = [d for d in want_datasets if d.lower() not in by_lower]
        if unknown:
            check.problem(f"dataset(s) {', '.join(unknown)} not under ROOT (has: {', '.join(sorted(tree))})")
        keep = {by_lower[d.lower()] for d in want_datasets if d.lower() in by_lower}
        tree = {d: langs for d, langs in tree.items() if d in keep}
    if want_languages:
        present = {lang for langs in tree.values() for lang in langs}
        unknown = [lang for lang in want_languages if lang not in present]
        if unknown:
            check.problem(f"language(s) {', '.join(unknown)} not in the selected dataset(s) "
                          f"(has: {', '.join(sorted(present)) or 'none'})")
        tree = {d: {k: v for k, v in langs.items() if k in want_languages} for d, langs in tree.items()}
        tree = {d: langs for d, langs in tree.items() if langs}

    files = transcript_files(shots)
    # (dataset, language, split) -> parsed lines
    entries: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
    missing_audio: list[str] = []
    listed = 0
    for dataset, langs in tree.items():
        for lang, folder in langs.items():
            rel = Path(dataset) / lang
            wav_dir = check.dir(rel / "wav", f"audio of {dataset}/{lang}")
            for split, name in files.items():
                path = check.file(rel / name, f"{split} list of {dataset}/{lang}")
                if path is None:
                    continue
                lines = []
                for line_no, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
                    parsed = parse_line(raw)
                    if parsed is None:
                        continue
                    if "/" in parsed[0] or parsed[0] in (".", ".."):
                        check.problem(f"{rel / name}:{line_no}: utterance id {parsed[0]!r} is not a file stem")
                        continue
                    lines.append(parsed)
                if not lines:
                    check.problem(f"{rel / name}: no transcript lines")
                entries[(dataset, lang, split)] = lines
                if wav_dir is not None:
                    listed += len(lines)
                    missing_audio += [f"{rel}/wav/{utt}.wav" for utt, _, _ in lines
                                      if not (wav_dir / f"{utt}.wav").is_file()]
    if missing_audio and not allow_missing:
        check.problem(f"{len(missing_audio)} of {listed} wav files named in the transcripts do not exist "
                      f"(first: {', '.join(missing_audio[:3])}; --option allow_missing=true lists them as skipped)")
    check.done()

    # Utterance ids: the corpus's own (dataset-prefixed, e.g. cv_lit_000026) unless two folders
    # share one, then prefixed with dataset and language.
    counts = Counter(utt for lines in entries.values() for utt, _, _ in lines)
    utterances: list[Utterance] = []
    seen: set[str] = set()
    duplicates = 0
    for (dataset, lang, split), lines in entries.items():
        for utt, tag, text in lines:
            first, _, rest = text.partition(" ")
            if first == f"[{lang}]":  # the language tag repeated in the text is not transcript
                text = rest.strip()
            uid = utt if counts[utt] == 1 else f"{dataset}__{lang}__{utt}"
            if uid in seen:  # the same line twice in one folder's lists
                duplicates += 1
                continue
            seen.add(uid)
            custom: dict[str, Any] = {"dataset": dataset}
            if split == "train":
                custom["shots"] = shots
            if tag and tag != f"[{lang}]":
                custom["tag"] = tag
            utterances.append(Utterance(
                id=uid, audio=inside(root, Path(dataset) / lang / "wav" / f"{utt}.wav"), split=split,
                text=text, language=lang, custom=custom,
            ))
    pairs = sorted(f"{d}/{lang}" for d, langs in tree.items() for lang in langs)
    return write_corpus(out, name="mlsuperb", root=root, utterances=utterances, trials=None, notes={
        "shots": shots,
        "transcripts": files,
        "dataset_languages": pairs,
        "datasets": sorted(tree),
        "duplicate_lines_dropped": duplicates,
        "split_note": f"official ML-SUPERB lists: train = transcript_{shots}_train.txt, dev/test = the 10min lists",
    })
