"""speechssl: pretrain, benchmark and analyse self-supervised speech encoders.

The Python API (docs/python_api.md) is importable from here and loads lazily: ``import
speechssl`` imports nothing heavy, and ``speechssl.bench`` imports :mod:`speechssl.api`
(and torch only when the function runs)::

    import speechssl

    speechssl.make_synthetic_corpus("data/tiny", overrides={"hours": 0.05})
    run = speechssl.bench("mfcc", "lid", data="data/tiny", store="runs/results.db")
    print(run.primary_metric, run.score)

``speechssl.pretrain`` is the :mod:`speechssl.pretrain` package, which can be called: it
runs :func:`speechssl.api.pretrain`.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "BenchResult": "speechssl.api",
    "ResultStore": "speechssl.api",
    "bench": "speechssl.api",
    "load_upstream": "speechssl.api",
    "make_synthetic_corpus": "speechssl.api",
    "report": "speechssl.api",
    # The subpackage of the same name (an attribute of this package as soon as anything
    # imports it) is made callable in speechssl/pretrain/__init__.py.
    "pretrain": "speechssl.pretrain",
    "PretrainResult": "speechssl.pretrain",
    "Upstream": "speechssl.upstream",
    "ConfigError": "speechssl.errors",
    "SpeechSSLError": "speechssl.errors",
}

__all__ = list(_LAZY)

if _TYPE_CHECKING:
    from speechssl.api import BenchResult, ResultStore, bench, load_upstream, make_synthetic_corpus, pretrain, report
    from speechssl.errors import ConfigError, SpeechSSLError
    from speechssl.pretrain import PretrainResult
    from speechssl.upstream import Upstream


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'speechssl' has no attribute {name!r}")
    if name == "pretrain":
        return _importlib.import_module(module)
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
