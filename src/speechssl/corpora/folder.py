"""``folder``: a user's own recordings, described by one CSV or TSV file.

``speechssl prepare folder ROOT --metadata FILE.csv --out DIR``

The metadata file has a header row. ``file`` (required) is the audio path relative to ROOT;
optional columns: ``text, speaker, language, gender, label, emotion, intent, split``
(``label`` is stored as ``custom.label``; ``emotion`` and ``intent`` feed the ``er`` and
``ic`` tasks). Any other column is kept in ``custom`` too. The delimiter is taken from the
suffix (``.tsv``: tab) or sniffed.

Without a ``split`` column (or where a row's split is empty) a seeded train/dev/test split
is made: speaker-disjoint test speakers when speakers are known (see
:func:`~speechssl.corpora.base.assign_splits`), and the summary says which. When speakers
are known, ASV trials are generated for the test split: same- and different-speaker pairs,
within a language when a ``language`` column exists. Any format soundfile reads (wav, flac,
ogg, ...), any sample rate and channel count (mixed down when read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechssl.corpora.base import (CorpusError, TreeCheck, Utterance, assign_splits, inside, make_trials, option_int,
                                    read_csv, write_corpus)

STANDARD = ("file", "text", "speaker", "language", "gender", "split")
CUSTOM = ("label", "emotion", "intent")


def prepare(root: Path, out: Path, *, metadata: str | Path, seed: int | str = 0) -> dict[str, Any]:
    check = TreeCheck("folder", root)
    seed = option_int(seed, "seed", "folder")
    meta = Path(metadata).expanduser()
    if not meta.is_absolute() and not meta.is_file():
        meta = root / meta
    if not meta.is_file():
        raise CorpusError(f"folder: metadata file {metadata} does not exist")
    # Delimiter from the suffix (.tsv: tab), else sniffed from the header line.
    header, rows = read_csv(meta, "folder", delimiter="\t" if meta.suffix.lower() == ".tsv" else None, what="metadata")
    if not check.columns(meta, header, ["file"]):
        check.done()
    if not rows:
        check.problem(f"{meta.name}: no rows after the header")
    missing = [r["file"] for r in rows if r.get("file") and not (root / r["file"]).exists()]
    if missing:
        check.problem(f"{len(missing)} of {len(rows)} files listed in {meta.name} do not exist under {root} "
                      f"(first: {', '.join(missing[:3])})")
    empty = sum(1 for r in rows if not r.get("file"))
    if empty:
        check.problem(f"{empty} row(s) of {meta.name} have an empty 'file'")
    bad_splits = sorted({r["split"] for r in rows if r.get("split") and r["split"] not in ("train", "dev", "test")})
    if bad_splits:
        check.problem(f"unknown split value(s) {', '.join(bad_splits)} (use train, dev, test or leave empty)")
    check.done()

    utterances = []
    for row in rows:
        audio = inside(root, row["file"])
        custom = {k: v for k, v in row.items() if k not in STANDARD and v != ""}
        utterances.append(Utterance(
            id=_utterance_id(row["file"]), audio=audio, split=row.get("split", ""),
            text=row.get("text") or None, speaker=row.get("speaker") or None, language=row.get("language") or None,
            gender=row.get("gender") or None, custom=custom,
        ))
    split_note = assign_splits(utterances, seed=seed)
    trials = {}
    test = [u for u in utterances if u.split == "test" and u.speaker]
    if test:
        within = (lambda u: u.language) if "language" in header else None
        trials["test"] = make_trials(test, seed=seed, group=within)
    return write_corpus(out, name="folder", root=root, utterances=utterances, trials=trials,
                        notes={"metadata": str(meta.resolve()), "split_note": split_note})


def _utterance_id(relative: str) -> str:
    """A stable id from the file's path under ROOT (unique because paths are)."""
    return Path(relative).with_suffix("").as_posix().replace("/", "__")
