"""Where the waveform CNN's time goes: forward + backward of each block, and of its convolution alone.

Builds the feature extractor of an encoder preset, runs a padded batch of ``--crops`` random
waveforms (lengths spread between ``--min-seconds`` and ``--max-seconds``) through it once to
get every block's input, then times each block on its own input (median of ``--repeats``):

* ``block``: convolution + norm (the padding-aware GroupNorm of the first block gets the
  batch's valid frame counts) + GELU, forward and backward;
* ``conv``: the convolution alone, forward and backward;
* ``GFLOP/s``: the convolution's FLOPs (2 per MAC; input gradient for every block but the
  first, whose input is the waveform) over its time.

``block - conv`` is what the norm and the activation cost. The batch size and lengths default
to ``benchmarks/pretrain_throughput.py --quick``'s (6 crops, 2-4 s).

    python benchmarks/cnn_blocks.py --model base
    python benchmarks/cnn_blocks.py --model tiny --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch

from speechssl.models.config import EncoderConfig
from speechssl.models.feature_extractor import FeatureExtractor, conv_output_lengths

SAMPLE_RATE = 16_000


def median_ms(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "base"], default="base")
    parser.add_argument("--crops", type=int, default=6)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=3.63)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    cfg = EncoderConfig.preset(args.model)
    extractor = FeatureExtractor(cfg.conv_layers, cfg.conv_norm, cfg.conv_bias)
    lengths = torch.linspace(args.max_seconds, args.min_seconds, args.crops).mul(SAMPLE_RATE).long()
    waves = torch.randn(args.crops, int(lengths.max())) * (torch.arange(int(lengths.max()))[None] < lengths[:, None])
    first_frames = conv_output_lengths(lengths, extractor.layer_specs[:1])

    inputs, x = [], waves.unsqueeze(1)
    with torch.no_grad():
        for index, block in enumerate(extractor.conv_layers):
            inputs.append(x)
            x = block(x, first_frames if index == 0 else None)

    print(f"{args.model} CNN, batch {args.crops} x {lengths.max() / SAMPLE_RATE:.2f} s padded, "
          f"{torch.get_num_threads()} threads, medians of {args.repeats}")
    print(f"{'block':>5} {'input':>18} {'block ms':>9} {'conv ms':>8} {'conv GFLOP/s':>13}")
    total_block = total_conv = 0.0
    for index, (block, x) in enumerate(zip(extractor.conv_layers, inputs)):
        needs_input_grad = index > 0

        def run(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor = x) -> None:
            block.zero_grad(set_to_none=True)
            inp = x.detach().requires_grad_(needs_input_grad)
            out = fn(inp)
            out.backward(torch.ones_like(out))

        block_ms = median_ms(lambda: run(lambda t: block(t, first_frames if index == 0 else None)), args.repeats)
        conv_ms = median_ms(lambda: run(block.conv), args.repeats)
        channels, kernel, stride, padding = extractor.layer_specs[index]
        out_frames = (x.shape[2] + 2 * padding - kernel) // stride + 1
        passes = 3 if needs_input_grad else 2  # forward, weight gradient, input gradient
        flops = 2 * passes * x.shape[0] * out_frames * channels * x.shape[1] * kernel
        total_block += block_ms
        total_conv += conv_ms
        print(f"{index:>5} {str(tuple(x.shape)):>18} {block_ms:>9.1f} {conv_ms:>8.1f} {flops / conv_ms / 1e6:>13.1f}")
    print(f"{'all':>5} {'':>18} {total_block:>9.1f} {total_conv:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
