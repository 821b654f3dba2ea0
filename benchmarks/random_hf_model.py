"""Write a randomly initialised ``transformers`` Wav2Vec2 directory (no download).

The benchmark's "HF upstream" reference when no real checkpoint may be fetched:
``tiny`` is our tiny preset's shape (2.5 M parameters), ``base`` is wav2vec 2.0 BASE
(95 M). Random weights keep the features meaningless but the compute exact, which is
what cache timings need; as a benchmark row it is the "untrained encoder" floor.

    .venv/bin/python benchmarks/random_hf_model.py --size tiny --out runs/hf-random-tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_random_wav2vec2(size: str, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from speechssl.models.config import EncoderConfig
    from speechssl.models.hf import hf_config_from

    if size == "base":
        config = Wav2Vec2Config()  # BASE: 12 x 768, group-norm CNN, no waveform normalisation
    else:
        config = hf_config_from(EncoderConfig.preset(size))
    torch.manual_seed(seed)
    model = Wav2Vec2Model(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    layer_norm = config.feat_extract_norm == "layer"
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0,
        do_normalize=layer_norm, return_attention_mask=layer_norm,
    ).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_random_wav2vec2(args.size, args.out, args.seed))


if __name__ == "__main__":
    main()
