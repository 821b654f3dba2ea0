"""Optional dependencies: which extra brings which package, and one error when one is missing.

``pip install speechssl`` gives the core: torch (>= 2.4, whichever build is installed),
numpy, soundfile, lhotse and pyyaml (plus urllib3 and tqdm, which lhotse uses). That
is enough to import the package, run ``speechssl --help`` / ``config-keys`` / ``results``,
prepare and check corpora of 16 kHz audio, and pretrain. Everything else comes with an
extra named by what it is used for (pyproject.toml has the lists):

- ``bench``: downstream benchmarks and the synthetic corpus (scipy, scikit-learn, jiwer,
  sacrebleu, transformers, huggingface-hub, safetensors, peft, espeakng-loader);
- ``pretrain``: TensorBoard logs and HuBERT k-means targets (tensorboard, scikit-learn, scipy);
- ``report``: figures and rank statistics (matplotlib, scipy);
- ``energy``: energy and CO2 accounting (codecarbon); ``slurm``: SLURM sweeps (submitit);
- ``lm``: n-gram LM decoding (kenlm, pygtrie; pyctcdecode goes in with ``--no-deps``);
- ``ge2e``: the GE2E reference upstream (resemblyzer, installed with ``--no-deps``);
- ``all``: bench, pretrain, report, energy and slurm.

Code that needs one of these packages imports it through :func:`require` (or
:func:`lazy_import` for a module-level name), never with a bare ``import`` at the top of a
module that a core path imports. A missing package then raises one
:class:`~speechssl.errors.MissingExtraError` whose message names the package, what it was
needed for and the command that installs it; the CLI prints it as one line. An import that
still slips through as a plain ``ModuleNotFoundError`` is translated the same way by the
CLI (:func:`missing_extra`), with the table's generic purpose, and so is transformers 5
refusing a torch older than 2.6 (:func:`transformers_torch_mismatch`).

Tests: tests/test_packaging.py runs the CLI with every package of :data:`PACKAGES` hidden.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any, NamedTuple

from speechssl.errors import MissingExtraError, SpeechSSLError


class OptionalPackage(NamedTuple):
    distribution: str  # the name pip knows it by
    extra: str  # the speechssl extra that installs it
    purpose: str  # what speechssl uses it for, as "X is needed for <purpose>"


# Top-level import name -> where it comes from. The one place that knows the extras;
# tests/test_packaging.py checks that it agrees with pyproject.toml.
PACKAGES: dict[str, OptionalPackage] = {
    "scipy": OptionalPackage("scipy", "bench", "signal processing and rank statistics"),
    "sklearn": OptionalPackage("scikit-learn", "bench", "macro-F1 scores and k-means"),
    "jiwer": OptionalPackage("jiwer", "bench", "WER/CER scoring"),
    "sacrebleu": OptionalPackage("sacrebleu", "bench", "BLEU/chrF scoring"),
    "transformers": OptionalPackage("transformers", "bench", "Hugging Face encoders (hf: upstreams, export-hf)"),
    "huggingface_hub": OptionalPackage("huggingface-hub", "bench", "Hugging Face hub ids"),
    "safetensors": OptionalPackage("safetensors", "bench", "safetensors weight files"),
    "peft": OptionalPackage("peft", "bench", "the LoRA adaptation regime"),
    "espeakng_loader": OptionalPackage("espeakng-loader", "bench", "the synthetic corpus (eSpeak NG)"),
    "tensorboard": OptionalPackage("tensorboard", "pretrain", "TensorBoard logs"),
    "matplotlib": OptionalPackage("matplotlib", "report", "report figures"),
    "codecarbon": OptionalPackage("codecarbon", "energy", "energy and CO2 accounting"),
    "submitit": OptionalPackage("submitit", "slurm", "SLURM sweeps"),
    "kenlm": OptionalPackage("kenlm", "lm", "n-gram LM decoding"),
    "pygtrie": OptionalPackage("pygtrie", "lm", "n-gram LM decoding"),
    "pyctcdecode": OptionalPackage("pyctcdecode", "lm", "n-gram LM decoding"),
    "resemblyzer": OptionalPackage("resemblyzer", "ge2e", "the GE2E upstream"),
}

# Extras whose packages pip must not resolve on its own (their declared dependencies are
# wrong for us), with the command that installs them the way `make` does.
_SPECIAL_HINTS = {
    "pyctcdecode": "pip install 'speechssl[lm]' && pip install --no-deps 'pyctcdecode>=0.5' (`make lm`)",
    "resemblyzer": "pip install --no-deps 'resemblyzer==0.1.4' (`make` installs it)",
}


def install_hint(module: str, extra: str | None = None) -> str:
    """The command that installs the package of ``module`` (a top-level import name)."""
    top = module.partition(".")[0]
    if extra is None and top in _SPECIAL_HINTS:
        return _SPECIAL_HINTS[top]
    if extra is None:
        extra = PACKAGES[top].extra if top in PACKAGES else "all"
    return f"pip install 'speechssl[{extra}]'"


def _error(top: str, purpose: str | None, extra: str | None) -> MissingExtraError:
    known = PACKAGES.get(top)
    package = known.distribution if known else top
    return MissingExtraError(package, purpose or (known.purpose if known else "this command"),
                             install_hint(top, extra), module=top)


def require(module: str, purpose: str | None = None, *, extra: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``, or one :class:`MissingExtraError` if its package is absent.

    ``purpose`` completes "<package> is needed for ...", e.g. ``"ASR scoring"``; ``extra``
    overrides the table's extra. Only the absence of ``module``'s own top-level package
    becomes the error: an installed package that fails inside (a broken install, or one
    of *its* dependencies missing) keeps its original exception.
    """
    top = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != top:
            raise
        raise _error(top, purpose, extra) from None


def check_installed(modules: Iterable[str], purpose: str, *, extra: str | None = None) -> None:
    """Raise :class:`MissingExtraError` for the first of ``modules`` whose package is absent,
    without importing any: a long command calls this before its work starts, so that a
    package needed only at its end (a metric) does not fail it after an hour."""
    for module in modules:
        top = module.partition(".")[0]
        if importlib.util.find_spec(top) is None:
            raise _error(top, purpose, extra)


class _LazyModule(ModuleType):
    """A module object that imports the real one through :func:`require` on first attribute access."""

    def __init__(self, module: str, purpose: str | None, extra: str | None) -> None:
        super().__init__(module)
        self.__dict__["_lazy"] = (module, purpose, extra)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        module, purpose, extra = self.__dict__["_lazy"]
        real = require(module, purpose, extra=extra)
        self.__dict__.update(real.__dict__)  # later accesses skip __getattr__
        return getattr(real, attr)


def lazy_import(module: str, purpose: str | None = None, *, extra: str | None = None) -> ModuleType:
    """A stand-in for ``import module`` at module level: nothing is imported until an
    attribute is used, and then a missing package raises :class:`MissingExtraError`.

    ``sps = lazy_import("scipy.stats", "rank statistics")`` then ``sps.rankdata(...)``.
    """
    return _LazyModule(module, purpose, extra)


def missing_extra(exc: BaseException) -> SpeechSSLError | None:
    """One clear error for an import failure of an optional package, else None: a
    ``ModuleNotFoundError`` of a package in :data:`PACKAGES` becomes its
    :class:`MissingExtraError`, and transformers refusing the installed torch becomes
    :func:`transformers_torch_mismatch`."""
    if isinstance(exc, MissingExtraError):
        return exc
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.partition(".")[0] in PACKAGES:
        return _error(exc.name.partition(".")[0], None, None)
    if isinstance(exc, ImportError):
        return transformers_torch_mismatch(str(exc))
    return None


def transformers_torch_mismatch(detail: str = "") -> SpeechSSLError | None:
    """If the imported transformers has disabled its PyTorch models because the installed
    torch is older than it supports, the error that says so and what to do; else None.

    speechssl itself needs torch >= 2.4, but transformers 5 refuses torch < 2.6 and then
    fails with a page of text. transformers 4.x works with torch 2.4 (``make wheel-check
    TORCH=torch==2.4.1`` ran export-hf and an hf: benchmark with 4.57), hence the advice.
    """
    transformers = sys.modules.get("transformers")
    torch = sys.modules.get("torch")
    if transformers is None or torch is None:
        return None
    try:
        from transformers.utils import is_torch_available

        if is_torch_available():
            return None
    except Exception:  # noqa: BLE001 - an unknown transformers layout: say nothing rather than guess
        return None
    found = re.search(r"PyTorch\s*>=\s*([0-9][0-9.]*[0-9])", detail)
    needs = f"torch >= {found.group(1)}" if found else "a newer torch"
    return SpeechSSLError(
        f"transformers {getattr(transformers, '__version__', '?')} needs {needs} for Hugging Face encoders, "
        f"this environment has torch {torch.__version__}: upgrade torch, or keep it and "
        f"pip install 'transformers<5'"
    )
