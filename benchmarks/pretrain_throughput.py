"""Pretraining throughput: our wav2vec 2.0 step against ``transformers.Wav2Vec2ForPreTraining``.

Both models are built in this process from one configuration -- our ``tiny`` preset by
default (``--model base`` for BASE) with the objective defaults (G=2 groups of V=320
codevectors, K=100 distractors, span masks 0.65/10; codevector_dim = final_dim = 128
for tiny, 256 for base) -- mapped to a ``Wav2Vec2Config`` by
:func:`speechssl.models.hf.hf_config_from` (conv layout and norm, widths, depth, heads,
positional conv, pre/post-LN, every dropout, layerdrop, quantizer, K, logit
temperature, diversity weight, masking). The HF model then gets *our* initial weights
(same parameter names, see ``speechssl.models.hf``), so both start from the same point.

One step, timed the same way on both sides, on the same padded batch:

* forward + backward + ``AdamW.step()`` (each model has its own AdamW with the same
  hyper-parameters as ``speechssl pretrain``), model in train mode, fp32;
* ours: ``Wav2Vec2Pretraining(waveforms, lengths, num_updates=step)`` draws its span
  masks and distractors inside ``forward``;
* transformers: as in its official pretraining example
  (``run_wav2vec2_pretraining_no_trainer.py``), ``_compute_mask_indices`` (restricted to
  valid frames through the feature-level attention mask) and ``_sample_negative_indices``
  are computed *inside the timed step* with numpy, then passed as
  ``mask_time_indices`` / ``sampled_negative_indices`` together with the sample-level
  ``attention_mask``; the summed loss is divided by the number of masked frames (the
  example's per-frame normalisation) and the Gumbel temperature is set each step with
  ``set_gumbel_temperature`` to our schedule's value.

The batch is ``B`` crops of 2-4 s (``--min-crop/--max-crop``) adding up to
``--batch-seconds`` of audio, zero-padded to the longest: random speech-like noise
(harmonics of a wandering f0 plus noise, shaped by formant resonators and a syllable-rate
envelope), or real crops from a corpus made by ``speechssl corpus synth`` with ``--data``.
Each side is warmed up, then steps are interleaved (ours, theirs, ours, theirs, ...) so
that slow drifts of a shared machine hit both alike; we report the median seconds per
step and audio seconds per wall second. The last line is
``ratio: X`` = our audio-seconds-per-second / transformers' (> 1: ours is faster).

Why it is fair, and the known differences:

* same config, same weights at the start, same batch, same attention (both use
  ``scaled_dot_product_attention`` with the padding mask), same optimizer and thread
  count; both compute masks and negatives on the host inside the step;
* the contrastive term differs in *how much* work it does, which is the point of our
  implementation: transformers gathers K distractor vectors for *every* frame (masked or
  not, padding included) into a [K+1, B, T, D] tensor and takes a cosine along it; we
  take cosines only among the masked frames of each utterance with one [B, M, M] bmm
  and gather the K logits from it. Its quantizer also runs on every frame; ours only on
  masked ones (the only targets ever used);
* ours skips the padding (``speechssl.models.packing``: the CNN on one row holding the
  utterances end to end, the Transformer layers on the valid frames only); transformers
  computes every padded frame. Each side's GFLOP/step counts the work it does, so ours is
  lower for the same audio (the ``GF/audio-s`` column);
* ours additionally computes wav2vec 2.0's L2 penalty on the CNN features (weight 10,
  part of the fairseq loss, absent from transformers' model) and, for BASE, scales the
  CNN gradient by ``feature_grad_mult=0.1``; both are a handful of element-wise ops;
* layerdrop (0.05) draws independently on each side, so a step may skip a layer;
  medians over the repeats absorb this. FLOPs are counted with layer drop off on both sides
  (every layer), so MFU is the full model's work over a step that skips ~5 % of its
  Transformer layers on average: at base that overstates MFU by ~2 %, on both sides alike.

Run it on an otherwise idle machine. With other processes on the cores, multi-threaded
ops stall at their OpenMP barriers whenever one of their threads is descheduled: the step
slows down several-fold (AdamW's many small ops a hundred-fold) and the ratio becomes
noise. The script warns when the load average says so; ``--threads 1`` is then the
meaningful comparison. (Plain AdamW issues ~30 small ops per parameter tensor, about 3,000
per step, the ops most exposed to such stalls; ``--fused-adamw`` uses one kernel per
tensor on both sides.)

``--profile`` then runs a few more of OUR steps under ``torch.profiler`` and prints
where they go: by phase (forward modules, masking, contrastive logits, backward, AdamW)
and the top operators by self CPU time.

MFU and memory, per side:

* ``GFLOP/step``: one more step of each model under ``FlopCounterMode`` after the timing
  (forward + backward; matmul, convolution and attention kernels, 2 FLOPs per MAC; the
  optimizer and element-wise work count 0), each model's *own* step on the same batch --
  transformers' step does more work (distractors and quantizer on every frame), and that
  work is counted for it; ``GF/audio-s`` divides it by the batch's real audio.
* ``MFU~``: the same per timed repeat, against a matmul peak sample (fastest of 3) taken right
  after that repeat, median over repeats -- the peak of a shared VM drifts by tens of percent
  within minutes, and this keeps the drift in numerator and denominator alike;
* ``MFU`` = GFLOP/step / median s/step / the measured matmul peak
  (:func:`speechssl.pretrain.mfu.measured_peak`: square matmuls, 2048 on CPU with the run's
  threads, 8192 on a GPU, in the run's dtype); on a GPU of a known family the datasheet
  peak's MFU is printed too. ``limit`` = the audio-s/s at 100 % of the measured peak.
* ``peak MB``: each side in a fresh subprocess (same batch, same model build), two steps
  after one warm-up: on CPU the highest resident set size sampled every 20 ms during the
  steps minus the RSS before them (activations, gradients, AdamW state, allocator slack);
  on a GPU ``torch.cuda.max_memory_allocated`` over the steps (weights included).
  ``--no-memory`` skips it.

``--device cuda --precision bf16`` runs both steps under bf16 autocast on a GPU.

``--compile ours`` compiles our encoder as ``speechssl pretrain compile=true`` does (the CNN
and the Transformer layers, regionally, the time axis static); ``--compile both`` compiles
transformers' CNN and layers the same way, the like-for-like comparison. Warm-up steps
include the compilation (a minute or two on 2 cores); FLOPs are counted on eager twins of
the two models (FlopCounterMode does not see inside compiled graphs).

    python benchmarks/pretrain_throughput.py --quick          # < 1 min on 2 cores with --no-memory
    python benchmarks/pretrain_throughput.py                  # tiny, 48 s batches, 10 repeats
    python benchmarks/pretrain_throughput.py --model base --batch-seconds 16 --repeats 3
    python benchmarks/pretrain_throughput.py --quick --profile
    python benchmarks/pretrain_throughput.py --model base --device cuda --precision bf16
    python benchmarks/pretrain_throughput.py --model base --quick --compile both   # + ~2 min compiling
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.signal import lfilter
from torch import Tensor

from speechssl.data.collate import collate_waveforms
from speechssl.errors import SpeechSSLError
from speechssl.models.config import EncoderConfig
from speechssl.models.hf import hf_config_from, hf_state_dict
from speechssl.models.objectives import contrastive as contrastive_module
from speechssl.models.objectives import masking as masking_module
from speechssl.models.objectives.contrastive import ContrastiveConfig, Wav2Vec2Pretraining
from speechssl.pretrain.mfu import PRECISION_DTYPES, count_flops, datasheet_peak, measured_peak
from speechssl.pretrain.perf import compile_encoder

# AdamW as `speechssl pretrain` builds it (PretrainConfig.optim defaults, tiny recipe lr).
ADAMW = dict(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
QUICK = dict(batch_seconds=16.0, repeats=3, warmup=1)
FULL = dict(batch_seconds=48.0, repeats=10, warmup=2)


@dataclass
class Batch:
    waveforms: Tensor  # [B, T] zero-padded
    lengths: Tensor  # [B] valid samples
    attention_mask: Tensor  # [B, T] long, 1 on valid samples (transformers' convention)
    source: str

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / SAMPLE_RATE

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.waveforms.to(device), self.lengths.to(device), self.attention_mask.to(device), self.source)


SAMPLE_RATE = 16_000


def configs(model: str) -> tuple[EncoderConfig, ContrastiveConfig]:
    encoder = EncoderConfig.preset(model)
    width = 128 if model == "tiny" else 256  # configs/pretrain/w2v2_tiny.yaml / the BASE recipe
    return encoder, ContrastiveConfig(codevector_dim=width, final_dim=width)


# ---------------------------------------------------------------- the batch


def speech_like(seconds: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Harmonics of a wandering f0 plus noise, through two formant resonators, syllable-rate envelope."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 240) * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(h * phase) / h for h in range(1, 16))
    signal = 0.6 * voiced + 0.4 * rng.standard_normal(n)
    for formant in (rng.uniform(300, 900), rng.uniform(900, 2500)):
        r = 0.97
        signal = lfilter([1.0 - r], [1.0, -2 * r * np.cos(2 * np.pi * formant / sr), r * r], signal)
    rate = rng.uniform(3.0, 6.0)  # syllables per second
    envelope = np.sin(np.pi * rate * t + rng.uniform(0, np.pi)) ** 2
    signal = signal * (0.1 + envelope)
    return (0.5 * signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


def crop_lengths(total: float, lo: float, hi: float, rng: np.random.Generator) -> list[float]:
    """Crop durations drawn from U[lo, hi] until they add up to ``total`` (the last one trimmed, >= lo)."""
    out: list[float] = []
    while sum(out) < total - 1e-9:
        d = min(float(rng.uniform(lo, hi)), total - sum(out))
        if d < lo and out:  # too short for a crop of its own: lengthen the previous one instead
            out[-1] += d
        else:
            out.append(d)
    return out


def corpus_waves(data: str, split: str, durations: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    from speechssl.data.audio import load_cut_audio
    from speechssl.data.manifests import load_cuts

    cuts = list(load_cuts(data, split))
    cut_seconds = np.array([c.duration for c in cuts])
    waves = []
    for d in durations:
        # A cut at least as long as the crop, so that the batch holds the audio asked for.
        fits = np.flatnonzero(cut_seconds >= d)
        index = int(rng.choice(fits)) if fits.size else int(cut_seconds.argmax())
        wave = load_cut_audio(cuts[index])
        n = min(int(round(d * SAMPLE_RATE)), wave.shape[0])
        start = int(rng.integers(0, wave.shape[0] - n + 1))
        waves.append(wave[start : start + n])
    return waves


def make_batch(args: argparse.Namespace) -> Batch:
    rng = np.random.default_rng(args.seed)
    durations = crop_lengths(args.batch_seconds, args.min_crop, args.max_crop, rng)
    if args.data:
        waves = corpus_waves(args.data, args.split, durations, rng)
        source = f"{args.data} ({args.split}) crops"
    else:
        waves = [speech_like(d, rng) for d in durations]
        source = "speech-like noise"
    padded, lengths, padding_mask = collate_waveforms(waves)
    return Batch(padded, lengths, (~padding_mask).long(), source)


# ---------------------------------------------------------------- the two steps


def build_models(args: argparse.Namespace) -> tuple[Wav2Vec2Pretraining, torch.nn.Module, str]:
    from transformers import Wav2Vec2ForPreTraining

    encoder_cfg, objective_cfg = configs(args.model)
    torch.manual_seed(args.seed)
    ours = Wav2Vec2Pretraining(encoder_cfg, objective_cfg)
    hf_cfg = hf_config_from(encoder_cfg, objective_cfg)
    theirs = Wav2Vec2ForPreTraining(hf_cfg)
    try:
        theirs.load_state_dict(hf_state_dict(ours), strict=True)
        weights = "shared initial weights"
    except RuntimeError as exc:  # names drifted: keep HF's own init, the timing is still meaningful
        weights = f"own initial weights ({str(exc).splitlines()[0][:80]})"
    return ours.train(), theirs.train(), weights


def autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=PRECISION_DTYPES[precision])


def our_step(
    model: Wav2Vec2Pretraining, batch: Batch, fused: bool = False, amp: Callable = contextlib.nullcontext
) -> Callable[[int], float]:
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW, fused=fused or None)

    def step(num_updates: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        with phase("ours: forward"), amp():
            out = model(batch.waveforms, batch.lengths, num_updates=num_updates)
        with phase("ours: backward"):
            out.loss.backward()
        with phase("ours: AdamW"):
            optimizer.step()
        return float(out.loss.detach())

    return step


def their_step(
    model: torch.nn.Module, batch: Batch, objective_cfg: ContrastiveConfig, fused: bool = False,
    amp: Callable = contextlib.nullcontext,
) -> Callable[[int], float]:
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW, fused=fused or None)
    cfg = model.config

    def step(num_updates: int) -> float:
        optimizer.zero_grad(set_to_none=True)
        model.set_gumbel_temperature(objective_cfg.gumbel_temperature(num_updates))
        # The example's data collator, here inside the timed step.
        batch_size, samples = batch.waveforms.shape
        frames = int(model._get_feat_extract_output_lengths(samples))
        frame_mask = model._get_feature_vector_attention_mask(frames, batch.attention_mask)
        mask = _compute_mask_indices(
            (batch_size, frames), cfg.mask_time_prob, cfg.mask_time_length,
            attention_mask=frame_mask.cpu(), min_masks=cfg.mask_time_min_masks,
        )
        negatives = _sample_negative_indices((batch_size, frames), cfg.num_negatives, mask_time_indices=mask)
        device = batch.waveforms.device
        mask_time_indices = torch.tensor(mask, dtype=torch.long, device=device)
        with amp():
            out = model(
                batch.waveforms,
                attention_mask=batch.attention_mask,
                mask_time_indices=mask_time_indices,
                sampled_negative_indices=torch.tensor(negatives, dtype=torch.long, device=device),
            )
        loss = out.loss / mask_time_indices.sum()  # the example's per-masked-frame normalisation
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# ---------------------------------------------------------------- timing


@dataclass
class Row:
    name: str
    params: int
    times: list[float]
    losses: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def run(
    steps: dict[str, Callable[[int], float]], warmup: int, repeats: int, peak_sample: Callable[[], float]
) -> tuple[dict[str, tuple[list[float], list[float]]], list[float]]:
    """Warm every step up, then time them interleaved; ``(seconds, losses)`` per name, and a
    matmul peak sample (FLOP/s) taken after each repeat."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, list[float]] = {name: [] for name in steps}
    peaks: list[float] = []
    update = 0
    for _ in range(warmup):
        for step in steps.values():
            step(update)
        update += 1
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved: ours, theirs, ours, theirs ...
            start = time.perf_counter()
            loss = step(update)
            times[name].append(time.perf_counter() - start)
            losses[name].append(loss)
        peaks.append(peak_sample())
        update += 1
    return {name: (times[name], losses[name]) for name in steps}, peaks


def peak_sampler(device: torch.device, dtype: torch.dtype) -> Callable[[], float]:
    """One interleaved peak sample: the fastest of 3 square matmuls (2048 on CPU, 8192 on a GPU),
    in FLOP/s. This machine's peak drifts by tens of percent within minutes; a sample next to
    each repeat puts the same drift in MFU's numerator and denominator."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sample() -> float:
        best = math.inf
        for _ in range(3):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        return 2.0 * size**3 / best

    sample()  # warm-up
    return sample


# ---------------------------------------------------------------- profiling (ours)

_PROFILING = False


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    if not _PROFILING:
        yield
        return
    with torch.profiler.record_function(name):
        yield


PROFILED_MODULES = {
    "wav2vec2.feature_extractor": "fwd: CNN feature extractor",
    "wav2vec2.feature_projection": "fwd: feature projection",
    "wav2vec2.encoder.pos_conv_embed": "fwd: positional conv",
    "wav2vec2.encoder": "fwd: transformer (incl. pos conv)",
    "quantizer": "fwd: quantizer",
    "project_q": "fwd: project_q",
    "project_hid": "fwd: project_hid",
}


@contextlib.contextmanager
def instrumented(model: Wav2Vec2Pretraining) -> Iterator[None]:
    """Label our forward's modules and objective functions for the profiler (no source edits)."""
    global _PROFILING
    handles = []
    for path, label in PROFILED_MODULES.items():
        module = model.get_submodule(path)
        ranges: list[torch.profiler.record_function] = []

        def pre(_m, _inp, label=label, ranges=ranges):  # type: ignore[no-untyped-def]
            ranges.append(torch.profiler.record_function(label))
            ranges[-1].__enter__()

        def post(_m, _inp, _out, ranges=ranges):  # type: ignore[no-untyped-def]
            ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def labelled(fn: Callable, label: str) -> Callable:
        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            with torch.profiler.record_function(label):
                return fn(*a, **k)
        return wrapper

    # Patched where they are looked up at call time: span_mask in the masking module (called
    # by mask_with_embedding), contrastive_logits in the contrastive module.
    patched = [(masking_module, "span_mask", "fwd: span_mask"),
               (contrastive_module, "contrastive_logits", "fwd: contrastive_logits")]
    originals = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, label in patched:
        setattr(module, name, labelled(getattr(module, name), label))
    _PROFILING = True
    try:
        yield
    finally:
        _PROFILING = False
        for module, name, fn in originals:
            setattr(module, name, fn)
        for handle in handles:
            handle.remove()


def profile_ours(model: Wav2Vec2Pretraining, step: Callable[[int], float], steps: int, row_limit: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with instrumented(model):
        step(0)  # let the hooks' first call settle outside the trace
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(steps):
                step(i + 1)
    events = prof.key_averages()
    step_total = sum(e.cpu_time_total for e in events if e.key.startswith("ours: "))
    labels = ["ours: forward", *PROFILED_MODULES.values(), "fwd: span_mask", "fwd: contrastive_logits",
              "ours: backward", "ours: AdamW"]
    by_key = {e.key: e for e in events}
    print(f"\nprofile of {steps} of our steps, by phase (CPU total ms per step, % of the step):")
    for label in labels:
        if label in by_key:
            ms = by_key[label].cpu_time_total / 1e3 / steps
            indent = "  " if label.startswith("fwd: ") else ""
            print(f"  {indent}{label:<38}{ms:>9.1f} ms {100 * by_key[label].cpu_time_total / step_total:>6.1f}%")
    print(f"\ntop {row_limit} operators of our step by self CPU time:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=48))


# ---------------------------------------------------------------- MFU and memory


def build_steps(args: argparse.Namespace, batch: Batch):  # type: ignore[no-untyped-def]
    """Both models on ``args.device`` and their step functions on ``batch`` (moved there too)."""
    device = torch.device(args.device)
    ours, theirs, weights = build_models(args)
    ours, theirs = ours.to(device), theirs.to(device)
    compile_models(ours, theirs, args.compile)
    batch = batch.to(device)
    _, objective_cfg = configs(args.model)
    amp = autocast(device, args.precision)
    steps = {
        "speechssl": our_step(ours, batch, args.fused_adamw, amp),
        "transformers": their_step(theirs, batch, objective_cfg, args.fused_adamw, amp),
    }
    return ours, theirs, weights, steps


def compile_models(ours: Wav2Vec2Pretraining, theirs: torch.nn.Module, which: str) -> None:
    """``--compile``: ours as ``speechssl pretrain compile=true`` does it (regional, static time
    for one bucket); with ``both``, transformers' CNN and Transformer layers the same way."""
    if which == "none":
        return
    compile_encoder(ours.encoder, static_time=True, num_shapes=1)
    if which == "both":
        hf = theirs.wav2vec2  # type: ignore[attr-defined]
        for module in (hf.feature_extractor, *hf.encoder.layers):
            module.compile(dynamic=False)


def peaks(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """The measured matmul peak in the run's dtype and threads; the datasheet peak of a known GPU."""
    device = torch.device(args.device)
    peak = measured_peak(device, PRECISION_DTYPES[args.precision])
    datasheet = None
    if device.type == "cuda":
        tf32 = torch.get_float32_matmul_precision() != "highest"
        datasheet = datasheet_peak(torch.cuda.get_device_name(device), args.precision, tf32=tf32)
    return peak, datasheet


def memory_child(args: argparse.Namespace) -> int:
    """In a fresh process: one side's peak memory over 2 steps after a warm-up; prints one JSON line."""
    from speechssl.downstream.cost import PeakMemory

    batch = make_batch(args)
    _, _, _, steps = build_steps(args, batch)
    step = steps[args.memory_child]
    step(0)
    device = torch.device(args.device)
    before = PeakMemory._rss_bytes() or 0
    with PeakMemory(device) as peak:
        step(1)
        step(2)
    if peak.mb is None:
        print(json.dumps({"mb": None}))
    elif device.type == "cuda":
        print(json.dumps({"mb": peak.mb, "kind": peak.kind}))
    else:
        print(json.dumps({"mb": peak.mb - before / 2**20, "kind": "rss_delta"}))
    return 0


def measure_memory(argv: list[str] | None, name: str) -> float | None:
    """Run :func:`memory_child` for ``name`` in a fresh interpreter with this run's arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = [sys.executable, os.path.abspath(__file__), *args, "--memory-child", name]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["mb"]
    print(f"WARNING: the memory subprocess for {name} failed: {done.stderr.strip()[-300:]}")
    return None


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny", help="encoder preset (default: tiny)")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help=f"audio per batch (default {FULL['batch_seconds']:g}, --quick {QUICK['batch_seconds']:g})")
    parser.add_argument("--min-crop", type=float, default=2.0, help="shortest crop in seconds")
    parser.add_argument("--max-crop", type=float, default=4.0, help="longest crop in seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed steps per side (default {FULL['repeats']}, --quick {QUICK['repeats']})")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed steps per side first (default {FULL['warmup']}, --quick {QUICK['warmup']})")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--fused-adamw", action="store_true",
                        help="AdamW(fused=True) on both sides (one kernel per tensor instead of ~30 ops)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="corpus dir from `speechssl corpus synth` (default: noise)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--profile", action="store_true", help="then profile a few of OUR steps")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="16 s batches, 3 repeats: well under a minute")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="fp32, or bf16 autocast on both sides (default: fp32 on CPU, bf16 on cuda)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--compile", choices=["none", "ours", "both"], default="none",
                        help="torch.compile ours (as `speechssl pretrain compile=true`) or both sides; the "
                        "warm-up steps include the compilation")
    parser.add_argument("--memory-child", choices=["speechssl", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.precision is None:
        args.precision = "bf16" if args.device == "cuda" else "fp32"
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 < args.min_crop <= args.max_crop or args.batch_seconds < args.min_crop:
        parser.error("need 0 < --min-crop <= --max-crop <= --batch-seconds")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("need --repeats >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available")
        return 2
    if args.memory_child:
        return memory_child(args)

    import transformers

    # OpenMP ops wait at barriers for all their threads: with other work on the cores, a
    # descheduled thread stalls every op and small ones (AdamW's) slow down 100-fold.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    started = time.perf_counter()
    try:
        batch = make_batch(args)
    except SpeechSSLError as exc:  # --data: no corpus there, unreadable audio
        print(f"error: {exc}")
        return 2
    ours, theirs, weights, steps = build_steps(args, batch)
    batch = batch.to(torch.device(args.device))
    results, interleaved_peaks = run(steps, args.warmup, args.repeats,
                                     peak_sampler(torch.device(args.device), PRECISION_DTYPES[args.precision]))
    rows = [
        Row(name, sum(p.numel() for p in model.parameters()), *results[name])
        for name, model in (("speechssl", ours), ("transformers", theirs))
    ]
    # One more step of each under FlopCounterMode (after the timing: counting slows a step down).
    counted_ours, counted_theirs, counted = ours, theirs, steps
    if args.compile != "none":
        # FlopCounterMode does not see inside compiled graphs: count the same step on eager twins.
        counted_ours, counted_theirs, _, counted = build_steps(argparse.Namespace(**{**vars(args), "compile": "none"}),
                                                               batch)
    # Both sides counted with every layer: a step that layer drop skips one in is ~1/12 lighter (base).
    layerdrop = counted_ours.encoder.encoder.layerdrop, counted_theirs.config.layerdrop
    counted_ours.encoder.encoder.layerdrop = counted_theirs.config.layerdrop = 0.0
    flops = {name: count_flops(lambda step=step: step(args.warmup + args.repeats)) for name, step in counted.items()}
    counted_ours.encoder.encoder.layerdrop, counted_theirs.config.layerdrop = layerdrop  # --profile: as timed
    peak, datasheet = peaks(args)
    memory = {} if args.no_memory else {name: measure_memory(argv, name) for name in steps}

    b, samples = batch.waveforms.shape
    print(
        f"model {args.model}, {weights}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, attention {theirs.config._attn_implementation}"
    )
    print(
        f"batch: {b} x {samples / SAMPLE_RATE:.2f} s padded, {batch.seconds:.1f} s of audio "
        f"({100 * (1 - batch.seconds * SAMPLE_RATE / (b * samples)):.1f}% padding), {batch.source}; "
        f"warmup {args.warmup}, {args.repeats} interleaved repeats, seed {args.seed}; "
        f"AdamW{' (fused)' if args.fused_adamw else ''} lr {ADAMW['lr']:g} betas {ADAMW['betas']} "
        f"eps {ADAMW['eps']:g} wd {ADAMW['weight_decay']:g}; torch.compile: {args.compile}"
    )
    if load >= 0.5:
        print(
            f"WARNING: load average {load:.1f} on {os.cpu_count()} cores before the run: other work competes "
            f"for the CPU, so timings are inflated and noisy"
            + (" (multi-threaded ops stall worst: compare with --threads 1)" if torch.get_num_threads() > 1 else "")
        )
    header = (
        f"{'implementation':<15}{'params':>11}{'s/step':>9}{'min':>8}{'max':>8}{'audio s/s':>11}{'loss':>8}"
        f"{'GFLOP/step':>12}{'GF/audio-s':>12}{'MFU':>7}{'MFU~':>7}{'limit':>8}{'peak MB':>9}"
    )
    print(f"{args.device}, {args.precision}; peak {peak['flops_per_second'] / 1e9:.1f} GFLOP/s ({peak['source']})"
          + (f"; {datasheet['source']}" if datasheet else ""))
    print(header)
    print("-" * len(header))
    for row in rows:
        per_audio_s = flops[row.name] / batch.seconds
        mfu = flops[row.name] / row.median / peak["flops_per_second"]
        # MFU~: per repeat against the peak sampled right after it, median over repeats
        mfu_interleaved = statistics.median(
            flops[row.name] / t / p for t, p in zip(row.times, interleaved_peaks))
        mb = memory.get(row.name)
        print(
            f"{row.name:<15}{row.params:>11,}{row.median:>9.3f}{min(row.times):>8.3f}{max(row.times):>8.3f}"
            f"{batch.seconds / row.median:>11.2f}{statistics.median(row.losses):>8.3f}"
            f"{flops[row.name] / 1e9:>12.1f}{per_audio_s / 1e9:>12.2f}{100 * mfu:>6.1f}%{100 * mfu_interleaved:>6.1f}%"
            f"{peak['flops_per_second'] / per_audio_s:>8.2f}{(f'{mb:.0f}' if mb is not None else '-'):>9}"
        )
        if datasheet:
            vs_datasheet = flops[row.name] / row.median / datasheet["flops_per_second"]
            print(f"{'':<15}MFU vs the datasheet peak: {100 * vs_datasheet:.1f}%")
    print("(loss: per masked frame; ours also holds the x10 L2 penalty on CNN features, transformers' has none)")
    print(f"(MFU~: each repeat against a peak sample taken right after it, median; samples "
          f"{min(interleaved_peaks) / 1e9:.0f}-{max(interleaved_peaks) / 1e9:.0f} GFLOP/s)")
    if memory:
        kind = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS above the RSS before the steps"
        print(f"(peak MB: {kind}, 2 steps after a warm-up, each side in a fresh process)")
    if args.profile:
        profile_ours(ours, steps["speechssl"], args.profile_steps, args.profile_rows)
    print(f"wall {time.perf_counter() - started:.1f} s")
    ours_row, their_row = rows
    print(f"ratio: {their_row.median / ours_row.median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
