"""Computing on the valid frames of a padded batch only.

A padded batch of utterances of 2-4 s spends about a quarter of its work on padding
(`benchmarks/pretrain_throughput.py --model base --quick`: 26.5 %). Two layouts skip it
(docs/pretraining.md, "Skipping the padding"):

* the waveform CNN runs on **one row** holding the utterances end to end, each starting at a
  multiple of the CNN's total stride: a frame of layer ``l`` then reads only its own
  utterance's frames of layer ``l - 1`` (no conv padding), so every valid output equals the
  utterance's output alone; the few frames that straddle two utterances are computed and
  dropped (:func:`pack_waveforms`);
* the Transformer keeps its frames as one ``[N, D]`` matrix of valid frames
  (:class:`FramePacking`): the projections, feed-forward, norms, dropout and residuals run on
  ``N`` rows instead of ``B * T``, and only attention scatters them back into ``[B, T]``.

Both change only *where* the valid frames are computed, never what they are: tests compare
them with the padded computation. Torch.compile turns them off (its shape buckets want
padded, static shapes: ``speechssl.pretrain.perf.compile_encoder``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FramePacking:
    """Where the ``N`` valid frames of a padded ``[B, T]`` batch sit.

    ``index`` [N]: flat positions ``b * T + t`` of the valid frames, utterance by utterance.
    """

    index: Tensor
    batch: int
    time: int

    @classmethod
    def from_padding_mask(cls, padding_mask: Tensor) -> "FramePacking":
        """From a [B, T] bool mask, True on padding (one host sync: N is a shape)."""
        batch, time = padding_mask.shape
        index = torch.nonzero(~padding_mask.reshape(-1), as_tuple=True)[0]
        return cls(index, batch, time)

    def pack(self, x: Tensor) -> Tensor:
        """[B, T, ...] -> [N, ...] (differentiable)."""
        return x.reshape(self.batch * self.time, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """[N, ...] -> [B, T, ...], zeros on padding (differentiable)."""
        out = x.new_zeros(self.batch * self.time, *x.shape[1:]).index_copy(0, self.index, x)
        return out.view(self.batch, self.time, *x.shape[1:])


def _ranges(starts: Tensor, counts: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """[B, width] positions ``starts[b] + t`` and whether ``t < counts[b]``."""
    steps = torch.arange(width, device=starts.device)
    return starts[:, None] + steps[None, :], steps[None, :] < counts[:, None]


def pack_waveforms(waveforms: Tensor, lengths: list[int], stride: int) -> tuple[Tensor, list[int]] | None:
    """Utterances end to end on one row, each starting at a multiple of ``stride``.

    Returns ``(row [1, 1, S], starts)`` with ``starts[b]`` the sample where utterance ``b``
    begins, or None when the row would not be shorter than the padded batch (nothing to
    skip). The row is at least as long as the padded width, so a CNN that accepts the
    padded batch accepts the row.
    """
    batch, width = waveforms.shape
    spans = [-(-min(max(n, 0), width) // stride) * stride for n in lengths]
    starts = list(itertools.accumulate(spans[:-1], initial=0))
    total = max(starts[-1] + spans[-1], width)
    if total >= batch * width:
        return None
    device = waveforms.device
    starts_t = torch.tensor(starts, device=device)
    lengths_t = torch.tensor(lengths, device=device).clamp(0, width)
    positions, valid = _ranges(starts_t, lengths_t, width)
    row = waveforms.new_zeros(total).index_put((positions[valid],), waveforms[valid])
    return row.view(1, 1, total), starts


def unpack_frames(row: Tensor, starts: Tensor, counts: Tensor, frames: int) -> Tensor:
    """CNN output on the packed row [1, C, S'] -> padded [B, frames, C], zeros on padding.

    ``starts`` [B]: first frame of each utterance on the row; ``counts`` [B]: its valid frames.
    """
    positions, valid = _ranges(starts, counts.clamp(max=frames), frames)
    batch = starts.shape[0]
    flat = torch.arange(batch * frames, device=row.device).view(batch, frames)
    packing = FramePacking(flat[valid], batch, frames)
    return packing.unpack(row[0].t().index_select(0, positions[valid]))
