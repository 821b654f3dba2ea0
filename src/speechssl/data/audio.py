"""Audio I/O: every waveform in speechssl is read through :func:`load_audio`.

It returns mono float32 at 16 kHz (or the requested rate) and refuses files that
would silently poison a run: missing, empty, unreadable, truncated, all-NaN, or
too short for the encoder. Every refusal is an :class:`AudioError` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from speechssl.errors import AudioError
from speechssl.extras import require

TARGET_SAMPLE_RATE = 16_000
# The standard wav2vec 2.0 CNN front end has a receptive field of 400 samples and a
# stride of 320, so shorter clips yield at most one frame; 0.1 s (5 frames) is the
# shortest input we accept by default.
DEFAULT_MIN_SECONDS = 0.1


def resample(wave: np.ndarray, orig_sr: float, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling along the last axis.

    The rate ratio is approximated by a fraction with a small denominator so that
    odd rates (22050, 44100, or a warped 22050 * 1.1) still use a short filter.
    """
    if orig_sr <= 0:
        raise ValueError(f"sample rate must be positive, got {orig_sr}")
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    ratio = Fraction(target_sr / orig_sr).limit_denominator(1000)
    # scipy only when a rate differs: 16 kHz corpora are read with the core install.
    signal = require("scipy.signal", f"resampling {orig_sr:g} Hz audio to {target_sr} Hz")
    out = signal.resample_poly(wave, ratio.numerator, ratio.denominator, axis=-1)
    return out.astype(np.float32, copy=False)


def load_audio(
    path: str | Path,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    target_sr: int = TARGET_SAMPLE_RATE,
    min_seconds: float = DEFAULT_MIN_SECONDS,
) -> np.ndarray:
    """Read ``[offset, offset + duration)`` seconds of ``path`` as mono float32 at ``target_sr``.

    Multi-channel audio is mixed down by averaging the channels.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if not path.is_file():
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "file is empty (0 bytes)")
    # One open handle for header and samples: this runs for every cut in every batch.
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioError(path, f"not a readable audio file ({_open_reason(exc, path)})") from None
    with handle:
        sr, total_frames = handle.samplerate, handle.frames
        if sr <= 0 or handle.channels <= 0:
            raise AudioError(path, f"invalid header (rate={sr}, channels={handle.channels})")
        _check_data_chunk(handle, path)
        start = int(round(offset * sr))
        stop = total_frames if duration is None else min(start + int(round(duration * sr)), total_frames)
        if total_frames > 0 and start >= total_frames:
            raise AudioError(path, f"offset {offset:.3f}s is past the end ({total_frames / sr:.3f}s)")
        try:
            handle.seek(start)
            data = handle.read(max(stop - start, 0), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(path, f"cannot decode audio ({_short(exc)}); the file may be truncated or corrupt") from None

    # libsndfile stops early on a truncated FLAC/WAV without raising: the header
    # promises more frames than the decoder delivers.
    expected = stop - start
    if total_frames > 0 and data.shape[0] < expected:
        raise AudioError(
            path,
            f"truncated: header declares {expected} frames but only {data.shape[0]} could be decoded",
        )
    if data.shape[0] == 0:
        raise AudioError(path, "contains no audio samples")

    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    finite = np.isfinite(wave)
    if not finite.any():
        raise AudioError(path, "all samples are NaN or infinite")
    if not finite.all():
        raise AudioError(path, f"{int((~finite).sum())} samples are NaN or infinite")

    wave = resample(wave, sr, target_sr)
    seconds = wave.shape[0] / target_sr
    if seconds < min_seconds:
        raise AudioError(path, f"too short: {seconds:.3f}s < minimum {min_seconds:.3f}s for the encoder")
    return np.ascontiguousarray(wave, dtype=np.float32)


def load_cut_audio(cut, *, target_sr: int = TARGET_SAMPLE_RATE, min_seconds: float = DEFAULT_MIN_SECONDS) -> np.ndarray:
    """Load the audio of a lhotse cut (single-file recording) through :func:`load_audio`."""
    recording = cut.recording
    if recording is None:
        raise AudioError(cut.id, "cut has no recording")
    if len(recording.sources) != 1 or recording.sources[0].type != "file":
        raise AudioError(recording.id, "only single-file recordings are supported")
    source = recording.sources[0].source
    return load_audio(source, offset=cut.start, duration=cut.duration, target_sr=target_sr, min_seconds=min_seconds)


@dataclass
class AudioScanReport:
    """Outcome of checking a set of cuts' audio: what is usable and what is not."""

    good: list = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (cut id, reason with file name)

    def summary(self) -> str:
        if not self.bad:
            return f"audio check: {len(self.good)} cuts ok"
        lines = [f"audio check: {len(self.good)} cuts ok, {len(self.bad)} skipped:"]
        lines += [f"  {cut_id}: {reason}" for cut_id, reason in self.bad]
        return "\n".join(lines)


def scan_cuts(cuts: Iterable, *, skip_bad: bool, min_seconds: float = DEFAULT_MIN_SECONDS) -> AudioScanReport:
    """Decode every cut's audio once and sort the cuts into good and bad.

    Without ``skip_bad`` the first bad file raises; with it, bad files are collected
    so the caller can report their count and list (never skipped silently). Besides what
    :func:`load_audio` refuses, a cut whose every sample is zero (digital silence: a dead
    microphone or a failed export) counts as bad here; ``load_audio`` itself accepts
    silence, since a silent stretch of a longer recording is ordinary.
    """
    report = AudioScanReport()
    for cut in cuts:
        try:
            wave = load_cut_audio(cut, min_seconds=min_seconds)
            if not wave.any():
                raise AudioError(cut.recording.sources[0].source, "every sample is zero (a silent recording)")
        except AudioError as exc:
            if not skip_bad:
                raise
            report.bad.append((cut.id, str(exc)))
        else:
            report.good.append(cut)
    return report


# libsndfile's log line for a WAV/AIFF whose data chunk is cut short: "data : 32000 (should be 15978)".
# It then quietly reads the frames that are there (and reports that many), so this log is the
# only sign of a truncated file. 0 and 0xFFFFFFFF are the sizes streaming writers leave.
_SHORT_CHUNK = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


def _check_data_chunk(handle: sf.SoundFile, path: Path) -> None:
    if handle.format not in ("WAV", "WAVEX", "RF64", "W64", "AIFF"):
        return
    found = _SHORT_CHUNK.search(handle.extra_info)
    if found:
        declared, present = int(found.group(1)), int(found.group(2))
        if present < declared and declared not in _STREAMING_SIZES:
            raise AudioError(path, f"truncated: the header declares {declared} bytes of audio data but only "
                                   f"{present} are in the file")


def _open_reason(exc: Exception, path: Path) -> str:
    """libsndfile's reason without soundfile's "Error opening '<path>': " prefix (the path is named once)."""
    text = _short(exc)
    prefix = f"Error opening {str(path)!r}: "
    return text[len(prefix):].rstrip(".") if text.startswith(prefix) and len(text) > len(prefix) else text


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
