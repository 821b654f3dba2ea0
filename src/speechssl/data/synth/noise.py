"""Noise clips for denoising pretraining, and noisy copies of dev and test, made from the corpus itself.

``write_noise(out, seed, snr_db)`` runs after the clean splits are written and adds::

    OUT/noise/audio/<source>/<clip_id>.flac                     4 s clips, 16 kHz mono FLAC
    OUT/noise/manifests/{recordings,cuts}_<source>.jsonl.gz     a manifest directory of its own
    OUT/audio/<split>_noisy/<speaker>/<utt_id>.flac             dev_noisy and test_noisy
    OUT/manifests/{recordings,supervisions,cuts}_<split>_noisy.jsonl.gz
    OUT/trials/asv_test_noisy.tsv                               a copy of asv_test.tsv
    OUT/manifests/alignments_<split>_noisy.jsonl.gz             copies of the clean alignments

Each source split (train, dev, test) gets its own noise clips: white, pink and brown
noise, and babble, the sum of 3-6 utterances *of that split* with distinct speakers
and, where possible, distinct languages. That keeps every split's audio on its own
side: the pretraining bank (``noise/``, split ``train``) holds only train audio,
and the noise in ``test_noisy`` (split ``test``) only test audio, so no held-out
sentence or speaker reaches training through the noise, and no noise instance of a
noisy test set was seen in training (the noise *types* are the same, on purpose).
A noisy utterance never gets babble that contains its own speaker.

The noisy splits keep the cut ids, supervisions and labels of their clean split
(plus ``custom["noisy"]``: clip, kind, SNR), so every task, and ASV with the same
trials, runs on them with ``test_split=test_noisy``. The noise is kept in
``noise/`` rather than in ``manifests/`` so that ``available_splits`` lists only
labelled speech.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from speechssl.data.alignments import alignment_path
from speechssl.data.synth.augment import _coloured_noise

SAMPLE_RATE = 16000
NOISE_DIR = "noise"
CLIP_SECONDS = 4.0
COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # spectral exponent of 1/f**x
BABBLE_TALKERS = (3, 6)
# Clips per source split: (per colour, babble). The train bank feeds pretraining, so it is the largest.
CLIPS = {"train": (2, 18), "dev": (1, 9), "test": (1, 9)}
NOISY_SPLITS = {"dev": "dev_noisy", "test": "test_noisy"}
TRIALS = {"test": ("trials/asv_test.tsv", "trials/asv_test_noisy.tsv")}
_CLIP_RMS = 0.1  # level of a stored clip; mixing rescales it, this only keeps PCM_16 precision
_PEAK = 0.99  # a mix louder than this is scaled down as a whole (the SNR is unchanged)


@dataclass(frozen=True)
class NoiseClip:
    id: str
    kind: str  # a colour or "babble"
    wave: np.ndarray  # float64, as stored (read back from its FLAC)
    talkers: tuple[str, ...] = ()  # cut ids summed into a babble clip
    speakers: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()


def write_noise(out: str | Path, seed: int, snr_db: tuple[float, float]) -> dict[str, Any]:
    """Write the noise bank and the noisy splits of the corpus in ``out``; returns corpus.json's ``noise``.

    Reads only what the clean splits wrote (manifests and FLACs), so it is deterministic
    in ``seed`` and the clean corpus (mostly FLAC I/O: about 8 ms per dev/test utterance).
    """
    out = Path(out)
    for stale in (out / NOISE_DIR, *(out / "audio" / name for name in NOISY_SPLITS.values())):
        if stale.is_dir():
            shutil.rmtree(stale)
    banks: dict[str, Any] = {}
    noisy: dict[str, Any] = {}
    for index, split in enumerate(CLIPS):
        cuts = _read_jsonl_gz(out / "manifests" / f"cuts_{split}.jsonl.gz")
        clips = _make_clips(out, split, cuts, np.random.default_rng([seed, 2, index]))
        banks[split] = {
            "source": split,
            "clips": len(clips),
            "kinds": dict(sorted(Counter(c.kind for c in clips).items())),
            "manifests": _write_bank_manifests(out, split, clips),
        }
        if split in NOISY_SPLITS:
            noisy[NOISY_SPLITS[split]] = _write_noisy_split(
                out, split, cuts, clips, snr_db, np.random.default_rng([seed, 3, index]))
    return {
        "dir": NOISE_DIR,
        "clip_seconds": CLIP_SECONDS,
        "splits": banks,
        "noisy_splits": noisy,
    }


def expected_files(noise_info: dict[str, Any] | None) -> list[str]:
    """Paths (relative to the corpus) that a finished corpus with this ``noise`` section must have."""
    if not noise_info:
        return []
    paths = [f"{noise_info['dir']}/{path}" for bank in noise_info["splits"].values()
             for path in bank["manifests"].values()]
    for split in noise_info["noisy_splits"].values():
        paths += list(split["manifests"].values())
        paths += [split[key] for key in ("trials", "alignments") if split.get(key)]
    return paths


def format_noise(noise_info: dict[str, Any] | None) -> list[str]:
    """Lines for the corpus summary."""
    if not noise_info:
        return ["noise clips and noisy splits: none"]
    banks = ", ".join(f"{split} {bank['clips']}" for split, bank in noise_info["splits"].items())
    noisy = ", ".join(f"{name} {s['utterances']}" for name, s in noise_info["noisy_splits"].items())
    low, high = next(iter(noise_info["noisy_splits"].values()))["snr_db"]
    return [
        f"noise clips ({noise_info['dir']}/, coloured + babble, {noise_info['clip_seconds']:g} s): {banks}",
        f"noisy splits (held-out noise, SNR U({low:g}, {high:g}) dB): {noisy}",
    ]


# ---------------------------------------------------------------- the noise bank


def _make_clips(out: Path, split: str, cuts: list[dict], rng: np.random.Generator) -> list[NoiseClip]:
    per_colour, n_babble = CLIPS[split]
    n = int(CLIP_SECONDS * SAMPLE_RATE)
    folder = out / NOISE_DIR / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for colour, exponent in COLOURS.items():
        for k in range(per_colour):
            clip_id = f"{split}-{colour}-{k:02d}"
            clips.append(NoiseClip(clip_id, colour, _store(folder / f"{clip_id}.flac", _coloured_noise(n, exponent, rng))))
    talkers = [_Talker.of(cut) for cut in cuts]
    for k in range(n_babble if talkers else 0):
        chosen = _pick_talkers(talkers, int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1)), rng)
        wave = sum(_loop(_unit_power(_read(out / t.path)), n, rng) for t in chosen)
        clip_id = f"{split}-babble-{k:02d}"
        clips.append(NoiseClip(clip_id, "babble", _store(folder / f"{clip_id}.flac", wave),
                               tuple(t.id for t in chosen), tuple(t.speaker for t in chosen),
                               tuple(t.language for t in chosen)))
    return clips


@dataclass(frozen=True)
class _Talker:
    id: str
    speaker: str
    language: str
    path: str  # relative to the corpus

    @classmethod
    def of(cls, cut: dict) -> _Talker:
        sup = cut["supervisions"][0]
        return cls(cut["id"], sup["speaker"], sup["language"], cut["recording"]["sources"][0]["source"])


def _pick_talkers(talkers: list[_Talker], k: int, rng: np.random.Generator) -> list[_Talker]:
    """Up to ``k`` utterances, preferring new speakers and new languages (a small split may have fewer)."""
    order = [talkers[i] for i in rng.permutation(len(talkers))]
    chosen: list[_Talker] = []
    for new_speaker, new_language in ((True, True), (True, False), (False, False)):
        for t in order:
            if len(chosen) == k:
                return chosen
            if t in chosen or (new_speaker and t.speaker in {c.speaker for c in chosen}) or \
                    (new_language and t.language in {c.language for c in chosen}):
                continue
            chosen.append(t)
    return chosen


def _write_bank_manifests(out: Path, split: str, clips: list[NoiseClip]) -> dict[str, str]:
    from lhotse import Recording
    from lhotse.audio import AudioSource
    from lhotse.cut import MonoCut

    recordings, cuts = [], []
    for clip in clips:
        duration = len(clip.wave) / SAMPLE_RATE
        # Relative to OUT/noise, which load_cuts(OUT/noise, split) resolves.
        recording = Recording(id=clip.id, sources=[AudioSource(type="file", channels=[0],
                                                               source=f"audio/{split}/{clip.id}.flac")],
                              sampling_rate=SAMPLE_RATE, num_samples=len(clip.wave), duration=duration)
        custom = {"noise_kind": clip.kind, "talkers": list(clip.talkers), "speakers": list(clip.speakers),
                  "languages": list(clip.languages)}
        recordings.append(recording.to_dict())
        cuts.append(MonoCut(id=clip.id, start=0.0, duration=duration, channel=0, recording=recording,
                            custom=custom).to_dict())
    return _write_manifests(out / NOISE_DIR, split, {"recordings": recordings, "cuts": cuts})


# ---------------------------------------------------------------- noisy splits


def _write_noisy_split(out: Path, split: str, cuts: list[dict], clips: list[NoiseClip],
                       snr_db: tuple[float, float], rng: np.random.Generator) -> dict[str, Any]:
    name = NOISY_SPLITS[split]
    prefix = f"audio/{split}/"
    records: dict[str, list[dict]] = {"recordings": [], "supervisions": [], "cuts": []}
    kinds: Counter[str] = Counter()
    snrs = []
    for cut in cuts:
        sup = cut["supervisions"][0]
        candidates = [c for c in clips if sup.get("speaker") not in c.speakers]  # coloured clips always qualify
        clip = candidates[int(rng.integers(len(candidates)))]
        snr = float(rng.uniform(*snr_db))
        source = cut["recording"]["sources"][0]["source"]
        target = f"audio/{name}/" + (source[len(prefix):] if source.startswith(prefix) else Path(source).name)
        speech = _read(out / source)
        noise = _loop(clip.wave, len(speech), rng)
        noise *= np.sqrt(_speech_power(speech) / (10 ** (snr / 10) * np.mean(noise ** 2) + 1e-20))
        mixed = speech + noise
        peak = float(np.max(np.abs(mixed)))
        if peak > _PEAK:
            mixed *= _PEAK / peak
        (out / target).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out / target), mixed.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")

        noisy_sup = {**sup, "custom": {**(sup.get("custom") or {}),
                                       "noisy": {"noise": clip.id, "kind": clip.kind, "snr_db": round(snr, 2)}}}
        recording = json.loads(json.dumps(cut["recording"]))
        recording["sources"][0]["source"] = target
        records["recordings"].append(recording)
        records["supervisions"].append(noisy_sup)
        records["cuts"].append({**cut, "recording": recording, "supervisions": [noisy_sup]})
        kinds[clip.kind] += 1
        snrs.append(snr)
    info: dict[str, Any] = {
        "source": split,
        "noise": f"{NOISE_DIR}/{split}",
        "snr_db": [float(snr_db[0]), float(snr_db[1])],
        "utterances": len(cuts),
        "mean_snr_db": round(float(np.mean(snrs)), 2) if snrs else None,
        "kinds": dict(sorted(kinds.items())),
        "manifests": _write_manifests(out, name, records),
        "trials": None,
        "alignments": None,
    }
    # Same cut ids and timing, so the clean trials (asv.py reads trials/asv_<split>.tsv) and
    # phone alignments apply unchanged.
    if split in TRIALS and (out / TRIALS[split][0]).is_file():
        info["trials"] = _copy(out, TRIALS[split][0], TRIALS[split][1])
    if alignment_path(out, split).is_file():
        info["alignments"] = _copy(out, alignment_path(out, split).relative_to(out).as_posix(),
                                   alignment_path(out, name).relative_to(out).as_posix())
    return info


# ---------------------------------------------------------------- signals and files


def _read(path: Path) -> np.ndarray:
    wave, _ = sf.read(str(path), dtype="float64")
    return wave


def _store(path: Path, wave: np.ndarray) -> np.ndarray:
    """Write a clip at a fixed level and return it as stored (after PCM_16 quantisation)."""
    wave = wave * (_CLIP_RMS / (np.sqrt(np.mean(wave ** 2)) + 1e-12))
    peak = float(np.max(np.abs(wave)))
    if peak > _PEAK:
        wave *= _PEAK / peak
    sf.write(str(path), wave.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return _read(path)


def _speech_power(wave: np.ndarray) -> float:
    """Power of the non-silent part (the definition of :func:`augment.add_noise`), so padding does not bias SNRs."""
    active = wave[np.abs(wave) > 0.02 * np.max(np.abs(wave))]
    return float(np.mean(active ** 2)) if active.size else float(np.mean(wave ** 2))


def _unit_power(wave: np.ndarray) -> np.ndarray:
    return wave / (np.sqrt(_speech_power(wave)) + 1e-12)


def _loop(wave: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``wave`` from a random start, wrapping around (a loop when it is shorter)."""
    start = int(rng.integers(len(wave)))
    return wave[(start + np.arange(n)) % len(wave)]


def _copy(out: Path, source: str, target: str) -> str:
    tmp = out / f"{target}.tmp"
    shutil.copyfile(out / source, tmp)
    tmp.replace(out / target)
    return target


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_manifests(folder: Path, split: str, records: dict[str, list[dict]]) -> dict[str, str]:
    # The corpus's own writer (zero gzip timestamp: equal content, equal bytes); imported
    # here because corpus.py imports this module.
    from speechssl.data.synth.corpus import _write_jsonl_gz

    (folder / "manifests").mkdir(parents=True, exist_ok=True)
    files = {}
    for kind, rows in records.items():
        relative = f"manifests/{kind}_{split}.jsonl.gz"
        _write_jsonl_gz(folder / relative, rows)
        files[kind] = relative
    return files
