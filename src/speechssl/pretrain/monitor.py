"""Training monitors: JSONL records, TensorBoard scalars, and loud warnings.

Every record is one JSON object per line in ``metrics.jsonl`` (``split`` is "train"
or "valid"); TensorBoard gets the same numbers under ``<split>/<name>``. Only rank 0
writes.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from pathlib import Path
from typing import Any

log = logging.getLogger("speechssl.pretrain")


class Monitor:
    def __init__(self, out_dir: Path, *, tensorboard: bool, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self._tensorboard_dir = out_dir / "tensorboard" if tensorboard else None
        self._writer = None  # opened on the first record, after the run directory is settled

    def _tensorboard(self):  # type: ignore[no-untyped-def]
        if self._writer is None and self._tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # a dependency, but a slim install may lack it
                log.warning("tensorboard is not installed; writing metrics.jsonl only")
                self._tensorboard_dir = None
            else:
                self._writer = SummaryWriter(str(self._tensorboard_dir))
        return self._writer

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written by a run that died before its next checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            split, step = record["split"], record["step"]
            for key, value in record.items():
                if key in ("split", "step"):
                    continue
                if isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(f"{split}/{key}", value, step)
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        writer.add_scalar(f"{split}/{key}_{i}", item, step)
            writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class CollapseWatch:
    """Warns when the contrastive loss sits at chance, log(K+1), or the codebook collapses.

    Chance means the context vectors are as similar to the distractors as to the
    target: the known plateau of small-scale wav2vec 2.0 runs. Checked on the mean of
    the last ``window`` train records, from ``after_step`` on (warmup is allowed to
    sit there).
    """

    def __init__(self, chance_loss: float, entries: int, after_step: int, window: int = 5) -> None:
        self.chance = chance_loss
        self.entries = entries
        self.after_step = after_step
        self.recent: deque[float] = deque(maxlen=window)
        self.warned_plateau = False
        self.warned_codebook = False

    def observe(self, step: int, contrastive: float, perplexity: list[float]) -> list[str]:
        warnings: list[str] = []
        self.recent.append(contrastive)
        if step < self.after_step or len(self.recent) < self.recent.maxlen:
            return warnings
        mean = sum(self.recent) / len(self.recent)
        at_chance = abs(mean - self.chance) < 0.05 * self.chance / 4.6  # ~0.05 nats at K=100
        if at_chance and not self.warned_plateau:
            warnings.append(
                f"WARNING step {step}: contrastive loss {mean:.3f} sits at chance log(K+1) = {self.chance:.3f}; "
                "the model cannot tell targets from distractors (see docs/pretraining.md, 'The plateau')"
            )
        self.warned_plateau = at_chance
        collapsed = min(perplexity) < max(2.0, 0.02 * self.entries)
        if collapsed and not self.warned_codebook:
            warnings.append(
                f"WARNING step {step}: codebook perplexity {min(perplexity):.1f} of {self.entries} entries: "
                "the quantizer is collapsing onto a few codewords (raise objective.diversity_weight?)"
            )
        self.warned_codebook = collapsed
        return warnings
