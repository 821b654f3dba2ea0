"""Process memory: the current RSS, and keeping it flat over long runs.

``current_rss_mb()`` is what the pretraining log records as ``rss_mb`` (the resident set
now, from ``/proc/self/statm``; ``ru_maxrss`` would be the peak, which never goes down).

:func:`bound_shape_caches` is the fix for the growth issue 4 saw (2.4 -> 4.4 GB over 450
pretraining updates on CPU); ``benchmarks/pretrain_rss.py`` measures it.
"""

from __future__ import annotations

import os
import resource
import sys

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux); the peak RSS where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()


def current_rss_mb() -> float:
    return round(current_rss_bytes() / 2**20, 1)


def peak_rss_bytes() -> int:
    """Largest RSS this process has had (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# ---------------------------------------------------------------------- shape-keyed caches

# Capacities of the two caches that PyTorch's CPU convolutions (oneDNN via ideep) keep per
# input shape; the library defaults are 1024. 64 is meant to hold the primitives of one
# forward + backward pass of our encoders (7 CNN layers + the positional convolution,
# forward / backward-data / backward-weights each, plus reorders: about 30), so runs
# whose shapes repeat (fixed-size batches, the same dev set) still hit the cache.
SHAPE_CACHE_CAPACITY = 64
SHAPE_CACHE_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
# "0" / "off" leaves the libraries' defaults (benchmarks/pretrain_rss.py --compare).
SWITCH_ENV = "SPEECHSSL_BOUND_SHAPE_CACHES"


def bound_shape_caches() -> dict[str, str]:
    """Cap the per-shape caches of CPU convolutions; returns the settings now in effect.

    Why: every pretraining batch has a new shape (another number of crops, another longest
    crop). oneDNN, which runs PyTorch's CPU convolutions, creates a primitive per shape
    and keeps up to 1024 of them (ideep, its PyTorch glue, keeps another 1024), and the
    memory that goes with them grows with the number of shapes seen. Measured on the tiny
    wav2vec 2.0 with 16 s batches (``benchmarks/pretrain_rss.py --compare``): RSS 2.76 GB
    at update 50 and 3.81 GB at update 450 (+38 %) with the library defaults; ~1.0 GB
    throughout (+1.9 %) with both caches at 64, at the same speed (a new shape misses
    the cache at any capacity). What remains is a band of roughly +-20 % from update to
    update: freed heap memory that glibc keeps for the next batch, reused rather than
    grown. A conv stack alone shows the same (tests/faults/test_rss.py).

    The capacities are read by the libraries when the first convolution runs, so this
    must be called before that (the CLI calls it first thing; so does ``pretrain()``).
    A value the user exported wins; ``SPEECHSSL_BOUND_SHAPE_CACHES=0`` turns it off.
    GPU runs are unaffected (cuDNN and the CUDA caching allocator are separate).
    """
    if os.environ.get(SWITCH_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return {}
    for name in SHAPE_CACHE_ENV:
        os.environ.setdefault(name, str(SHAPE_CACHE_CAPACITY))
    return {name: os.environ[name] for name in SHAPE_CACHE_ENV}
