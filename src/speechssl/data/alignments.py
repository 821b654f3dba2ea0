"""Frame-level phone alignments: the file format, its loader, and phones at encoder frames.

A corpus with alignments holds one file per split, ``manifests/alignments_<split>.jsonl.gz``:
one JSON object per line, ``{"id": <cut id>, "phones": [[start_s, end_s, phone], ...]}``.
Segments are in seconds from the start of the cut's audio, contiguous (each ``end_s`` is
the next ``start_s``), cover the whole cut, and use :data:`SILENCE` for pauses and for
the silence before and after speech. The synthetic corpus writes them from eSpeak NG's
phoneme events (see ``docs/synthetic_corpus.md``); another corpus recipe (e.g. forced
alignments of LibriSpeech) can write the same format and every reader below works.

Kept free of torch so that target-quality analysis stays cheap to import.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speechssl.errors import ManifestError

SILENCE = "sil"
"""The label of pauses and of the silence around speech."""

Segment = tuple[float, float, str]
"""``(start_s, end_s, phone)``."""


def alignment_path(data_dir: str | Path, split: str) -> Path:
    """Where the phone alignments of ``split`` live in a corpus directory."""
    return Path(data_dir) / "manifests" / f"alignments_{split}.jsonl.gz"


def load_phone_alignments(data_dir: str | Path, split: str) -> dict[str, list[Segment]]:
    """Cut id -> its phone segments ``(start_s, end_s, phone)``, in time order."""
    path = alignment_path(data_dir, split)
    if not path.is_file():
        raise ManifestError(
            f"{path} not found: this corpus has no phone alignments for split {split!r} "
            f"(synthetic corpora made before generator version 1.2 lack them; regenerate with "
            f"`speechssl corpus synth --overwrite`)"
        )
    alignments: dict[str, list[Segment]] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                alignments[record["id"]] = [(float(s), float(e), str(p)) for s, e, p in record["phones"]]
    except (OSError, EOFError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"cannot read phone alignments {path}: {exc}") from None
    return alignments


def frame_phones(
    segments: Sequence[Segment],
    num_frames: int,
    frame_stride_s: float,
    receptive_field_s: float,
    padding_s: float = 0.0,
    outside: str = SILENCE,
) -> np.ndarray:
    """The phone under the centre of each encoder frame (an array of ``num_frames`` strings).

    Frame ``t`` reads ``[t * frame_stride_s - padding_s, ... + receptive_field_s)`` of
    the audio (``speechssl.targets.alignment.conv_geometry`` gives the three for a CNN
    front end, in samples); the segment under its centre gives its phone. Centres
    outside every segment (before the first start, after the last end, in a gap) get
    ``outside``.
    """
    centres = np.arange(num_frames) * frame_stride_s - padding_s + receptive_field_s / 2
    if not segments:
        return np.full(num_frames, outside)
    starts = np.array([s for s, _, _ in segments], dtype=np.float64)
    ends = np.array([e for _, e, _ in segments], dtype=np.float64)
    if np.any(np.diff(starts) < 0):
        raise ValueError("phone segments must be in time order")
    phones = np.array([p for _, _, p in segments] + [outside])
    # The last segment starting at or before each centre, if the centre is before its end.
    index = np.searchsorted(starts, centres, side="right") - 1
    inside = (index >= 0) & (centres < ends[np.maximum(index, 0)])
    return phones[np.where(inside, index, len(segments))]
