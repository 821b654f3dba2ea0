"""What every pretraining objective is: an encoder plus the heads and loss around it.

The trainer only ever talks to this interface; picking an objective is a config value
(``objective: hubert``) looked up in :data:`speechssl.models.objectives.OBJECTIVES`,
never a branch in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from speechssl.models.encoder import EncoderOutput, SpeechEncoder
from speechssl.models.objectives.masking import mask_with_embedding


@dataclass
class ObjectiveOutput:
    """What a pretraining objective returns for one micro-batch."""

    loss: Tensor
    """Scalar to back-propagate (already a per-frame mean over this micro-batch)."""
    stats: dict[str, Tensor] = field(default_factory=dict)
    """Detached scalars (or 1-D tensors, e.g. per-group perplexity) for the monitors.
    Every objective reports ``loss`` and ``masked_frames`` (validation weights by it)."""


class PretrainingObjective(nn.Module):
    """Base class: ``forward(waveforms, lengths, *, num_updates, targets) -> ObjectiveOutput``."""

    needs_targets: bool = False
    """True when the trainer must hand frame-level targets [B, T', n_sets] (-1 = none)."""

    @property
    def encoder(self) -> SpeechEncoder:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def encode_masked(
        self, waveforms: Tensor, lengths: Tensor | None, *, mask_prob: float, mask_length: int, min_masks: int
    ) -> tuple[EncoderOutput, Tensor]:
        """The encoder's pass with random spans of its input replaced by the mask embedding.

        Returns ``(output, mask [B, T'])``; the mask never covers padding.
        """
        captured: dict[str, Tensor] = {}

        def mask_fn(projected: Tensor, padding_mask: Tensor) -> Tensor:
            masked, captured["mask"] = mask_with_embedding(
                projected, padding_mask, self.encoder.mask_embedding,
                mask_prob=mask_prob, mask_length=mask_length, min_masks=min_masks,
            )
            return masked

        out = self.encoder(waveforms, lengths, mask_fn=mask_fn)
        return out, captured["mask"]

    def monitor_stats(self) -> dict[str, Any]:
        """Numbers too costly for every update, taken when a train record is written."""
        return {}

    def check_collapse(self, step: int, record: dict[str, Any]) -> list[str]:
        """Warnings about a train record (objective-specific collapse signs)."""
        return []

    def summary(self, record: dict[str, Any]) -> str:
        """A one-line progress summary of a train or valid record."""
        return f"loss {record['loss']:.3f}"
