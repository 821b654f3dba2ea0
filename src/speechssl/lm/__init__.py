"""Language models for decoding: a word n-gram estimator that writes ARPA files.

Pure Python (no torch), so that LMs can be built and checked on any machine; decoding with
them lives in :mod:`speechssl.downstream.lm_decode`.
"""

from speechssl.lm.ngram import BOS, EOS, UNK, ArpaModel, NGramModel, arpa_unigrams

__all__ = ["BOS", "EOS", "UNK", "ArpaModel", "NGramModel", "arpa_unigrams"]
