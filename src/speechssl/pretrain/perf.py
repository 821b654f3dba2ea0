"""Performance options of a pretraining run (the ``perf`` section) and the GPU paths they switch.

None of them changes what a run computes beyond float rounding, so none is part of the
run's identity: a run can be resumed with other ``perf`` settings.

* ``tf32`` -- TF32 tensor cores for the fp32 matmuls and convolutions of a CUDA run;
* ``min_loss_scale`` -- the fp16 dynamic loss scale's floor (the run stops below it);
* ``activation_checkpointing`` -- recompute each Transformer layer in the backward pass;
* ``shape_buckets`` -- pad batches in time up to a few bucket lengths, so that
  ``compile=true`` sees few distinct shapes;
* ``compile_mode`` -- the ``torch.compile`` mode of the compiled encoder regions;
* ``mfu`` -- log ``mfu`` next to ``audio_s_per_s`` (:mod:`speechssl.pretrain.mfu`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from speechssl.config import param
from speechssl.errors import SpeechSSLError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from speechssl.data.collate import ShapeBuckets


@dataclass
class PerfConfig:
    mfu: bool = param(
        True, help="count the FLOPs of the first update and log mfu (vs a measured matmul peak) with audio_s_per_s"
    )
    tf32: bool = param(True, help="CUDA: TF32 tensor cores for fp32 matmuls and convolutions (no effect on CPU)")
    min_loss_scale: float = param(
        1e-4, gt=0.0, help="fp16: stop the run when overflows push the dynamic loss scale below this"
    )
    activation_checkpointing: bool = param(
        False, help="recompute each Transformer layer in the backward pass: less memory, ~1/3 more compute"
    )
    shape_buckets: Literal["auto", "off", "multiple", "geometric"] = param(
        "auto",
        help="pad batches in time up to bucket lengths (multiples of bucket_multiple_seconds, or a geometric "
        "ladder with ratio bucket_growth) so compile sees few shapes; auto = geometric with compile=true, else off",
    )
    bucket_multiple_seconds: float = param(
        0.2, gt=0.0, help="bucket lengths are multiples of this (rounded up to the encoder stride)"
    )
    bucket_growth: float = param(1.1, gt=1.0, help="ratio between neighbouring geometric buckets (<= ~9 % padding)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = param(
        "default", help="torch.compile mode of the compiled encoder regions (compile=true)"
    )

    def resolved_buckets(self, compile: bool) -> str:
        if self.shape_buckets == "auto":
            return "geometric" if compile else "off"
        return self.shape_buckets


# ---------------------------------------------------------------- TF32


def configure_tf32(device: torch.device, enabled: bool) -> dict[str, Any]:
    """Allow (or forbid) TF32 for fp32 matmuls and cuDNN convolutions on a CUDA device.

    Process-wide switches, set only for a CUDA run (on CPU this returns ``{}`` and changes
    nothing). Only the legacy API is used (``set_float32_matmul_precision`` and
    ``cudnn.allow_tf32``): torch refuses to read the precision once both the legacy and the
    newer ``fp32_precision`` API have been used in one process.
    """
    import torch

    if torch.device(device).type != "cuda":
        return {}
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(), "cudnn_allow_tf32": enabled}


# ---------------------------------------------------------------- fp16 loss-scale floor


class LossScaleUnderflow(SpeechSSLError):
    """fp16 gradients kept overflowing until the dynamic loss scale fell below its floor."""


def check_loss_scale(scale: float, floor: float, step: int, overflows: int) -> None:
    """Raise :class:`LossScaleUnderflow` (one line) if the fp16 loss ``scale`` fell below ``floor``.

    GradScaler halves the scale on every update whose gradients overflow and skips that
    update. A scale this small means the gradients are not finite even at a tiny scale: the
    run would go on "training" on skipped updates only, so it stops instead.
    """
    if scale >= floor:
        return
    raise LossScaleUnderflow(
        f"fp16 loss scale fell to {scale:.3g} (< perf.min_loss_scale {floor:g}) at step {step} after "
        f"{overflows} overflowing update(s) in this process: the gradients are not finite even at a tiny "
        "scale; train with precision=bf16 or fp32, or lower optim.lr"
    )


# ---------------------------------------------------------------- activation checkpointing


def set_activation_checkpointing(encoder: nn.Module, enabled: bool) -> None:
    """Recompute every Transformer layer of a :class:`SpeechEncoder` in the backward pass.

    ``torch.utils.checkpoint`` with ``use_reentrant=False`` and the RNG state preserved, so
    losses and gradients are those of the plain run (dropout masks are redrawn identically).
    """
    encoder.encoder.gradient_checkpointing = bool(enabled)


# ---------------------------------------------------------------- shape buckets


def shape_buckets(cfg: Any) -> ShapeBuckets | None:
    """The :class:`ShapeBuckets` of a :class:`PretrainConfig` (None when padding is off)."""
    from speechssl.data.collate import ShapeBuckets

    mode = cfg.perf.resolved_buckets(cfg.compile)
    if mode == "off":
        return None
    stride = cfg.encoder.total_stride
    sample_rate = 16_000
    multiple = max(stride, math.ceil(cfg.perf.bucket_multiple_seconds * sample_rate / stride) * stride)
    return ShapeBuckets(
        mode=mode,
        multiple=multiple,
        growth=cfg.perf.bucket_growth,
        max_length=int(round(cfg.data.crop_seconds * sample_rate)),
    )


# ---------------------------------------------------------------- torch.compile of the encoder


def compile_encoder(
    encoder: nn.Module, *, mode: str = "default", static_time: bool = False, num_shapes: int | None = None
) -> list[str]:
    """Compile the heavy regions of a :class:`SpeechEncoder` in place; returns their names.

    Regional compilation: the CNN feature extractor and the Transformer layers (one compiled
    function shared by all layers of a class, so a 12-layer model compiles its layer once).
    The eager glue around them (masking, layer drop, padding masks) stays eager; parameter
    names and the state dict are unchanged.

    The batch dimension is marked dynamic (it changes with every batch). With
    ``static_time`` (padded shape buckets) the time dimension is marked static: every bucket
    gets its own specialised graph and ``torch._dynamo``'s recompile limit is raised to fit
    ``num_shapes`` buckets (train, no-grad and eval variants of each). Without it torch's
    automatic dynamic shapes apply (the time dimension turns symbolic once it changes).
    """
    import torch

    # Packed valid frames (speechssl.models.packing) change shape with every batch's lengths:
    # compiled regions run the padded layout instead, whose shapes the buckets fix.
    encoder.feature_extractor.skip_padding = False
    encoder.encoder.skip_padding = False
    regions: list[tuple[str, nn.Module, Sequence[int | None]]] = [
        ("feature_extractor", encoder.feature_extractor, (1, None)),  # (waveforms [B, T], lengths [B])
    ]
    for index, layer in enumerate(encoder.encoder.layers):
        regions.append((f"encoder.layers.{index}", layer, (1, 3)))  # (x [B, T', D], attend [B, 1, 1, T'])
    if static_time and num_shapes:
        limit = 4 * num_shapes + 8
        dynamo = torch._dynamo.config
        if hasattr(dynamo, "recompile_limit"):
            dynamo.recompile_limit = max(dynamo.recompile_limit, limit)
        else:  # torch < 2.6
            dynamo.cache_size_limit = max(dynamo.cache_size_limit, limit)
    compiled: dict[type, Any] = {}
    for _, module, time_dims in regions:
        cls = type(module)
        if cls not in compiled:
            compiled[cls] = torch.compile(cls.forward, mode=None if mode == "default" else mode)
        module.forward = _marking_forward(module, compiled[cls], time_dims, static_time)
    return [name for name, _, _ in regions]


def _marking_forward(module: nn.Module, fn: Any, time_dims: Sequence[int | None], static_time: bool) -> Any:
    import torch

    def forward(*args: Any, **kwargs: Any) -> Any:
        for arg, time_dim in zip(args, time_dims):
            if isinstance(arg, torch.Tensor):
                torch._dynamo.maybe_mark_dynamic(arg, 0)
                if static_time and time_dim is not None:
                    torch._dynamo.mark_static(arg, time_dim)
        return fn(module, *args, **kwargs)

    return forward
