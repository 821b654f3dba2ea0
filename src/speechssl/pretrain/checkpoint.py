"""Atomic checkpoints: write to a temp file in the same directory, fsync, rename.

A reader therefore sees either the previous complete file or the new complete file,
never a partial one, even if the writer is killed with SIGKILL mid-write. Files are
loaded with ``torch.load(weights_only=True)`` (:func:`speechssl.fsutil.safe_torch_load`): a
checkpoint is data, not code.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from speechssl.errors import SpeechSSLError
from speechssl.fsutil import fsync_dir, safe_torch_load, write_error

FORMAT = "speechssl.pretrain/1"
_STEP_FILE = re.compile(r"^step_(\d{8,})\.pt$")


def save_atomic(obj: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temp file, fsync, rename. A failed write (disk full, read-only
    directory) removes the temp file, keeps the previous ``path`` and raises one line
    naming ``path`` (torch itself reports a full disk as an obscure ``RuntimeError``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc, "checkpoint") from exc
    watch = None
    try:
        with os.fdopen(fd, "wb") as handle:
            watch = _WriteWatch(handle)
            torch.save(obj, watch)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        failure = exc if isinstance(exc, OSError) else getattr(watch, "error", None)
        if failure is not None:
            raise write_error(path, failure, "checkpoint") from exc
        raise
    fsync_dir(path.parent)
    return path


class _WriteWatch:
    """A file handle that remembers the ``OSError`` of a failed write (torch re-raises it as a
    ``RuntimeError`` whose text no longer says what went wrong)."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SpeechSSLError(f"checkpoint not found: {path}")
    state = safe_torch_load(path, "checkpoint")  # one line of ours if refused or corrupt
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SpeechSSLError(f"{path} is not a speechssl pretraining checkpoint (format {FORMAT})")
    return state


def step_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the step checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _STEP_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_loadable(directory: Path) -> dict[str, Any] | None:
    """The newest step checkpoint that loads; unreadable ones are reported and skipped."""
    for step, path in reversed(step_checkpoints(directory)):
        try:
            return load_checkpoint(path)
        except SpeechSSLError as exc:
            warnings.warn(f"skipping unreadable checkpoint of step {step}: {exc}", stacklevel=2)
    return None


def prune(directory: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (``best.pt`` is not one of them)."""
    for _, path in step_checkpoints(directory)[:-keep_last]:
        path.unlink(missing_ok=True)


def remove_stale_temp_files(directory: Path) -> None:
    if directory.is_dir():
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)




def load_pretraining_model(path: str | Path):  # -> tuple[PretrainingObjective, PretrainConfig]
    """The model (eval mode) and run config stored in a pretraining checkpoint.

    The config holds everything needed to rebuild the model (HuBERT's label counts
    included), so the target sets need not exist any more.
    """
    from speechssl.config import from_dict
    from speechssl.models.objectives import build_objective
    from speechssl.pretrain.config import PretrainConfig

    state = load_checkpoint(path)
    cfg = from_dict(PretrainConfig, state["config"])
    model = build_objective(cfg.objective, cfg.encoder, cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg
