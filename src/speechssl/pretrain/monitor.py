"""Training monitors: JSONL records, TensorBoard scalars, and loud warnings.

Every record is one JSON object per line in ``metrics.jsonl`` (``split`` is "train"
or "valid"); TensorBoard gets the same numbers under ``<split>/<name>``. Only rank 0
writes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from speechssl.models.objectives.contrastive import CollapseWatch

__all__ = ["CollapseWatch", "Monitor"]

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
                log.warning("tensorboard is not installed; writing metrics.jsonl only "
                            "(pip install 'speechssl[pretrain]' adds TensorBoard logs)")
                self._tensorboard_dir = None
            else:
                self._writer = SummaryWriter(str(self._tensorboard_dir))
        return self._writer

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written by a run that died before its next checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if (at := _step_of(line)) is not None and at <= step]
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
                elif isinstance(value, dict):  # e.g. hours_by_language
                    for name, item in value.items():
                        writer.add_scalar(f"{split}/{key}/{name}", item, step)
            writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a line cut short by a killed writer (dropped)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
