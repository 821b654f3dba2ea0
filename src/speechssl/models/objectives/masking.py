"""Span masking over time, with fairseq's ``compute_mask_indices`` semantics.

Shared by every masked-prediction objective (wav2vec 2.0 now, HuBERT later).
"""

from __future__ import annotations

import torch
from torch import Tensor


def span_mask(
    frame_lengths: Tensor,
    max_frames: int,
    *,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random spans to mask, as a [B, max_frames] bool tensor (True = masked).

    For an utterance of L valid frames (padding never counts and is never masked):
    ``n = max(min_masks, int(mask_prob * L / mask_length + u))`` with ``u ~ U[0, 1)``
    (probabilistic rounding), ``n`` distinct start frames drawn uniformly from
    ``[0, L - mask_length)``, each masking ``mask_length`` frames; spans may overlap and
    are clipped at L. With (0.65, 10) about 49 % of a long utterance ends up masked,
    not 65 %, because of the overlaps. When L is too short for ``n`` distinct starts
    the start range is widened to ``n + 1`` positions, as fairseq does, so short
    utterances get masked almost entirely rather than raising.

    Randomness comes from ``generator`` (CPU), so a caller can make masks a pure
    function of a seed.
    """
    if not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if mask_length < 1:
        raise ValueError(f"mask_length must be >= 1, got {mask_length}")
    lengths = frame_lengths.detach().to("cpu", torch.long).tolist()
    mask = torch.zeros(len(lengths), max_frames, dtype=torch.bool)
    for row, length in enumerate(lengths):
        length = min(int(length), max_frames)
        if length <= 0:
            continue
        draw = float(torch.rand((), generator=generator))
        num_spans = max(min_masks, int(mask_prob * length / mask_length + draw))
        if num_spans == 0:
            continue
        start_range = length - mask_length
        if start_range <= num_spans:
            start_range = num_spans + 1
        starts = torch.randperm(start_range, generator=generator)[:num_spans]
        frames = (starts[:, None] + torch.arange(mask_length)[None, :]).flatten()
        mask[row, frames[frames < length]] = True
    return mask.to(frame_lengths.device)


def mask_with_embedding(
    projected: Tensor, padding_mask: Tensor, embedding: Tensor, *, mask_prob: float, mask_length: int, min_masks: int
) -> tuple[Tensor, Tensor]:
    """Replace random spans of ``projected`` [B, T, D] by ``embedding`` [D]; returns ``(masked, mask)``.

    The encoder input of every masked-prediction objective (wav2vec 2.0, HuBERT): spans from
    :func:`span_mask` over each row's valid frames, padding never masked.
    """
    mask = span_mask(
        (~padding_mask).sum(dim=1), projected.shape[1], mask_prob=mask_prob, mask_length=mask_length,
        min_masks=min_masks,
    )
    return torch.where(mask.unsqueeze(-1), embedding.to(projected.dtype), projected), mask
