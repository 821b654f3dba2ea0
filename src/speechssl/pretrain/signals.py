"""Graceful stop of a pretraining run on SIGTERM / SIGUSR2.

While :class:`StopSignals` is active, a listed signal does not kill the process: it asks the
trainer to finish the update in progress and then

* ``"stop"``: write a step checkpoint (atomically, as every checkpoint) and raise
  :class:`TrainingInterrupted`; rerunning the same command resumes from that checkpoint
  through the trainer's ordinary resume path;
* ``"save"``: write that checkpoint and keep training (used under submitit for SIGTERM, which
  SLURM sends before killing a preempted job and which submitit otherwise ignores).

A plain run (``speechssl pretrain``, torchrun, a bare ``srun``) stops on SIGTERM and SIGUSR2.
Under DDP the ranks agree on the request once per update (one all-reduce of two numbers), so
every rank stops after the same update even if only one of them got the signal.

A second stop signal while the first is pending falls back to the handler that was there before
(a plain run: the default action, i.e. exit at once; the last checkpoint on disk stays valid).
Processes forked from the trainer (DataLoader workers) inherit the handler: there SIGUSR2 is
ignored, so SLURM's pre-timeout SIGUSR2, which reaches every process of a job step, does not
kill the workers under the trainer's feet. SIGTERM keeps its default action in them (torch
installs its own SIGTERM handler in DataLoader workers anyway): a SIGTERM sent to every process
ends the workers, and with ``data.num_workers > 0`` the run then fails at its next batch and
resumes from the last checkpoint on disk (docs/pretraining.md, "Scale-out").
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Mapping

from speechssl.errors import SpeechSSLError

STOP = "stop"
SAVE = "save"
_ACTION_CODE = {"": 0, SAVE: 1, STOP: 2}
_CODE_ACTION = {code: action for action, code in _ACTION_CODE.items()}

# What a plain (non-submitit) run does with each signal.
PLAIN_RUN_SIGNALS: dict[int, str] = {signal.SIGTERM: STOP, signal.SIGUSR2: STOP}


class TrainingInterrupted(SpeechSSLError):
    """A stop signal arrived; the update in progress was finished and checkpointed."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum  # what a shell reports for a process ended by that signal
        super().__init__(
            f"stopped by {signal_name(signum)} after update {step}; checkpoint {checkpoint} written. "
            "Run the same command again to continue from it"
        )


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """Context manager: while active, ``actions`` (signal number -> "stop" | "save") ask for a
    checkpoint at the end of the current update instead of killing the process.

    Handlers can only be installed from the main thread; elsewhere this is a no-op (the run then
    keeps the process's signal handling as it is).
    """

    def __init__(self, actions: Mapping[int, str] | None = None) -> None:
        self.actions = dict(PLAIN_RUN_SIGNALS if actions is None else actions)
        for action in self.actions.values():
            if action not in (STOP, SAVE):
                raise ValueError(f"unknown stop action {action!r}")
        self.action = ""
        self.signum = 0
        self._previous: dict[int, Any] = {}
        self._pid = 0

    # ------------------------------------------------------------------ the request

    @property
    def requested(self) -> tuple[str, int]:
        """(action, signal number) of the pending request; ("", 0) if none."""
        return self.action, self.signum

    def saved(self) -> None:
        """The trainer wrote the checkpoint of a "save" request."""
        if self.action == SAVE:
            self.action, self.signum = "", 0

    @staticmethod
    def encode(action: str, signum: int) -> tuple[float, float]:
        return float(_ACTION_CODE[action]), float(signum)

    @staticmethod
    def decode(code: float, signum: float) -> tuple[str, int]:
        return _CODE_ACTION[int(code)], int(signum)

    # ------------------------------------------------------------------ installation

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._pid = os.getpid()
        for signum in self.actions:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: not the trainer
            if signum == signal.SIGTERM:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        action = self.actions[signum]
        if action == STOP and self.action == STOP:
            self._fall_back(signum, frame)
            return
        if _ACTION_CODE[action] >= _ACTION_CODE[self.action]:
            self.action, self.signum = action, signum
        what = "stop" if action == STOP else "keep training"
        again = " (send it again to stop at once)" if action == STOP else ""
        # os.write, not print: a handler may interrupt a print to the same stream.
        os.write(2, f"pretrain: got {signal_name(signum)}: finishing this update, writing a checkpoint, "
                    f"then {what}{again}\n".encode())

    def _fall_back(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
