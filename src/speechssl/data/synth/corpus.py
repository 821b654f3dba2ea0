"""The embedded default corpus: multilingual labelled speech synthesised locally with eSpeak NG.

``synthesize_corpus(SynthConfig(), out)`` writes::

    OUT/corpus.json                                description, label sets, counts, config
    OUT/audio/<split>/<speaker>/<utt_id>.flac      16 kHz mono FLAC (PCM_16)
    OUT/manifests/{recordings,supervisions,cuts}_<split>.jsonl.gz   lhotse manifests
    OUT/manifests/alignments_<split>.jsonl.gz      phone alignments (:mod:`speechssl.data.alignments`)
    OUT/trials/asv_test.tsv                        speaker-verification trials on test speakers
    OUT/noise/, OUT/audio/{dev,test}_noisy/, ...   noise clips and noisy dev/test (see :mod:`.noise`)

Every utterance is planned up front from one seeded generator (language,
speaker, emotion, meaning, template, augmentation, a per-utterance seed), then
rendered by a process pool; results are written in plan order, so the same
config always gives the same files. Audio paths in the manifests are relative
to OUT, so a corpus can be moved or copied as a whole.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from speechssl import __version__
from speechssl.config import check, param, to_dict
from speechssl.data.alignments import alignment_path
from speechssl.data.synth import content, noise
from speechssl.data.synth.augment import AUGMENTATIONS
from speechssl.data.synth.content import LANGUAGES, Meaning, Sentence
from speechssl.data.synth.prosody import EMOTION_NAMES, Prosody, sample_prosody
from speechssl.data.synth.render import SAMPLE_RATE, Job, Rendered, render
from speechssl.data.synth.speakers import Speaker, make_speakers, split_speakers
from speechssl.errors import ConfigError
from speechssl.extras import require

log = logging.getLogger(__name__)

CORPUS_NAME = "speechssl-synth"
# Bump whenever the same config would produce different files (content tables,
# voices, signal processing): it is part of the config hash, so stale corpora
# are not silently reused.
GENERATOR_VERSION = "1.2"  # 1.1: noise bank and noisy dev/test splits; 1.2: phone alignments
SPLITS = ("train", "dev", "test")
TRIALS_FILE = "trials/asv_test.tsv"
_INCOMPLETE_MARKER = ".synth-incomplete"

# Seconds of speech per character of text at eSpeak rate 175 wpm, measured on
# the corpus content; used only to plan how many utterances fill the requested hours.
_SECONDS_PER_CHAR = {"en": 0.052, "fr": 0.043, "de": 0.054, "es": 0.056, "it": 0.056, "nl": 0.055,
                     "pt": 0.058, "cs": 0.061}
_MEAN_PADDING_SECONDS = 0.55


@dataclass
class SynthConfig:
    """Settings of ``speechssl corpus synth``; every field is part of the corpus's config hash."""

    hours: float = param(3.0, min=0.001, max=10000.0, help="hours of audio to generate, all splits together")
    seed: int = param(0, min=0, help="random seed: the same seed and settings give identical files")
    languages: list[str] = param(default_factory=lambda: list(LANGUAGES), choices=LANGUAGES,
                                 help="languages to include (each speaker speaks all of them)")
    speakers: int = param(48, min=8, max=10000, help="number of synthetic speakers")
    test_speaker_fraction: float = param(0.3, min=0.1, max=0.5,
                                         help="share of speakers kept for test only (unseen in train/dev)")
    dev_fraction: float = param(0.1, min=0.01, max=0.3, help="share of the hours in dev (train speakers)")
    test_fraction: float = param(0.2, min=0.05, max=0.5, help="share of the hours in test (test speakers)")
    augment: list[str] = param(default_factory=list, choices=AUGMENTATIONS,
                               help="degradations to apply at random: noise, reverb, telephone")
    augment_prob: float = param(0.5, min=0.0, max=1.0, help="probability of each listed augmentation per utterance")
    trials: int = param(2000, min=2, max=1_000_000, help="speaker-verification trials (half target, half non-target)")
    min_utterances: int = param(2, min=1, max=1000,
                                help="minimum utterances per (split, language), whatever the hours")
    noise: bool = param(True, help="also write noise clips (noise/) and noisy copies of dev and test "
                                   "(dev_noisy, test_noisy) made from the corpus's own audio")
    noisy_snr_db: tuple[float, float] = param((0.0, 10.0), min=-30.0, max=60.0,
                                              help="SNR range (dB) of the noisy dev/test copies, drawn per utterance")

    def validate(self) -> None:
        if not self.languages:
            raise ConfigError(f"languages: give at least one of {list(LANGUAGES)}")
        if len(set(self.languages)) != len(self.languages):
            raise ConfigError(f"languages: duplicates in {self.languages}")
        if len(set(self.augment)) != len(self.augment):
            raise ConfigError(f"augment: duplicates in {self.augment}")
        if self.noisy_snr_db[0] > self.noisy_snr_db[1]:
            raise ConfigError(f"noisy_snr_db: low end above high end in {list(self.noisy_snr_db)}")
        if self.dev_fraction + self.test_fraction > 0.6:
            raise ConfigError("dev_fraction + test_fraction must leave at least 40% of the hours for train")


@dataclass(frozen=True)
class PlannedUtterance:
    utt_id: str
    split: str
    speaker: Speaker
    language: str
    emotion: str
    prosody: Prosody
    meaning: Meaning
    template: int
    sentence: Sentence
    translations: dict[str, str]
    augment: tuple[str, ...]
    seed: int

    @property
    def audio_path(self) -> str:
        """Relative to the corpus directory."""
        return f"audio/{self.split}/{self.speaker.id}/{self.utt_id}.flac"


@dataclass(frozen=True)
class Plan:
    utterances: list[PlannedUtterance]
    train_speakers: list[Speaker]  # speak in train and dev
    test_speakers: list[Speaker]  # speak in test only


# ---------------------------------------------------------------- public API


def synthesize_corpus(
    cfg: SynthConfig,
    out: str | Path,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the corpus into ``out`` (or reuse it) and return the content of ``corpus.json``.

    An existing corpus with the same config is reused without work. One made with
    another config raises :class:`ConfigError` unless ``overwrite`` is set.
    Rendering runs in ``workers`` "spawn" processes, so a script calling this
    needs the usual ``if __name__ == "__main__":`` guard.
    """
    check(cfg)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    digest = config_digest(cfg)
    reused = _reusable(out, digest, overwrite, to_dict(cfg))
    if reused is not None:
        log.info("reusing the corpus in %s (config %s)", out, digest)
        if progress:
            print(f"reusing corpus {out} (config {digest})", file=sys.stderr)
        return reused
    # Checked here, not in the render workers, where a missing package would surface as a pool failure.
    require("espeakng_loader", "the synthetic corpus (eSpeak NG)")
    require("scipy.signal", "the synthetic corpus (resampling eSpeak's audio to 16 kHz)")
    _prepare_output_dir(out)

    plan = plan_corpus(cfg)
    jobs = [
        Job(p.utt_id, (out / p.audio_path).resolve(), p.sentence.text, p.language, p.speaker, p.prosody,
            p.augment, p.seed)
        for p in plan.utterances
    ]
    rendered = list(_render_all(jobs, workers, progress))

    manifests = _write_manifests(out, plan.utterances, rendered)
    alignments = _write_alignments(out, plan.utterances, rendered)
    trials = make_trials([(p.utt_id, p.speaker.id) for p in plan.utterances if p.split == "test"], cfg.trials,
                         np.random.default_rng([cfg.seed, 1]))
    _write_trials(out / TRIALS_FILE, trials)
    info = _describe(cfg, digest, plan, rendered, trials, manifests)
    for split, path in alignments.items():
        info["splits"][split]["alignments"] = path
    info["noise"] = noise.write_noise(out, cfg.seed, cfg.noisy_snr_db) if cfg.noise else None
    _write_atomic(out / "corpus.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    (out / _INCOMPLETE_MARKER).unlink(missing_ok=True)
    return info


def config_digest(cfg: SynthConfig) -> str:
    """Hash of the config and the generator version: what makes two corpora identical."""
    blob = json.dumps({"generator": GENERATOR_VERSION, "config": to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def format_summary(info: dict[str, Any]) -> str:
    """A plain-text table of a corpus description (the content of ``corpus.json``)."""
    languages = info["languages"]
    header = f"{'split':<6} {'utts':>7} {'hours':>7} {'spk':>4}  " + " ".join(f"{lang:>5}" for lang in languages)
    lines = [
        f"{info['name']} v{info['version']}  seed {info['seed']}  config {info['config_hash']}",
        (f"hours: {info['hours_produced']:.3f} produced ({info['hours_requested']:g} requested), "
         f"{info['sample_rate']} Hz"),
        "",
        header,
        "-" * len(header),
    ]
    for split in SPLITS:
        s = info["splits"][split]
        per_language = " ".join(f"{s['languages'].get(lang, 0):>5}" for lang in languages)
        lines.append(f"{split:<6} {s['utterances']:>7} {s['hours']:>7.3f} {s['speakers']:>4}  {per_language}")
    labels = info["label_sets"]
    phonemes = labels["phonemes"]
    lines += [
        "",
        (f"labels: {len(labels['intent'])} intents, {len(labels['slot_types'])} slot types, "
         f"{len(labels['emotion'])} emotions, {len(labels['pos_tags'])} POS tags, "
         f"{len(labels['language'])} languages, {len(labels['gender'])} genders"),
        "phonemes per language: " + ", ".join(f"{lang} {len(phonemes.get(lang, []))}" for lang in languages),
        f"speakers: {len(info['speakers']['train'])} train/dev, {len(info['speakers']['test'])} test (disjoint)",
        (f"ASV trials: {info['trials']['count']} ({info['trials']['target']} target, "
         f"{info['trials']['nontarget']} non-target) in {info['trials']['file']}"),
    ]
    aug = info["augmentation"]
    if aug["types"]:
        applied = ", ".join(f"{name} {count}" for name, count in aug["applied"].items())
        lines.append(f"augmentation (p={aug['prob']}): {applied}")
    else:
        lines.append("augmentation: none")
    lines += noise.format_noise(info.get("noise"))
    return "\n".join(lines)


# ---------------------------------------------------------------- planning

T = TypeVar("T")


def _balanced(items: Sequence[T], rng: np.random.Generator) -> Iterator[T]:
    """Endless rounds over ``items``, each round in a fresh random order.

    After any k full rounds every item has been drawn exactly k times, so counts
    stay balanced however many draws the hour budget needs.
    """
    while True:
        for index in rng.permutation(len(items)):
            yield items[index]


def plan_corpus(cfg: SynthConfig) -> Plan:
    """Decide every utterance of the corpus (deterministic in ``cfg``)."""
    rng = np.random.default_rng(cfg.seed)
    speakers = make_speakers(cfg.speakers, rng)
    train_speakers, test_speakers = split_speakers(speakers, cfg.test_speaker_fraction, rng)
    pools = content.split_meanings(cfg.dev_fraction, cfg.test_fraction)
    shares = {"train": 1.0 - cfg.dev_fraction - cfg.test_fraction, "dev": cfg.dev_fraction,
              "test": cfg.test_fraction}
    languages = list(cfg.languages)

    utterances: list[PlannedUtterance] = []
    for split in SPLITS:
        budget = cfg.hours * 3600.0 * shares[split]
        split_speakers_ = test_speakers if split == "test" else train_speakers
        draw_language = _balanced(languages, rng)
        draw_speaker = _balanced(split_speakers_, rng)
        draw_emotion = _balanced(EMOTION_NAMES, rng)
        draw_intent = _balanced(content.INTENT_NAMES, rng)
        minimum = cfg.min_utterances * len(languages)
        if split == "test":
            minimum = max(minimum, 2 * len(test_speakers))  # two utterances each, so ASV has target trials
        seconds, count = 0.0, 0
        while seconds < budget or count < minimum:
            language, speaker = next(draw_language), next(draw_speaker)
            emotion, intent = next(draw_emotion), next(draw_intent)
            pool = pools[split][intent]
            meaning = pool[int(rng.integers(len(pool)))]
            template = int(rng.integers(content.num_templates(meaning, language)))
            sentence = content.render(meaning, language, template)
            prosody = sample_prosody(emotion, rng)
            augment = tuple(name for name in cfg.augment if rng.random() < cfg.augment_prob)
            seed = int(rng.integers(2**31 - 1))
            # The same meaning in every language, canonical phrasing; the utterance's
            # own language maps to its own text, so translations[L] always exists.
            translations = {
                lang: sentence.text if lang == language else content.render(meaning, lang, 0).text
                for lang in languages
            }
            utt_id = f"{speaker.id}-{language}-{len(utterances):06d}"
            utterances.append(PlannedUtterance(utt_id, split, speaker, language, emotion, prosody, meaning, template,
                                         sentence, translations, augment, seed))
            seconds += _estimate_seconds(sentence.text, language, speaker, prosody)
            count += 1
    _check_held_out(utterances)
    return Plan(utterances, train_speakers, test_speakers)


def _estimate_seconds(text: str, language: str, speaker: Speaker, prosody: Prosody) -> float:
    speech = len(text) * _SECONDS_PER_CHAR[language] * 175.0 / (speaker.rate_wpm * prosody.rate)
    pauses = 0.01 * prosody.wordgap * text.count(" ")
    return speech + pauses + _MEAN_PADDING_SECONDS


def _check_held_out(utterances: list[PlannedUtterance]) -> None:
    """Guard the two promises benchmarks rely on; a failure here is a bug in the content tables."""
    train_texts = {p.sentence.text for p in utterances if p.split == "train"}
    leaked = [p.sentence.text for p in utterances if p.split != "train" and p.sentence.text in train_texts]
    if leaked:
        raise AssertionError(f"held-out sentence(s) also in train, e.g. {leaked[0]!r}")
    test_speakers = {p.speaker.id for p in utterances if p.split == "test"}
    if test_speakers & {p.speaker.id for p in utterances if p.split != "test"}:
        raise AssertionError("a test speaker also speaks in train/dev")


# ---------------------------------------------------------------- rendering


def _render_all(jobs: list[Job], workers: int, progress: bool) -> Iterator[Rendered]:
    from tqdm import tqdm

    # Always a pool of fresh "spawn" processes, even for one worker: eSpeak forks a
    # child per utterance (see espeak.py), and forking is only safe from a clean,
    # single-threaded process, not from a caller that may hold torch or tqdm threads.
    context = multiprocessing.get_context("spawn")
    # On a terminal the bar redraws in place; in logs (CI, make | tee) it would print a
    # line per refresh, so it then updates every 10 s at most.
    interactive = sys.stderr.isatty()
    with tqdm(total=len(jobs), desc="synthesising", unit="utt", disable=not progress, file=sys.stderr,
              mininterval=0.1 if interactive else 10.0) as bar:
        pool = context.Pool(workers)
        try:
            # imap keeps plan order, so the manifests do not depend on scheduling.
            for result in pool.imap(render, jobs, chunksize=8):
                yield result
                bar.update()
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()


# ---------------------------------------------------------------- manifests and trials


def _write_manifests(out: Path, utterances: list[PlannedUtterance], rendered: list[Rendered]
                     ) -> dict[str, dict[str, str]]:
    from lhotse import Recording, SupervisionSegment
    from lhotse.audio import AudioSource
    from lhotse.cut import MonoCut

    files: dict[str, dict[str, str]] = {}
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        recordings, supervisions, cuts = [], [], []
        for p, r in zip(utterances, rendered):
            if p.split != split:
                continue
            assert p.utt_id == r.utt_id, "results must come back in plan order"
            duration = r.num_samples / SAMPLE_RATE
            recording = Recording(
                id=p.utt_id,
                sources=[AudioSource(type="file", channels=[0], source=p.audio_path)],
                sampling_rate=SAMPLE_RATE,
                num_samples=r.num_samples,
                duration=duration,
            )
            supervision = SupervisionSegment(
                id=p.utt_id,
                recording_id=p.utt_id,
                start=0.0,
                duration=duration,
                channel=0,
                text=p.sentence.text,
                language=p.language,
                speaker=p.speaker.id,
                gender=p.speaker.gender,
                custom=_custom(p, r),
            )
            recordings.append(recording.to_dict())
            supervisions.append(supervision.to_dict())
            cuts.append(MonoCut(id=p.utt_id, start=0.0, duration=duration, channel=0, recording=recording,
                                supervisions=[supervision]).to_dict())
        files[split] = {}
        for kind, records in (("recordings", recordings), ("supervisions", supervisions), ("cuts", cuts)):
            relative = f"manifests/{kind}_{split}.jsonl.gz"
            _write_jsonl_gz(out / relative, records)
            files[split][kind] = relative
    return files


def _write_alignments(out: Path, utterances: list[PlannedUtterance], rendered: list[Rendered]) -> dict[str, str]:
    """One ``alignments_<split>.jsonl.gz`` per split: cut id -> [start_s, end_s, phone] segments."""
    files = {}
    for split in SPLITS:
        records = [{"id": r.utt_id, "phones": [list(segment) for segment in r.phones]}
                   for p, r in zip(utterances, rendered) if p.split == split]
        path = alignment_path(out, split)
        _write_jsonl_gz(path, records)
        files[split] = path.relative_to(out).as_posix()
    return files


def _custom(p: PlannedUtterance, r: Rendered) -> dict[str, Any]:
    """The labels of one utterance (``SupervisionSegment.custom``)."""
    return {
        "phonemes": " ".join(r.phonemes),  # IPA phones separated by spaces, no stress marks
        "ipa": r.ipa,  # eSpeak's IPA with stress marks, words separated by spaces
        "emotion": p.emotion,
        "intent": p.meaning.intent,
        "slots": [span.to_dict() for span in p.sentence.slots],
        "words": list(p.sentence.words),
        "pos": list(p.sentence.pos),
        "meaning_id": p.meaning.id,
        "translations": p.translations,
        "template": p.template,
        "augment": list(p.augment),
        "augment_params": r.augment_params,
        "voice": r.voice,
        "prosody": p.prosody.to_dict(),
    }


def make_trials(test_utterances: list[tuple[str, str]], n_trials: int, rng: np.random.Generator
                ) -> list[tuple[str, str, int]]:
    """Balanced verification trials ``(enroll, test, label)`` from ``(utt_id, speaker)`` pairs.

    Targets pair two different utterances of one speaker; non-targets pair two
    speakers. When there are fewer possible pairs of either kind than
    ``n_trials / 2``, both halves shrink so that the list stays balanced.
    """
    by_speaker: dict[str, list[str]] = {}
    for utt, speaker in test_utterances:
        by_speaker.setdefault(speaker, []).append(utt)
    speakers = sorted(by_speaker)
    target_pairs = [(a, b) for s in speakers for i, a in enumerate(by_speaker[s]) for b in by_speaker[s][i + 1:]]
    n_nontarget_pairs = sum(len(by_speaker[a]) * len(by_speaker[b])
                            for i, a in enumerate(speakers) for b in speakers[i + 1:])
    n_half = min(n_trials // 2, len(target_pairs), n_nontarget_pairs)
    targets = [target_pairs[i] for i in sorted(rng.choice(len(target_pairs), n_half, replace=False))]

    if n_nontarget_pairs <= 100_000:
        # Small enough to list: sample without replacement.
        every = [(a, b) for i, s in enumerate(speakers) for t in speakers[i + 1:]
                 for a in by_speaker[s] for b in by_speaker[t]]
        nontargets = [every[i] for i in sorted(rng.choice(len(every), n_half, replace=False))]
    else:
        # Large: rejection sampling converges fast because n_half is far below the pool.
        chosen: set[tuple[str, str]] = set()
        while len(chosen) < n_half:
            s, t = sorted(rng.choice(len(speakers), 2, replace=False))
            first, second = by_speaker[speakers[s]], by_speaker[speakers[t]]
            chosen.add((first[int(rng.integers(len(first)))], second[int(rng.integers(len(second)))]))
        nontargets = sorted(chosen)

    trials = [(a, b, 1) for a, b in targets] + [(a, b, 0) for a, b in nontargets]
    order = rng.permutation(len(trials))
    # Which side enrols is random too, so position carries no information.
    return [(trials[i][1], trials[i][0], trials[i][2]) if rng.random() < 0.5 else trials[i] for i in order]


def _write_trials(path: Path, trials: list[tuple[str, str, int]]) -> None:
    lines = ["enroll\ttest\tlabel"] + [f"{a}\t{b}\t{label}" for a, b, label in trials]
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------- corpus.json


def _describe(cfg: SynthConfig, digest: str, plan: Plan, rendered: list[Rendered],
              trials: list[tuple[str, str, int]], manifests: dict[str, dict[str, str]]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in SPLITS:
        items = [(p, r) for p, r in zip(plan.utterances, rendered) if p.split == split]
        seconds = sum(r.num_samples for _, r in items) / SAMPLE_RATE
        splits[split] = {
            "utterances": len(items),
            "hours": round(seconds / 3600, 4),
            "speakers": len({p.speaker.id for p, _ in items}),
            "languages": _counts(p.language for p, _ in items),
            "emotions": _counts(p.emotion for p, _ in items),
            "intents": _counts(p.meaning.intent for p, _ in items),
            "meanings": len({p.meaning.id for p, _ in items}),
            "manifests": manifests[split],
        }
    phonemes: dict[str, set[str]] = {lang: set() for lang in cfg.languages}
    for p, r in zip(plan.utterances, rendered):
        phonemes[p.language].update(r.phonemes)
    applied = Counter(name for p in plan.utterances for name in p.augment)
    total_seconds = sum(r.num_samples for r in rendered) / SAMPLE_RATE
    n_target = sum(label for _, _, label in trials)
    return {
        "name": CORPUS_NAME,
        "version": GENERATOR_VERSION,
        "speechssl_version": __version__,
        "config_hash": digest,
        "seed": cfg.seed,
        "hours_requested": cfg.hours,
        "hours_produced": round(total_seconds / 3600, 4),
        "sample_rate": SAMPLE_RATE,
        "languages": list(cfg.languages),
        "splits": splits,
        # The speaker sets as defined; a split's "speakers" count says how many of them it uses.
        "speakers": {
            "train": [s.to_dict() for s in sorted(plan.train_speakers, key=lambda s: s.id)],
            "test": [s.to_dict() for s in sorted(plan.test_speakers, key=lambda s: s.id)],
        },
        "label_sets": {
            "language": list(cfg.languages),
            "gender": ["f", "m"],
            "emotion": list(EMOTION_NAMES),
            "intent": list(content.INTENT_NAMES),
            "slot_types": list(content.SLOT_TYPE_NAMES),
            "pos_tags": list(content.pos_tags_in_use()),
            "phonemes": {lang: sorted(phones) for lang, phones in phonemes.items()},
        },
        "trials": {"file": TRIALS_FILE, "count": len(trials), "target": n_target,
                   "nontarget": len(trials) - n_target},
        "augmentation": {"types": list(cfg.augment), "prob": cfg.augment_prob,
                         "applied": {name: applied[name] for name in cfg.augment}},
        "config": to_dict(cfg),
    }


def _counts(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


# ---------------------------------------------------------------- files


def _reusable(out: Path, digest: str, overwrite: bool, config: dict[str, Any]) -> dict[str, Any] | None:
    """The existing corpus description if ``out`` already holds this corpus, else None.

    A corpus an older generator made with the same settings is stale derived data (it
    lacks what the generator writes now, e.g. phone alignments): it is regenerated
    rather than refused. Settings that differ still need ``overwrite``.
    """
    info_path = out / "corpus.json"
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        info = {}
    if info.get("config_hash") == digest:
        wanted = [out / path for split in info.get("splits", {}).values()
                  for path in split.get("manifests", {}).values()]
        noise_files = [out / path for path in noise.expected_files(info.get("noise"))]
        aligned = [alignment_path(out, split) for split in SPLITS]
        if len(wanted) == 3 * len(SPLITS) and all(p.is_file() for p in wanted + noise_files + aligned) \
                and (out / TRIALS_FILE).is_file():
            (out / _INCOMPLETE_MARKER).unlink(missing_ok=True)
            return info
        return None  # same config but files missing: regenerate
    old_config = info.get("config") or {}
    if info.get("version") != GENERATOR_VERSION and old_config and all(
        config.get(key) == value for key, value in old_config.items()
    ):
        print(f"{out}: corpus of generator {info.get('version')} with the same settings; regenerating "
              f"with generator {GENERATOR_VERSION}", file=sys.stderr)
        return None
    if not overwrite:
        raise ConfigError(
            f"{out} already holds a corpus made with other settings (config {info.get('config_hash')}, "
            f"requested {digest}); choose another --out or pass overwrite=True (--overwrite)"
        )
    return None


def _prepare_output_dir(out: Path) -> None:
    """Remove what a previous (other or interrupted) run left; never touch anything else."""
    ours = [out / name for name in ("audio", "manifests", "trials", noise.NOISE_DIR, "corpus.json")]
    known = (out / "corpus.json").is_file() or (out / _INCOMPLETE_MARKER).exists()
    if not known and any(p.exists() for p in ours):
        raise ConfigError(f"{out} contains files that were not written by `speechssl corpus synth`; "
                          f"choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    # The marker goes first and corpus.json last: an interrupted run is never taken for a finished one.
    (out / _INCOMPLETE_MARKER).write_text("synthesis in progress or interrupted\n")
    for path in ours:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_jsonl_gz(path: Path, records: list[dict[str, Any]]) -> None:
    """lhotse's JSONL format, gzipped with a zero timestamp so that equal content gives equal bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for record in records:
            gz.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(path)
