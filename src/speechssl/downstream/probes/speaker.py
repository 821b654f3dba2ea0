"""Speaker-embedding probes: x-vector, ECAPA-TDNN and the training-free cosine scorer.

The trained ones share :class:`CosineMarginEmbedder`: an ``embed()`` scored by a cosine
classifier, with a margin on the target class during training only (AM-softmax for the
x-vector, AAM-softmax for ECAPA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.downstream.config import ProbeConfig
from speechssl.downstream.probes.base import AttentiveStatsPooling, SqueezeExcitation, masked_mean_std, padding_mask


class _TDNNBlock(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, kernel: int, dilation: int) -> None:
        super().__init__(
            nn.Conv1d(in_dim, out_dim, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
            nn.ReLU(),
            nn.BatchNorm1d(out_dim),
        )


class CosineMarginEmbedder(nn.Module):
    """Base of the trained speaker-embedding probes: a cosine classifier over :meth:`embed`.

    ``forward`` returns ``scale * cosine`` logits *without* the margin (what evaluation
    uses); :meth:`loss` applies the subclass's :meth:`penalise` to the target class's
    cosine during training. ``embed`` is what verification scores by cosine similarity.
    """

    output_kind = "embedding"

    def __init__(self, embed_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.classifier = nn.Parameter(torch.randn(num_outputs, embed_dim) * 0.01)
        self.margin = cfg.margin
        self.scale = cfg.scale

    def embed(self, x: Tensor, lengths: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def penalise(self, target_cosine: Tensor) -> Tensor:  # pragma: no cover - interface
        """The target class's cosine with the margin applied."""
        raise NotImplementedError

    def cosine_logits(self, embeddings: Tensor) -> Tensor:
        return F.normalize(embeddings, dim=-1) @ F.normalize(self.classifier, dim=-1).T

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.scale * self.cosine_logits(self.embed(x, lengths))

    def loss(self, x: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
        cosine = self.cosine_logits(self.embed(x, lengths))
        target = targets[:, None]
        with_margin = cosine.scatter(1, target, self.penalise(cosine.gather(1, target)))
        return F.cross_entropy(self.scale * with_margin, targets)


class XVector(CosineMarginEmbedder):
    """Snyder et al.'s x-vector: five TDNN layers (contexts 5/3/3/1/1 with dilations
    1/2/3/1/1), mean+std statistics pooling over valid frames, a segment-level embedding
    layer, and an AM-softmax speaker classifier (seed 002's ASV probe)."""

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__(cfg.embed_dim, num_outputs, cfg)
        channels = cfg.hidden
        self.frames = nn.Sequential(
            _TDNNBlock(in_dim, channels, 5, 1),
            _TDNNBlock(channels, channels, 3, 2),
            _TDNNBlock(channels, channels, 3, 3),
            _TDNNBlock(channels, channels, 1, 1),
            _TDNNBlock(channels, 3 * channels, 1, 1),
        )
        self.segment = nn.Linear(2 * 3 * channels, cfg.embed_dim)

    def embed(self, x: Tensor, lengths: Tensor) -> Tensor:
        # Zero the padding before every block: the convolutions then see exactly what an
        # utterance alone sees at its edges (zero "same" padding), whatever the batch.
        mask = padding_mask(lengths, x.shape[1]).to(x.dtype)[:, None, :]
        hidden = x.transpose(1, 2) * mask
        for block in self.frames:
            hidden = block(hidden) * mask
        return self.segment(masked_mean_std(hidden.transpose(1, 2), lengths))

    def penalise(self, target_cosine: Tensor) -> Tensor:
        # AM-softmax (Wang et al. 2018): an additive margin on the cosine itself.
        return target_cosine - self.margin


# ---------------------------------------------------------------- ECAPA-TDNN


def _res2_scale(channels: int, preferred: int = 8) -> int:
    """Res2Net's number of channel groups: the largest one up to ``preferred`` dividing ``channels``."""
    return next(scale for scale in range(min(preferred, channels), 0, -1) if channels % scale == 0)


class _Res2Conv(nn.Module):
    """Res2Net's hierarchical convolution (Gao et al. 2019) on ``[B, C, T]``.

    The channels are cut into ``scale`` groups; the first passes through, every other
    one is convolved after adding the previous group's output, so one layer holds
    several receptive fields.
    """

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        width = channels // scale
        # With a single group there is nothing to pass through: it is convolved.
        self.convs = nn.ModuleList(_TDNNBlock(width, width, kernel, dilation) for _ in range(max(scale - 1, 1)))

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        groups = list(h.chunk(self.scale, dim=1))
        outputs = [groups.pop(0)] if self.scale > 1 else []
        previous: Tensor | None = None
        for group, conv in zip(groups, self.convs):
            group = group if previous is None else group + previous
            previous = conv(group * valid)  # zeroed padding: no leak through the dilated kernel
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class _SERes2Block(nn.Module):
    """ECAPA's SE-Res2Block: 1x1 TDNN, dilated Res2 TDNN, 1x1 TDNN, squeeze-excitation, residual."""

    def __init__(self, channels: int, dilation: int, scale: int, se_bottleneck: int) -> None:
        super().__init__()
        self.reduce = _TDNNBlock(channels, channels, 1, 1)
        self.res2 = _Res2Conv(channels, 3, dilation, scale)
        self.expand = _TDNNBlock(channels, channels, 1, 1)
        self.excitation = SqueezeExcitation(channels, se_bottleneck)

    def forward(self, h: Tensor, lengths: Tensor, valid: Tensor) -> Tensor:
        # The 1x1 convolutions mix no frames, so only the Res2 kernels need zeroed padding.
        y = self.expand(self.res2(self.reduce(h), valid))
        return h + self.excitation(y, lengths)


class ECAPA(CosineMarginEmbedder):
    """ECAPA-TDNN (Desplanques et al. 2020) with ``cfg.hidden`` channels and an AAM-softmax classifier.

    A k=5 TDNN, three SE-Res2Blocks (k=3, dilations 2/3/4, up to 8 Res2 groups), the
    concatenated block outputs aggregated by a 1x1 TDNN to ``3 * hidden`` channels,
    channel- and context-dependent attentive statistics pooling over valid frames, then
    BN, a linear layer to ``cfg.embed_dim`` and BN. Blocks run in sequence, as in
    SpeechBrain's version (the paper's figure also feeds each block the sum of the earlier ones).
    """

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__(cfg.embed_dim, num_outputs, cfg)
        channels = cfg.hidden
        scale = _res2_scale(channels)
        se_bottleneck = min(128, max(channels // 4, 1))  # the paper: 128 for 512 channels
        self.stem = _TDNNBlock(in_dim, channels, 5, 1)
        self.blocks = nn.ModuleList(_SERes2Block(channels, dilation, scale, se_bottleneck) for dilation in (2, 3, 4))
        self.aggregate = _TDNNBlock(3 * channels, 3 * channels, 1, 1)
        self.pool = AttentiveStatsPooling(3 * channels, min(128, channels), channel_wise=True, global_context=True)
        self.pool_norm = nn.BatchNorm1d(self.pool.out_dim)
        self.segment = nn.Linear(self.pool.out_dim, cfg.embed_dim)
        self.embed_norm = nn.BatchNorm1d(cfg.embed_dim)

    def embed(self, x: Tensor, lengths: Tensor) -> Tensor:
        valid = padding_mask(lengths, x.shape[1]).to(x.dtype)[:, None, :]
        hidden = self.stem(x.transpose(1, 2) * valid)
        block_outputs = []
        for block in self.blocks:
            hidden = block(hidden, lengths, valid)
            block_outputs.append(hidden)
        frames = self.aggregate(torch.cat(block_outputs, dim=1))
        pooled = self.pool(frames.transpose(1, 2), lengths)
        return self.embed_norm(self.segment(self.pool_norm(pooled)))

    def penalise(self, target_cosine: Tensor) -> Tensor:
        # AAM-softmax (ArcFace, Deng et al. 2019): the margin is added to the angle,
        # cos(theta + m) = cos theta cos m - sin theta sin m, with sin theta >= 0 on [0, pi].
        m = self.margin
        sine = torch.sqrt((1.0 - target_cosine**2).clamp(min=1e-7))  # clamped: finite gradient at |cos| = 1
        shifted = target_cosine * math.cos(m) - sine * math.sin(m)
        # Past theta = pi - m, cos(theta + m) would rise again and reward a worse angle;
        # there a constant shift takes over, chosen to meet cos(pi) = -1 at the boundary.
        return torch.where(target_cosine > math.cos(math.pi - m), shifted, target_cosine - (1.0 - math.cos(m)))


# ---------------------------------------------------------------- training-free


class CosineScorer(nn.Module):
    """No parameters, no training: the embedding is the per-dimension mean and standard
    deviation of the features over valid frames, scored by cosine similarity.

    It judges a speaker encoder's features zero-shot, with nothing learnt on top.
    """

    output_kind = "verification"

    def __init__(self, in_dim: int, num_outputs: int, cfg: ProbeConfig) -> None:
        super().__init__()
        self.out_dim = 2 * in_dim

    def embed(self, x: Tensor, lengths: Tensor) -> Tensor:
        return masked_mean_std(x, lengths)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        raise TypeError(
            "the 'cosine' probe has no classifier and cannot produce logits: it only embeds "
            "(call .embed(x, lengths)) for verification; pick a trained probe (xvector, ecapa, ...) to classify"
        )
