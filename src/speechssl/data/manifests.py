"""Reading lhotse manifests with errors a user can act on.

A manifest directory (written by ``speechssl corpus synth`` or ``speechssl prepare``)
looks like::

    DIR/corpus.json                         description, label sets, counts
    DIR/manifests/cuts_<split>.jsonl.gz     lhotse CutSet, one cut per utterance

Audio paths inside the manifests may be relative to DIR, so a corpus can be moved
or copied as a whole; :func:`load_cuts` resolves them.

Three ways to read a split, by what they hold in memory:

* :func:`load_cuts`: every cut as a lhotse object (about 1.7 KB per small cut: a 1 M-cut
  manifest needs 1.7 GB and ~50 s);
* :func:`iter_cuts`: one validated cut at a time (flat memory at any size);
* :class:`CutIndex`: only ids, durations and language codes (about 80 B per cut), which
  is all :class:`~speechssl.data.sampler.DurationBucketSampler` needs to plan epochs.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import sys
from array import array
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

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

    path = cuts_path(data_dir, split)
    cuts = list(iter_cuts(data_dir, split))
    if not cuts:
        raise ManifestError(f"{path}: manifest holds no cuts")
    ids = [c.id for c in cuts]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = sorted({i for i in ids if i in seen or seen.add(i)})
        raise ManifestError(f"{path}: duplicate cut ids ({len(repeated)}, e.g. {', '.join(map(repr, repeated[:3]))})")
    return CutSet.from_cuts(cuts)


def iter_cuts(data_dir: str | Path, split: str) -> Iterator[Any]:
    """The cuts of ``cuts_<split>`` one at a time, validated and with resolved audio paths.

    Lazy: memory does not grow with the manifest. Each record gets the checks of
    :func:`load_cuts`, except the two that need the whole split (no duplicate ids, not
    empty), which :func:`load_cuts` and :meth:`CutIndex.from_manifest` add.
    """
    from lhotse.cut import MonoCut

    data_dir = Path(data_dir)
    path = _existing_manifest(data_dir, split)
    resolver = _SourceResolver(data_dir)
    for line_no, record in _read_jsonl(path):
        _check_cut_record(record, path, line_no)
        try:
            cut = MonoCut.from_dict(record)
        except Exception as exc:  # lhotse raises assorted TypeErrors/KeyErrors on bad records
            reason = _malformed(exc)
            raise ManifestError(f"{path}:{line_no}: cut {record.get('id')!r} is malformed ({reason})") from None
        yield resolver.resolve(cut)


def _malformed(exc: Exception) -> str:
    """lhotse's complaint about a record, in the manifest's terms where we can tell."""
    unknown = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(exc))
    if unknown:
        return f"unknown {unknown.group(1)} field {unknown.group(2)!r}; put extra data in the cut's 'custom'"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class CutIndex:
    """What batching needs of a split, without the cuts: ids, durations and languages.

    About 80 bytes per cut (a ``str`` id, a float64 duration, an int16 language code)
    instead of a lhotse object of ~1.7 KB, and built without constructing one: a 1 M-cut
    manifest is indexed in ~10 s with 74 MB (benchmarks/data_scale.py). :class:`~speechssl.data.sampler.
    DurationBucketSampler` accepts one in place of the cuts and plans the same epochs
    (same plan, same resume state and fingerprint) as from the cuts themselves.

    ``languages[i]`` is the language of cut i (its first supervision's, as
    :func:`speechssl.data.balance.cut_language`), None where it has none.
    """

    def __init__(self, ids: Sequence[str], durations: Sequence[float], languages: Sequence[str | None] | None = None):
        self.ids: list[str] = [str(i) for i in ids]
        self.durations = np.asarray(durations, dtype=np.float64).reshape(-1)
        if len(self.durations) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.durations)} durations")
        names: dict[str, int] = {}
        codes = np.full(len(self.ids), -1, dtype=np.int16)
        if languages is not None:
            if len(languages) != len(self.ids):
                raise ValueError(f"{len(self.ids)} ids but {len(languages)} languages")
            for i, language in enumerate(languages):
                if language is not None:
                    codes[i] = names.setdefault(str(language), len(names))
        self.language_names: tuple[str, ...] = tuple(names)
        self.language_codes = codes

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def languages(self) -> list[str | None]:
        """Language of each cut (None where unlabelled)."""
        names = self.language_names
        return [names[c] if c >= 0 else None for c in self.language_codes.tolist()]

    @property
    def nbytes(self) -> int:
        """Approximate memory held: the id strings, list slots and the two arrays."""
        return sum(sys.getsizeof(i) + 8 for i in self.ids) + self.durations.nbytes + self.language_codes.nbytes

    @classmethod
    def from_cuts(cls, cuts: Iterable[Any]) -> CutIndex:
        """The index of cut objects (anything with ``id``, ``duration``, lhotse-style ``supervisions``)."""
        from speechssl.data.balance import cut_language

        ids: list[str] = []
        durations: list[float] = []
        languages: list[str | None] = []
        for cut in cuts:
            ids.append(str(cut.id))
            durations.append(float(cut.duration))
            languages.append(cut_language(cut))
        return cls(ids, durations, languages)

    @classmethod
    def from_manifest(cls, data_dir: str | Path, split: str, *, min_seconds: float = 0.0) -> CutIndex:
        """Scan ``cuts_<split>`` once, with the record checks of :func:`load_cuts`, keeping
        the cuts at least ``min_seconds`` long. No lhotse object is built."""
        path = _existing_manifest(Path(data_dir), split)
        ids: list[str] = []
        durations = array("d")
        languages: list[str | None] = []
        for line_no, record in _read_jsonl(path):
            _check_cut_record(record, path, line_no)
            duration = float(record["duration"])
            if duration < min_seconds:
                continue
            supervisions = record.get("supervisions") or [{}]
            language = supervisions[0].get("language") if isinstance(supervisions[0], dict) else None
            ids.append(str(record["id"]))
            durations.append(duration)
            languages.append(None if language is None else sys.intern(str(language)))
        if not ids:
            raise ManifestError(f"{path}: manifest holds no cuts" + (f" of at least {min_seconds} s" if min_seconds else ""))
        if len(set(ids)) != len(ids):
            raise ManifestError(f"{path}: duplicate cut ids")
        return cls(ids, np.frombuffer(durations, dtype=np.float64), languages)


def _existing_manifest(data_dir: Path, split: str) -> Path:
    path = cuts_path(data_dir, split)
    if not path.is_file():
        known = available_splits(data_dir) if data_dir.is_dir() else []
        hint = f"; available splits: {', '.join(known)}" if known else f"; no manifests under {data_dir / 'manifests'}"
        raise ManifestError(f"{path}: manifest not found{hint}")
    return path


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
    except gzip.BadGzipFile:
        raise ManifestError(f"{path}: not a gzip file (a .jsonl.gz manifest is gzipped JSON lines)") from None
    except (OSError, EOFError) as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text (a JSON-lines manifest is UTF-8)") from None


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
    if not isinstance(record["id"], str) or not record["id"]:
        raise ManifestError(f"{where}: cut id must be a non-empty string, got {record['id']!r}")
    if not _is_finite_number(record["duration"]):
        raise ManifestError(f"{where}: cut {name!r} has an invalid duration {record['duration']!r} "
                            "(must be a positive number of seconds)")
    if record["duration"] <= 0:
        raise ManifestError(f"{where}: cut {name!r} has a non-positive duration {record['duration']!r}")
    if not _is_finite_number(record["start"]) or record["start"] < 0:
        raise ManifestError(f"{where}: cut {name!r} has an invalid start {record['start']!r} "
                            "(must be a number of seconds >= 0)")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _SourceResolver:
    """Make relative audio paths absolute, relative to the manifest directory.

    The result is ``(data_dir / source).resolve()``, computed in two parts: the directory
    part is resolved once and cached (a corpus has far fewer directories than files:
    resolving every path walked the whole tree per cut and was most of the reading time),
    the file name is appended, and only a file that is itself a symlink is resolved.
    """

    _MAX_CACHED = 100_000  # directories; the cache is dropped when it grows past this

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._dirs: dict[str, str] = {}

    def resolve(self, cut):
        # What a manifest may point at (issue 17, security). Only "file" sources: lhotse's
        # "command" type runs a shell command and "url" fetches. Relative paths must stay
        # inside the data directory (no "../../etc/passwd"); symlinks inside it are the
        # owner's choice and are followed. Absolute paths are allowed: `speechssl prepare`
        # writes them for raw audio kept where it is, `corpus datasets` for its sources. They
        # are read only by load_audio, which opens regular files only (no devices or FIFOs)
        # and refuses anything that does not decode as audio, naming the file.
        for source in cut.recording.sources:
            if source.type != "file":
                raise ManifestError(f"{self.data_dir}: cut {cut.id!r}: audio source of type {source.type!r} "
                                    "refused; only 'file' sources are read (a 'command' one would run a shell command)")
            if not os.path.isabs(source.source):
                if ".." in source.source and os.path.normpath(source.source).split(os.sep)[0] == "..":
                    raise ManifestError(f"{self.data_dir}: cut {cut.id!r}: audio path {source.source!r} leaves the "
                                        "data directory; relative paths must stay inside it")
                source.source = self._absolute(source.source)
        return cut

    def _absolute(self, relative: str) -> str:
        head, name = os.path.split(relative)
        if name in ("", ".", ".."):
            return str((self.data_dir / relative).resolve())
        folder = self._dirs.get(head)
        if folder is None:
            if len(self._dirs) >= self._MAX_CACHED:
                self._dirs.clear()
            folder = self._dirs[head] = str((self.data_dir / head).resolve())
        candidate = os.path.join(folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def _resolve_source(cut, data_dir: Path):
    """Make relative audio paths absolute, relative to the manifest directory."""
    return _SourceResolver(data_dir).resolve(cut)
