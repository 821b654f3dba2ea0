"""How well a target set's clusters match phones: purities, PNMI and cluster usage.

The measures of the HuBERT paper (Hsu et al. 2021, Sec. IV-D), on the joint distribution
``p(phone, cluster)`` of frame-level phone labels and cluster labels:

* phone purity, ``sum_c p(c) max_y p(y | c)``: how well a frame's cluster predicts its
  phone (the accuracy of the best cluster -> phone mapping); more clusters raise it;
* cluster purity, ``sum_y p(y) max_c p(c | y)``: how concentrated each phone is in one
  cluster; more clusters lower it;
* PNMI, ``I(y; c) / H(y)``: the share of the phone's uncertainty that the cluster removes
  (1 when clusters determine phones, 0 when independent). It is the number used to rank
  target sets of the same K, e.g. HuBERT's iteration-2 targets against iteration-1.

Cluster usage is reported as the entropy of ``p(c)`` in bits and normalised by ``log2 K``
(1 = all K clusters equally used), with the count of clusters used at least once.

On few frames the plug-in mutual information is biased upwards (about
``(phones - 1)(K - 1) / (2 N ln 2)`` bits), so ``pnmi_shuffled``, the PNMI of the same
labels shuffled across frames, is reported beside it: the level that independent
labels reach on this data. Compare target sets on the same split, K and frame rate.

:func:`cluster_quality` is plain numpy. :func:`evaluate_target_set` pairs a target set's
labels with a corpus's phone alignments (:mod:`speechssl.data.alignments`): each encoder
frame takes the phone under its centre, and the measures are computed on all frames and
again without the frames labelled silence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechssl.data.alignments import SILENCE, frame_phones, load_phone_alignments
from speechssl.data.audio import TARGET_SAMPLE_RATE as SAMPLE_RATE
from speechssl.errors import SpeechSSLError
from speechssl.fsutil import write_text_atomic

QUALITY_FILE = "quality.json"
"""Written into a target set's directory by ``speechssl targets-quality``: results per split."""

_MEASURES = ("phone_purity", "cluster_purity", "pnmi", "pnmi_shuffled", "cluster_entropy_norm", "used_clusters")


def cluster_quality(labels: Sequence[np.ndarray], phones: Sequence[np.ndarray], num_clusters: int) -> dict[str, Any]:
    """Purities, PNMI and cluster usage of per-utterance cluster ``labels`` against ``phones``.

    ``labels[i]`` and ``phones[i]`` are the frames of utterance ``i`` (equal lengths);
    labels are integers in ``[0, num_clusters)``, phones any hashable symbols (strings or
    integers). Entropies and mutual information are in bits. PNMI is NaN when every frame
    has the same phone (``H(phone) = 0``).
    """
    if len(labels) != len(phones):
        raise ValueError(f"{len(labels)} label sequences but {len(phones)} phone sequences")
    for index, (lab, pho) in enumerate(zip(labels, phones)):
        if len(lab) != len(pho):
            raise ValueError(f"utterance {index}: {len(lab)} labels but {len(pho)} phone frames")
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    flat_labels = np.concatenate([np.asarray(lab).reshape(-1) for lab in labels]) if labels else np.zeros(0, int)
    flat_phones = np.concatenate([np.asarray(pho).reshape(-1) for pho in phones]) if phones else np.zeros(0, int)
    frames = len(flat_labels)
    if frames == 0:
        raise ValueError("no frames to measure")
    flat_labels = flat_labels.astype(np.int64)
    if flat_labels.min() < 0 or flat_labels.max() >= num_clusters:
        raise ValueError(f"cluster labels must be in [0, {num_clusters}), got {flat_labels.min()}..{flat_labels.max()}")
    symbols, phone_ids = np.unique(flat_phones, return_inverse=True)
    phone_ids = phone_ids.reshape(-1)
    p_joint = _joint(phone_ids, flat_labels, len(symbols), num_clusters)
    p_phone = p_joint.sum(axis=1)
    p_cluster = p_joint.sum(axis=0)
    mutual_information = _mutual_information_bits(p_joint)
    # The same with the labels shuffled across frames: what finite data alone makes of
    # independent labels with these marginals (MI's plug-in estimate is biased upwards by
    # about (phones - 1)(clusters - 1) / (2 frames ln 2) bits).
    shuffled = np.random.default_rng(0).permutation(flat_labels)
    chance_information = _mutual_information_bits(_joint(phone_ids, shuffled, len(symbols), num_clusters))
    phone_entropy = _entropy_bits(p_phone)
    cluster_entropy = _entropy_bits(p_cluster)
    return {
        "frames": frames,
        "phones": len(symbols),
        "num_clusters": int(num_clusters),
        "used_clusters": int((p_cluster > 0).sum()),
        # Sum over clusters of max_y p(y, c) = sum_c p(c) max_y p(y | c); likewise per phone.
        "phone_purity": float(p_joint.max(axis=0).sum()),
        "cluster_purity": float(p_joint.max(axis=1).sum()),
        "pnmi": mutual_information / phone_entropy if phone_entropy > 0 else float("nan"),
        "pnmi_shuffled": chance_information / phone_entropy if phone_entropy > 0 else float("nan"),
        "mutual_information_bits": mutual_information,
        "phone_entropy_bits": phone_entropy,
        "cluster_entropy_bits": cluster_entropy,
        "cluster_entropy_norm": float(cluster_entropy / np.log2(num_clusters)) if num_clusters > 1 else 0.0,
    }


def _joint(phone_ids: np.ndarray, labels: np.ndarray, num_phones: int, num_clusters: int) -> np.ndarray:
    """``p(phone, cluster)`` as a ``[num_phones, num_clusters]`` array."""
    counts = np.bincount(phone_ids * num_clusters + labels, minlength=num_phones * num_clusters)
    return counts.reshape(num_phones, num_clusters) / len(labels)


def _mutual_information_bits(p_joint: np.ndarray) -> float:
    outer = np.outer(p_joint.sum(axis=1), p_joint.sum(axis=0))
    nonzero = p_joint > 0
    return float((p_joint[nonzero] * np.log2(p_joint[nonzero] / outer[nonzero])).sum())


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(max(0.0, -(p * np.log2(p)).sum()))


def evaluate_target_set(target_dir: str | Path, data_dir: str | Path, split: str,
                        silence: str = SILENCE) -> dict[str, Any]:
    """Cluster quality of a target set on the phone-aligned cuts of ``split``.

    Returns ``{"all_frames": ..., "speech_frames": ...}`` (:func:`cluster_quality` on
    every frame, and on the frames whose phone is not ``silence``) plus what was
    measured: the set, the split, how many cuts and what share of frames is silence.
    Cuts of the split that the set has no labels for are skipped and counted; a cut
    whose audio length differs from its alignment's by more than a frame is refused
    (the targets were made for other audio).
    """
    from speechssl.targets.alignment import conv_geometry
    from speechssl.targets.store import TargetSet

    targets = TargetSet.open(target_dir)
    alignments = load_phone_alignments(data_dir, split)
    geometry = conv_geometry(targets.conv_layers)
    stride_s = geometry.stride / SAMPLE_RATE
    ids = [cut_id for cut_id in alignments if cut_id in targets]
    if not ids:
        raise SpeechSSLError(
            f"target set {targets.path} has labels for none of the {len(alignments)} cuts of split {split!r} "
            f"in {data_dir} (it was built for splits {', '.join(targets.splits)})"
        )
    labels, phones = [], []
    for cut_id in ids:
        segments = alignments[cut_id]
        seconds = targets.num_samples(cut_id) / SAMPLE_RATE
        if segments and abs(seconds - segments[-1][1]) > stride_s:
            raise SpeechSSLError(
                f"cut {cut_id!r}: the target set's audio lasts {seconds:.3f} s but its phone alignment "
                f"{segments[-1][1]:.3f} s; were the targets made from another corpus?"
            )
        cut_labels = targets.labels(cut_id)
        labels.append(cut_labels)
        phones.append(frame_phones(segments, len(cut_labels), stride_s, geometry.receptive_field / SAMPLE_RATE,
                                   geometry.left_padding / SAMPLE_RATE, outside=silence))
    speech = [p != silence for p in phones]
    speech_frames = int(sum(mask.sum() for mask in speech))
    all_frames = cluster_quality(labels, phones, targets.num_classes)
    return {
        "target_set": str(targets.path),
        "key": targets.key,
        "data": str(data_dir),
        "split": split,
        "target_splits": list(targets.splits),  # where the labels came from (noisy copies share cut ids)
        "utterances": len(ids),
        "utterances_without_labels": len(alignments) - len(ids),
        "frame_ms": stride_s * 1000,
        "silence_label": silence,
        "silence_fraction": 1.0 - speech_frames / all_frames["frames"],
        "all_frames": all_frames,
        "speech_frames": cluster_quality([lab[m] for lab, m in zip(labels, speech)],
                                         [pho[m] for pho, m in zip(phones, speech)],
                                         targets.num_classes) if speech_frames else None,
    }


def write_quality(result: dict[str, Any]) -> Path:
    """Record ``result`` (from :func:`evaluate_target_set`) under its split in the set's ``quality.json``."""
    path = Path(result["target_set"]) / QUALITY_FILE
    recorded: dict[str, Any] = {}
    if path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            recorded = {}  # a damaged report is replaced, not merged
    recorded[result["split"]] = result
    write_text_atomic(path, json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return path


def format_quality(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_target_set`'s result: one row per measure."""
    all_frames, speech = result["all_frames"], result["speech_frames"]
    lines = [
        f"{result['target_set']}",
        (f"split {result['split']}: {result['utterances']} cuts, {all_frames['frames']} frames of "
         f"{result['frame_ms']:g} ms, {result['silence_fraction']:.1%} silence, K={all_frames['num_clusters']}"),
        "",
        f"{'':<22}{'all frames':>12}{'speech only':>12}",
    ]
    for name in ("frames", "phones") + _MEASURES + ("cluster_entropy_bits",):
        cells = [row[name] if row is not None else None for row in (all_frames, speech)]
        text = ["-" if v is None else f"{v:d}" if isinstance(v, int) else f"{v:.4f}" for v in cells]
        lines.append(f"{name:<22}{text[0]:>12}{text[1]:>12}")
    if result["utterances_without_labels"]:
        lines.append(f"({result['utterances_without_labels']} cuts of the split have no labels in this set)")
    return "\n".join(lines)
