"""``tuned:<bench run dir>``: an upstream as a benchmark run adapted it, and its exports.

A run in any regime but ``frozen`` writes ``adapted_upstream.safetensors`` next to its
``result.json``: only the upstream weights the regime trained (adapters, LoRA matrices,
unfrozen layers), with the run's config in the file's metadata. Applying the same regime
to the same base upstream and loading those weights rebuilds the adapted upstream, so a
LoRA run of a 95 M model stores a few hundred kB, not a second model.

- ``tuned:<run dir>`` loads it as a (frozen) upstream: benchmark the fine-tuned encoder
  on another task, or probe it again.
- :func:`export_tuned` writes the adapted weights on their own (``merge=False``) or a
  full ``transformers`` model directory with the adaptation folded in (``merge=True``):
  LoRA updates merged into their base weights, unfrozen layers as trained. Houlsby
  adapters have no place in transformers' Wav2Vec2 architecture, so an adapter run
  cannot be merged (use ``tuned:``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from speechssl.errors import ConfigError
from speechssl.upstream.base import Upstream, UpstreamOutput, hash_files

VERSION = "tuned/1"
FORMAT = "speechssl.adapted/1"
ADAPTED_FILE = "adapted_upstream.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapted(upstream: torch.nn.Module, cfg, path: Path, base_fingerprint: str) -> Path:
    """Write the trained upstream weights of a run (``requires_grad`` ones) to ``path``
    (atomically: a killed run never leaves half a file under the final name)."""
    from safetensors.torch import save

    from speechssl.config import to_dict
    from speechssl.downstream.config import regime_label
    from speechssl.fsutil import write_bytes_atomic

    tensors = {n: p.detach().cpu().contiguous() for n, p in upstream.named_parameters() if p.requires_grad}
    metadata = {"format": FORMAT, "regime": regime_label(cfg), "base_upstream": cfg.upstream,
                "base_fingerprint": base_fingerprint, "config": json.dumps(to_dict(cfg), sort_keys=True)}
    write_bytes_atomic(path, save(tensors, metadata=metadata))
    return path


def _adapted_file(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir).expanduser()
    path = run_dir if run_dir.is_file() else run_dir / ADAPTED_FILE
    if not path.is_file():
        raise ConfigError(f"tuned: {path} does not exist (only runs with regime other than frozen write one)")
    return path


def read_adapted(run_dir: str | Path) -> tuple[Path, dict[str, Tensor], Any]:
    """(file, trained weights, the run's BenchConfig) of a run directory or adapted file."""
    from safetensors import safe_open

    from speechssl.config import from_dict
    from speechssl.downstream.config import BenchConfig

    path = _adapted_file(run_dir)
    try:
        with safe_open(str(path), framework="pt") as handle:  # one open: metadata and tensors
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # truncated or not a safetensors file (safetensors holds no code to run)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ConfigError(f"tuned: cannot read {path}: not a complete safetensors file ({detail})") from None
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"tuned: {path} is not a speechssl adapted-upstream file (format {metadata.get('format')!r})")
    cfg = from_dict(BenchConfig, json.loads(metadata["config"]), prefix=str(path))
    return path, tensors, cfg


def load_adapted(run_dir: str | Path) -> tuple[Upstream, Any]:
    """The base upstream with the run's regime applied and its trained weights loaded
    (eval mode, nothing trainable), and the run's BenchConfig."""
    from speechssl.downstream.adaptation import apply_regime
    from speechssl.upstream import build_upstream

    path, tensors, cfg = read_adapted(run_dir)
    upstream = build_upstream(cfg.upstream)
    adaptation = apply_regime(upstream, cfg)
    if set(tensors) != set(adaptation.trained):
        missing, extra = set(adaptation.trained) - set(tensors), set(tensors) - set(adaptation.trained)
        raise ConfigError(f"tuned: {path} does not match regime {adaptation.label} of {cfg.upstream} "
                          f"({len(missing)} weights missing, {len(extra)} unexpected; was the base upstream changed?)")
    upstream.load_state_dict(tensors, strict=False)
    return upstream.eval().requires_grad_(False), cfg


class TunedUpstream(Upstream):
    """A benchmark run's adapted upstream, frozen."""

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__()
        self.path = _adapted_file(run_dir)
        self.inner, self.run_cfg = load_adapted(self.path)
        for attribute in ("frame_rate", "num_layers", "feature_dim", "sample_rate"):
            setattr(self, attribute, getattr(self.inner, attribute))

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        return self.inner(waveforms, lengths)

    def fingerprint(self) -> str:
        return hash_files([self.path], extra=VERSION + self.inner.fingerprint())


def build_tuned(run_dir: str) -> TunedUpstream:
    return TunedUpstream(run_dir)


def export_tuned(run_dir: str | Path, out_dir: str | Path, *, merge: bool = False, overwrite: bool = False) -> Path:
    """Write a run's adaptation to ``out_dir``: the adapted weights and an
    ``adapter_config.json`` (``merge=False``), or a full transformers model directory
    (``merge=True``; loadable as ``hf:<out_dir>``)."""
    from speechssl.config import to_dict
    from speechssl.models.hf import write_dir_atomically

    path, _, cfg = read_adapted(run_dir)
    out_dir = Path(out_dir)
    if not merge:
        def write_adapter(tmp: Path) -> None:
            shutil.copyfile(path, tmp / ADAPTED_FILE)
            config = {"format": FORMAT, "regime": cfg.regime, "base_upstream": cfg.upstream,
                      "adapt": to_dict(cfg.adapt)}
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

        return write_dir_atomically(out_dir, write_adapter, overwrite=overwrite)
    if cfg.regime == "adapter":
        raise ConfigError("tuned: Houlsby adapters cannot be merged into a transformers Wav2Vec2 model (the "
                          "architecture has no place for them); export without --merge, or use the run as "
                          f"tuned:{Path(run_dir)}")
    upstream, _ = load_adapted(path)
    if cfg.regime == "lora":
        from speechssl.downstream.adaptation import merge_lora

        merge_lora(upstream)
    return _export_full(upstream, out_dir, overwrite)


def _export_full(upstream: Upstream, out_dir: Path, overwrite: bool) -> Path:
    from speechssl.models.hf import PREPROCESSOR_FILE, write_dir_atomically, export_hf
    from speechssl.upstream.hf import HFUpstream
    from speechssl.upstream.native import NativeUpstream

    if isinstance(upstream, NativeUpstream):
        return export_hf(upstream.encoder, out_dir, do_normalize=upstream.normalize, overwrite=overwrite)
    if isinstance(upstream, HFUpstream):
        def write_model(tmp: Path) -> None:
            upstream.model.save_pretrained(tmp)
            if (upstream.directory / PREPROCESSOR_FILE).is_file():
                shutil.copyfile(upstream.directory / PREPROCESSOR_FILE, tmp / PREPROCESSOR_FILE)

        return write_dir_atomically(out_dir, write_model, overwrite=overwrite)
    raise ConfigError(f"tuned: cannot export a {type(upstream).__name__} as a transformers model")
