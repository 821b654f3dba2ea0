"""CNN waveform encoder: raw samples [B, T] -> frame features [B, T', C]."""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from speechssl.models.config import ConvLayer
from speechssl.models.packing import pack_waveforms, unpack_frames


class GradScale(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]
        return x.view_as(x)  # a new tensor, so autograd records this node

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None  # type: ignore[attr-defined]


def scale_grad(x: Tensor, scale: float) -> Tensor:
    if scale == 1.0:
        return x
    return GradScale.apply(x, scale)


def conv_output_lengths(lengths: Tensor, conv_layers: Sequence[ConvLayer]) -> Tensor:
    """Frames produced from ``lengths`` samples: floor((L + 2p - k) / s) + 1 per layer.

    Inputs too short for a single frame give 0 (not a negative count).
    """
    out = lengths.to(torch.long)
    for _, kernel, stride, padding in conv_layers:
        out = torch.div(out + 2 * padding - kernel, stride, rounding_mode="floor") + 1
        out = out.clamp(min=0)
    return out


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a [B, C, T] tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm with one group per channel, statistics over each row's *valid* frames only.

    ``nn.GroupNorm`` pools over every time step, so zero padding shifts the mean and
    variance of a short utterance in a batch (fairseq/HF BASE behave that way). Given the
    valid frame counts, this computes the same statistics the utterance would get alone;
    with no counts (or all frames valid) it is exactly ``nn.GroupNorm``. Parameter names are
    unchanged, so checkpoints and HF exports are unaffected.
    """

    def forward(  # type: ignore[override]
        self, x: Tensor, frame_lengths: Tensor | None = None, segments: Sequence[tuple[int, int]] | None = None
    ) -> Tensor:
        """``frame_lengths`` [B]: valid frames of each row of ``x`` [B, C, T]. Or ``segments``:
        ``x`` is one packed row [1, C, T] holding one utterance per ``(first frame, frames)``
        (frames outside every utterance come out 0)."""
        if frame_lengths is None and segments is None:
            return super().forward(x)
        # Statistics are always taken in fp32: under autocast the products would otherwise run
        # in bf16/fp16.
        with torch.autocast(x.device.type, enabled=False):
            x = x.double() if x.dtype == torch.float64 else x.float()
            valid = None
            if segments is None:
                assert frame_lengths is not None
                valid = (torch.arange(x.shape[2], device=x.device)[None, :] < frame_lengths[:, None]).to(x.dtype)
            return _MaskedGroupNormFunction.apply(
                x, valid, self.weight, self.bias, self.eps, None if segments is None else tuple(segments)
            )


_Part = tuple[slice, "Tensor | None", "Tensor | int"]
"""Frames normalised together: (time slice, weights valid/count [B, T, 1] or None = all
valid, valid frame count [B, 1, 1] or int)."""


def _norm_parts(valid: Tensor | None, segments: tuple[tuple[int, int], ...] | None) -> list[_Part]:
    if segments is None:  # a padded batch: one part, masked statistics per row
        assert valid is not None
        count = valid.sum(dim=1).clamp(min=1.0)[:, None, None]
        return [(slice(None), valid.unsqueeze(2) / count, count)]
    return [(slice(start, start + frames), None, frames) for start, frames in segments if frames > 0]


def _frame_mean(x: Tensor, weights: Tensor | None) -> Tensor:
    """[B, C, T] -> [B, C, 1] mean over the valid frames."""
    return x.mean(dim=2, keepdim=True) if weights is None else torch.bmm(x, weights)


def _zero_outside(x: Tensor, segments: tuple[tuple[int, int], ...] | None) -> None:
    """Zero the frames of a packed row that belong to no utterance."""
    if segments is None:
        return
    end = 0
    for start, frames in segments:
        x[:, :, end:start] = 0
        end = max(end, start + frames)
    x[:, :, end:] = 0


class _MaskedGroupNormFunction(torch.autograd.Function):
    """Per-channel GroupNorm over each utterance's valid frames, with a hand-written backward.

    Two layouts: a padded batch [B, C, T] with ``valid`` [B, T] (1 on valid frames), or one
    packed row [1, C, T] (:func:`speechssl.models.packing.pack_waveforms`) with ``segments``,
    each utterance's ``(first frame, frames)``; the element-wise passes then run on each
    utterance's slice of the row in turn (a slice is a view: no extra pass to spread the
    per-utterance statistics over the row, which on this tensor costs as much as a convolution).

    This runs on the largest activation of the model ([B, C, T] at 3.2 kHz), where every
    element-wise pass costs about as much as a convolution, so the number of passes over
    the tensor is what matters. The masked sums are matrix products with the per-row
    weights valid/count (one read each, no masked copy). Forward: mean, centre, two-pass
    variance, one ``addcmul`` straight from the input, zero the padding. Backward (with
    x̂ = (x - mean) * rstd, g the incoming gradient, means over valid frames):

        dx = w * rstd * (g - mean(g) - x̂ * mean(g * x̂)),  0 on padding

    written as two ``addcmul`` passes from the saved input, and the weight and bias
    gradients from the same two per-utterance sums. Against letting autograd differentiate
    the matrix-product formulation (issue 18), on base's first layer ([6, 512, 11599], 2 CPU
    threads, medians of 7) forward + backward of the norm went from 721 to 342 ms (forward alone
    305 -> 189 ms).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, valid: Tensor | None, weight: Tensor, bias: Tensor, eps: float,
        segments: tuple[tuple[int, int], ...] | None,
    ) -> Tensor:
        parts = _norm_parts(valid, segments)
        y = torch.empty_like(x)
        _zero_outside(y, segments)
        stats = []
        for frames, weights, _ in parts:
            xs = x[:, :, frames]
            mean = _frame_mean(xs, weights)
            # two-pass variance: accurate when the mean is large
            rstd = torch.rsqrt(_frame_mean((xs - mean).square_(), weights) + eps)
            scale = weight[None, :, None] * rstd
            torch.addcmul(bias[None, :, None] - mean * scale, xs, scale, out=y[:, :, frames])
            stats.append((mean, rstd))
        if valid is not None:
            y.mul_(valid.unsqueeze(1))  # padding stays zero
        ctx.save_for_backward(x, valid, weight)
        ctx.parts, ctx.stats, ctx.segments = parts, stats, segments
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, valid, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.empty_like(x)
            _zero_outside(grad_input, ctx.segments)
        grad_weight = grad_bias = torch.zeros_like(weight, dtype=x.dtype)
        for (frames, weights, count), (mean, rstd) in zip(ctx.parts, ctx.stats):
            gs, xs = grad[:, :, frames], x[:, :, frames]
            grad_mean = _frame_mean(gs, weights)  # mean(g) over valid frames, [B, C, 1]
            # mean(g * x̂) = rstd * (mean(g * x) - mean * mean(g))
            grad_xhat_mean = rstd * (_frame_mean(gs * xs, weights) - mean * grad_mean)
            if grad_input is not None:
                scale = weight[None, :, None] * rstd
                # dx = scale * g - scale * rstd * m2 * (x - mean) - scale * m1
                slope = scale * rstd * grad_xhat_mean
                out = grad_input[:, :, frames]
                torch.addcmul(slope * mean - scale * grad_mean, gs, scale, out=out)
                out.addcmul_(xs, slope, value=-1.0)
            # sums over valid frames = count * means
            grad_weight = grad_weight + (count * grad_xhat_mean).sum(dim=(0, 2))
            grad_bias = grad_bias + (count * grad_mean).sum(dim=(0, 2))
        if grad_input is not None and valid is not None:
            grad_input.mul_(valid.unsqueeze(1))
        # (the parameters may be bf16/fp16 while the statistics are fp32)
        return (
            grad_input, None,
            grad_weight.to(weight.dtype) if ctx.needs_input_grad[2] else None,
            grad_bias.to(weight.dtype) if ctx.needs_input_grad[3] else None,
            None, None,
        )


class ConvBlock(nn.Module):
    """Conv1d -> optional norm -> GELU (``conv`` / ``layer_norm`` names follow HF)."""

    def __init__(
        self, in_channels: int, layer: ConvLayer, norm: Literal["group_norm", "layer_norm"] | None, bias: bool
    ) -> None:
        super().__init__()
        channels, kernel, stride, padding = layer
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, padding=padding, bias=bias)
        self.layer_norm: nn.Module | None
        if norm == "group_norm":
            # One group per channel: each channel is normalised over time (fairseq "default").
            self.layer_norm = MaskedGroupNorm(channels, channels, affine=True)
        elif norm == "layer_norm":
            self.layer_norm = ChannelLayerNorm(channels, elementwise_affine=True)
        else:
            self.layer_norm = None
        self.activation = nn.GELU()

    def forward(
        self, x: Tensor, frame_lengths: Tensor | None = None, segments: Sequence[tuple[int, int]] | None = None
    ) -> Tensor:
        """``frame_lengths``/``segments``: where the utterances' frames are (:class:`MaskedGroupNorm`)."""
        x = self.conv(x)
        if isinstance(self.layer_norm, MaskedGroupNorm):
            x = self.layer_norm(x, frame_lengths, segments)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.activation(x)


class FeatureExtractor(nn.Module):
    """Stack of strided convolutions over the raw waveform.

    With ``norm="group_norm"`` the first layer's GroupNorm pools statistics over
    time; given ``lengths`` it pools over each utterance's valid frames only
    (:class:`MaskedGroupNorm`), so a padded batch gives every utterance what it gets
    alone (fairseq/HF pool over the padding too). ``layer_norm`` normalises each frame
    on its own. Both are padding-invariant when all conv paddings are 0.

    Digital silence: with ``layer_norm`` and no conv bias, a frame of exact zeros
    reaches every per-frame LayerNorm with zero variance, where its backward pass
    multiplies gradients by 1/sqrt(eps) ~ 316 per layer (first-step gradient norms of
    1e14 on eSpeak audio). ``group_norm`` normalises each channel over the whole
    utterance and is safe unless the utterance is silent throughout; it is the tiny
    preset's front end for that reason (tests/test_encoder.py).
    """

    def __init__(
        self,
        conv_layers: Sequence[ConvLayer],
        norm: Literal["group_norm", "layer_norm"] = "group_norm",
        bias: bool = False,
        grad_mult: float = 1.0,
    ) -> None:
        super().__init__()
        self.layer_specs: list[ConvLayer] = [tuple(layer) for layer in conv_layers]  # type: ignore[misc]
        self.grad_mult = grad_mult
        blocks = []
        in_channels = 1
        for i, layer in enumerate(self.layer_specs):
            block_norm = norm if norm == "layer_norm" or i == 0 else None
            blocks.append(ConvBlock(in_channels, layer, block_norm, bias))
            in_channels = layer[0]
        self.conv_layers = nn.ModuleList(blocks)
        # Run a padded batch as one packed row (speechssl.models.packing): valid frames are
        # unchanged, padding is not computed. Needs convolutions without padding, whose
        # frames never read past their utterance.
        self.skip_padding = True
        self.stride_aligned = all(padding == 0 for *_, padding in self.layer_specs)
        self.reset_parameters()

    @property
    def total_stride(self) -> int:
        return math.prod(stride for _, _, stride, _ in self.layer_specs)

    @property
    def out_channels(self) -> int:
        return self.layer_specs[-1][0]

    def reset_parameters(self) -> None:
        for block in self.conv_layers:
            nn.init.kaiming_normal_(block.conv.weight)  # fairseq's init for the waveform CNN
            if block.conv.bias is not None:
                nn.init.zeros_(block.conv.bias)

    def output_lengths(self, input_lengths: Tensor) -> Tensor:
        return conv_output_lengths(input_lengths, self.layer_specs)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """[B, T] samples (``lengths`` [B] valid samples, None = all valid) -> [B, T', C] features."""
        if self.grad_mult == 0.0:
            # A frozen CNN needs no activation memory for backward.
            with torch.no_grad():
                return self._run(waveforms, lengths)
        return scale_grad(self._run(waveforms, lengths), self.grad_mult)

    def _run(self, waveforms: Tensor, lengths: Tensor | None) -> Tensor:
        width = waveforms.shape[1]
        if lengths is None:
            first_frames = None
        else:
            lengths = lengths.to(waveforms.device).long().clamp(max=width)
            first_frames = conv_output_lengths(lengths, self.layer_specs[:1])
            if self.skip_padding and self.stride_aligned:
                packed = pack_waveforms(waveforms, lengths.tolist(), self.total_stride)
                if packed is not None:
                    return self._run_packed(*packed, lengths, first_frames, width)
        x = waveforms.unsqueeze(1)
        for i, block in enumerate(self.conv_layers):
            x = block(x, first_frames if i == 0 else None)
        return x.transpose(1, 2)

    def _run_packed(self, row: Tensor, starts: list[int], lengths: Tensor, first_frames: Tensor, width: int) -> Tensor:
        """The CNN on the packed row of :func:`pack_waveforms` -> padded [B, T', C] (zeros on padding)."""
        first_stride = self.layer_specs[0][2]
        segments = [(start // first_stride, frames) for start, frames in zip(starts, first_frames.tolist())]
        x = row
        for i, block in enumerate(self.conv_layers):
            x = block(x, None, segments if i == 0 else None)
        frames = int(conv_output_lengths(torch.tensor([width]), self.layer_specs)[0])
        first = torch.tensor(starts, device=row.device) // self.total_stride
        return unpack_frames(x, first, self.output_lengths(lengths), frames)
