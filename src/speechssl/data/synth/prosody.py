"""Emotion-like speaking styles, rendered by prosody relative to each speaker's own voice.

eSpeak has no emotions; we imitate the acoustic correlates reported for acted
emotional speech: happy = higher, wider pitch and faster; sad = lower, flatter,
slower, quieter, with longer pauses; angry = loud, fast, moderately raised pitch
with strong accents. Each utterance jitters these values a little so that the
classes overlap like real ones rather than being separable by one number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Emotion:
    name: str
    pitch: int  # eSpeak PITCH parameter, 0..99; 50 keeps the speaker's own pitch
    range: int  # eSpeak RANGE parameter, 0..99; 50 keeps the speaker's own intonation range
    rate: float  # tempo relative to the speaker's rate
    volume: int  # eSpeak VOLUME, 0..200 (above 100 eSpeak compresses: a harder voice)
    wordgap: int  # extra pause between words, in units of 10 ms
    peak: float  # target peak amplitude of the final waveform


EMOTIONS: tuple[Emotion, ...] = (
    Emotion("neutral", pitch=50, range=50, rate=1.00, volume=100, wordgap=0, peak=0.70),
    Emotion("happy", pitch=66, range=85, rate=1.10, volume=120, wordgap=0, peak=0.80),
    Emotion("sad", pitch=36, range=18, rate=0.82, volume=70, wordgap=4, peak=0.50),
    Emotion("angry", pitch=58, range=70, rate=1.15, volume=170, wordgap=0, peak=0.90),
)
EMOTION_NAMES = tuple(e.name for e in EMOTIONS)
_BY_NAME = {e.name: e for e in EMOTIONS}


@dataclass(frozen=True)
class Prosody:
    """The concrete settings of one utterance (an emotion plus jitter)."""

    pitch: int
    range: int
    rate: float
    volume: int
    wordgap: int
    peak: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def sample_prosody(emotion: str, rng: np.random.Generator) -> Prosody:
    e = _BY_NAME[emotion]
    return Prosody(
        pitch=int(np.clip(e.pitch + rng.integers(-4, 5), 0, 99)),
        range=int(np.clip(e.range + rng.integers(-6, 7), 0, 99)),
        rate=float(round(e.rate * rng.uniform(0.96, 1.04), 4)),
        volume=int(np.clip(e.volume + rng.integers(-10, 11), 10, 200)),
        wordgap=e.wordgap,
        peak=float(round(float(np.clip(e.peak + rng.uniform(-0.05, 0.05), 0.3, 0.95)), 4)),
    )
