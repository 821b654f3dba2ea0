"""Real corpora: ``speechssl prepare NAME ROOT --out DIR`` -> the manifests every command reads.

One module per corpus, each with ``prepare(root, out, **options) -> corpus.json dict``.
Recipes are imported on first use (the CLI's start-up stays light). Options are keyword
arguments a recipe declares; an option a recipe does not take is refused with the list of
those it does. See ``docs/corpora.md`` for every corpus's layout and tasks.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from speechssl.corpora.base import CorpusError, summary

__all__ = ["CorpusError", "RECIPES", "prepare", "recipe_options", "summary"]

RECIPES: dict[str, str] = {
    "folder": "speechssl.corpora.folder",
    "kaldi": "speechssl.corpora.kaldi",
    "librispeech": "speechssl.corpora.librispeech",
    "librilight": "speechssl.corpora.librispeech",  # the limited fine-tuning splits
    "mls": "speechssl.corpora.mls",
    "commonvoice": "speechssl.corpora.commonvoice",
    "fleurs": "speechssl.corpora.fleurs",
    "voxpopuli": "speechssl.corpora.voxpopuli",
    "mlsuperb": "speechssl.corpora.mlsuperb",
    "voxceleb": "speechssl.corpora.voxceleb",
    "iemocap": "speechssl.corpora.iemocap",
    "slurp": "speechssl.corpora.slurp",
    "fsc": "speechssl.corpora.fsc",
    "buckeye": "speechssl.corpora.buckeye",
    "covost2": "speechssl.corpora.covost2",
}
"""Corpus name -> module with a ``prepare`` function."""


def _recipe(name: str):
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CorpusError(f"unknown corpus {name!r}{hint}; known: {', '.join(sorted(RECIPES))}")
    module = importlib.import_module(RECIPES[name])
    # A module may hold several recipes (librispeech + librilight): prepare_<name> first.
    return getattr(module, f"prepare_{name}", None) or module.prepare


def recipe_options(name: str) -> list[str]:
    """The keyword options ``name``'s recipe takes."""
    parameters = inspect.signature(_recipe(name)).parameters
    return [p for p, spec in parameters.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY]


def prepare(name: str, root: str | Path, out: str | Path, **options: Any) -> dict[str, Any]:
    """Prepare corpus ``name`` from its local copy at ``root`` into the manifest directory ``out``."""
    recipe = _recipe(name)
    allowed = recipe_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise CorpusError(f"{name}: unknown option(s) {', '.join(unknown)}; it takes: {', '.join(allowed) or 'none'}")
    return recipe(Path(root).expanduser(), Path(out), **options)
