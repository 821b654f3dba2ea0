"""Small file-system helpers for crash-safe writes, shared by checkpoints, caches and results,
and :func:`safe_torch_load`, the one ``torch.load`` of the package."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any


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
    """Write ``text`` to a temp file beside ``path``, then rename: readers never see half a file.

    A failed write (disk full, permission denied) removes the temp file, leaves ``path``
    as it was and raises :func:`write_error`'s one-line error naming ``path``.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise write_error(path, exc) from exc


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Like :func:`write_text_atomic` for bytes, fsynced before the rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_file_synced(tmp, data)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise write_error(path, exc) from exc
    fsync_dir(path.parent)


_WRITE_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "no space left on device (disk quota exceeded)",
    errno.EACCES: "permission denied (is the directory read-only?)",
    errno.EPERM: "permission denied (is the directory read-only?)",
    errno.EROFS: "read-only file system",
}


def write_error(path: str | Path, exc: OSError, what: str = "") -> Exception:
    """The one-line :class:`~speechssl.errors.SpeechSSLError` for an ``OSError`` while writing
    ``path`` (``what`` names the kind of file): ``cannot write <what> <path>: no space left on
    device``. Writers raise it after removing their temp files, so nothing half-written stays."""
    from speechssl.errors import SpeechSSLError

    reason = _WRITE_REASONS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__)
    return SpeechSSLError(f"cannot write {what + ' ' if what else ''}{path}: {reason}")


def _discard(path: Path) -> None:
    """Remove a temp file of a failed write (best effort: the disk may still be full)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


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


# ---------------------------------------------------------------- loading tensors safely

_GLOBAL = re.compile(r"GLOBAL (\S+?)\.?(?:\s|$)")
_OPERAND = re.compile(r"Unsupported operand \d+")


def safe_torch_load(path: str | Path, what: str = "checkpoint", *, error: type | None = None) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: the one place speechssl
    calls ``torch.load`` (a test scans the source for others).

    ``weights_only=True`` makes torch refuse any pickle that would import or call code,
    but its refusal is a page of text that ends by advising ``weights_only=False``, i.e.
    running the file. Every failure here is one line of ours instead (``error``, default
    :class:`~speechssl.errors.SpeechSSLError`), via :func:`describe_load_failure`.
    """
    import torch

    from speechssl.errors import SpeechSSLError

    error = error or SpeechSSLError
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:  # missing, a directory, permission denied
        raise error(f"{path}: cannot read {what} ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:  # refused pickle, truncated zip, not a torch file at all
        raise error(describe_load_failure(path, what, exc)) from None


def is_code_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's ``weights_only`` refusal of a file that names code to run."""
    text = str(exc)
    return bool(_GLOBAL.search(text)) or "TorchScript" in text


def describe_load_failure(path: str | Path, what: str, exc: BaseException) -> str:
    """One line for a failed ``torch.load(weights_only=True)`` of ``path``: refused (the
    file would run code) or truncated/corrupt. Never torch's text, which is many lines and
    recommends ``weights_only=False``."""
    text = str(exc)
    found = _GLOBAL.search(text)
    if found or "TorchScript" in text:
        names = f"it names {found.group(1)}, code that loading would import or run" if found else \
            "a TorchScript archive: loading it would run its code"
        return f"{path}: refused: not a plain tensor {what} ({names}); speechssl never loads such files"
    if isinstance(exc, EOFError):
        detail = "the file ends early"
    elif _OPERAND.search(text):
        detail = "not a file written by torch.save"
    elif "weights_only" in text or "Weights only" in text:
        detail = "not a plain tensor file"
    else:
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        detail = first.split(". ")[0][:120]
        if not any(ch.isalpha() for ch in detail):  # e.g. torch's bare magic number of a junk file
            detail = "not a file written by torch.save"
    return f"{path}: truncated or corrupt {what} ({detail})"
