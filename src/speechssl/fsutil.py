"""Small file-system helpers for crash-safe writes, shared by checkpoints, caches and results."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable; a no-op where unsupported (e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Like :func:`write_text_atomic` for bytes, fsynced before the rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write_file_synced(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_file_synced(path: Path, data: bytes) -> None:
    """Write ``data`` and fsync it: for files inside a temp directory that is renamed into place."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a builder that died leaves stale temp files)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
