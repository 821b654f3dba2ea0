"""speechssl: pretrain, benchmark and analyse self-supervised speech encoders."""

__version__ = "0.1.0"
