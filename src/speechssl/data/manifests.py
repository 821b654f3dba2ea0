"""Reading lhotse manifests with errors a user can act on.

A manifest directory (written by ``speechssl corpus synth`` or ``speechssl prepare``)
looks like::

    DIR/corpus.json                         description, label sets, counts
    DIR/manifests/cuts_<split>.jsonl.gz     lhotse CutSet, one cut per utterance

Audio paths inside the manifests may be relative to DIR, so a corpus can be moved
or copied as a whole; :func:`load_cuts` resolves them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from speechssl.errors import ManifestError

# Keys without which a cut cannot be read, batched or decoded.
_REQUIRED_CUT_KEYS = ("id", "start", "duration", "recording")
_REQUIRED_RECORDING_KEYS = ("id", "sources", "sampling_rate", "num_samples", "duration")
_REQUIRED_SUPERVISION_KEYS = ("id", "recording_id", "start", "duration")


def cuts_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / "manifests" / f"cuts_{split}.jsonl.gz"


def available_splits(data_dir: str | Path) -> list[str]:
    folder = Path(data_dir) / "manifests"
    return sorted(p.name[len("cuts_") : -len(".jsonl.gz")] for p in folder.glob("cuts_*.jsonl.gz"))


def read_corpus_info(data_dir: str | Path) -> dict[str, Any]:
    """The corpus description (``corpus.json``) of a manifest directory."""
    path = Path(data_dir) / "corpus.json"
    if not Path(data_dir).is_dir():
        raise ManifestError(f"data directory not found: {data_dir}")
    if not path.is_file():
        raise ManifestError(f"{path}: missing; is {data_dir} a directory written by `speechssl corpus synth`?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: invalid JSON (line {exc.lineno})") from None


def load_cuts(data_dir: str | Path, split: str):
    """Load and validate ``cuts_<split>`` of a manifest directory as an eager lhotse CutSet."""
    from lhotse import CutSet
    from lhotse.cut import MonoCut

    data_dir = Path(data_dir)
    path = cuts_path(data_dir, split)
    if not path.is_file():
        known = available_splits(data_dir) if data_dir.is_dir() else []
        hint = f"; available splits: {', '.join(known)}" if known else f"; no manifests under {data_dir / 'manifests'}"
        raise ManifestError(f"{path}: manifest not found{hint}")
    cuts = []
    for line_no, record in _read_jsonl(path):
        _check_cut_record(record, path, line_no)
        try:
            cut = MonoCut.from_dict(record)
        except Exception as exc:  # lhotse raises assorted TypeErrors/KeyErrors on bad records
            raise ManifestError(f"{path}:{line_no}: cut {record.get('id')!r} is malformed ({exc})") from None
        cuts.append(_resolve_source(cut, data_dir))
    if not cuts:
        raise ManifestError(f"{path}: manifest holds no cuts")
    ids = [c.id for c in cuts]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: duplicate cut ids")
    return CutSet.from_cuts(cuts)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise ManifestError(f"{path}:{line_no}: not valid JSON") from None
                if not isinstance(record, dict):
                    raise ManifestError(f"{path}:{line_no}: expected a JSON object")
                yield line_no, record
    except (OSError, EOFError) as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from None


def _check_cut_record(record: dict, path: Path, line_no: int) -> None:
    where = f"{path}:{line_no}"
    name = record.get("id", "?")
    for key in _REQUIRED_CUT_KEYS:
        if key not in record:
            raise ManifestError(f"{where}: cut {name!r} is missing field {key!r}")
    recording = record["recording"]
    if not isinstance(recording, dict):
        raise ManifestError(f"{where}: cut {name!r} field 'recording' must be an object")
    for key in _REQUIRED_RECORDING_KEYS:
        if key not in recording:
            raise ManifestError(f"{where}: recording of cut {name!r} is missing field {key!r}")
    for sup in record.get("supervisions", []):
        for key in _REQUIRED_SUPERVISION_KEYS:
            if key not in sup:
                raise ManifestError(f"{where}: a supervision of cut {name!r} is missing field {key!r}")
    if not isinstance(record["duration"], (int, float)) or record["duration"] <= 0:
        raise ManifestError(f"{where}: cut {name!r} has a non-positive duration {record['duration']!r}")


def _resolve_source(cut, data_dir: Path):
    """Make relative audio paths absolute, relative to the manifest directory."""
    for source in cut.recording.sources:
        if source.type == "file" and not Path(source.source).is_absolute():
            source.source = str((data_dir / source.source).resolve())
    return cut
