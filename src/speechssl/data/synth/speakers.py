"""Synthetic speakers: one eSpeak voice variant each, plus a vocal-tract-length warp.

A speaker is fully described by numbers we draw from the seed: mean pitch and
pitch span, per-formant frequency/height/width scaling, breathiness, consonant
strength and speaking rate (all written into an eSpeak variant file), and a
*warp*: the 22050 Hz synthesis is resampled as if it had been recorded at
``warp_rate`` Hz, which scales every formant (and the consonant noise, which
eSpeak's formant settings do not touch) by ``warp_rate / 22050``, like a longer
or shorter vocal tract. The variant's pitch and the rate are divided by the
same factor so that the warp changes timbre only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

ESPEAK_RATE = 22050
# Warp rates are multiples of 250 Hz (or 22050 itself) so that resampling to
# 16 kHz uses an exact ratio with a short polyphase filter (e.g. 16000/20250 = 64/81).
_MALE_WARPS = tuple(range(20000, 22001, 250)) + (ESPEAK_RATE,)
_FEMALE_WARPS = (ESPEAK_RATE,) + tuple(range(22250, 24001, 250))
_NUM_FORMANTS = 9  # eSpeak formants 0..8


@dataclass(frozen=True)
class Speaker:
    id: str
    gender: str  # "m" or "f"
    f0_hz: int  # base pitch as heard (after the warp)
    f0_top_hz: int  # top of the intonation range as heard
    formants: tuple[tuple[int, int, int], ...]  # per eSpeak formant: frequency, height, width in %
    breath: int  # 0 (clear) .. 4 (breathy)
    consonants: int  # consonant amplitude in %
    rate_wpm: int  # speaking rate as heard, words per minute
    warp_rate: int  # the synthesis is read as if sampled at this rate

    @property
    def warp(self) -> float:
        return self.warp_rate / ESPEAK_RATE

    def variant_text(self) -> str:
        """The eSpeak voice variant file of this speaker."""
        lines = [
            "language variant",
            f"name {self.id}",
            f"gender {'female' if self.gender == 'f' else 'male'}",
            # The warp raises or lowers the pitch too; pre-compensate.
            f"pitch {round(self.f0_hz / self.warp)} {round(self.f0_top_hz / self.warp)}",
            # Flutter must stay off: its phase is process-global state (see espeak.py).
            "flutter 0",
            f"consonants {self.consonants} {self.consonants}",
        ]
        lines += [f"formant {i} {f} {h} {w}" for i, (f, h, w) in enumerate(self.formants)]
        if self.breath:
            # Aspiration noise on the upper formants, as eSpeak's own breathy voices do.
            lines.append("breath 0 " + " ".join(str(self.breath + (k > 1)) for k in range(1, 8)))
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["formants"] = [list(f) for f in self.formants]
        data["warp"] = round(self.warp, 4)
        return data


def make_speakers(n: int, rng: np.random.Generator) -> list[Speaker]:
    """``n`` distinct speakers, genders alternating so that they stay balanced."""
    speakers = []
    for index in range(n):
        female = index % 2 == 1
        if female:
            f0 = int(rng.integers(150, 206))
            formant_base, width = 104, (125, 165)
            warps = _FEMALE_WARPS
        else:
            f0 = int(rng.integers(72, 116))
            formant_base, width = 98, (85, 115)
            warps = _MALE_WARPS
        formants = tuple(
            (
                int(formant_base + rng.integers(-4, 5)) if k > 0 else 100,
                int(rng.integers(80, 111)),
                int(rng.integers(*width)),
            )
            for k in range(_NUM_FORMANTS)
        )
        speakers.append(Speaker(
            id=f"spk{index:03d}",
            gender="f" if female else "m",
            f0_hz=f0,
            f0_top_hz=int(f0 * rng.uniform(1.3, 1.6)),
            formants=formants,
            breath=int(rng.choice([0, 0, 1, 2, 3] if female else [0, 0, 0, 1, 2])),
            consonants=int(rng.integers(80, 126)),
            rate_wpm=int(rng.integers(140, 186)),
            warp_rate=int(rng.choice(warps)),
        ))
    return speakers


def split_speakers(speakers: list[Speaker], test_fraction: float, rng: np.random.Generator
                   ) -> tuple[list[Speaker], list[Speaker]]:
    """Disjoint (train/dev speakers, test speakers), balanced by gender.

    Test speakers are never heard in train or dev, so speaker verification trials
    are on unseen voices. At least two speakers end up on each side.
    """
    n_test = min(max(2, round(len(speakers) * test_fraction)), len(speakers) - 2)
    by_gender = {g: [s for s in speakers if s.gender == g] for g in ("m", "f")}
    for group in by_gender.values():
        rng.shuffle(group)
    # Alternate genders so that the test set is as balanced as the whole.
    order = [g for pair in zip(by_gender["m"], by_gender["f"]) for g in pair]
    order += by_gender["m"][len(by_gender["f"]):] + by_gender["f"][len(by_gender["m"]):]
    test: list[Speaker] = order[:n_test]
    test_ids = {s.id for s in test}
    train = [s for s in speakers if s.id not in test_ids]
    return train, sorted(test, key=lambda s: s.id)
