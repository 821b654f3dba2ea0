"""Run one ``speechssl`` command that SIGKILLs itself at a chosen point (the suite's kill switch).

    python tests/faults/inject.py FAULT [speechssl arguments...]

The fault is installed by patching this process only (nothing in ``speechssl`` knows about
it), then ``speechssl.cli.main`` runs the command. At the chosen point the process sends
itself SIGKILL: no ``finally``, no ``atexit``, no flush -- what a preemption or the OOM
killer does. "Half-way through writing X" writes the first half of X's bytes, fsyncs them
and dies, so the torn file really is on disk.

FAULT is one of

``update:N``
    after the backward pass of the N-th optimizer update (pretraining or probe training),
    before the optimizer step: at its gradient clipping.
``checkpoint:NAME``
    half-way through ``torch.save`` of pretraining checkpoint NAME (``step_00000004.pt``,
    ``best.pt``) or of its temp file.
``metrics:STEP``
    half-way through appending the train record of STEP to a pretraining metrics.jsonl.
``stage2``
    inside the switch to stage 2: after the boundary checkpoint and the switch of the state and
    the data loader, before stage 2's first update.
``cache-batch:N``
    after the upstream's N-th batch while building a feature-cache entry.
``write:NAME``
    half-way through writing a file called NAME (or its temp file) with
    ``fsutil.write_file_synced`` (``index.json`` or ``COMPLETE`` of a cache entry or target
    set, bench's ``best.pt`` through ``fsutil.write_bytes_atomic``, ...).
``text:NAME``
    half-way through writing the temp file of NAME with ``Path.write_text``
    (``fsutil.write_text_atomic``: ``result.json``, ``report.md``, ``report.html``, ...).
``kmeans``
    when k-means starts fitting (``speechssl targets``).
``labels:N``
    while labelling the N-th utterance (``speechssl targets``).
``store``
    after a bench run wrote result.json, before the result store records it.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _write_half_and_die(handle, data: bytes) -> None:
    handle.write(data[: max(1, len(data) // 2)])
    handle.flush()
    os.fsync(handle.fileno())
    die()


def _open_file_named(name: str) -> int | None:
    """A descriptor of this process open on ``name`` or a temp file of it (whatever wraps it)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if _is_write_of(Path(target).name, name):
            return int(fd)
    return None


def _is_write_of(written: str, name: str) -> bool:
    """``written`` is ``name`` itself or a temp file of it (``.NAME.xxxx.tmp``, ``.NAME.tmp-PID``)."""
    return written == name or written.startswith(f".{name}.")


def install(fault: str) -> None:
    kind, _, arg = fault.partition(":")
    counter = {"n": 0}

    def nth(n: int) -> bool:
        counter["n"] += 1
        return counter["n"] == n

    if kind == "update":
        import torch

        real_clip = torch.nn.utils.clip_grad_norm_

        def clip(*args, **kwargs):
            if nth(int(arg)):
                die()
            return real_clip(*args, **kwargs)

        torch.nn.utils.clip_grad_norm_ = clip
    elif kind == "checkpoint":
        import torch

        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)):
                fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if _is_write_of(Path(f).name, arg) else None
            else:  # an open (possibly wrapped) temp file: find it by its name
                fd = _open_file_named(arg)
            if fd is not None:
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                os.write(fd, data[: len(data) // 2])
                os.fsync(fd)
                die()
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    elif kind == "metrics":
        import json

        from speechssl.pretrain.monitor import Monitor

        real_write = Monitor.write

        def write(self, record):
            if record.get("split") == "train" and record.get("step") == int(arg):
                with self.path.open("ab") as handle:
                    _write_half_and_die(handle, (json.dumps(record) + "\n").encode())
            return real_write(self, record)

        Monitor.write = write
    elif kind == "stage2":
        from speechssl.pretrain.trainer import Trainer

        real_enter = Trainer._enter_stage2

        def enter(self):
            real_enter(self)  # state and data loader switched, no stage-2 update or checkpoint yet
            die()

        Trainer._enter_stage2 = enter
    elif kind == "cache-batch":
        import speechssl.downstream.cache as cache

        real_check = cache._check_values

        def check_values(*args, **kwargs):
            real_check(*args, **kwargs)
            if nth(int(arg)):
                die()

        cache._check_values = check_values
    elif kind == "write":
        import speechssl.downstream.cache as cache
        import speechssl.fsutil as fsutil
        import speechssl.targets.store as store

        real_synced = fsutil.write_file_synced

        def write_file_synced(path, data):
            if _is_write_of(Path(path).name, arg):
                with open(path, "wb") as handle:
                    _write_half_and_die(handle, data)
            return real_synced(path, data)

        for module in (fsutil, cache, store):
            module.write_file_synced = write_file_synced
    elif kind == "text":
        real_text = Path.write_text

        def write_text(self, data, *args, **kwargs):
            if _is_write_of(self.name, arg):
                with open(self, "wb") as handle:
                    _write_half_and_die(handle, data.encode())
            return real_text(self, data, *args, **kwargs)

        Path.write_text = write_text
    elif kind == "kmeans":
        import speechssl.targets.build as build

        def fit(*args, **kwargs):
            die()

        build.fit_kmeans = fit
    elif kind == "labels":
        import speechssl.targets.build as build

        real_align = build.align_labels

        def align(*args, **kwargs):
            if nth(int(arg)):
                die()
            return real_align(*args, **kwargs)

        build.align_labels = align
    elif kind == "store":
        import speechssl.cli as cli

        def store_result(result, store_path):
            die()

        cli._store_result = store_result
    else:
        raise SystemExit(f"inject.py: unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from speechssl.cli import main

    sys.exit(main(sys.argv[2:]))
