"""The embedded default corpus: multilingual labelled speech generated locally with eSpeak NG.

See :mod:`speechssl.data.synth.corpus` for the output layout and
:mod:`speechssl.data.synth.content` for what is said.
"""

from speechssl.data.synth.corpus import SynthConfig, format_summary, synthesize_corpus

__all__ = ["SynthConfig", "format_summary", "synthesize_corpus"]
