"""Optional acoustic degradations: room reverberation, additive noise, a telephone channel.

All are generated from numpy noise (no external data) so the corpus stays
self-contained and deterministic. They are applied in the physical order
room -> ambient noise -> channel, each with its own random parameters, which the
caller records in the supervision so a benchmark can slice results by condition.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from speechssl.extras import lazy_import

signal = lazy_import("scipy.signal", "the audio augmentations (reverb, noise, telephone)")

SAMPLE_RATE = 16000
AUGMENTATIONS = ("reverb", "noise", "telephone")  # also the order of application
NOISE_KINDS = ("white", "pink", "brown", "babble")

Params = dict[str, float | str]


def _coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]  # avoid dividing by zero at DC
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def _babble(n: int, rng: np.random.Generator) -> np.ndarray:
    """Crowd-like noise: several speech-shaped voices, each switching on and off at syllable rate."""
    talkers = int(rng.integers(4, 9))
    sos = signal.butter(2, [150, 4000], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    out = np.zeros(n)
    t = np.arange(n) / SAMPLE_RATE
    for _ in range(talkers):
        voice = signal.sosfilt(sos, _coloured_noise(n, 1.0, rng))
        # A 3-6 Hz syllabic envelope with random phase, rectified so it pauses.
        rate = rng.uniform(3.0, 6.0)
        envelope = np.maximum(0.0, np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) + rng.uniform(-0.2, 0.4))
        out += voice * envelope
    return out / (np.sqrt(np.mean(out ** 2)) + 1e-12)


def add_noise(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    kind = str(rng.choice(NOISE_KINDS))
    snr_db = float(rng.uniform(5.0, 25.0))
    if kind == "babble":
        noise = _babble(len(wave), rng)
    else:
        noise = _coloured_noise(len(wave), {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)
    # SNR against the speech power of the non-silent part, so padding does not bias it.
    active = wave[np.abs(wave) > 0.02 * np.max(np.abs(wave))]
    speech_power = float(np.mean(active ** 2)) if active.size else float(np.mean(wave ** 2))
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10))
    return wave + noise, {"kind": kind, "snr_db": round(snr_db, 2)}


def add_reverb(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Convolve with a synthetic room impulse response: direct path plus an exponentially decaying tail."""
    rt60 = float(rng.uniform(0.2, 0.9))  # seconds for the tail to decay by 60 dB
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)  # ln(1000) = 6.908 -> -60 dB at rt60
    predelay = int(rng.uniform(0.002, 0.02) * SAMPLE_RATE)  # first reflections arrive a little later
    rir = np.zeros(n + predelay)
    rir[predelay:] = tail * rng.uniform(0.1, 0.4)
    rir[0] = 1.0
    wet = signal.fftconvolve(wave, rir)[: len(wave)]
    return wet, {"rt60": round(rt60, 3)}


def telephone(wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A narrowband phone line: 300-3400 Hz, 8 kHz sampling and 8-bit mu-law (G.711) quantisation."""
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = signal.resample_poly(signal.sosfilt(sos, wave), 1, 2)
    scale = np.max(np.abs(narrow)) + 1e-12
    mu = 255.0
    x = narrow / scale
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantised = np.round(companded * 127) / 127
    expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu
    return signal.resample_poly(expanded * scale, 2, 1)[: len(wave)], {"codec": "mulaw8k"}


_FUNCTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Params]]] = {
    "reverb": add_reverb,
    "noise": add_noise,
    "telephone": telephone,
}


def apply(wave: np.ndarray, names: list[str], rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Params]]:
    """Apply the augmentations ``names`` in the canonical order; returns the parameters used."""
    params: dict[str, Params] = {}
    for name in AUGMENTATIONS:
        if name in names:
            wave, params[name] = _FUNCTIONS[name](wave.astype(np.float64), rng)
    return wave, params
