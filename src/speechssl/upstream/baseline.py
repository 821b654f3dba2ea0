"""Hand-crafted baselines: Kaldi-style MFCC (+deltas) and log-mel filterbanks.

These are the floor every learned upstream is compared against, so they follow the
usual recipe rather than anything clever: 25 ms Povey windows every 10 ms, pre-emphasis
0.97, per-frame DC removal, no dither (features must be deterministic to be cached),
lhotse's batched torch implementation (``Wav2MFCC`` / ``Wav2LogFilterBank``), then
per-utterance cepstral mean normalisation (CMN) over the valid frames.

Padding. lhotse's ``snip_edges=False`` framing gives ``(n + 80) // 160`` frames for
``n`` samples (100 per second, centred) and fills the edges by mirroring the signal.
Run on a zero-padded batch it would mirror the *batch* edge, so the last frames of a
short utterance would see the zeros of its padding. We therefore do the mirroring
ourselves, per utterance and with its own length, and hand lhotse a batch that is
already edge-padded (``snip_edges=True`` on that). Each utterance's features are then
exactly what lhotse computes for it alone, whatever it is batched with.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from speechssl.upstream.base import SAMPLE_RATE, Upstream, UpstreamOutput, hash_files, valid_mask

VERSION = "baseline/1"
"""Bump when a change here alters the features (invalidates the feature caches)."""

WIN = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
_LEFT = (WIN - HOP) // 2  # lhotse's (and Kaldi's snip_edges=false) left context: 120 samples
DELTA_WINDOW = 2
DELTA_ORDER = 2


def num_frames(lengths: Tensor) -> Tensor:
    """Frames for ``lengths`` samples: lhotse / Kaldi ``snip_edges=False``, at least 1."""
    return torch.div(lengths + HOP // 2, HOP, rounding_mode="floor").clamp(min=1)


def edge_padded(waveforms: Tensor, lengths: Tensor, frames: int) -> Tensor:
    """[B, (frames-1)*HOP + WIN]: each row is its own utterance, mirrored at *its* edges.

    Sample ``p`` (relative to the utterance start, ``p`` from ``-120``) maps to
    ``-p-1`` before the start and ``2n-1-p`` past the end -- lhotse's flip-based
    (symmetric) padding -- then is clamped into ``[0, n-1]`` so that utterances shorter
    than the mirror (< 25 ms) still read only their own samples.
    """
    total = (frames - 1) * HOP + WIN
    pos = torch.arange(total, device=waveforms.device)[None, :] - _LEFT
    n = lengths.to(waveforms.device)[:, None]
    idx = torch.where(pos < 0, -pos - 1, pos)
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    idx = torch.minimum(idx.clamp(min=0), (n - 1).clamp(min=0))
    return torch.gather(waveforms, 1, idx)


def delta_scales(order: int = DELTA_ORDER, window: int = DELTA_WINDOW) -> list[Tensor]:
    """Kaldi ``add-deltas`` filters: ``scales[i]`` applied to the *static* features gives order i.

    Kaldi derives the delta-delta filter by convolving the delta filter with itself and
    applies it to the original frames with clamped indices, rather than taking deltas of
    deltas (which would clamp twice and differ at the edges).
    """
    scales = [torch.ones(1, dtype=torch.float64)]
    normalizer = sum(j * j for j in range(-window, window + 1))
    for _ in range(order):
        prev = scales[-1]
        cur = torch.zeros(prev.numel() + 2 * window, dtype=torch.float64)
        for j in range(-window, window + 1):
            cur[j + window : j + window + prev.numel()] += j * prev
        scales.append(cur / normalizer)
    return scales


def add_deltas(feats: Tensor, lengths: Tensor, order: int = DELTA_ORDER, window: int = DELTA_WINDOW) -> Tensor:
    """[B, T, D] -> [B, T, D*(order+1)], clamping frame indices to each utterance's valid range."""
    batch, frames, dim = feats.shape
    outputs = [feats]
    last = (lengths.to(feats.device) - 1).clamp(min=0)[:, None, None]
    for scales in delta_scales(order, window)[1:]:
        half = (scales.numel() - 1) // 2
        out = torch.zeros_like(feats)
        for j, scale in zip(range(-half, half + 1), scales.tolist()):
            if scale == 0.0:
                continue
            idx = (torch.arange(frames, device=feats.device) + j)[None, :, None].clamp(min=0)
            idx = torch.minimum(idx, last).expand(batch, frames, dim)
            out = out + scale * torch.gather(feats, 1, idx)
        outputs.append(out)
    return torch.cat(outputs, dim=-1)


def _params_to_buffers(module: nn.Module) -> None:
    # lhotse stores its window, filterbank and DCT as frozen nn.Parameters; as buffers they
    # still follow .to(device) and state_dict, but nobody counts or fine-tunes them as weights.
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach())


class KaldiFeatures(Upstream):
    """One layer of CMN-normalised Kaldi-style features (``mfcc`` or ``fbank``)."""

    frame_rate = SAMPLE_RATE / HOP

    def __init__(self, kind: str) -> None:
        super().__init__()
        from lhotse.features.kaldi.layers import Wav2LogFilterBank, Wav2MFCC

        common = dict(sampling_rate=SAMPLE_RATE, frame_length=WIN / SAMPLE_RATE, frame_shift=HOP / SAMPLE_RATE,
                      dither=0.0, snip_edges=True)
        with warnings.catch_warnings():
            # "snip_edges=True is generally incompatible with Lhotse": we pad the edges ourselves.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # lhotse mel-scale helpers under NumPy 2
            if kind == "mfcc":
                self.config = dict(num_filters=40, num_ceps=13, cepstral_lifter=22, deltas=DELTA_ORDER,
                                   delta_window=DELTA_WINDOW, low_freq=20.0, high_freq=-400.0)
                self.extractor = Wav2MFCC(**common, num_filters=40, num_ceps=13, cepstral_lifter=22,
                                          low_freq=20.0, high_freq=-400.0)
                self.feature_dim = 13 * (DELTA_ORDER + 1)
            elif kind == "fbank":
                self.config = dict(num_filters=80, low_freq=20.0, high_freq=-400.0)
                self.extractor = Wav2LogFilterBank(**common, num_filters=80, low_freq=20.0, high_freq=-400.0)
                self.feature_dim = 80
            else:
                raise ValueError(f"unknown baseline kind {kind!r}")
        _params_to_buffers(self.extractor)
        self.kind = kind
        self.name = kind
        self.num_layers = 1

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return num_frames(lengths)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        lengths = lengths.to(waveforms.device)
        frame_lengths = num_frames(lengths)
        frames = int(frame_lengths.max())
        feats = self.extractor(edge_padded(waveforms.float(), lengths, frames))  # [B, frames, D0]
        mask = valid_mask(frame_lengths, frames)[:, :, None]
        # CMN over valid frames only; deltas after it (their filters sum to zero, so the
        # order does not change them, as in Kaldi's apply-cmvn | add-deltas).
        mean = (feats * mask).sum(dim=1, keepdim=True) / frame_lengths[:, None, None]
        feats = feats - mean
        if self.kind == "mfcc":
            feats = add_deltas(feats, frame_lengths)
        feats = feats * mask
        return UpstreamOutput(layers=[feats], lengths=frame_lengths)

    def fingerprint(self) -> str:
        extra = f"{type(self).__name__}|{self.kind}|{sorted(self.config.items())}|{VERSION}"
        return hash_files([], extra=extra)


def build_mfcc() -> KaldiFeatures:
    """13 MFCCs (40 mel bins, lifter 22) + deltas + delta-deltas = 39 dims, 100 Hz."""
    return KaldiFeatures("mfcc")


def build_fbank() -> KaldiFeatures:
    """80 log-mel filterbank energies, 100 Hz."""
    return KaldiFeatures("fbank")
