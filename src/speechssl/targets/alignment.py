"""Where frames sit in time, and moving labels from an upstream's frames to an encoder's.

Pretraining targets come from one frame grid (MFCC at 100 Hz, an encoder layer at 50 Hz, ...)
and are consumed on another (the encoder being trained: 50, 25 or 12.5 Hz). Both grids are
described the same way: frame ``j`` is *centred* on sample ``first_centre + j * hop``, where
the centre of a frame is the midpoint of the samples it reads (sample ``t`` occupying
``[t, t + 1)``). An encoder frame gets the label of the upstream frame whose centre is
nearest to its own centre; a tie (exactly half-way) goes to the later frame.

The grids used:

* our CNN encoders (and HF wav2vec 2.0 / HuBERT / WavLM, and the ``ckpt:`` upstream): frame
  ``i`` reads samples ``[i*S - P, i*S - P + R)`` with ``S`` the total stride, ``R`` the
  receptive field and ``P`` the left padding the conv paddings add up to (0 for the standard
  stack), so it is centred on ``i*S - P + R/2``. The 20 ms stack: ``S = 320, R = 400``, centre
  ``320 i + 200``; 40 ms: ``S = 640, R = 720``; 80 ms: ``S = 1280, R = 1360``.
* ``mfcc`` / ``fbank`` (Kaldi ``snip_edges=False``): 25 ms windows every 10 ms, the first one
  starting 120 samples before the audio, so frame ``j`` reads ``[160 j - 120, 160 j + 280)``
  and is centred on ``160 j + 80``. Against the 20 ms encoder, encoder frame ``i`` therefore
  takes MFCC frame ``2 i + 1`` (40 ms: ``4 i + 2``; 80 ms: ``8 i + 4``).
* ``ge2e`` (a ``center=True`` STFT): frame ``j`` is centred on ``160 j``.
* any other upstream: ``hop = 16000 / frame_rate`` and frame ``j`` centred on ``(j + 1/2) hop``.

Frame counts are the encoder's exactly: an utterance of ``n`` samples gets
``conv_output_lengths(n, conv_layers)`` labels, whatever the upstream's count; upstream
frames are only ever *looked up*, so padding never gets a label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from speechssl.data.audio import TARGET_SAMPLE_RATE
from speechssl.errors import ConfigError
from speechssl.models.config import ConvLayer
from speechssl.models.feature_extractor import conv_output_lengths
from speechssl.upstream.base import SAMPLE_RATE, Upstream


@dataclass(frozen=True)
class FrameGrid:
    """Frame ``j`` is centred on sample ``first_centre + j * hop`` (both in samples at 16 kHz)."""

    hop: float
    first_centre: float

    def centres(self, count: int) -> np.ndarray:
        return self.first_centre + self.hop * np.arange(count, dtype=np.float64)


@dataclass(frozen=True)
class ConvGeometry:
    """The time layout of a stack of 1-D convolutions (channels play no part in it)."""

    stride: int
    """Samples between consecutive output frames (product of the strides)."""
    receptive_field: int
    """Samples one output frame reads."""
    left_padding: int
    """How far before sample 0 the first output frame starts reading (zero padding)."""

    @property
    def grid(self) -> FrameGrid:
        return FrameGrid(hop=float(self.stride), first_centre=self.receptive_field / 2 - self.left_padding)


def conv_geometry(conv_layers: Sequence[ConvLayer]) -> ConvGeometry:
    """Stride, receptive field and left padding of ``conv_layers`` (``(channels, kernel, stride, padding)``)."""
    if not conv_layers:
        raise ConfigError("conv_layers must hold at least one layer")
    jump, receptive, padding = 1, 1, 0
    for _, kernel, stride, pad in conv_layers:
        # Each layer widens the field by (kernel - 1) input steps of the current jump.
        receptive += (int(kernel) - 1) * jump
        padding += int(pad) * jump
        jump *= int(stride)
    return ConvGeometry(stride=jump, receptive_field=receptive, left_padding=padding)


def geometry_only(conv_layers: Sequence[ConvLayer]) -> list[ConvLayer]:
    """``conv_layers`` with the channels set to 0: what decides the frames, and nothing else."""
    layers = []
    for layer in conv_layers:
        if len(layer) != 4:
            raise ConfigError(f"conv layers are (channels, kernel, stride, padding), got {tuple(layer)}")
        _, kernel, stride, padding = (int(v) for v in layer)
        if kernel < 1 or stride < 1 or padding < 0:
            raise ConfigError(f"conv layer {tuple(layer)} needs kernel, stride >= 1 and padding >= 0")
        layers.append((0, kernel, stride, padding))
    if not layers:
        raise ConfigError("conv_layers must hold at least one layer")
    return layers


def encoder_frames(num_samples: Sequence[int], conv_layers: Sequence[ConvLayer]) -> np.ndarray:
    """Frames the encoder produces for each utterance length (``conv_output_lengths``)."""
    lengths = torch.as_tensor(list(num_samples), dtype=torch.int64)
    return conv_output_lengths(lengths, conv_layers).numpy().astype(np.int64)


# ------------------------------------------------------------------------ upstream grids


ExpectedFrames = Callable[[Tensor], Tensor]
"""``lengths [B] samples -> frames [B]``: what an upstream must return for those lengths."""


def upstream_layout(upstream: Upstream) -> tuple[FrameGrid, ExpectedFrames | None]:
    """The frame grid of ``upstream`` and, where known, its frame-count rule.

    The count rule lets the builder check that the sample counts computed from the
    manifest are the ones the upstream actually saw (a mismatch would shift every label).
    """
    # Imported here: each is only needed when that upstream is in use, and none is heavy.
    from speechssl.upstream import baseline, ge2e, hf, native

    if isinstance(upstream, baseline.KaldiFeatures):
        left = (baseline.WIN - baseline.HOP) // 2  # snip_edges=False: windows start 120 samples early
        return FrameGrid(hop=float(baseline.HOP), first_centre=baseline.WIN / 2 - left), baseline.num_frames
    if isinstance(upstream, ge2e.GE2E):
        return FrameGrid(hop=float(ge2e.HOP), first_centre=0.0), ge2e.num_frames
    if isinstance(upstream, native.NativeUpstream):
        layers = list(upstream.encoder.cfg.conv_layers)
        return conv_geometry(layers).grid, lambda lengths: conv_output_lengths(lengths, layers)
    if isinstance(upstream, hf.HFUpstream):
        config = upstream.model.config
        layers = [(0, int(k), int(s), 0) for k, s in zip(config.conv_kernel, config.conv_stride)]
        return conv_geometry(layers).grid, upstream.output_lengths
    hop = SAMPLE_RATE / float(upstream.frame_rate)
    return FrameGrid(hop=hop, first_centre=hop / 2), getattr(upstream, "output_lengths", None)


def nearest_frames(target: FrameGrid, target_count: int, source: FrameGrid, source_count: int) -> np.ndarray:
    """For each of ``target_count`` frames of ``target``: the index of the nearest ``source`` frame.

    Indices are clamped into ``[0, source_count)``; at the utterance edges the nearest
    existing frame is the right one. ``source_count`` must be positive when
    ``target_count`` is.
    """
    if target_count == 0:
        return np.zeros(0, dtype=np.int64)
    if source_count <= 0:
        raise ValueError("no source frames to take labels from")
    position = (target.centres(target_count) - source.first_centre) / source.hop
    index = np.floor(position + 0.5).astype(np.int64)  # round half up: ties go to the later frame
    return np.clip(index, 0, source_count - 1)


def align_labels(source_labels: np.ndarray, source: FrameGrid, target: FrameGrid, target_count: int) -> np.ndarray:
    """``source_labels`` (one per source frame) resampled onto ``target_count`` frames of ``target``."""
    index = nearest_frames(target, target_count, source, len(source_labels))
    return source_labels[index]


# ------------------------------------------------------------------------ sample counts


def loaded_num_samples(cut: Any, target_sr: int = TARGET_SAMPLE_RATE) -> int:
    """Samples :func:`speechssl.data.audio.load_cut_audio` returns for ``cut``, from the manifest alone.

    The same arithmetic as ``load_audio`` (rounded start and length, clipped at the end of
    the file, then polyphase resampling to ``ceil(n * up / down)`` samples), so the
    corpus need not be decoded again to know each utterance's encoder frame count. The
    builder cross-checks it against the upstream's own frame counts where it can.
    """
    recording = cut.recording
    rate = int(recording.sampling_rate)
    start = int(round(float(cut.start) * rate))
    stop = min(start + int(round(float(cut.duration) * rate)), int(recording.num_samples))
    count = max(stop - start, 0)
    if rate == target_sr:
        return count
    ratio = Fraction(target_sr / rate).limit_denominator(1000)
    return math.ceil(count * ratio.numerator / ratio.denominator)
