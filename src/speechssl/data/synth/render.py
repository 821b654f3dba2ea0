"""Turning one planned utterance into a 16 kHz FLAC file (runs inside pool workers).

Everything random here is drawn from the utterance's own seed and eSpeak runs in
an isolated child (see :mod:`.espeak`), so the output does not depend on which
worker renders it or in which order.

Phone alignment: eSpeak reports where each phone starts in its own output; those
positions go through the same steps as the samples (the warp's resampling, the
trim, the padding), so the segments refer to the audio in the FLAC file. The
augmentations keep time: reverberation and noise are added in place, and the
telephone band-pass delays by under a millisecond above 500 Hz.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from speechssl.data.alignments import SILENCE, Segment
from speechssl.data.audio import resample
from speechssl.data.synth import augment
from speechssl.data.synth.espeak import PITCH, RANGE, RATE, VOLUME, WORDGAP, SpeechRequest, get_driver
from speechssl.data.synth.prosody import Prosody
from speechssl.data.synth.speakers import Speaker

SAMPLE_RATE = 16000
_SILENCE_THRESHOLD = 1e-3  # of full scale: what counts as eSpeak's leading/trailing silence
_PAD_SECONDS = (0.15, 0.40)  # random silence added back at each end


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to render one utterance."""

    utt_id: str
    path: Path  # absolute path of the FLAC to write
    text: str
    language: str
    speaker: Speaker
    prosody: Prosody
    augment: tuple[str, ...] = field(default=())
    seed: int = 0


@dataclass(frozen=True)
class Rendered:
    utt_id: str
    num_samples: int
    voice: str
    ipa: str
    phonemes: tuple[str, ...]
    augment_params: dict[str, dict[str, float | str]]
    phones: tuple[Segment, ...] = ()  # (start_s, end_s, phone) covering the written audio


def render(job: Job) -> Rendered:
    rng = np.random.default_rng(job.seed)
    warp = job.speaker.warp
    request = SpeechRequest(
        text=job.text,
        language=job.language,
        variant=job.speaker.variant_text(),
        parameters=(
            # The warp speeds speech up by its factor, so the requested rate is divided by it.
            (RATE, int(np.clip(round(job.speaker.rate_wpm * job.prosody.rate / warp), 80, 450))),
            (PITCH, job.prosody.pitch),
            (RANGE, job.prosody.range),
            (VOLUME, job.prosody.volume),
            (WORDGAP, job.prosody.wordgap),
        ),
        seed=job.seed % 2**31,
    )
    speech = get_driver().speak_isolated(request)

    wave = speech.samples.astype(np.float32) / 32768.0
    # Reading the 22050 Hz samples as warp_rate Hz audio scales all formants by the warp.
    wave = resample(wave, job.speaker.warp_rate, SAMPLE_RATE).astype(np.float64)
    scale = len(wave) / len(speech.samples)  # output samples per eSpeak sample
    first, last = _loud_span(wave)
    wave = wave[first:last]
    pad = rng.uniform(*_PAD_SECONDS, size=2)
    lead = int(pad[0] * SAMPLE_RATE)
    wave = np.concatenate([np.zeros(lead), wave, np.zeros(int(pad[1] * SAMPLE_RATE))])
    phones = _phone_segments(speech.phone_starts, len(speech.samples), scale, shift=lead - first,
                             kept=(lead, lead + last - first), total=len(wave))
    wave, params = augment.apply(wave, list(job.augment), rng)
    wave = wave * (job.prosody.peak / (np.max(np.abs(wave)) + 1e-12))

    job.path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(job.path), wave.astype(np.float32), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return Rendered(job.utt_id, len(wave), speech.voice, speech.ipa, speech.phonemes, params, phones)


def _loud_span(wave: np.ndarray) -> tuple[int, int]:
    """``[first, last)`` without eSpeak's own leading and trailing silence (its length varies with the voice)."""
    loud = np.flatnonzero(np.abs(wave) > _SILENCE_THRESHOLD)
    if loud.size == 0:
        return 0, len(wave)
    return int(loud[0]), int(loud[-1]) + 1


def _phone_segments(starts: tuple[tuple[int, str], ...], espeak_samples: int, scale: float, shift: int,
                    kept: tuple[int, int], total: int) -> tuple[Segment, ...]:
    """eSpeak's phone starts as contiguous segments in seconds of the written audio.

    An eSpeak sample ``i`` lands at output sample ``i * scale + shift``; only
    ``kept`` (the span between the paddings) holds eSpeak's audio, the rest is
    silence. Pauses ("") become :data:`SILENCE`, runs of silence merge, and phones
    that the trim removed entirely disappear.
    """
    bounds = list(starts) + [(espeak_samples, "")]
    edges, labels = [0], []
    for (start, name), (end, _) in zip(bounds, bounds[1:]):
        a, b = (min(max(round(x * scale) + shift, kept[0]), kept[1]) for x in (start, end))
        edges += [a, b]
        # The (usually empty) gap before the phone, then the phone.
        labels += [SILENCE, name or SILENCE]
    edges.append(total)
    labels.append(SILENCE)
    segments: list[list] = []
    for a, b, label in zip(edges, edges[1:], labels):
        if b <= a:
            continue
        if segments and segments[-1][2] == SILENCE == label:
            segments[-1][1] = b
        else:
            segments.append([a, b, label])
    return tuple((round(a / SAMPLE_RATE, 4), round(b / SAMPLE_RATE, 4), label) for a, b, label in segments)
