"""GE2E speaker encoder (Resemblyzer's pretrained 3x256 LSTM) as a reference upstream.

It is the one *supervised* speaker model in the benchmark: a yardstick for what the
speaker-ID / verification probes can reach from features built for speakers. Only the
weights file inside the ``resemblyzer`` wheel is used; the package itself is never
imported (its modules import librosa and webrtcvad, which speechssl does not install).
Everything it does before the network is re-implemented here, matching Resemblyzer
0.1.4 run with librosa >= 0.10:

1. ``normalize_volume(wav, -30, increase_only=True)`` per utterance, over its valid samples.
2. *Not* done: ``trim_long_silences`` (webrtcvad). Long pauses therefore stay in; the
   probes see the same audio as every other upstream.
3. ``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)``:
   a *power* (not log) mel spectrogram -- periodic Hann window, ``center=True`` with zero
   padding (librosa >= 0.10's ``pad_mode="constant"``; the model was trained with
   librosa's older reflect default, which only touches the first and last frame), and
   the Slaney mel scale with Slaney area normalisation (librosa's defaults).

Because the padding is zeros and an LSTM is causal, an utterance's features do not
depend on what it is batched with. The three LSTM layers' output sequences are the
upstream's layers; :meth:`GE2E.embed` is Resemblyzer's utterance embedding
(``relu(linear(h_T))``, L2-normalised) over the whole utterance, where Resemblyzer's
``embed_utterance`` would average 1.6 s partial windows instead.
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.errors import SpeechSSLError
from speechssl.upstream.base import SAMPLE_RATE, Upstream, UpstreamOutput, hash_files, valid_mask

VERSION = "ge2e/1"
"""Bump when a change here alters the features (invalidates the feature caches)."""

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
HIDDEN = 256
NUM_LAYERS = 3
TARGET_DBFS = -30.0
INSTALL_HINT = "pip install --no-deps resemblyzer==0.1.4 (`make` installs it)"


def weights_path() -> Path:
    """``resemblyzer/pretrained.pt`` of the installed wheel, found without importing the package."""
    try:
        dist = importlib.metadata.distribution("resemblyzer")
    except importlib.metadata.PackageNotFoundError:
        raise SpeechSSLError(
            f"the ge2e upstream needs the GE2E weights shipped with Resemblyzer: {INSTALL_HINT}"
        ) from None
    path = Path(dist.locate_file("resemblyzer/pretrained.pt"))
    if not path.is_file():
        raise SpeechSSLError(f"{path} is missing from the installed resemblyzer; reinstall it: {INSTALL_HINT}")
    return path


# ---------------------------------------------------------------- Slaney mel scale (librosa htk=False)

_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15 mel
_LOGSTEP = math.log(6.4) / 27.0  # 27 mel per factor 6.4 above 1 kHz


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


def slaney_mel_filterbank(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] float32, as ``librosa.filters.mel(..., htk=False, norm="slaney")``.

    Triangles between ``n_mels + 2`` points equally spaced in mel, each scaled by
    ``2 / (f_hi - f_lo)`` so that it has unit area in Hz (constant energy per band).
    """
    fmax = sr / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights


# ---------------------------------------------------------------- preprocessing


def normalize_volume(waveforms: Tensor, lengths: Tensor, target_dbfs: float = TARGET_DBFS) -> Tensor:
    """Resemblyzer's ``normalize_volume(wav, -30, increase_only=True)`` per utterance.

    The RMS is taken over the valid samples only (padding would make short utterances
    look quieter). Resemblyzer computes it on the int16 scale and divides that scale
    back out, so it is simply the float RMS here. Silence stays silence instead of NaN.
    """
    mask = valid_mask(lengths, waveforms.shape[1])
    count = mask.sum(dim=1).clamp(min=1)
    rms = torch.sqrt((waveforms.square() * mask).sum(dim=1) / count)
    dbfs = 20 * torch.log10(rms.clamp(min=1e-10))
    change = (target_dbfs - dbfs).clamp(min=0.0)  # increase only
    return waveforms * torch.pow(10.0, change / 20)[:, None]


def num_frames(lengths: Tensor) -> Tensor:
    """Frames of a centred STFT: ``1 + n // 160``."""
    return 1 + torch.div(lengths, HOP, rounding_mode="floor")


class MelSpectrogram(nn.Module):
    """Batched ``librosa.feature.melspectrogram`` with Resemblyzer's settings -> [B, frames, 40]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(slaney_mel_filterbank()), persistent=False)

    def forward(self, waveforms: Tensor) -> Tensor:
        spec = torch.stft(
            waveforms, N_FFT, hop_length=HOP, win_length=N_FFT, window=self.window,
            center=True, pad_mode="constant", return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, 201, frames]
        return torch.matmul(self.filters, power).transpose(1, 2)


# ---------------------------------------------------------------- the model


class GE2E(Upstream):
    """Resemblyzer's GE2E LSTM, one single-layer LSTM per layer so every layer's sequence is visible."""

    frame_rate = SAMPLE_RATE / HOP
    num_layers = NUM_LAYERS
    feature_dim = HIDDEN

    def __init__(self, weights: Path | None = None) -> None:
        super().__init__()
        self.weights = weights_path() if weights is None else Path(weights)
        self.name = "ge2e"
        self.mel = MelSpectrogram()
        self.lstms = nn.ModuleList(
            nn.LSTM(N_MELS if k == 0 else HIDDEN, HIDDEN, num_layers=1, batch_first=True) for k in range(NUM_LAYERS)
        )
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        self._load(self.weights)

    def _load(self, path: Path) -> None:
        from speechssl.fsutil import safe_torch_load

        state = safe_torch_load(path, "GE2E weights file")  # one line of ours if refused or corrupt
        if not isinstance(state, dict) or not isinstance(state.get("model_state"), dict):
            raise SpeechSSLError(f"{path}: not a GE2E weights file (no model_state)")
        state = state["model_state"]
        ours = {}
        for k in range(NUM_LAYERS):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                ours[f"lstms.{k}.{kind}_l0"] = state[f"lstm.{kind}_l{k}"]
        ours["linear.weight"] = state["linear.weight"]
        ours["linear.bias"] = state["linear.bias"]
        # similarity_weight / similarity_bias only scale the GE2E training loss.
        self.load_state_dict(ours, strict=True)

    def features(self, waveforms: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(mel [B, frames, 40], frame lengths [B])``: the network's input."""
        lengths = lengths.to(waveforms.device)
        waveforms = waveforms.float() * valid_mask(lengths, waveforms.shape[1])
        mel = self.mel(normalize_volume(waveforms, lengths))
        return mel, num_frames(lengths).clamp(max=mel.shape[1])

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        mel, frame_lengths = self.features(waveforms, lengths)
        mask = valid_mask(frame_lengths, mel.shape[1])[:, :, None]
        layers = []
        x = mel
        for lstm in self.lstms:
            # Padding frames come after the valid ones and an LSTM is causal, so running
            # over them leaves the valid outputs untouched; they are zeroed for tidiness.
            x, _ = lstm(x)
            layers.append(x * mask)
        return UpstreamOutput(layers=layers, lengths=frame_lengths)

    def embed(self, waveforms: Tensor, lengths: Tensor) -> Tensor:
        """[B, 256] L2-normalised speaker embeddings of whole utterances.

        An LSTM's output at step t *is* its hidden state h_t, so the last layer's output
        at each utterance's last valid frame is the final hidden state Resemblyzer uses
        -- what packing the sequences would give, without packing.
        """
        out = self.forward(waveforms, lengths)
        last = (out.lengths - 1).clamp(min=0)
        final = out.layers[-1][torch.arange(last.numel(), device=last.device), last]
        return F.normalize(F.relu(self.linear(final)), dim=-1)

    def fingerprint(self) -> str:
        return hash_files([self.weights], extra=VERSION)


def build_ge2e() -> GE2E:
    return GE2E()
